"""Does a model from `mdplugin learn` survive production MD? Long NVT in OpenMM against the reference's own MD.

1. `mdplugin run` (OpenMM, the committee export: member 0 drives, the members' force deviation is written
   at every report) runs `--ps` of Langevin NVT at `--temperature-k`;
2. every frame: each covalent bond of the start structure against its length there (the target: none more
   than 0.5 Å away), and the pair-distance distribution h(r);
3. the reference (`--reference`, as `mdplugin learn` takes it; Langevin in ASE at the same temperature and
   friction) runs `--reference-ps`
   from the same start; its h(r) is the target, compared as the integral of |h_model - h_reference| over r
   (0 when equal, 2 when disjoint) beside the same integral between the reference's two halves (its noise).

    python -m benchmarks.learned_md runs/learn/ethanol/model-export.pt examples/structures/ethanol.xyz \
        --temperature-k 500 --ps 200 --reference-ps 20 --output benchmarks/results/learn/ethanol
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repository root
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import report
from benchmarks.out_of_domain import bonds

BINS = np.linspace(0.0, 6.0, 301)  # Å: h(r) of a small molecule lies within
FRICTION_PER_PS = 1.0
DEVIATION = "Max force deviation (eV/A)"  # mdplugin run's state-data column


def model_md(model: Path, structure: Path, options, folder: Path) -> dict:
    """`mdplugin run`, as a user calls it; returns its frames and state data."""
    import ase.io

    steps = round(options.ps * 1000 / options.timestep_fs)
    prefix = folder / "model-md"
    command = [sys.executable, "-m", "mdplugin", "run", str(structure), "-m", str(model), "-o", str(prefix),
               "--steps", str(steps), "--timestep-fs", str(options.timestep_fs), "--temperature-k",
               str(options.temperature_k), "--friction-per-ps", str(FRICTION_PER_PS), "--report-interval",
               str(options.report_interval), "--trajectory-format", "pdb", "--seed", str(options.seed),
               "--deviation-threshold", str(options.threshold), "--threads", "1"]  # fmt: skip
    summary = Path(f"{prefix}-summary.json")  # mdplugin run's own record of the run
    finished = summary.is_file() and json.loads(summary.read_text()).get("final_step") == steps
    if not (options.reuse and finished):
        completed = subprocess.run(command, capture_output=True, text=True)
        if completed.returncode != 0:
            raise SystemExit(f"mdplugin run failed:\n{completed.stdout[-2000:]}\n{completed.stderr[-2000:]}")
    seconds = json.loads(summary.read_text())["wall_seconds"]
    with open(f"{prefix}.csv") as handle:
        rows = list(csv.DictReader(handle))
    # a committee export writes its deviation at each report; a single model has none
    deviation = [float(row[DEVIATION]) for row in rows if row.get(DEVIATION) not in (None, "")]
    frames = [frame for frame in ase.io.read(f"{prefix}.pdb", index=":") if len(frame)]  # ASE: an empty one at END
    return {"frames": frames, "deviation": np.array(deviation), "seconds": seconds, "steps": steps}


def reference_md(structure, options) -> tuple[list, float]:
    """The reference's own Langevin NVT from the same start (learn's round-0 dynamics), a frame every
    `report_interval` steps."""
    from types import SimpleNamespace

    from mdplugin.learn.loop import langevin
    from mdplugin.learn.reference import reference_calculator

    atoms = structure.copy()
    settings = SimpleNamespace(timestep_fs=options.timestep_fs, friction_per_fs=FRICTION_PER_PS / 1000)
    dynamics = langevin(atoms, reference_calculator(options.reference, atoms), options.temperature_k, settings,
                        options.seed)  # fmt: skip
    frames, start = [], time.perf_counter()
    for _ in range(round(options.reference_ps * 1000 / options.timestep_fs / options.report_interval)):
        dynamics.run(options.report_interval)
        frames.append(atoms.copy())
    return frames, time.perf_counter() - start


def deviation_summary(deviation: np.ndarray, threshold: float) -> dict:
    if not len(deviation):
        return {"deviation_median": None, "deviation_max": None, "fraction_below_threshold": None}
    return {"deviation_median": float(np.median(deviation)), "deviation_max": float(deviation.max()),
            "fraction_below_threshold": float((deviation < threshold).mean())}  # fmt: skip


def pair_distances(frames: list) -> np.ndarray:
    positions = np.stack([frame.positions for frame in frames])
    first, second = np.triu_indices(positions.shape[1], 1)
    return np.linalg.norm(positions[:, first] - positions[:, second], axis=-1)  # [frames, pairs]


def distribution(frames: list) -> np.ndarray:
    """h(r): the normalised histogram of every interatomic distance over the frames (1/Å)."""
    histogram, _ = np.histogram(pair_distances(frames), bins=BINS, density=True)
    return histogram


def difference(first: np.ndarray, second: np.ndarray) -> float:
    return float(np.abs(first - second).sum() * (BINS[1] - BINS[0]))


def bond_excursions(frames: list, start) -> dict:
    """Each start bond's largest departure from its start length over the frames."""
    worst = {}
    for i, j, length in bonds(start):
        lengths = np.linalg.norm(np.stack([f.positions[i] - f.positions[j] for f in frames]), axis=-1)
        worst[f"{start[i].symbol}{i}-{start[j].symbol}{j}"] = float(np.abs(lengths - length).max())
    return worst


