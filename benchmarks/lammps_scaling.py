"""Strong and weak scaling of `pair_style transformer` with a local model over MPI ranks.

A periodic box of water-like molecules (randomly oriented on a cubic grid at about liquid density)
is run in NVE with the wheel's `lmp` under mpich's `mpirun`, one libtorch thread per rank. For each
local model (interaction range x depth; random weights, the speed does not depend on them) this
records the median `Loop time` per step, the speed-up and parallel efficiency, and the atoms each
rank hands the model (owned + ghost atoms, which the ghost range receptive_field + skin sets): the
(s + 2G)^3 / s^3 overhead that bounds the speed-up of ghost-shell domain decomposition (the model
updates fewer of them in each later block: `benchmarks/lammps_projection.py`). The potential energy
at step 0 of every rank count is recorded too; it must agree.

Strong scaling: the same box on 1 and 2 ranks. Weak scaling: the atoms per rank fixed, the box
repeated along x for each rank (`processors P 1 1`): 1 rank with N atoms against P ranks with P N.
Each run records the cores other processes kept busy just before it (the machine is shared); the
CPU time per rank (wall time x LAMMPS's `% CPU use`) says how the work per rank changed whatever
CPU the ranks were given.

    python -m benchmarks.lammps_scaling [--molecules-per-edge 10] [--models 3.0x2,3.0x4,4.0x3] [--ranks 1,2]
                                        [--weak-ranks 2]
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repository root
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import os
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import ase
import numpy as np
import torch

from benchmarks import engines, report

ROOT = Path(__file__).resolve().parent.parent
TIMESTEP_FS = 0.5
SKIN = 1.0  # Å: neighbor skin (LAMMPS's metal default is 2 Å; 1 Å keeps the ghost shell thinner)
LOOP_TIME = re.compile(r"Loop time of ([0-9.eE+-]+) on (\d+) procs for (\d+) steps with (\d+) atoms")
CPU_USE = re.compile(r"([0-9.]+)% CPU use with (\d+) MPI tasks")
# `timer full`: Pair | min | avg | max | %varavg | %CPU | %total (times in s over the run, over ranks)
PAIR_TIMES = re.compile(r"^Pair\s+\|\s+(\S+)\s+\|\s+(\S+)\s+\|\s+(\S+)\s+\|\s+\S+\s+\|\s+(\S+)\s+\|", re.MULTILINE)


def water_box(
    molecules_per_edge: int, seed: int = 0, spacing: float = 3.1, repeats_x: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions (Å), atomic numbers and box lengths (Å) of randomly oriented water molecules: a cube of
    molecules_per_edge^3, repeated `repeats_x` times along x (each copy oriented afresh)."""
    rng = np.random.default_rng(seed)
    angle = np.deg2rad(104.52)
    molecule = np.array([[0.0, 0.0, 0.0], [0.9572, 0.0, 0.0], [0.9572 * np.cos(angle), 0.9572 * np.sin(angle), 0.0]])
    edge = range(molecules_per_edge)
    along_x = range(molecules_per_edge * repeats_x)
    positions = []
    for site in np.array([[a, b, c] for a in along_x for b in edge for c in edge], dtype=float) * spacing:
        rotation = np.linalg.qr(rng.normal(size=(3, 3)))[0]
        positions.extend(site + molecule @ rotation.T + rng.normal(0.0, 0.05, 3))
    lengths = np.array([repeats_x, 1, 1]) * molecules_per_edge * spacing
    return np.array(positions) % lengths, np.array([8, 1, 1] * len(along_x) * molecules_per_edge**2), lengths


def write_data(path: Path, positions: np.ndarray, numbers: np.ndarray, lengths: np.ndarray) -> None:
    """The water box as a LAMMPS data file, atom types H O (pair_coeff * * model H O)."""
    atoms = ase.Atoms(numbers=numbers, positions=positions, cell=np.diag(lengths), pbc=True)
    engines.write_lammps_data(atoms, ["H", "O"], path)


