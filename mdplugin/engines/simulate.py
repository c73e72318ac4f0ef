"""Molecular dynamics with a model in OpenMM: structure in, trajectory, energies and a summary out.

`simulate(RunOptions(...))` reads a structure (PDB, XYZ/extxyz or a SMILES string), builds an all-ML
System, minimises, draws velocities, runs NVT (Langevin middle) or NVE (velocity Verlet) and writes
next to an output prefix: PREFIX.csv (state data), PREFIX.dcd|.xtc|.pdb (trajectory),
PREFIX-topology.pdb (the starting structure, to read the trajectory with), PREFIX.chk (checkpoint),
PREFIX-summary.json, and with `plot` PREFIX-energy.png and PREFIX-temperature.png.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import torch
from openmm import unit

from mdplugin.engines.openmm_force import KJ_PER_MOL_PER_EV, create_system

TRAJECTORY_FORMATS = ("dcd", "xtc", "pdb")
PRECISIONS = ("single", "mixed", "double")
# what the platforms without a Precision property compute in (accepting --precision saying so)
FIXED_PRECISION = {"Reference": "double", "CPU": "mixed"}


@dataclass
class RunOptions:
    structure: str  # a PDB or XYZ/extxyz file, or a SMILES string
    model: str  # an export or a checkpoint
    output: str = "md"  # prefix of the output files; its folder is created
    ensemble: str = "nvt"  # nvt: Langevin middle integrator; nve: velocity Verlet
    steps: int = 1000
    timestep_fs: float = 0.5
    temperature_k: float = 300.0
    friction_per_ps: float = 1.0
    platform: str = "CPU"
    precision: str | None = None  # single, mixed or double where the platform has a choice
    seed: int | None = None  # velocities, Langevin noise and SMILES embedding; None: random
    charge: int | None = None  # None: the SMILES formal charge, extxyz info['charge'], or 0
    multiplicity: int = 1
    report_interval: int = 100
    checkpoint_interval: int = 1000
    trajectory_format: str = "dcd"
    minimize: bool = True
    restart: str | None = None  # a checkpoint of an earlier run to continue from
    threads: int | None = None  # CPU threads for torch; None: torch's choice
    plot: bool = False
    overwrite: bool = False
    progress: bool = True


@dataclass
class Summary:
    atoms: int
    ensemble: str
    platform: str
    steps: int  # run by this call
    final_step: int
    simulated_ps: float  # by this call
    wall_seconds: float
    ns_per_day: float
    mean_temperature_k: float | None  # over all state-data rows of the run, restarts included; None: no rows
    energy_drift_mev_per_atom_ps: float | None  # NVE with 2+ rows: slope of a linear fit of the total energy
    final_potential_energy_ev: float
    files: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- input


def read_structure(structure: str, seed: int | None = None) -> tuple[app.Topology, unit.Quantity, int | None]:
    """Topology, positions (nm) and the charge the input implies (None where it says nothing)."""
    path = Path(structure)
    if path.is_file():
        if path.suffix.lower() in (".pdb", ".ent"):
            pdb = app.PDBFile(str(path))
            return pdb.topology, pdb.positions, None
        return _read_with_ase(path)
    if path.suffix.lower() in (".pdb", ".xyz", ".extxyz", ".cif", ".sdf", ".mol2"):
        raise FileNotFoundError(f"structure file {path} does not exist")
    return _embed_smiles(structure, seed)


def _read_with_ase(path: Path) -> tuple[app.Topology, unit.Quantity, int | None]:
    import ase.io

    try:
        atoms = ase.io.read(str(path))
    except Exception as error:  # ase raises many kinds for a file it cannot parse
        raise ValueError(f"cannot read {path} as a structure ({error}); use PDB or XYZ/extxyz") from None
    topology = topology_from_symbols(atoms.get_chemical_symbols())
    if atoms.pbc.any():
        topology.setPeriodicBoxVectors(atoms.cell.array * 0.1)  # Å -> nm
    charge = atoms.info.get("charge")
    return topology, unit.Quantity(atoms.positions * 0.1, unit.nanometer), None if charge is None else int(charge)


def _embed_smiles(smiles: str, seed: int | None) -> tuple[app.Topology, unit.Quantity, int]:
    from rdkit import Chem, RDLogger
    from rdkit.Chem import AllChem

    RDLogger.DisableLog("rdApp.*")
    molecule = Chem.MolFromSmiles(smiles)
    if molecule is None:
        raise ValueError(f"{smiles!r} is neither an existing structure file nor a valid SMILES string")
    molecule = Chem.AddHs(molecule)
    parameters = AllChem.ETKDGv3()
    parameters.randomSeed = 42 if seed is None else seed
    if AllChem.EmbedMolecule(molecule, parameters) != 0:
        raise ValueError(f"RDKit could not generate 3D coordinates for {smiles!r} (ETKDG embedding failed)")
    topology = topology_from_symbols([atom.GetSymbol() for atom in molecule.GetAtoms()])
    atoms = list(topology.atoms())
    for bond in molecule.GetBonds():
        topology.addBond(atoms[bond.GetBeginAtomIdx()], atoms[bond.GetEndAtomIdx()])
    positions = molecule.GetConformer().GetPositions() * 0.1  # Å -> nm
    return topology, unit.Quantity(positions, unit.nanometer), Chem.GetFormalCharge(molecule)


def topology_from_symbols(symbols: list[str]) -> app.Topology:
    """One chain, one residue 'MOL', atoms named by element and count (C1, H1, H2, ...)."""
    topology = app.Topology()
    residue = topology.addResidue("MOL", topology.addChain())
    counts: dict[str, int] = {}
    for symbol in symbols:
        counts[symbol] = counts.get(symbol, 0) + 1
        topology.addAtom(f"{symbol}{counts[symbol]}"[:4], app.Element.getBySymbol(symbol), residue)
    return topology


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
    if options.ensemble != "nvt":
        raise ValueError(f"unknown ensemble {options.ensemble!r}; use nvt or nve")
    integrator = openmm.LangevinMiddleIntegrator(
        options.temperature_k * unit.kelvin, options.friction_per_ps / unit.picosecond, timestep
    )
    if options.seed is not None:
        integrator.setRandomNumberSeed(options.seed)
    return integrator


def output_paths(options: RunOptions) -> dict[str, Path]:
    prefix = Path(options.output)
    paths = {
        "state_data": prefix.with_name(prefix.name + ".csv"),
        "trajectory": prefix.with_name(f"{prefix.name}.{options.trajectory_format}"),
        "topology": prefix.with_name(prefix.name + "-topology.pdb"),
        "checkpoint": prefix.with_name(prefix.name + ".chk"),
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
    continued = {"state_data", "topology", "checkpoint", "summary", "energy_plot", "temperature_plot"}
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


def add_reporters(simulation: app.Simulation, options: RunOptions, paths: dict[str, Path]) -> None:
    interval = options.report_interval
    append_csv = bool(options.restart) and paths["state_data"].exists() and not options.overwrite
    simulation.reporters.append(
        app.StateDataReporter(
            str(paths["state_data"]), interval, step=True, time=True, potentialEnergy=True, kineticEnergy=True,
            totalEnergy=True, temperature=True, speed=True, append=append_csv,
        )
    )  # fmt: skip
    trajectory = paths["trajectory"]
    append = bool(options.restart) and trajectory.exists() and not options.overwrite
    if options.trajectory_format == "dcd":
        simulation.reporters.append(app.DCDReporter(str(trajectory), interval, append=append))
    elif options.trajectory_format == "xtc":
        simulation.reporters.append(app.XTCReporter(str(trajectory), interval, append=append))
    else:
        simulation.reporters.append(app.PDBReporter(str(trajectory), interval))
    simulation.reporters.append(app.CheckpointReporter(str(paths["checkpoint"]), options.checkpoint_interval))


def build_simulation(options: RunOptions) -> tuple[app.Simulation, int]:
    """The Simulation (at its starting state) and the number of atoms."""
    topology, positions, implied_charge = read_structure(options.structure, options.seed)
    charge = options.charge if options.charge is not None else (implied_charge or 0)
    platform, properties = get_platform(options.platform, options.precision)
    dtype, device = model_dtype_and_device(platform, options.precision)
    system = create_system(options.model, topology, charge, options.multiplicity, dtype=dtype, device=device)
    simulation = app.Simulation(topology, system, create_integrator(options), platform, properties)
    if options.restart:
        _load_checkpoint(simulation, options.restart)
    else:
        simulation.context.setPositions(positions)
    return simulation, topology.getNumAtoms()


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


def prepare_state(simulation: app.Simulation, options: RunOptions, topology_path: Path) -> None:
    """Minimise and draw velocities (a restart has its state already); write the starting structure."""
    if not options.restart:
        if options.minimize:
            simulation.minimizeEnergy()
        seed = () if options.seed is None else (options.seed,)
        simulation.context.setVelocitiesToTemperature(options.temperature_k * unit.kelvin, *seed)
    if not (options.restart and topology_path.exists()):
        positions = simulation.context.getState(getPositions=True).getPositions()
        with open(topology_path, "w") as handle:
            app.PDBFile.writeFile(simulation.topology, positions, handle)


# ---------------------------------------------------------------------------------------------- run


def run_steps(simulation: app.Simulation, options: RunOptions) -> float:
    """Advance `options.steps` steps with a progress bar; returns the wall time in seconds."""
    from tqdm import tqdm

    chunk = max(1, options.report_interval)
    start = time.perf_counter()
    with tqdm(total=options.steps, unit="step", disable=not options.progress, dynamic_ncols=True, leave=False) as bar:
        done = 0
        while done < options.steps:
            count = min(chunk, options.steps - done)
            simulation.step(count)
            done += count
            bar.update(count)
            bar.set_postfix(ns_per_day=f"{ns_per_day(done, options.timestep_fs, time.perf_counter() - start):.2f}")
    return time.perf_counter() - start


def ns_per_day(steps: int, timestep_fs: float, seconds: float) -> float:
    return steps * timestep_fs * 1e-6 / max(seconds, 1e-12) * 86400.0


def read_state_data(path: Path) -> dict[str, np.ndarray]:
    """The StateDataReporter CSV as columns keyed by their header ('Step', 'Time (ps)', ...).

    Rows repeated after a restart from an earlier checkpoint keep their latest values."""
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


def summarize(
    simulation: app.Simulation,
    options: RunOptions,
    data: dict[str, np.ndarray],
    atoms: int,
    seconds: float,
    paths: dict[str, Path],
) -> Summary:
    drift = None
    if options.ensemble == "nve" and data:
        drift = energy_drift(data["Time (ps)"], data["Total Energy (kJ/mole)"], atoms)
    energy = simulation.context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    return Summary(
        atoms=atoms,
        ensemble=options.ensemble,
        platform=simulation.context.getPlatform().getName(),
        steps=options.steps,
        final_step=simulation.currentStep,
        simulated_ps=options.steps * options.timestep_fs * 1e-3,
        wall_seconds=seconds,
        ns_per_day=ns_per_day(options.steps, options.timestep_fs, seconds),
        mean_temperature_k=float(np.mean(data["Temperature (K)"])) if data else None,
        energy_drift_mev_per_atom_ps=drift,
        final_potential_energy_ev=energy / KJ_PER_MOL_PER_EV,
        files={key: str(path) for key, path in paths.items()},
    )


def simulate(options: RunOptions) -> Summary:
    """Run MD as `options` say and write the outputs; returns the summary (also in PREFIX-summary.json)."""
    if options.steps < 1 or options.report_interval < 1 or options.checkpoint_interval < 1:
        raise ValueError("--steps, --report-interval and --checkpoint-interval must be positive")
    paths = output_paths(options)
    check_outputs(options, paths)
    Path(options.output).parent.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    if options.threads is not None:
        torch.set_num_threads(options.threads)
    try:
        simulation, atoms = build_simulation(options)
        prepare_state(simulation, options, paths["topology"])
        add_reporters(simulation, options, paths)
        seconds = run_steps(simulation, options)
        simulation.saveCheckpoint(str(paths["checkpoint"]))
        simulation.reporters.clear()  # the reporters close their files when released
    finally:
        torch.set_num_threads(threads)
    data = read_state_data(paths["state_data"])
    summary = summarize(simulation, options, data, atoms, seconds, paths)
    if options.plot and data:
        plot_state_data(data, paths)
    paths["summary"].write_text(json.dumps(asdict(summary), indent=2))
    return summary
