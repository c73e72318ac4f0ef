"""Molecular dynamics with a model in OpenMM: structure in, trajectory, energies and a summary out.

`simulate(RunOptions(...))` reads a structure (PDB, XYZ/extxyz or a SMILES string), builds an all-ML
System (or, with `ml_residues`, `ml_atoms` or `solvate_nm`, an ML/MM System: the model for the ML
region, an OpenMM force field for the rest, mechanical embedding, PME in a periodic box), minimises, draws velocities, runs NVT (Langevin middle), NVE (velocity Verlet) or NPT
(Langevin middle + Monte Carlo barostat, periodic systems) and writes next to an output prefix:
PREFIX.csv (state data), PREFIX.dcd|.xtc|.pdb (trajectory), PREFIX-topology.pdb (the starting
structure, to read the trajectory with), PREFIX.chk (checkpoint), PREFIX-run.json (what the
checkpoint belongs to: structure, model, integrator), PREFIX-summary.json, and with `plot`
PREFIX-energy.png and PREFIX-temperature.png.

Nothing is written before the inputs are checked. A run that blows up (see `reporters.StateReporter`)
stops with `RunFailed` after writing a summary that marks it failed.
"""

from __future__ import annotations

import csv
import json
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import torch
from openmm import unit

from mdplugin.engines.openmm_force import create_system
from mdplugin.export.model_file import ModelFile, ModelInfo, open_model
from mdplugin.limits import check_neighbour_count
from mdplugin.md.mlmm import MLRegion, create_mixed_system, create_mm_system, ml_region, ml_region_charge
from mdplugin.md.options import (
    DEFAULT_PREFIX,
    ENSEMBLES,
    FIXED_PRECISION,
    PRECISIONS,
    RunFailed,
    RunOptions,
    RunWarning,
    Summary,
    check_options,
)
from mdplugin.md.reporters import DCDReporter, DeviationCheck, DomainCheck, StateReporter, state_data_header
from mdplugin.md.restart import check_restart, prepare_continued_files, run_record
from mdplugin.md.structure_input import read_structure
from mdplugin.threads import ThreadChoice, choose_threads, torch_threads
from mdplugin.units import KJ_PER_MOL_PER_EV

__all__ = ["RunFailed", "RunOptions", "RunWarning", "Summary", "read_state_data", "simulate"]

# ---------------------------------------------------------------------------------------------- model


def warn_outside_training_states(info: ModelInfo, charge: int, multiplicity: int) -> None:
    """A charge or spin multiplicity the model never saw in training runs, but deserves a word."""
    for message in info.state_messages(charge, multiplicity, "--charge and --multiplicity"):
        warnings.warn(message, RunWarning, 2)


def domain_check(
    options: RunOptions, domain: dict | None, topology: app.Topology, atoms: list[int] | None = None
) -> tuple[DomainCheck | None, str]:
    """The out-of-domain check this run does (over the model's `atoms`, default all), and a line for the
    summary saying what it is."""
    if options.domain_check == "off":
        return None, "off"
    shortest = (domain or {}).get("shortest_distance")
    if not shortest:
        return None, "skipped: the model records no training domain (made before mdplugin recorded one)"
    every_atom = list(topology.atoms())
    elements = [every_atom[i].element for i in atoms] if atoms is not None else [a.element for a in every_atom]
    check = DomainCheck(dict(shortest), elements, options.domain_check, options.domain_tolerance, atoms=atoms)
    return (
        check,
        f"{options.domain_check}: pairs closer than {options.domain_tolerance:g} x their shortest training distance",
    )