def make_local_export(directory: Path, interaction_range: float, depth: int, width: int, dtype: str) -> Path:
    """A random-weight local model exported like a trained one (contract v2)."""
    from mdplugin.export.exporter import export
    from mdplugin.model.checkpoint import build_checkpoint, save_checkpoint
    from mdplugin.model.transformer import ModelConfig, TransformerPotential

    torch.manual_seed(0)
    config = ModelConfig(elements=[1, 8], width=width, depth=depth, heads=4, interaction_range=interaction_range)
    checkpoint = directory / f"local-{interaction_range}x{depth}.pt"
    save_checkpoint(
        build_checkpoint(TransformerPotential(config), {"date": "benchmark", "data_sha256": {}}, {}), checkpoint
    )
    return export(checkpoint, directory / f"local-{interaction_range}x{depth}-export.pt", dtype=dtype, overwrite=True)


def lammps_input(
    model: Path, steps: int, repeats: int, warmup: int, processors: str = "", keywords: str = "", elements: str = "H O"
) -> str:
    return (
        "\n".join(
            [
                "units metal",
                "boundary p p p",
                "atom_style atomic",
                processors,
                "read_data box.data",
                f"neighbor {SKIN} bin",
                f"pair_style transformer threads 1 {keywords}",
                f"pair_coeff * * {model} {elements}",
                "timer full",  # CPU time per section: the pair style's work, without MPI's busy waiting
                "velocity all create 300 4928459 mom yes rot no dist gaussian",
                f"timestep {TIMESTEP_FS / 1000.0}",
                "fix nve all nve",
                "thermo_style custom step pe ke etotal",
                "thermo_modify format float %.15g",
                f"thermo {steps}",
                f"run {warmup}",  # TorchScript's profiling executor specialises during the first calls
                *[f"run {steps}" for _ in range(repeats)],
            ]
        )
        + "\n"
    )


