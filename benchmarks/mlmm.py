"""ML/MM in water: alanine dipeptide computed by the model, amber14/TIP3P water around it, NPT; and the
same run with amber14 computing the dipeptide too.

Both runs start from the same solvated box (`examples/mlmm/alanine-dipeptide.pdb`, OpenMM's Modeller,
1 nm padding), minimise, draw velocities with the same seed and run Langevin middle (1/ps) with a
Monte Carlo barostat (1 bar, every 25 steps) at 300 K. The ML/MM run is `mdplugin run --solvate`
(mechanical embedding: the model computes the dipeptide, flexible; amber14 the water, rigid, and the
dipeptide-water interactions, PME); the all-MM run is amber14 with bonds to hydrogen constrained.
Reported: density, temperature, the energy traces, the dipeptide's phi/psi distribution (mdtraj) with
the populations of its basins, and whether the ML molecule stayed intact.

    python -m benchmarks.mlmm [--model M] [--duration-ps 100] [--timestep-fs 1] [--quick]

Trajectories go to runs/mlmm-benchmark/ (not committed); numbers and plots to benchmarks/results/mlmm/.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repository root
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import json
import os
import time
from functools import partial
from pathlib import Path

import numpy as np

from benchmarks import report

ROOT = Path(__file__).resolve().parent.parent
DIPEPTIDE = ROOT / "examples" / "mlmm" / "alanine-dipeptide.pdb"
DEFAULT_MODEL = ROOT / "examples" / "models" / "dipeptide-export.pt"
PADDING_NM = 1.0
CUTOFF_NM = 0.9  # the 2 nm box of 1 nm padding allows at most 1.0
TEMPERATURE_K = 300.0
SEED = 2026
BLOCKS = 5  # basin populations' standard errors from this many consecutive blocks
# basins of the alanine dipeptide's Ramachandran plot (degrees): the usual coarse division
BASINS = {
    "beta/PPII (phi<0, psi>50 or psi<-120)": lambda phi, psi: (phi < 0) & ((psi > 50) | (psi < -120)),
    "alpha_R (phi<0, -120<psi<50)": lambda phi, psi: (phi < 0) & (psi >= -120) & (psi <= 50),
    "alpha_L / C7ax (phi>0)": lambda phi, psi: phi >= 0,
}


def run_options(model: Path, output: Path, steps: int, timestep_fs: float, report_interval: int):
    from mdplugin.md.simulate import RunOptions

    return RunOptions(
        structure=str(DIPEPTIDE),
        model=str(model),
        output=str(output),
        ensemble="npt",
        steps=steps,
        timestep_fs=timestep_fs,
        temperature_k=TEMPERATURE_K,
        seed=SEED,
        report_interval=report_interval,
        checkpoint_interval=max(steps, 1),
        solvate_nm=PADDING_NM,
        nonbonded_cutoff_nm=CUTOFF_NM,
        threads=1,
        domain_check="warn",
        overwrite=True,
        progress=False,
    )


def run_mlmm(options) -> dict:
    from mdplugin.md.simulate import simulate

    start = time.perf_counter()
    summary = simulate(options)
    return {"wall_seconds": time.perf_counter() - start, "ns_per_day": summary.ns_per_day,
            "ml_atoms": summary.ml_atoms, "atoms": summary.atoms,
            "closest_distance_ratio": summary.closest_distance_ratio, "closest_pair": summary.closest_pair}  # fmt: skip


def run_all_mm(options, flexible: bool = False) -> dict:
    """The same box, integrator, barostat, seed and reporters, with amber14 for the dipeptide too (`flexible`:
    no constraints on it, as the ML/MM run's; the water rigid in both)."""
    import openmm
    import openmm.app as app
    from openmm import unit

    from mdplugin.md import simulate as md
    from mdplugin.md.mlmm import MLRegion, create_mm_system, load_forcefield, solvate
    from mdplugin.md.reporters import DCDReporter, StateReporter
    from mdplugin.md.structure_input import read_structure

    topology, positions, _ = read_structure(options.structure)
    forcefield = load_forcefield(options.forcefield)
    topology, positions = solvate(topology, positions, forcefield, options)
    system = create_mm_system(MLRegion([], forcefield, "none"), topology, options, None if flexible else app.HBonds)
    system.addForce(md.create_barostat(options))
    platform, properties = md.get_platform(options.platform, None)
    simulation = app.Simulation(topology, system, md.create_integrator(options), platform, properties)
    simulation.context.setPositions(positions)
    paths = md.output_paths(options)
    paths["state_data"].parent.mkdir(parents=True, exist_ok=True)
    md.prepare_state(simulation, options, paths["topology"])
    simulation.reporters += [
        StateReporter(paths["state_data"], options.report_interval, system, "npt", options.temperature_k, True),
        DCDReporter(paths["trajectory"], options.report_interval),
    ]
    start = time.perf_counter()
    simulation.step(options.steps)
    seconds = time.perf_counter() - start
    md.close_reporters(simulation)
    energy = simulation.context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert np.isfinite(energy), "the all-MM run blew up"
    del openmm
    return {"wall_seconds": seconds, "ns_per_day": md.ns_per_day(options.steps, options.timestep_fs, seconds),
            "ml_atoms": 0, "atoms": topology.getNumAtoms()}  # fmt: skip


def analyse(prefix: Path, skip_fraction: float) -> dict:
    """Density, temperature and energies after the first `skip_fraction` of the run; phi/psi; bonds."""
    import mdtraj

    from mdplugin.md.simulate import read_state_data

    data = read_state_data(Path(f"{prefix}.csv"))
    time_ps = data["Time (ps)"]
    kept = time_ps > skip_fraction * time_ps[-1]
    trajectory = mdtraj.load(f"{prefix}.dcd", top=f"{prefix}-topology.pdb")
    _, phi = mdtraj.compute_phi(trajectory)
    _, psi = mdtraj.compute_psi(trajectory)
    phi, psi = np.degrees(phi[:, 0]), np.degrees(psi[:, 0])
    frames = np.arange(trajectory.n_frames) >= skip_fraction * trajectory.n_frames
    dipeptide = trajectory.topology.select("resname ACE ALA NME")
    bonds = np.array([[b.atom1.index, b.atom2.index] for b in trajectory.topology.bonds
                      if b.atom1.index in dipeptide and b.atom2.index in dipeptide])  # fmt: skip
    lengths = mdtraj.compute_distances(trajectory, bonds, periodic=True)  # nm
    stretch = lengths / lengths[0]
    # heavy atoms more than two bonds apart: a close contact there is a collapsed molecule, not a bond
    heavy = [i for i in dipeptide if trajectory.topology.atom(i).element.symbol != "H"]
    bonded: dict[int, set[int]] = {int(i): set() for i in dipeptide}
    for i, j in bonds.tolist():
        bonded[i].add(j)
        bonded[j].add(i)
    near = {(i, j) for i in bonded for j in bonded[i] | {k for m in bonded[i] for k in bonded[m]}}
    apart = [(i, j) for n, i in enumerate(heavy) for j in heavy[n + 1 :] if (i, j) not in near]
    contacts = mdtraj.compute_distances(trajectory, apart, periodic=True).min(axis=1) * 10.0  # Å
    populations = {name: float(np.mean(inside(phi[frames], psi[frames]))) for name, inside in BASINS.items()}
    blocks = np.array_split(np.flatnonzero(frames), BLOCKS)  # block averages: correlated frames, honest errors
    errors = {name: float(np.std([np.mean(inside(phi[b], psi[b])) for b in blocks], ddof=1) / np.sqrt(BLOCKS))
              for name, inside in BASINS.items()}  # fmt: skip
    return {
        "time_ps": time_ps,
        "potential_energy_kj": data["Potential Energy (kJ/mole)"],
        "total_energy_kj": data["Total Energy (kJ/mole)"],
        "temperature_k_trace": data["Temperature (K)"],
        "density_trace": data["Density (g/mL)"],
        "density_g_per_ml": float(np.mean(data["Density (g/mL)"][kept])),
        "density_std": float(np.std(data["Density (g/mL)"][kept])),
        "temperature_k": float(np.mean(data["Temperature (K)"][kept])),
        "temperature_std": float(np.std(data["Temperature (K)"][kept])),
        "phi_deg": phi,
        "psi_deg": psi,
        "basin_populations": populations,
        "basin_population_errors": errors,
        "frames_analysed": int(frames.sum()),
        "bond_stretch_range": [float(stretch.min()), float(stretch.max())],
        "longest_bond_nm": float(lengths.max()),
        "closest_nonbonded_heavy_atoms_angstrom": contacts,
        "closest_contact_median_angstrom": float(np.median(contacts[frames])),
        "frames_with_contact_below_2_angstrom": float(np.mean(contacts[frames] < 2.0)),
    }


def plot(results: dict, output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    figure, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 4.4), sharey=True)
    for axis, (name, run) in zip(np.atleast_1d(axes), runs.items()):
        axis.hist2d(run["phi_deg"], run["psi_deg"], bins=36, range=[[-180, 180], [-180, 180]], cmap="viridis")
        axis.set(title=name, xlabel="phi (°)", xlim=(-180, 180), ylim=(-180, 180))
    np.atleast_1d(axes)[0].set_ylabel("psi (°)")
    figure.tight_layout()
    figure.savefig(output / "ramachandran.png", dpi=110)
    plt.close(figure)

    figure, axes = plt.subplots(3, 1, figsize=(7, 8), sharex=True)
    for name, run in runs.items():
        axes[0].plot(run["time_ps"], run["potential_energy_kj"] / 96.48533212, label=name)
        axes[1].plot(run["time_ps"], run["density_trace"], label=name)
        axes[2].plot(run["time_ps"], run["temperature_k_trace"], label=name)
    axes[0].set(ylabel="potential energy (eV)")
    axes[1].set(ylabel="density (g/mL)")
    axes[2].set(ylabel="temperature (K)", xlabel="time (ps)")
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(output / "energy-density-temperature.png", dpi=110)
    plt.close(figure)