def deviation_check(
    options: RunOptions, model: ModelFile, topology: app.Topology, charge: int, atoms: list[int] | None = None
) -> DeviationCheck | None:
    """The committee's force-deviation check of a committee export (None: a single model, or the checks off)."""
    if not model.info.committee or options.domain_check == "off":
        return None
    from mdplugin.export.loader import Potential

    every_atom = list(topology.atoms())
    numbers = [every_atom[i].element.atomic_number for i in (atoms if atoms is not None else range(len(every_atom)))]
    potential = Potential.load(model, threads=options.threads)
    # an all-ML System's state holds member 0's energy and forces at each report: K-1 more evaluations, not K
    return DeviationCheck(potential, numbers, charge, options.multiplicity, options.deviation_threshold,
                          options.domain_check, atoms, lead_from_state=atoms is None)  # fmt: skip


# ---------------------------------------------------------------------------------------------- setup


def get_platform(name: str, precision: str | None) -> tuple[openmm.Platform, dict[str, str]]:
    """The OpenMM platform and its properties; a clear error for one that is not available here."""
    available = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
    matches = [p for p in available if p.lower() == name.lower()]
    if not matches:
        raise ValueError(f"OpenMM platform {name!r} is not available here; available: {', '.join(available)}")
    platform = openmm.Platform.getPlatformByName(matches[0])
    if precision is None:
        return platform, {}
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if "Precision" in platform.getPropertyNames():
        return platform, {"Precision": precision}
    fixed = FIXED_PRECISION.get(platform.getName())
    if precision != fixed:
        raise ValueError(
            f"the {platform.getName()} platform always computes in {fixed or 'its own'} precision; leave out --precision"
        )
    return platform, {}


def model_dtype_and_device(platform: openmm.Platform, precision: str | None) -> tuple[str, str]:
    """What a checkpoint is scripted as: float64 on Reference/CPU or in double precision, else float32."""
    name = platform.getName()
    dtype = "float64" if name in FIXED_PRECISION or precision == "double" else "float32"
    device = "cuda" if name == "CUDA" and torch.cuda.is_available() else "cpu"
    return dtype, device


def create_integrator(options: RunOptions) -> openmm.Integrator:
    timestep = options.timestep_fs * unit.femtosecond
    if options.ensemble == "nve":
        return openmm.VerletIntegrator(timestep)
    if options.ensemble not in ("nvt", "npt"):
        raise ValueError(f"unknown ensemble {options.ensemble!r}; use one of {', '.join(ENSEMBLES)}")
    integrator = openmm.LangevinMiddleIntegrator(
        options.temperature_k * unit.kelvin, options.friction_per_ps / unit.picosecond, timestep
    )
    if options.seed is not None:
        integrator.setRandomNumberSeed(options.seed)
    return integrator


def create_barostat(options: RunOptions) -> openmm.MonteCarloBarostat:
    barostat = openmm.MonteCarloBarostat(
        options.pressure_bar * unit.bar, options.temperature_k * unit.kelvin, options.barostat_interval
    )
    if options.seed is not None:
        barostat.setRandomNumberSeed(options.seed)
    return barostat


def output_prefix(output: str) -> Path:
    """The prefix of the output files: `output`, or DEFAULT_PREFIX inside it when it names a folder."""
    if not output.strip():
        raise ValueError("--output is empty; give a prefix for the output files, such as md or runs/ethanol")
    if output.endswith(("/", "\\")) or Path(output).is_dir():
        return Path(output) / DEFAULT_PREFIX
    return Path(output)


def output_paths(options: RunOptions) -> dict[str, Path]:
    prefix = output_prefix(options.output)
    paths = {
        "state_data": prefix.with_name(prefix.name + ".csv"),
        "trajectory": prefix.with_name(f"{prefix.name}.{options.trajectory_format}"),
        "topology": prefix.with_name(prefix.name + "-topology.pdb"),
        "checkpoint": prefix.with_name(prefix.name + ".chk"),
        "run_record": prefix.with_name(prefix.name + "-run.json"),
        "summary": prefix.with_name(prefix.name + "-summary.json"),
    }
    if options.plot:
        paths["energy_plot"] = prefix.with_name(prefix.name + "-energy.png")
        paths["temperature_plot"] = prefix.with_name(prefix.name + "-temperature.png")
    return paths