def run(
    directory: Path,
    model: Path,
    ranks: int,
    steps: int,
    repeats: int,
    warmup: int,
    processors: str = "",
    keywords: str = "",
) -> dict:
    from mdplugin.engines import lammps_plugin

    (directory / "in.scaling").write_text(lammps_input(model, steps, repeats, warmup, processors, keywords))
    busy_before, load_before = report.busy_cores(), os.getloadavg()[0]
    command = [str(lammps_plugin.lammps_executable()), "-in", "in.scaling", "-log", "log.lammps", "-nocite"]
    if ranks > 1:
        command = [str(lammps_plugin.mpirun_executable()), "-np", str(ranks), *command]
    environment = {**os.environ, **lammps_plugin.plugin_environment(), "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=directory, env=environment, capture_output=True, text=True, timeout=3600)
    whole_run = time.perf_counter() - started
    log = (directory / "log.lammps").read_text() if (directory / "log.lammps").exists() else ""
    if completed.returncode != 0 or not LOOP_TIME.search(log):
        raise RuntimeError(f"LAMMPS failed with {ranks} ranks:\n" + (log + completed.stdout + completed.stderr)[-3000:])
    loops = [float(m[1]) / int(m[3]) for m in LOOP_TIME.finditer(log)][1:]  # the warm-up run left out
    # CPU time per rank (LAMMPS averages it over ranks): on a machine shared with other work the wall
    # time says how much CPU the ranks got, the CPU time how much work each rank did
    cpu_use = [float(m[1]) / 100.0 for m in CPU_USE.finditer(log)][1:]
    cpu = [seconds * use for seconds, use in zip(loops, cpu_use)]
    # the pair style's CPU time per rank (mean over ranks), and its slowest rank's wall time: a rank that
    # waits for another spins in MPI and counts as CPU use, but not inside the pair style
    steps = [int(m[3]) for m in LOOP_TIME.finditer(log)][1:]
    pair = [(float(m[2]), float(m[3]), float(m[4]) / 100.0) for m in PAIR_TIMES.finditer(log)][1:]
    pair_cpu = [average * use / n for (average, _, use), n in zip(pair, steps)]
    pair_max = [slowest / n for (_, slowest, _), n in zip(pair, steps)]
    local = [float(m[1]) for m in re.finditer(r"^Nlocal:\s+(\S+) ave", log, re.MULTILINE)]
    ghost = [float(m[1]) for m in re.finditer(r"^Nghost:\s+(\S+) ave", log, re.MULTILINE)]
    first_energy = re.search(r"^\s+0\s+(\S+)\s+\S+\s+\S+\s*$", log, re.MULTILINE)
    path = re.search(r"^pair_style transformer: local model, interaction range \S+ Å(?::|;) (.*)$", log, re.MULTILINE)
    return {
        "ranks": ranks,
        "keywords": keywords,
        "path": path.group(1) if path else "",
        "whole_run_seconds": whole_run,
        "atoms": int(re.search(r"with (\d+) atoms", log).group(1)),
        "busy_cores_before": busy_before,
        "load_average_before": load_before,
        "seconds_per_step": statistics.median(loops),
        "samples_seconds_per_step": loops,
        "cpu_seconds_per_step_per_rank": statistics.median(cpu),
        "samples_cpu_seconds_per_step_per_rank": cpu,
        "pair_cpu_seconds_per_step_per_rank": statistics.median(pair_cpu),
        "samples_pair_cpu_seconds_per_step_per_rank": pair_cpu,
        "pair_seconds_per_step_slowest_rank": statistics.median(pair_max),
        "local_atoms_per_rank": local[-1],
        "ghost_atoms_per_rank": ghost[-1],
        "energy_step0_eV": float(first_energy.group(1)),
    }


def measure(arguments: argparse.Namespace) -> dict:
    positions, numbers, lengths = water_box(arguments.molecules_per_edge)
    machine = report.machine_info()
    results = []
    with tempfile.TemporaryDirectory(prefix="mdplugin-scaling-") as scratch:
        scratch = Path(scratch)
        write_data(scratch / "box.data", positions, numbers, lengths)
        for ranks in arguments.weak_ranks:  # the box repeated once per rank along x
            write_data(scratch / f"box-x{ranks}.data", *water_box(arguments.molecules_per_edge, repeats_x=ranks))

        def timed(name: str, model: Path, data: str, ranks: int, processors: str = "") -> dict:
            directory = scratch / name
            directory.mkdir()
            (directory / "box.data").symlink_to(scratch / data)
            entry = run(directory, model, ranks, arguments.steps, arguments.repeats, arguments.warmup, processors)
            print(
                f"{name}: {entry['atoms']} atoms, {1e3 * entry['seconds_per_step']:.0f} ms/step, "
                f"{1e3 * entry['cpu_seconds_per_step_per_rank']:.0f} CPU ms/step/rank, "
                f"{entry['busy_cores_before']:.1f} cores busy before",
                flush=True,
            )
            entry["evaluated_over_owned"] = (entry["local_atoms_per_rank"] + entry["ghost_atoms_per_rank"]) / entry[
                "local_atoms_per_rank"
            ]
            return entry

        for text in arguments.models.split(","):
            interaction_range, depth = float(text.split("x")[0]), int(text.split("x")[1])
            model = make_local_export(scratch, interaction_range, depth, arguments.width, arguments.dtype)
            runs = [timed(f"{text}-np{ranks}", model, "box.data", ranks) for ranks in arguments.ranks]
            base = runs[0]["seconds_per_step"] * runs[0]["ranks"]
            for entry in runs:
                entry["speedup"] = runs[0]["seconds_per_step"] / entry["seconds_per_step"]
                entry["efficiency"] = base / (entry["seconds_per_step"] * entry["ranks"])
                entry["cpu_speedup"] = runs[0]["cpu_seconds_per_step_per_rank"] / entry["cpu_seconds_per_step_per_rank"]
                entry["pair_cpu_speedup"] = (
                    runs[0]["pair_cpu_seconds_per_step_per_rank"] / entry["pair_cpu_seconds_per_step_per_rank"]
                )
                entry["energy_relative_difference"] = abs(entry["energy_step0_eV"] / runs[0]["energy_step0_eV"] - 1.0)
            # weak scaling: the one-rank run of the cube against P ranks on P cubes (one per rank along x)
            one_rank = next(entry for entry in runs if entry["ranks"] == 1)
            weak = []
            for ranks in arguments.weak_ranks:
                entry = timed(f"{text}-weak-np{ranks}", model, f"box-x{ranks}.data", ranks, f"processors {ranks} 1 1")
                entry["weak_efficiency"] = one_rank["seconds_per_step"] / entry["seconds_per_step"]
                entry["cpu_weak_efficiency"] = (
                    one_rank["cpu_seconds_per_step_per_rank"] / entry["cpu_seconds_per_step_per_rank"]
                )
                entry["pair_cpu_weak_efficiency"] = (
                    one_rank["pair_cpu_seconds_per_step_per_rank"] / entry["pair_cpu_seconds_per_step_per_rank"]
                )
                weak.append(entry)
            results.append(
                {
                    "interaction_range_A": interaction_range,
                    "depth": depth,
                    "receptive_field_A": depth * interaction_range,
                    "ghost_range_A": depth * interaction_range + SKIN,
                    "runs": runs,
                    "weak": weak,
                }
            )
    return {
        "atoms": len(numbers),
        "box_edge_A": float(lengths[0]),
        "width": arguments.width,
        "dtype": arguments.dtype,
        "skin_A": SKIN,
        "steps_per_sample": arguments.steps,
        "results": results,
        "machine": report.finish(machine),
    }


# (name, ranks, pair_style keywords): the paths of `pair_style transformer` for a local model
PATHS = [
    ("1 rank, periodic forward (auto)", 1, ""),
    ("1 rank, block by block", 1, "periodic no exchange yes"),
    ("2 ranks, ghost shell", 2, "exchange no"),
    ("2 ranks, block by block (auto)", 2, ""),
]


def measure_paths(arguments: argparse.Namespace) -> dict:
    """A trained model's water box at each size on every path, side by side: whole-run wall clock, LAMMPS's
    loop time and the pair style's time, and the speed-up of each over one rank's automatic path."""
    machine = report.machine_info()
    sizes = []
    with tempfile.TemporaryDirectory(prefix="mdplugin-paths-") as scratch:
        for molecules in arguments.sizes:
            directory = Path(scratch) / f"n{molecules}"
            directory.mkdir()
            write_data(directory / "box.data", *water_box(molecules))
            runs = []
            for name, ranks, keywords in PATHS:
                place = directory / f"{ranks}-{len(runs)}"
                place.mkdir()
                (place / "box.data").symlink_to(directory / "box.data")
                entry = run(
                    place,
                    arguments.shipped.resolve(),
                    ranks,
                    arguments.steps,
                    arguments.repeats,
                    arguments.warmup,
                    keywords=keywords,
                )
                entry["name"] = name
                runs.append(entry)
                print(
                    f"{molecules}^3 waters, {name}: whole run {entry['whole_run_seconds']:.1f} s, "
                    f"{1e3 * entry['seconds_per_step']:.0f} ms/step, pair {1e3 * entry['pair_seconds_per_step_slowest_rank']:.0f} ms, "
                    f"{entry['busy_cores_before']:.1f} cores busy before",
                    flush=True,
                )
            base = runs[0]
            for entry in runs:
                entry["speedup_whole_run"] = base["whole_run_seconds"] / entry["whole_run_seconds"]
                entry["speedup_per_step"] = base["seconds_per_step"] / entry["seconds_per_step"]
                entry["speedup_pair"] = (
                    base["pair_seconds_per_step_slowest_rank"] / entry["pair_seconds_per_step_slowest_rank"]
                )
                entry["energy_relative_difference"] = abs(entry["energy_step0_eV"] / base["energy_step0_eV"] - 1.0)
            sizes.append({"molecules_per_edge": molecules, "atoms": base["atoms"], "runs": runs})
    return {
        "model": str(arguments.shipped),
        "skin_A": SKIN,
        "steps": {"warmup": arguments.warmup, "per_sample": arguments.steps, "samples": arguments.repeats},
        "sizes": sizes,
        "machine": report.finish(machine),
    }


def paths_markdown(data: dict) -> str:
    rows = []
    for size in data["sizes"]:
        for entry in size["runs"]:
            rows.append(
                [
                    size["atoms"],
                    entry["name"],
                    f"{entry['whole_run_seconds']:.1f}",
                    f"{entry['speedup_whole_run']:.2f}",
                    f"{1e3 * entry['seconds_per_step']:.0f}",
                    f"{entry['speedup_per_step']:.2f}",
                    f"{1e3 * entry['pair_seconds_per_step_slowest_rank']:.0f}",
                    f"{entry['speedup_pair']:.2f}",
                    f"{entry['local_atoms_per_rank']:.0f}",
                    f"{entry['ghost_atoms_per_rank']:.0f}",
                    f"{entry['busy_cores_before']:.1f}",
                    f"{entry['energy_relative_difference']:.1e}",
                ]
            )
    header = [
        "atoms",
        "path",
        "whole run s",
        "speed-up (whole run)",
        "ms/step",
        "speed-up (step)",
        "pair ms/step (slowest rank)",
        "speed-up (pair)",
        "owned/rank",
        "ghosts/rank",
        "cores busy before",
        "ΔE(0) rel.",
    ]
    steps = data["steps"]
    return (
        f"# LAMMPS paths across ranks: {data['model']}\n\n"
        f"Water boxes at about liquid density, NVE at {TIMESTEP_FS} fs, skin {data['skin_A']} Å, one libtorch "
        f"thread per rank, `lmp` under mpich's `mpirun`; each run is {steps['warmup']} warm-up steps then "
        f"{steps['samples']} samples of {steps['per_sample']} steps (median per step). `whole run` is the wall clock "
        "of the whole `lmp` process (start-up, model load, warm-up included); speed-ups are over the first row of "
        "each size, one rank's automatic path. `pair` is the pair style's time on the slowest rank (`timer "
        "full`). Ghost shell: ghosts out to the receptive field + skin, each rank evaluating them too; block by "
        "block: ghosts out to the interaction range + skin, tokens exchanged between blocks.\n\n"
        + report.markdown_table(header, rows)
        + "\n\n"
        + report.machine_markdown(data["machine"])
        + "\n"
    )


def markdown(data: dict) -> str:
    strong, weak = [], []
    for model in data["results"]:
        name = f"{model['interaction_range_A']} Å x {model['depth']}"
        for entry in model["runs"]:
            strong.append(
                [
                    name,
                    f"{model['ghost_range_A']:.1f}",
                    entry["ranks"],
                    f"{1e3 * entry['seconds_per_step']:.0f}",
                    f"{entry['speedup']:.2f}",
                    f"{entry['efficiency']:.2f}",
                    f"{1e3 * entry['cpu_seconds_per_step_per_rank']:.0f}",
                    f"{entry['cpu_speedup']:.2f}",
                    f"{1e3 * entry['pair_cpu_seconds_per_step_per_rank']:.0f}",
                    f"{entry['pair_cpu_speedup']:.2f}",
                    f"{entry['local_atoms_per_rank']:.0f}",
                    f"{entry['ghost_atoms_per_rank']:.0f}",
                    f"{entry['evaluated_over_owned']:.1f}",
                    f"{entry['busy_cores_before']:.1f}",
                    f"{entry['energy_relative_difference']:.1e}",
                ]
            )
        one_rank = next(entry for entry in model["runs"] if entry["ranks"] == 1)
        for entry in [one_rank, *model.get("weak", [])]:
            weak.append(
                [
                    name,
                    entry["ranks"],
                    entry["atoms"],
                    f"{1e3 * entry['seconds_per_step']:.0f}",
                    f"{entry.get('weak_efficiency', 1.0):.2f}",
                    f"{1e3 * entry['cpu_seconds_per_step_per_rank']:.0f}",
                    f"{entry.get('cpu_weak_efficiency', 1.0):.2f}",
                    f"{1e3 * entry['pair_cpu_seconds_per_step_per_rank']:.0f}",
                    f"{entry.get('pair_cpu_weak_efficiency', 1.0):.2f}",
                    f"{entry['local_atoms_per_rank']:.0f}",
                    f"{entry['ghost_atoms_per_rank']:.0f}",
                    f"{entry['busy_cores_before']:.1f}",
                ]
            )
    strong_header = [
        "model (range x layers)",
        "ghost range Å",
        "ranks",
        "ms/step",
        "speed-up",
        "efficiency",
        "CPU ms/step/rank",
        "CPU speed-up",
        "pair CPU ms/step/rank",
        "pair CPU speed-up",
        "owned/rank",
        "ghosts/rank",
        "evaluated/owned",
        "cores busy before",
        "ΔE(0) rel.",
    ]
    weak_header = [
        "model (range x layers)",
        "ranks",
        "atoms",
        "ms/step",
        "weak efficiency",
        "CPU ms/step/rank",
        "CPU weak efficiency",
        "pair CPU ms/step/rank",
        "pair CPU weak efficiency",
        "owned/rank",
        "ghosts/rank",
        "cores busy before",
    ]
    return (
        f"# LAMMPS scaling, local model\n\n"
        f"Water-like boxes (periodic, about liquid density), width {data['width']}, {data['dtype']}, NVE at "
        f"{TIMESTEP_FS} fs, skin {data['skin_A']} Å, one libtorch thread per rank; median of "
        f"{len(data['results'][0]['runs'][0]['samples_seconds_per_step'])} samples of {data['steps_per_sample']} "
        "steps. `evaluated/owned` is what each rank hands the model (owned + ghost atoms) over what it owns: "
        "the ghost shell of receptive field + skin (later blocks update fewer of them: "
        "`lammps_projection.md`). `CPU ms/step/rank` is the wall time times LAMMPS's `% CPU use` (the CPU time "
        "each rank spent): on a machine shared with other work the wall-time numbers say how much CPU the ranks "
        "were given, the CPU numbers how the work per rank changed. `pair CPU` is the CPU time inside the pair "
        "style alone (`timer full`), which leaves out MPI's busy waiting for a descheduled partner rank (counted "
        "as CPU use). `cores busy before`: cores other processes "
        f"kept busy in the second before the run (of {data['machine']['logical_cores']}).\n\n"
        f"## Strong scaling: {data['atoms']} atoms, cubic box {data['box_edge_A']:.1f} Å\n\n"
        + report.markdown_table(strong_header, strong)
        + "\n\n## Weak scaling: the cube per rank, repeated along x (`processors P 1 1`)\n\n"
        "Weak efficiency: time per step of 1 rank on N atoms over that of P ranks on P N atoms (1 is ideal).\n\n"
        + report.markdown_table(weak_header, weak)
        + "\n\n"
        + report.machine_markdown(data["machine"])
        + "\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--molecules-per-edge", type=int, default=10, help="water molecules per box edge (3 n^3 atoms)")
    parser.add_argument(
        "--models", default="3.0x2,3.0x4,4.0x3", help="local models as RANGExLAYERS (3.0x4: the shipped water models)"
    )
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--ranks", type=lambda text: [int(r) for r in text.split(",")], default=[1, 2])
    parser.add_argument(
        "--weak-ranks", type=lambda text: [int(r) for r in text.split(",") if r], default=[2], help="'' for none"
    )
    parser.add_argument("--steps", type=int, default=5, help="MD steps per timed sample")
    parser.add_argument("--repeats", type=int, default=3, help="timed samples per run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument(
        "--shipped",
        type=Path,
        help="a trained local export (e.g. examples/models/water-classical-export.pt): measure its paths across "
        "ranks at --sizes instead of the random-model grid (lammps_scaling.json / .md; the grid writes lammps_scaling_grid.json / .md)",
    )
    parser.add_argument(
        "--sizes", type=lambda text: [int(n) for n in text.split(",")], default=[11, 16], help="molecules per edge"
    )
    arguments = parser.parse_args(argv)
    if arguments.shipped is not None:
        data = measure_paths(arguments)
        report.write_json(data, arguments.output / "lammps_scaling.json")
        (arguments.output / "lammps_scaling.md").write_text(paths_markdown(data))
        print(paths_markdown(data))
        return
    data = measure(arguments)
    report.write_json(data, arguments.output / "lammps_scaling_grid.json")
    (arguments.output / "lammps_scaling_grid.md").write_text(markdown(data))
    print(markdown(data))


if __name__ == "__main__":
    main()