def plot(model_h: np.ndarray, reference_h: np.ndarray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centres = 0.5 * (BINS[1:] + BINS[:-1])
    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.plot(centres, reference_h, label="reference's MD", color="black")
    axis.plot(centres, model_h, label="learned model (OpenMM)", color="tab:red", linestyle="--")
    axis.set_xlabel("r (Å)")
    axis.set_ylabel("h(r) (1/Å)")
    axis.set_title(title)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path, help="the committee export `mdplugin learn` wrote")
    parser.add_argument("structure", type=Path, help="the start structure (the one the loop learned from)")
    parser.add_argument("--temperature-k", type=float, default=500.0)
    parser.add_argument("--ps", type=float, default=200.0, help="the model's MD")
    parser.add_argument("--reference", default="gfn2-xtb", help="the loop's reference (mdplugin learn --reference)")
    parser.add_argument("--reference-ps", type=float, default=20.0, help="the reference's own MD")
    parser.add_argument("--timestep-fs", type=float, default=0.5)
    parser.add_argument("--report-interval", type=int, default=200)
    parser.add_argument("--threshold", type=float, default=0.15, help="deviation threshold, eV/Å (learn's lower)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--reuse", action="store_true", help="analyse a finished model run of this length again")
    parser.add_argument("--runs", type=Path, default=Path("runs/learned-md"), help="where the model's MD goes")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/learn/ethanol"))
    options = parser.parse_args(argv)

    import ase.io

    options.output.mkdir(parents=True, exist_ok=True)
    machine = report.machine_info()
    start = ase.io.read(options.structure)
    options.runs.mkdir(parents=True, exist_ok=True)
    run = model_md(options.model, options.structure, options, options.runs)
    reference, reference_seconds = reference_md(start, options)
    half = len(reference) // 2
    model_h, reference_h = distribution(run["frames"]), distribution(reference)
    excursions = bond_excursions(run["frames"], start)
    results = {
        "model": str(options.model),
        "model_md_summary": json.loads((options.runs / "model-md-summary.json").read_text()),
        "structure": str(options.structure),
        "temperature_k": options.temperature_k,
        "model_ps": options.ps,
        "model_frames": len(run["frames"]),
        "model_wall_s": run["seconds"],
        "model_ms_per_step": 1000 * run["seconds"] / run["steps"],
        "reference_ps": options.reference_ps,
        "reference_wall_s": reference_seconds,
        "largest_bond_excursion_angstrom": max(excursions.values()),
        "bond_excursions_angstrom": excursions,
        "h_difference": difference(model_h, reference_h),
        "h_difference_reference_halves": difference(distribution(reference[:half]), distribution(reference[half:])),
        "deviation_threshold": options.threshold,
        **deviation_summary(run["deviation"], options.threshold),
        "machine": report.finish(machine),
    }
    report.write_json(results, options.output / "learned_md.json")
    plot(model_h, reference_h, options.output / "h_of_r.png", f"{options.structure.stem}, {options.temperature_k:g} K")
    rows = [
        ["model MD (OpenMM, member 0)", f"{options.ps:g} ps", f"{run['seconds'] / 60:.1f} min",
         f"{results['model_ms_per_step']:.2f} ms/step"],
        [f"reference MD ({options.reference}, ASE)", f"{options.reference_ps:g} ps", f"{reference_seconds / 60:.1f} min", ""],
    ]  # fmt: skip
    text = [
        f"# {options.structure.stem}: the learned model in {options.ps:g} ps of NVT at {options.temperature_k:g} K",
        "",
        report.markdown_table(["run", "length", "wall clock", "speed"], rows),
        "",
        f"- Largest bond departure from the start structure's length: "
        f"**{results['largest_bond_excursion_angstrom']:.3f} Å** (target < 0.5 Å), over {len(excursions)} bonds "
        f"and {len(run['frames'])} frames.",
        f"- h(r) against the reference's MD: ∫|Δh| dr = **{results['h_difference']:.3f}** (the reference's two "
        f"halves: {results['h_difference_reference_halves']:.3f}); plot `h_of_r.png`.",
        f"- Committee force deviation at the {len(run['deviation'])} reports: median "
        f"{results['deviation_median']:.3f} eV/Å, largest {results['deviation_max']:.3f}; below "
        f"{options.threshold:g} eV/Å in {results['fraction_below_threshold']:.1%}."
        if len(run["deviation"])
        else "- A single model: no committee deviation.",
        "",
        report.machine_markdown(results["machine"]),
        "",
    ]
    (options.output / "learned_md.md").write_text("\n".join(text))
    print("\n".join(text))
    return results


if __name__ == "__main__":
    main()