def check_outputs(options: RunOptions, paths: dict[str, Path]) -> None:
    """Refuse to overwrite; a restart continues (appends to) the files of the run it continues."""
    if options.overwrite:
        return
    continued = {"state_data", "topology", "checkpoint", "run_record", "summary", "energy_plot", "temperature_plot"}
    if options.trajectory_format != "pdb":  # DCD and XTC can be appended to; PDB cannot
        continued.add("trajectory")
    existing = [
        str(path) for key, path in paths.items() if path.exists() and not (options.restart and key in continued)
    ]
    if existing:
        hint = "" if options.restart else " (or --restart CHECKPOINT to continue that run)"
        raise FileExistsError(
            f"output files exist: {', '.join(existing)}; pass --force to overwrite them, or choose another --output{hint}"
        )


# ---------------------------------------------------------------------------------------------- build


def build_simulation(
    options: RunOptions,
    model: ModelFile,
    topology: app.Topology,
    positions: unit.Quantity,
    charge: int,
    region: MLRegion | None = None,
    mm_system: openmm.System | None = None,
) -> app.Simulation:
    """The Simulation at its starting state (a restart's checkpoint loaded). With an ML region: the
    mixed System of `mm_system`, and the model's first evaluation done here, so that a molecule it
    refuses (longer than half the box) is an error before anything is written."""
    from mdplugin.export.loader import script_error_message

    platform, properties = get_platform(options.platform, options.precision)
    dtype, device = model_dtype_and_device(platform, options.precision)
    if region is None:
        system = create_system(model, topology, charge, options.multiplicity, dtype=dtype, device=device)
    else:
        system = create_mixed_system(region, model, mm_system, topology, charge, options, dtype, device)
    if options.ensemble == "npt":
        system.addForce(create_barostat(options))
    simulation = app.Simulation(topology, system, create_integrator(options), platform, properties)
    if options.restart:
        _load_checkpoint(simulation, options.restart)
    else:
        simulation.context.setPositions(positions)
    if region is not None:
        try:
            simulation.context.getState(getEnergy=True)
        except openmm.OpenMMException as error:
            raise ValueError(f"{options.structure}: {script_error_message(error)}") from None
    return simulation


def _load_checkpoint(simulation: app.Simulation, path: str) -> None:
    if not Path(path).is_file():
        raise FileNotFoundError(f"restart checkpoint {path} does not exist")
    try:
        simulation.loadCheckpoint(path)
    except openmm.OpenMMException as error:
        raise ValueError(
            f"cannot continue from {path} ({error}); a checkpoint restarts only on the same platform, "
            "with the same structure, model and integrator options"
        ) from None


def prepare_state(simulation: app.Simulation, options: RunOptions, topology_path: Path, charge: int = 0) -> None:
    """Minimise and draw velocities (a restart has its state already); write the starting structure."""
    if not options.restart:
        if options.minimize:
            minimize(simulation, charge, options.multiplicity)
        seed = () if options.seed is None else (options.seed,)
        simulation.context.setVelocitiesToTemperature(options.temperature_k * unit.kelvin, *seed)
    if not (options.restart and topology_path.exists()):
        positions = simulation.context.getState(getPositions=True).getPositions()
        with open(topology_path, "w") as handle:
            app.PDBFile.writeFile(simulation.topology, positions, handle)


# a bond longer than this x its starting length, and by this much (Å), after minimisation: torn apart
TORN_BOND_RATIO, TORN_BOND_STRETCH = 1.5, 0.5


