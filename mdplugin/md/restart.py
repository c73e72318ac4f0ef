"""What a restart of `mdplugin run` checks and prepares: the run record (PREFIX-run.json) that says
which structure, model and integrator options a checkpoint belongs to, the refusal to continue a
checkpoint of another run, and the trimming of the state data and trajectory to the checkpoint's step
so that the continued run appends without repeating a step.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import openmm.app as app

from mdplugin.dcd import read_dcd_header
from mdplugin.md.mlmm import MLRegion, atom_ranges
from mdplugin.md.options import RunOptions, RunWarning
from mdplugin.md.reporters import (
    read_header,
    truncate_dcd,
    truncate_state_data,
    truncate_xtc,
)
from mdplugin.md.structure_input import formula


def run_record(
    options: RunOptions, model_sha256: str, topology: app.Topology, charge: int, region: MLRegion | None = None
) -> dict:
    """What a checkpoint of this run belongs to; a restart must match it (see check_restart)."""
    record = {
        "elements": [atom.element.symbol for atom in topology.atoms()],
        "model": str(options.model),
        "model_sha256": model_sha256,
        "ensemble": options.ensemble,
        "timestep_fs": options.timestep_fs,
        "charge": charge,
        "multiplicity": options.multiplicity,
        "report_interval": options.report_interval,
    }
    if options.ensemble in ("nvt", "npt"):
        record.update(temperature_k=options.temperature_k, friction_per_ps=options.friction_per_ps)
    if options.ensemble == "npt":
        record.update(pressure_bar=options.pressure_bar, barostat_interval=options.barostat_interval)
    if region is not None:
        record.update(ml_atoms=atom_ranges(region.atoms), forcefield=list(options.forcefield),
                      nonbonded_cutoff_nm=options.nonbonded_cutoff_nm)  # fmt: skip
    return record


def record_path(checkpoint: Path) -> Path:
    """PREFIX-run.json beside PREFIX.chk."""
    stem = checkpoint.stem if checkpoint.suffix == ".chk" else checkpoint.name
    return checkpoint.with_name(stem + "-run.json")


RESTART_OPTIONS = {"ensemble": "--ensemble", "timestep_fs": "--timestep-fs", "temperature_k": "--temperature-k",
                   "friction_per_ps": "--friction-per-ps", "pressure_bar": "--pressure-bar",
                   "barostat_interval": "--barostat-interval", "charge": "--charge",
                   "multiplicity": "--multiplicity", "report_interval": "--report-interval",
                   "ml_atoms": "the ML region (--ml-residues, --ml-atoms)", "forcefield": "--forcefield",
                   "nonbonded_cutoff_nm": "--nonbonded-cutoff-nm"}  # fmt: skip


def check_restart(record: dict, checkpoint: Path) -> None:
    """Refuse to continue a checkpoint of another structure, model or integrator (named in the error)."""
    if not checkpoint.is_file():
        raise FileNotFoundError(f"restart checkpoint {checkpoint} does not exist")
    saved_path = record_path(checkpoint)
    if not saved_path.is_file():
        warnings.warn(
            f"{saved_path} is missing, so mdplugin cannot check that {checkpoint} belongs to this structure, model "
            "and integrator; continuing on trust",
            RunWarning,
            2,
        )
        return
    saved = json.loads(saved_path.read_text())
    problems = []
    if saved.get("elements") != record["elements"]:
        before, now = saved.get("elements", []), record["elements"]
        problems.append(
            f"structure: the checkpoint holds {len(before)} atoms ({formula(before)}), the structure given "
            f"{len(now)} ({formula(now)})" + (" in another order" if sorted(before) == sorted(now) else "")
        )
    if saved.get("model_sha256") != record["model_sha256"]:
        problems.append(
            f"model: the checkpoint was run with {saved.get('model')}, a different file from {record['model']}"
        )
    for key, option in RESTART_OPTIONS.items():
        if key in saved and key in record and saved[key] != record[key]:
            problems.append(f"{option} was {saved[key]}, now {record[key]}")
    if problems:
        raise ValueError(
            f"cannot continue from {checkpoint}; it belongs to a different run: {'; '.join(problems)}. Restart with "
            "that run's structure, model and options, or start a new run without --restart"
        )


def prepare_continued_files(
    options: RunOptions, paths: dict[str, Path], step: int, atoms: int, header: list[str]
) -> None:
    """Before a restart appends: check the files fit this run, then drop what was written after the
    checkpoint's step (a run interrupted after its last checkpoint), so no step appears twice."""
    if not options.restart or options.overwrite:
        return
    state_data, trajectory = paths["state_data"], paths["trajectory"]
    if state_data.exists() and read_header(state_data) != header:
        raise ValueError(
            f"{state_data} has the columns {', '.join(read_header(state_data))}, but this run writes "
            f"{', '.join(header)}; continue with the --domain-check of the run it continues, or choose another --output"
        )
    if options.trajectory_format == "dcd" and trajectory.exists():
        dcd = read_dcd_header(trajectory)
        if dcd.atoms != atoms:
            raise ValueError(f"{trajectory} holds {dcd.atoms} atoms, this run {atoms}; choose another --output")
        if dcd.interval != options.report_interval:
            raise ValueError(
                f"{trajectory} holds a frame every {dcd.interval} steps; continue it with --report-interval {dcd.interval}"
            )
    if state_data.exists():
        truncate_state_data(state_data, step)
    if trajectory.exists() and options.trajectory_format == "dcd":
        truncate_dcd(trajectory, step)
    elif trajectory.exists() and options.trajectory_format == "xtc":
        truncate_xtc(trajectory, step)