def markdown(results: dict) -> str:
    runs = results["runs"]
    rows = []
    for name, run in runs.items():
        rows.append([
            name, run["atoms"], run["ml_atoms"], report.number(run["ns_per_day"], 3),
            f"{run['density_g_per_ml']:.4f} ± {run['density_std']:.4f}",
            f"{run['temperature_k']:.1f} ± {run['temperature_std']:.1f}",
            *(f"{100 * p:.1f} ± {100 * run.get('basin_population_errors', {}).get(name, np.nan):.1f}%"
              for name, p in run["basin_populations"].items()),
            f"{run['bond_stretch_range'][0]:.2f}–{run['bond_stretch_range'][1]:.2f}",
            f"{run['closest_contact_median_angstrom']:.2f} ({100 * run['frames_with_contact_below_2_angstrom']:.0f}%)",
        ])  # fmt: skip
    header = ["run", "atoms", "model atoms", "ns/day", "density (g/mL)", "T (K)",
              *(name.split(" (")[0] for name in BASINS), "dipeptide bond length / start",
              "closest non-bonded heavy atoms, median Å (frames < 2 Å)"]  # fmt: skip
    settings = results["settings"]
    return "\n\n".join([
        "# ML/MM: alanine dipeptide in TIP3P water, NPT",
        f"{settings['duration_ps']:g} ps of NPT per run ({settings['steps']} steps of {settings['timestep_fs']:g} fs, "
        f"300 K, 1 bar, Monte Carlo barostat every 25 steps, Langevin middle 1/ps), from the same box: "
        f"`{DIPEPTIDE.relative_to(ROOT)}` in TIP3P with {PADDING_NM:g} nm padding ({runs[next(iter(runs))]['atoms']} "
        f"atoms), PME with a {CUTOFF_NM:g} nm cutoff, CPU platform. Model: `{settings['model']}`. Averages and "
        f"Ramachandran populations over the last {100 * (1 - settings['skip_fraction']):.0f}% of each run "
        f"({runs[next(iter(runs))]['frames_analysed']} frames, one every {settings['report_interval']} steps).",
        report.markdown_table(header, rows),
        "Basins: beta/PPII = phi < 0 and psi > 50° or psi < -120°; alpha_R = phi < 0, -120° ≤ psi ≤ 50°; "
        "alpha_L/C7ax = phi > 0. The last column is the shortest distance between heavy atoms of the "
        "dipeptide more than two bonds apart (its two carbonyl oxygens are about 3 Å apart or more in a "
        "sound molecule): below 2 Å the molecule has collapsed. Populations ± the standard error of "
        f"{BLOCKS} consecutive blocks. The ML/MM dipeptide is flexible (openmm-ml frees the ML region's "
        "constraints), the all-MM one "
        + ("too (no constraints on it)" if settings.get("flexible_mm") else "has its bonds to hydrogen constrained")
        + "; the water is rigid in both.",
        "![Ramachandran](ramachandran.png)\n\n![energy, density, temperature](energy-density-temperature.png)",
        "Where each run ran: " + "; ".join(
            f"{name}: {run['machine']['cpu']}, {run['machine']['logical_cores']} cores, finished "
            f"{run['machine']['date']}, cores busy with other work after it {run['machine']['busy_cores_end'] or 0:.1f}"
            for name, run in runs.items()
        ) + ".",
        report.machine_markdown(results["machine"]),
        "Reproduce: `" + results["command"] + "`",
    ]) + "\n"  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--duration-ps", type=float, default=100.0)
    parser.add_argument("--timestep-fs", type=float, default=1.0)
    parser.add_argument("--report-interval", type=int, default=100, help="steps between rows and frames")
    parser.add_argument("--skip-fraction", type=float, default=0.1, help="equilibration left out of averages")
    parser.add_argument("--runs", default="runs/mlmm-benchmark", type=Path, help="where trajectories go")
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "benchmarks" / "results" / "mlmm")
    parser.add_argument("--quick", action="store_true", help="0.2 ps: checks the pipeline, numbers mean nothing")
    parser.add_argument("--openmm-threads", type=int, default=None, help="CPU platform threads [OpenMM's choice]")
    parser.add_argument("--only", choices=("ML/MM", "all-MM"), default=None, help="run one of the two and stop")
    parser.add_argument("--reuse", action="store_true", help="reuse a finished run of the same length in --runs")
    parser.add_argument("--flexible-mm", action="store_true", help="all-MM without constraints on the dipeptide")
    arguments = parser.parse_args(argv)
    if arguments.openmm_threads:
        os.environ["OPENMM_CPU_THREADS"] = str(arguments.openmm_threads)
    import torch

    torch.set_num_threads(1)
    duration = 0.2 if arguments.quick else arguments.duration_ps
    steps = int(round(duration * 1000 / arguments.timestep_fs))
    interval = min(arguments.report_interval, max(steps // 4, 1))
    machine = report.machine_info()
    results = {
        "settings": {
            "model": str(arguments.model),
            "duration_ps": duration,
            "steps": steps,
            "timestep_fs": arguments.timestep_fs,
            "report_interval": interval,
            "skip_fraction": arguments.skip_fraction,
            "flexible_mm": arguments.flexible_mm,
        },  # fmt: skip
        "command": "python -m benchmarks.mlmm " + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
        "runs": {},
    }
    all_mm = partial(run_all_mm, flexible=arguments.flexible_mm)
    for name, runner in (("ML/MM", run_mlmm), ("all-MM", all_mm)):
        if arguments.only not in (None, name):
            continue
        prefix = arguments.runs / name.replace("/", "").lower()
        options = run_options(arguments.model, prefix, steps, arguments.timestep_fs, interval)
        timing = Path(f"{prefix}-timing.json")  # what a later --reuse needs: the run's cost and settings
        record = {"steps": steps, "timestep_fs": arguments.timestep_fs, "report_interval": interval,
                  **({"flexible": True} if name == "all-MM" and arguments.flexible_mm else {})}  # fmt: skip
        if arguments.reuse and timing.is_file() and json.loads(timing.read_text())["record"] == record:
            outcome = json.loads(timing.read_text())["outcome"]
            print(f"{name}: reusing {prefix} ({outcome['wall_seconds']:.0f} s when it ran)", flush=True)
        else:
            print(f"{name}: {steps} steps ...", flush=True)
            outcome = {**runner(options), "machine": report.finish(report.machine_info())}
            timing.write_text(json.dumps({"record": record, "outcome": outcome}, indent=2))
            print(f"{name}: {outcome['wall_seconds']:.0f} s, {outcome['ns_per_day']:.2f} ns/day", flush=True)
        results["runs"][name] = {**outcome, **analyse(prefix, arguments.skip_fraction)}
    if arguments.only:
        return results
    results["machine"] = report.finish(machine)
    arguments.output.mkdir(parents=True, exist_ok=True)
    report.write_json(results, arguments.output / "mlmm.json")
    plot(results, arguments.output)
    (arguments.output / "README.md").write_text(markdown(results))
    print((arguments.output / "README.md").read_text())
    return results


if __name__ == "__main__":
    main()