def minimize(simulation: app.Simulation, charge: int, multiplicity: int) -> None:
    """OpenMM's minimiser, with a clear error when it tears a molecule apart (a model whose energy keeps
    falling as bonds break, typically outside its training domain): otherwise that shows up later as an
    ML molecule "longer than half the box", or as dynamics of fragments."""
    bonds = [(bond.atom1, bond.atom2) for bond in simulation.topology.bonds()]
    before = bond_lengths(simulation, bonds)
    try:
        simulation.minimizeEnergy()
        failure = None
    except openmm.OpenMMException as error:  # e.g. the model refusing a molecule the minimiser stretched
        failure = error
    after = bond_lengths(simulation, bonds)
    torn = np.flatnonzero((after > TORN_BOND_RATIO * before) & (after - before > TORN_BOND_STRETCH))
    if len(torn):
        k = int(torn[np.argmax((after / np.maximum(before, 1e-3))[torn])])
        first, second = bonds[k]
        raise ValueError(
            f"energy minimisation tore the structure apart: {len(torn)} bond(s) broke, e.g. atom {first.index} "
            f"({first.name} of {first.residue.name} {first.residue.id}) to atom {second.index} ({second.name}) "
            f"went from {before[k]:.2f} to {after[k]:.2f} Å. The model's energy fell as the molecule came apart, "
            f"a sign that the system is outside what it was trained on: check the total charge ({charge}) and "
            f"spin multiplicity ({multiplicity}) against the model's training domain (mdplugin info), and the "
            "model; --no-minimize skips the minimisation"
        )
    if failure is not None:
        raise failure


def bond_lengths(simulation: app.Simulation, bonds: list) -> np.ndarray:
    """Lengths (Å) of `bonds` in the context's positions, each the minimum image in a periodic box."""
    if not bonds:
        return np.zeros(0)
    state = simulation.context.getState(getPositions=True)
    positions = np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.angstrom))
    vectors = positions[[a.index for a, _ in bonds]] - positions[[b.index for _, b in bonds]]
    if simulation.topology.getPeriodicBoxVectors() is not None:
        box = np.asarray(state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.angstrom))
        for axis in (2, 1, 0):  # OpenMM's reduced box: c, then b, then a
            vectors -= np.round(vectors[:, axis : axis + 1] / box[axis, axis]) * box[axis]
    return np.linalg.norm(vectors, axis=1)


def add_reporters(
    simulation: app.Simulation,
    options: RunOptions,
    paths: dict[str, Path],
    domain: DomainCheck | None,
    deviation: DeviationCheck | None = None,
) -> list:
    """State data first: it stops a blown-up run before the trajectory reporter chokes on NaN."""
    append = bool(options.restart) and not options.overwrite
    periodic = simulation.topology.getPeriodicBoxVectors() is not None
    state_data = paths["state_data"]
    reporters = [
        StateReporter(
            state_data,
            options.report_interval,
            simulation.system,
            options.ensemble,
            options.temperature_k,
            periodic,
            domain,
            append=append and state_data.exists(),
            deviation=deviation,
        )  # fmt: skip
    ]
    trajectory = paths["trajectory"]
    if options.trajectory_format == "dcd":
        reporters.append(
            DCDReporter(
                trajectory, options.report_interval, append=append and trajectory.exists(), wrap=options.wrap_trajectory
            )
        )
    elif options.trajectory_format == "xtc":
        reporters.append(
            app.XTCReporter(
                str(trajectory),
                options.report_interval,
                append=append and trajectory.exists(),
                enforcePeriodicBox=None if options.wrap_trajectory else False,
            )
        )
    else:
        reporters.append(
            app.PDBReporter(
                str(trajectory), options.report_interval, enforcePeriodicBox=None if options.wrap_trajectory else False
            )
        )
    reporters.append(app.CheckpointReporter(str(paths["checkpoint"]), options.checkpoint_interval))
    simulation.reporters.extend(reporters)
    return reporters


def close_reporters(simulation: app.Simulation) -> None:
    for reporter in simulation.reporters:
        if hasattr(reporter, "close"):
            reporter.close()
    simulation.reporters.clear()  # OpenMM's reporters close their files when released


