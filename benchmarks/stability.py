"""NVE stability of an export: energy drift, excursions, timestep dependence, rotations, angular momentum.

For each molecule: Verlet NVE in OpenMM at each timestep (and in LAMMPS at 0.5 fs when the pair style
is built) from the same minimised structure and the same 300 K velocities (no centre-of-mass motion,
no rotation). Reported per run: the linear drift of the total energy (meV/atom/ps), its largest
excursion from the start (meV/atom), and the drift of the angular momentum, which a model that is
only approximately rotation invariant does not conserve exactly (its forces exert a net torque).
The energy spread over random rotations (meV/atom) is measured on the raw export, next to the
spread over translations, which is exact in exact arithmetic and so shows the float round-off floor.

    python -m benchmarks.stability [--model M] [--molecules ethanol,aspirin] [--duration-ps 10] [--quick]
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repository root
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import sys
import time
from pathlib import Path

import ase
import numpy as np
import torch

from benchmarks import engines, report, structures

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MOLECULES = ("ethanol", "aspirin")
DEFAULT_TIMESTEPS_FS = (0.25, 0.5, 1.0)
LAMMPS_TIMESTEP_FS = 0.5
BOLTZMANN_KJ_PER_MOL_K = 0.008314462618
NM_PER_ANGSTROM = 0.1


def default_model() -> Path:
    from benchmarks.speed import default_model as speed_default

    return speed_default()


# --------------------------------------------------------------------------------- initial state


def thermal_velocities(atoms: ase.Atoms, temperature_k: float, seed: int) -> np.ndarray:
    """Maxwell-Boltzmann velocities (Å/ps) without net linear or angular momentum, at exactly T (3N-6 dof)."""
    rng = np.random.default_rng(seed)
    masses = atoms.get_masses()[:, None]  # amu
    # sqrt(kJ/mol / amu) is nm/ps
    velocities = (
        rng.normal(size=atoms.positions.shape) * np.sqrt(BOLTZMANN_KJ_PER_MOL_K * temperature_k / masses) * 10.0
    )
    velocities = remove_rigid_motion(atoms.positions, masses[:, 0], velocities)
    kinetic = 0.5 * np.sum(masses * velocities**2) * 1e-2  # amu Å²/ps² -> kJ/mol
    dof = max(3 * len(atoms) - 6, 1)
    return velocities * np.sqrt(0.5 * dof * BOLTZMANN_KJ_PER_MOL_K * temperature_k / kinetic)


def remove_rigid_motion(positions: np.ndarray, masses: np.ndarray, velocities: np.ndarray) -> np.ndarray:
    """Velocities less the centre-of-mass velocity and the rigid rotation (v - ω × r)."""
    velocities = velocities - np.average(velocities, axis=0, weights=masses)
    centred = positions - np.average(positions, axis=0, weights=masses)
    inertia = np.einsum("i,ij,ik->jk", masses, centred, centred)
    inertia = np.trace(inertia) * np.eye(3) - inertia
    omega = np.linalg.lstsq(inertia, angular_momentum(centred, masses, velocities), rcond=None)[0]
    return velocities - np.cross(omega, centred)


def angular_momentum(positions: np.ndarray, masses: np.ndarray, velocities: np.ndarray) -> np.ndarray:
    """Σ m (r - r_cm) × v, in amu Å²/ps for Å and Å/ps."""
    centred = positions - np.average(positions, axis=0, weights=masses)
    return np.sum(masses[:, None] * np.cross(centred, velocities), axis=0)


def thermal_angular_momentum(atoms: ase.Atoms, temperature_k: float) -> float:
    """sqrt(kT · mean principal moment of inertia), amu Å²/ps: the scale of thermal rotation."""
    kt = BOLTZMANN_KJ_PER_MOL_K * temperature_k * 100.0  # kJ/mol -> amu Å²/ps²
    return float(np.sqrt(kt * np.mean(atoms.get_moments_of_inertia())))


def minimised(model: Path, atoms: ase.Atoms, iterations: int) -> ase.Atoms:
    """The structure after a short OpenMM minimisation under the model (the MD starts near a minimum)."""
    import openmm

    context, _ = engines.openmm_context(model, atoms, "CPU", 0.5)
    openmm.LocalEnergyMinimizer.minimize(context, 1.0, iterations)
    result = atoms.copy()
    result.positions = context.getState(getPositions=True).getPositions(asNumpy=True)._value / NM_PER_ANGSTROM
    return result


# ------------------------------------------------------------------------------------------ runs


def nve_openmm(
    model: Path, atoms: ase.Atoms, velocities: np.ndarray, timestep_fs: float, duration_ps: float, record_fs: float
) -> dict:
    """Verlet NVE on the OpenMM CPU platform; the trajectory of total energy (eV) and momenta (Å, ps units)."""
    import openmm.unit as unit

    context, adapter = engines.openmm_context(model, atoms, "CPU", timestep_fs)
    context.setVelocities(velocities * NM_PER_ANGSTROM)
    integrator, masses = context.getIntegrator(), atoms.get_masses()
    steps_per_record = max(1, round(record_fs / timestep_fs))
    records = max(1, round(duration_ps * 1000 / (steps_per_record * timestep_fs)))
    rows, error, start = [], None, time.perf_counter()
    for record in range(records + 1):
        if record:
            try:
                integrator.step(steps_per_record)
            except Exception as failure:  # NaN positions or an exploding structure: keep what ran
                error = f"{type(failure).__name__} at {rows[-1][0]:.3f} ps: {str(failure).strip()[-300:]}"
                break
        state = context.getState(getEnergy=True, getPositions=True, getVelocities=True)
        positions = state.getPositions(asNumpy=True).value_in_unit(unit.angstrom)
        velocity = state.getVelocities(asNumpy=True).value_in_unit(unit.angstrom / unit.picosecond)
        potential = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / engines.KJ_PER_MOL_PER_EV
        kinetic = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole) / engines.KJ_PER_MOL_PER_EV
        momentum = np.sum(masses[:, None] * velocity, axis=0)
        rows.append(
            [
                state.getTime().value_in_unit(unit.picosecond),
                potential,
                kinetic,
                potential + kinetic,
                *angular_momentum(positions, masses, velocity),
                *momentum,
            ]
        )
    trajectory = np.array(rows)
    return summarise(trajectory, len(atoms), "openmm-cpu", timestep_fs, error, time.perf_counter() - start, adapter)


def nve_lammps(
    model: Path, atoms: ase.Atoms, velocities: np.ndarray, elements: list[str], duration_ps: float, record_fs: float
) -> dict:
    """Verlet NVE in LAMMPS (one rank) at LAMMPS_TIMESTEP_FS, from the same state as OpenMM."""
    steps = round(duration_ps * 1000 / LAMMPS_TIMESTEP_FS)
    every = max(1, round(record_fs / LAMMPS_TIMESTEP_FS))
    start = time.perf_counter()
    result = engines.run_lammps(model, atoms, elements, [steps], 1, LAMMPS_TIMESTEP_FS, every, velocities)
    thermo = result["thermo"]  # step time pe ke etotal Lx Ly Lz
    trajectory = np.column_stack(
        [thermo[:, 1], thermo[:, 2], thermo[:, 3], thermo[:, 4], thermo[:, 5:8], np.full((len(thermo), 3), np.nan)]
    )
    return summarise(
        trajectory,
        len(atoms),
        "lammps-1",
        LAMMPS_TIMESTEP_FS,
        None,
        time.perf_counter() - start,
        "pair_style transformer",
    )


def summarise(
    trajectory: np.ndarray, atoms: int, engine: str, timestep_fs: float, error: str | None, seconds: float, adapter: str
) -> dict:
    """Drift and excursion of the total energy, and the momenta's drift, from a trajectory's columns:
    time ps, potential, kinetic, total (eV), angular momentum [3] (amu Å²/ps), linear momentum [3] (amu Å/ps)."""
    time_ps, total = trajectory[:, 0], trajectory[:, 3]
    per_atom = 1000.0 * (total - total[0]) / atoms  # meV/atom from the start
    fits = len(time_ps) >= 3
    angular = trajectory[:, 4:7] - trajectory[0, 4:7]
    linear = trajectory[:, 7:10] - trajectory[0, 7:10]
    return {
        "engine": engine,
        "adapter": adapter,
        "timestep_fs": timestep_fs,
        "simulated_ps": float(time_ps[-1] - time_ps[0]),
        "wall_s": seconds,
        "completed": error is None,
        "error": error,
        "drift_mev_per_atom_per_ps": float(np.polyfit(time_ps, per_atom, 1)[0]) if fits else None,
        "max_excursion_mev_per_atom": float(np.abs(per_atom).max()),
        "fluctuation_mev_per_atom": float(per_atom.std()),
        "mean_temperature_k": float(
            2 * trajectory[:, 2].mean() * engines.KJ_PER_MOL_PER_EV / (max(3 * atoms - 6, 1) * BOLTZMANN_KJ_PER_MOL_K)
        ),
        "angular_momentum_max_change": float(np.linalg.norm(angular, axis=1).max()),
        "angular_momentum_drift_per_ps": float(np.linalg.norm(np.polyfit(time_ps, angular, 1)[0])) if fits else None,
        "linear_momentum_max_change": None if np.isnan(linear).all() else float(np.linalg.norm(linear, axis=1).max()),
        "trajectory": {
            "time_ps": time_ps,
            "total_energy_mev_per_atom": per_atom,
            "angular_momentum_change": np.linalg.norm(angular, axis=1),
        },
    }


def rotation_spread(
    module: torch.jit.ScriptModule, atoms: ase.Atoms, dtype: torch.dtype, samples: int, seed: int
) -> dict:
    """Energy spread (max - min, meV/atom) over random rotations, and over random translations (round-off floor);
    the force equivariance error mean |F(Rx) - R F(x)| (meV/Å)."""
    rng = np.random.default_rng(seed)
    numbers = torch.tensor(atoms.numbers)
    centred = atoms.positions - atoms.positions.mean(0)

    def evaluate(positions: np.ndarray) -> tuple[float, np.ndarray]:
        energy, forces, _ = module(torch.tensor(positions, dtype=dtype), numbers, 0, 1)
        return float(energy.detach()), forces.detach().double().numpy()

    _, reference_forces = evaluate(centred)
    rotated, translated, force_errors = [], [], []
    for _ in range(samples):
        rotation = structures.random_rotation(rng)
        energy, forces = evaluate(centred @ rotation.T)
        rotated.append(energy)
        force_errors.append(np.abs(forces - reference_forces @ rotation.T).mean())
        translated.append(evaluate(centred + rng.uniform(-2.0, 2.0, size=3))[0])
    scale = 1000.0 / len(atoms)
    return {
        "rotations": samples,
        "rotation_spread_mev_per_atom": scale * (max(rotated) - min(rotated)),
        "rotation_std_mev_per_atom": scale * float(np.std(rotated)),
        "translation_spread_mev_per_atom": scale * (max(translated) - min(translated)),
        "force_equivariance_error_mev_per_angstrom": 1000.0 * float(np.mean(force_errors)),
    }


# ---------------------------------------------------------------------------------------- driver


def run_stability(
    model: str | Path | None = None,
    output: str | Path = ROOT / "benchmarks/results",
    molecules: list[str] | None = None,
    duration_ps: float | None = None,
    timesteps_fs: list[float] | None = None,
    temperature_k: float = 300.0,
    quick: bool = False,
    lammps: bool = True,
    seed: int = 0,
) -> dict:
    """Run every molecule and timestep, then write stability.json, stability.md and stability.png."""
    model = Path(model) if model else default_model()
    module, metadata = engines.load_module(model)
    settings = {
        "molecules": list(molecules or _default_molecules(metadata, quick)),
        "duration_ps": duration_ps or (0.2 if quick else 10.0),
        "timesteps_fs": list(timesteps_fs or DEFAULT_TIMESTEPS_FS),
        "temperature_k": temperature_k,
        "record_every_fs": 5.0 if quick else 10.0,
        "rotations": 10 if quick else 100,
        "minimisation_iterations": 50 if quick else 500,
        "quick": quick,
        "seed": seed,
    }
    skipped = {}
    if lammps and (reason := engines.lammps_unavailable_reason()):
        skipped["lammps-1"] = reason
    elif not lammps:
        skipped["lammps-1"] = "not requested"
    machine = report.machine_info()
    rows = [
        measure_molecule(model, module, metadata, name, settings, "lammps-1" not in skipped)
        for name in settings["molecules"]
    ]
    machine = report.finish(machine)
    results = {
        "benchmark": "stability",
        "machine": machine,
        "model": {"path": str(model), "parameters": metadata["parameters"], "dtype": metadata["dtype"]},
        "settings": settings,
        "skipped": skipped,
        "units": {"angular_momentum": "amu Å²/ps", "linear_momentum": "amu Å/ps"},
        "molecules": rows,
    }
    write_results(results, Path(output))
    return results


def _default_molecules(metadata: dict, quick: bool) -> list[str]:
    available = structures.molecules_for(metadata["atomic_numbers"])
    chosen = [name for name in DEFAULT_MOLECULES if name in available] or available[:1]
    return chosen[:1] if quick else chosen


def progress(molecule: str, run: dict) -> None:
    drift = run.get("drift_mev_per_atom_per_ps")
    summary = (
        f"failed: {run.get('error')}" if drift is None else f"drift {drift:.3g} meV/atom/ps in {run['wall_s']:.0f} s"
    )
    print(
        f"[stability {time.strftime('%H:%M:%S')}] {molecule} {run['engine']} {run['timestep_fs']} fs: {summary}",
        file=sys.stderr,
        flush=True,
    )


def measure_molecule(model: Path, module, metadata: dict, name: str, settings: dict, lammps: bool) -> dict:
    atoms = minimised(model, structures.structure(name, settings["seed"]), settings["minimisation_iterations"])
    velocities = thermal_velocities(atoms, settings["temperature_k"], settings["seed"])
    runs = []
    for timestep in settings["timesteps_fs"]:
        runs.append(
            nve_openmm(model, atoms, velocities, timestep, settings["duration_ps"], settings["record_every_fs"])
        )
        progress(name, runs[-1])
    if lammps:
        try:
            runs.append(
                nve_lammps(
                    model, atoms, velocities, metadata["elements"], settings["duration_ps"], settings["record_every_fs"]
                )
            )
        except Exception as error:  # report the failure next to the OpenMM numbers
            runs.append(
                {
                    "engine": "lammps-1",
                    "timestep_fs": LAMMPS_TIMESTEP_FS,
                    "completed": False,
                    "error": str(error)[-500:],
                }
            )
        progress(name, runs[-1])
    return {
        "molecule": name,
        "atoms": len(atoms),
        "thermal_angular_momentum": thermal_angular_momentum(atoms, settings["temperature_k"]),
        "rotation": rotation_spread(
            module, atoms, getattr(torch, metadata["dtype"]), settings["rotations"], settings["seed"]
        ),
        "runs": runs,
    }


# --------------------------------------------------------------------------------------- writing


def write_results(results: dict, output: Path) -> None:
    output.mkdir(parents=True, exist_ok=True)
    report.write_json(results, output / "stability.json")
    (output / "stability.md").write_text(markdown(results))
    plot(results, output)


def markdown(results: dict) -> str:
    fmt, settings = report.number, results["settings"]
    nve_rows, rotation_rows = [], []
    for molecule in results["molecules"]:
        for run in molecule["runs"]:
            if run.get("drift_mev_per_atom_per_ps") is None and not run.get("completed", False):
                nve_rows.append(
                    [
                        molecule["molecule"],
                        run["engine"],
                        run["timestep_fs"],
                        None,
                        None,
                        None,
                        None,
                        None,
                        f"failed: {run['error']}",
                    ]
                )
                continue
            nve_rows.append(
                [
                    molecule["molecule"],
                    run["engine"],
                    run["timestep_fs"],
                    f"{run['simulated_ps']:.2f}",
                    fmt(run["drift_mev_per_atom_per_ps"]),
                    fmt(run["max_excursion_mev_per_atom"]),
                    f"{run['mean_temperature_k']:.0f}",
                    f"{fmt(run['angular_momentum_max_change'])} / {fmt(molecule['thermal_angular_momentum'])}",
                    "ok" if run["completed"] else f"stopped: {run['error']}",
                ]
            )
        rotation = molecule["rotation"]
        rotation_rows.append(
            [
                molecule["molecule"],
                molecule["atoms"],
                fmt(rotation["rotation_spread_mev_per_atom"]),
                fmt(rotation["rotation_std_mev_per_atom"]),
                fmt(rotation["translation_spread_mev_per_atom"]),
                fmt(rotation["force_equivariance_error_mev_per_angstrom"]),
            ]
        )
    skipped = [f"- {name}: skipped, {reason}" for name, reason in results["skipped"].items()]
    return (
        "\n".join(
            [
                "# NVE stability of the exported model",
                "",
                report.machine_markdown(results["machine"]),
                "",
                f"Model `{results['model']['path']}` ({results['model']['dtype']}). Each molecule: a short minimisation under "
                f"the model, then {settings['temperature_k']:.0f} K Maxwell-Boltzmann velocities without net linear or angular "
                f"momentum, then Verlet NVE for {settings['duration_ps']} ps, sampled every {settings['record_every_fs']} fs. "
                "Drift: slope of a straight-line fit to the total energy; excursion: largest |E(t) - E(0)|. "
                "ΔL: largest change of the angular momentum (amu Å²/ps) over the thermal scale sqrt(kT·I): "
                "exact rotation invariance would keep it zero.",
                "",
                report.markdown_table(
                    [
                        "molecule",
                        "engine",
                        "dt (fs)",
                        "ps",
                        "drift (meV/atom/ps)",
                        "max excursion (meV/atom)",
                        "T (K)",
                        "ΔL / thermal L",
                        "status",
                    ],
                    nve_rows,
                    text_columns=2,
                ),
                "",
                "## Rotational invariance",
                "",
                f"Energy of the raw export over {results['settings']['rotations']} random rotations (and as many random "
                "translations, which the model treats exactly: their spread is the float round-off floor); force "
                "equivariance error mean |F(Rx) - R F(x)|.",
                "",
                report.markdown_table(
                    [
                        "molecule",
                        "atoms",
                        "rotation spread (meV/atom)",
                        "rotation std (meV/atom)",
                        "translation spread (meV/atom)",
                        "force error (meV/Å)",
                    ],
                    rotation_rows,
                ),
                *(["", "## Skipped", "", *skipped] if skipped else []),
            ]
        )
        + "\n"
    )


def plot(results: dict, output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    molecules = results["molecules"]
    figure, axes = plt.subplots(len(molecules), 2, figsize=(11, 3.4 * len(molecules)), squeeze=False)
    for (energy_axes, momentum_axes), molecule in zip(axes, molecules):
        for run in molecule["runs"]:
            if "trajectory" not in run:
                continue
            label = f"{run['engine']} {run['timestep_fs']} fs"
            trajectory = run["trajectory"]
            energy_axes.plot(trajectory["time_ps"], trajectory["total_energy_mev_per_atom"], label=label, lw=0.8)
            momentum_axes.plot(trajectory["time_ps"], trajectory["angular_momentum_change"], label=label, lw=0.8)
        energy_axes.set(
            xlabel="time (ps)", ylabel="E(t) - E(0) (meV/atom)", title=f"{molecule['molecule']}: total energy (NVE)"
        )
        momentum_axes.set(
            xlabel="time (ps)", ylabel="|L(t) - L(0)| (amu Å²/ps)", title=f"{molecule['molecule']}: angular momentum"
        )
        energy_axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(output / "stability.png", dpi=120)
    plt.close(figure)


def parse_floats(text: str) -> list[float]:
    return [float(value) for value in text.split(",") if value.strip()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="export to simulate (default: as in speed.py)")
    parser.add_argument(
        "-o", "--output", type=Path, default=ROOT / "benchmarks/results", help="directory for stability.json/.md/.png"
    )
    parser.add_argument("--molecules", default=None, help="comma-separated molecule names or structure files")
    parser.add_argument("--duration-ps", type=float, default=None, help="NVE length per run (default 10 ps; quick 0.2)")
    parser.add_argument(
        "--timesteps-fs", type=parse_floats, default=None, help="comma-separated timesteps (default 0.25,0.5,1)"
    )
    parser.add_argument("--temperature-k", type=float, default=300.0, help="initial temperature")
    parser.add_argument("--no-lammps", action="store_true", help="OpenMM only")
    parser.add_argument("--quick", action="store_true", help="one molecule, 0.2 ps: checks the pipeline")
    args = parser.parse_args(argv)
    molecules = args.molecules.split(",") if args.molecules else None
    run_stability(
        args.model,
        args.output,
        molecules,
        args.duration_ps,
        args.timesteps_fs,
        args.temperature_k,
        args.quick,
        not args.no_lammps,
    )
    print((Path(args.output) / "stability.md").read_text())


if __name__ == "__main__":
    main()