# ---------------------------------------------------------------------------------------------- run


def run_steps(simulation: app.Simulation, options: RunOptions) -> bool:
    """Advance `options.steps` steps with a progress bar; False when `max_wall_minutes` stopped it first."""
    from tqdm import tqdm

    chunk = max(1, options.report_interval)
    start = time.perf_counter()
    deadline = start + 60 * options.max_wall_minutes if options.max_wall_minutes else float("inf")
    with tqdm(total=options.steps, unit="step", disable=not options.progress, dynamic_ncols=True, leave=False) as bar:
        done = 0
        while done < options.steps:
            if time.perf_counter() >= deadline:
                return False
            count = min(chunk, options.steps - done)
            simulation.step(count)
            done += count
            bar.update(count)
            bar.set_postfix(ns_per_day=f"{ns_per_day(done, options.timestep_fs, time.perf_counter() - start):.2f}")
    return True


def ns_per_day(steps: int, timestep_fs: float, seconds: float) -> float:
    return steps * timestep_fs * 1e-6 / max(seconds, 1e-12) * 86400.0


def read_state_data(path: Path) -> dict[str, np.ndarray]:
    """The state-data CSV as columns keyed by their header ('Step', 'Time (ps)', ...).

    Rows repeated after a restart from an earlier checkpoint keep their latest values."""
    if not path.exists():
        return {}
    with open(path, newline="") as handle:
        rows = [row for row in csv.reader(handle) if row]
    if len(rows) < 2:  # no report yet (fewer steps than the report interval)
        return {}
    header = [name.strip('#"') for name in rows[0]]
    values = np.array([[float(v) for v in row] for row in rows[1:] if not row[0].startswith("#")])
    _, last = np.unique(values[::-1, 0], return_index=True)
    values = values[len(values) - 1 - last]  # one row per step, the latest, in step order
    return {name: values[:, i] for i, name in enumerate(header)}


def energy_drift(time_ps: np.ndarray, total_energy_kj: np.ndarray, atoms: int) -> float | None:
    """Slope of a linear fit of the total energy, in meV per atom per ps (None with fewer than 2 points)."""
    if len(time_ps) < 2:
        return None
    slope_kj_per_ps = np.polyfit(time_ps, total_energy_kj, 1)[0]
    return float(slope_kj_per_ps / KJ_PER_MOL_PER_EV * 1000.0 / atoms)


def plot_state_data(data: dict[str, np.ndarray], paths: dict[str, Path]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    time_ps = data["Time (ps)"]
    figure, axes = plt.subplots(figsize=(6, 4))
    for name in ("Potential Energy (kJ/mole)", "Kinetic Energy (kJ/mole)", "Total Energy (kJ/mole)"):
        axes.plot(time_ps, (data[name] - data[name][0]) / KJ_PER_MOL_PER_EV, label=name.split(" (")[0])
    axes.set(xlabel="time (ps)", ylabel="energy − initial value (eV)")
    axes.legend()
    figure.tight_layout()
    figure.savefig(paths["energy_plot"], dpi=120)
    plt.close(figure)
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot(time_ps, data["Temperature (K)"])
    axes.set(xlabel="time (ps)", ylabel="temperature (K)")
    figure.tight_layout()
    figure.savefig(paths["temperature_plot"], dpi=120)
    plt.close(figure)


@dataclass
class Outcome:
    """How the dynamics went: what `summarize` needs besides the state data."""

    start_step: int
    seconds: float
    status: str = "completed"
    failure: str | None = None
    threads: ThreadChoice | None = None
    domain: DomainCheck | None = None
    domain_note: str = ""
    region: MLRegion | None = None
    stopped_by_wall_clock: bool = False
    deviation: DeviationCheck | None = None


def summarize(
    simulation: app.Simulation,
    options: RunOptions,
    data: dict[str, np.ndarray],
    outcome: Outcome,
    paths: dict[str, Path],
) -> Summary:
    atoms = simulation.topology.getNumAtoms()
    steps = simulation.currentStep - outcome.start_step
    completed = outcome.status == "completed"
    drift = None
    if options.ensemble == "nve" and data and completed:  # never a drift of a broken run
        drift = energy_drift(data["Time (ps)"], data["Total Energy (kJ/mole)"], atoms)
    try:
        state = simulation.context.getState(getEnergy=True)
        energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    except openmm.OpenMMException:  # the model refuses the NaN positions of a run that blew up
        energy = float("nan")
    notes = []
    if outcome.region is not None:
        notes.append(
            f"ML/MM: the model computes {len(outcome.region.atoms)} atoms ({outcome.region.description}), "
            f"{', '.join(options.forcefield)} the other {atoms - len(outcome.region.atoms)} and the ML-MM "
            "interactions (mechanical embedding"
            + (
                f", PME, {options.nonbonded_cutoff_nm:g} nm cutoff)"
                if simulation.topology.getPeriodicBoxVectors()
                else ")"
            )
        )
    if not data:
        notes.append("no state-data rows: fewer steps than --report-interval")
    if options.plot and not paths["energy_plot"].exists():
        notes.append("no plots written: there were no state-data rows to plot")
    domain = outcome.domain
    return Summary(
        atoms=atoms,
        ensemble=options.ensemble,
        platform=simulation.context.getPlatform().getName(),
        steps=steps,
        final_step=simulation.currentStep,
        simulated_ps=steps * options.timestep_fs * 1e-3,
        wall_seconds=outcome.seconds,
        ns_per_day=ns_per_day(steps, options.timestep_fs, outcome.seconds),
        mean_temperature_k=float(np.mean(data["Temperature (K)"])) if data else None,
        energy_drift_mev_per_atom_ps=drift,
        final_potential_energy_ev=energy / KJ_PER_MOL_PER_EV if np.isfinite(energy) else None,
        status=outcome.status,
        failure=outcome.failure,
        threads=outcome.threads.count if outcome.threads else torch.get_num_threads(),
        threads_reason=outcome.threads.reason if outcome.threads else "set by the caller",
        mean_density_g_per_ml=float(np.mean(data["Density (g/mL)"])) if "Density (g/mL)" in data else None,
        domain_check=outcome.domain_note,
        closest_distance_ratio=domain.closest_ratio if domain else None,
        closest_pair=domain.closest_pair if domain else None,
        max_force_deviation=outcome.deviation.largest if outcome.deviation else None,
        ml_atoms=len(outcome.region.atoms) if outcome.region else None,
        notes=notes,
        files={key: str(path) for key, path in paths.items() if path.exists()},
        stopped_by_wall_clock=outcome.stopped_by_wall_clock,
    )


def simulate(options: RunOptions) -> Summary:
    """Run MD as `options` say and write the outputs; returns the summary (also in PREFIX-summary.json).

    Raises RunFailed (after writing the summary, marked failed) when the dynamics blow up."""

    check_options(options)
    paths = output_paths(options)
    check_outputs(options, paths)
    topology, positions, implied_charge = read_structure(options.structure, options.seed)
    topology, positions, region = ml_region(options, topology, positions)
    mm_system = create_mm_system(region, topology, options) if region is not None else None
    if options.charge is not None:
        charge = options.charge
    else:
        charge = ml_region_charge(mm_system, region.atoms) if region is not None else (implied_charge or 0)
    periodic = topology.getPeriodicBoxVectors() is not None
    if options.ensemble == "npt" and not periodic:
        raise ValueError(
            f"--ensemble npt needs a periodic box, and {options.structure} has none; give a PDB with a CRYST1 "
            "line or an extxyz with a cell and pbc, or use --ensemble nvt"
        )
    model = open_model(options.model)  # the one read of the model file; passed on from here
    if periodic and model.is_local and region is None:  # a neighbour list that would not fit in memory
        box = np.array(
            [[v.value_in_unit(unit.angstrom) for v in vector] for vector in topology.getPeriodicBoxVectors()]
        )
        check_neighbour_count(topology.getNumAtoms(), box, [True] * 3, model.info.interaction_range, options.structure)
    warn_outside_training_states(model.info, charge, options.multiplicity)
    check, domain_note = domain_check(options, model.domain, topology, region.atoms if region else None)
    deviation = deviation_check(options, model, topology, charge, region.atoms if region else None)
    if deviation is not None:
        domain_note += (
            f"; committee of {model.info.committee}: force deviation above {options.deviation_threshold:g} eV/Å"
        )
    record = run_record(options, model.sha256, topology, charge, region)
    if options.restart:
        check_restart(record, Path(options.restart))
    threads = choose_threads(len(region.atoms) if region else topology.getNumAtoms(), options.threads)
    with torch_threads(threads.count):
        simulation = build_simulation(options, model, topology, positions, charge, region, mm_system)
        outcome = Outcome(simulation.currentStep, 0.0, threads=threads, domain=check, domain_note=domain_note,
                          region=region, deviation=deviation)  # fmt: skip
        # nothing is written before this point: every input has been checked
        paths["state_data"].parent.mkdir(parents=True, exist_ok=True)
        header = state_data_header(periodic, check is not None, deviation is not None)
        prepare_continued_files(options, paths, simulation.currentStep, topology.getNumAtoms(), header)
        paths["run_record"].write_text(json.dumps(record, indent=2))
        prepare_state(simulation, options, paths["topology"], charge)
        return run_simulation(simulation, options, paths, outcome)


def run_simulation(
    simulation: app.Simulation,
    options: RunOptions,
    paths: dict[str, Path],
    outcome: Outcome | None = None,
) -> Summary:
    """Run `options.steps` steps of a prepared Simulation (positions and velocities set) with mdplugin's
    reporters and blow-up watch, then write the checkpoint, state-data plots and PREFIX-summary.json.

    `simulate` calls it for a model's run; a caller with a System of its own (a classical reference in a
    benchmark) calls it directly, with `output_paths(options)`. Raises RunFailed (after writing the
    summary, marked failed) when the dynamics blow up."""
    from mdplugin.export.loader import script_error_message

    outcome = outcome or Outcome(simulation.currentStep, 0.0)
    paths["state_data"].parent.mkdir(parents=True, exist_ok=True)
    add_reporters(simulation, options, paths, outcome.domain, outcome.deviation)
    start = time.perf_counter()
    try:
        outcome.stopped_by_wall_clock = not run_steps(simulation, options)
    except RunFailed as error:
        outcome.status, outcome.failure = "failed", str(error)
    except openmm.OpenMMException as error:
        outcome.status = "failed"
        outcome.failure = f"the run failed at step {simulation.currentStep}: {script_error_message(error)}"
    except KeyboardInterrupt:
        outcome.status = "interrupted"
    finally:
        outcome.seconds = time.perf_counter() - start
        close_reporters(simulation)
    if outcome.status == "completed":
        simulation.saveCheckpoint(str(paths["checkpoint"]))
    data = read_state_data(paths["state_data"])
    if options.plot and data:
        plot_state_data(data, paths)
    summary = summarize(simulation, options, data, outcome, paths)
    paths["summary"].write_text(json.dumps(asdict(summary), indent=2))
    if outcome.status == "interrupted":
        raise KeyboardInterrupt
    if outcome.status == "failed":
        saved = f"; {paths['checkpoint']} holds the last checkpoint before it" if paths["checkpoint"].exists() else ""
        raise RunFailed(f"{outcome.failure}. {paths['summary']} marks the run as failed{saved}")
    return summary
