"""Does the Transformer potential improve predictably with model size and data? `mdplugin bench scaling`.

A grid of runs of `mdplugin train` (the package's own trainer, unchanged): model sizes (width x depth, heads
= width / 16, at least 2) times training-set sizes (the first D frames of a seeded shuffle of the training
files, so that smaller sets are subsets of larger ones). Every run gets the same number of optimizer steps
(`--steps`, batch 16, the cosine schedule ending at the last step): small sets are revisited more often,
and a run is compared with the others at equal optimisation effort. Its loss is the force MAE (meV/Å) on
the held-out test file, which is also the trainer's validation set (read once, never trained on).

Fits (scipy's curve_fit, 95 % intervals from its covariance):
- L(N) = A N^-alpha at the largest D, and L(D) = B D^-beta at the largest N (straight lines in log-log);
- the joint form L(N, D) = E + A N^-alpha + B D^-beta (Hoffmann et al. 2022, "Chinchilla") over every run;
- the compute-optimal model size for a few budgets C = 6 N T FLOP (T: atoms processed), assuming each
  frame is seen once (D = T / atoms per frame), from the joint fit.
Runs are recorded one by one (runs/<size>-D<frames>/result.json) and skipped when present: an
interrupted grid continues with the same command. Results: scaling.json, scaling.md, scaling.png.

    mdplugin data water --labels classical --temperatures 300 --frames 2048 --test-frames 256 -o data/water-spcfw
    mdplugin bench scaling --train-data data/water-spcfw/train.extxyz --test-data data/water-spcfw/test.extxyz \
        --interaction-range 4 --output benchmarks/results/scaling
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from benchmarks import report

MODEL_SIZES = ["16x1", "32x2", "64x2", "64x4", "128x4", "256x4"]
DATA_SIZES = [64, 128, 256, 512, 1024]
QUICK_MODEL_SIZES = ["8x1", "16x1", "16x2"]
QUICK_DATA_SIZES = [8, 16, 32]
BATCH = 16


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """'64x3,128x4' -> [(64, 3), (128, 4)] (width x depth)."""
    sizes = []
    for item in text.split(","):
        try:
            width, depth = (int(part) for part in item.lower().split("x"))
        except ValueError:
            raise ValueError(f"model size {item!r}: write WIDTHxDEPTH, e.g. 64x3") from None
        if width < 4 or depth < 1 or width % 2:
            raise ValueError(f"model size {item!r}: the width must be an even number >= 4 and the depth >= 1")
        sizes.append((width, depth))
    return sizes


def subset(frames: list, count: int, folder: Path) -> Path:
    """The first `count` frames (of the seeded shuffle `frames`) as an extxyz file, written once."""
    import ase.io

    path = folder / f"train-{count}.extxyz"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".partial")
        ase.io.write(temporary, frames[:count], format="extxyz")
        temporary.replace(path)
    return path


def run_one(width: int, depth: int, count: int, data: Path, test: list[str], args, folder: Path) -> dict:
    """Train one grid point (or read its recorded result)."""
    from mdplugin.model.checkpoint import read_checkpoint
    from mdplugin.model.config import ModelConfig
    from mdplugin.training.options import TrainingOptions
    from mdplugin.training.train import train

    result_path = folder / "result.json"
    if result_path.exists():
        return json.loads(result_path.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    epochs = max(1, math.ceil(args.steps / math.ceil(count / BATCH)))
    model = ModelConfig(width=width, depth=depth, heads=max(2, width // 16), interaction_range=args.interaction_range)
    options = TrainingOptions(
        train_files=[str(data)], validation_files=list(test), output=str(folder / "model.pt"), model=model,
        epochs=epochs, batch_size=BATCH, seed=args.seed, threads=args.threads, progress=False,
    )  # fmt: skip
    started, cpu = time.time(), time.process_time()
    train(options, resume=(folder / "model.pt").exists())
    checkpoint = read_checkpoint(folder / "model.pt")
    history = checkpoint["training"]["history"]
    result = {
        "width": width,
        "depth": depth,
        "parameters": checkpoint["training"]["parameters"],
        "frames": count,
        "epochs": epochs,
        "steps": history[-1]["step"],
        "test_force_mae_mev_per_a": history[-1]["force_mae_mev_per_a"],
        "test_energy_mae_mev_per_atom": history[-1]["energy_mae_mev_per_atom"],
        "best_test_force_mae_mev_per_a": min(row["force_mae_mev_per_a"] for row in history),
        "wall_s": time.time() - started,
        "cpu_s": time.process_time() - cpu,
    }
    result_path.write_text(json.dumps(result, indent=2))
    return result


def power_law(x: np.ndarray, y: np.ndarray) -> dict | None:
    """y = A x^-k fitted as a line in log-log; k with its 95 % interval (None with fewer than 3 points)."""
    if len(x) < 3:
        return None
    (slope, intercept), covariance = np.polyfit(np.log(x), np.log(y), 1, cov=True)
    error = 1.96 * math.sqrt(covariance[0, 0])
    return {"exponent": -float(slope), "exponent_95": [-float(slope) - error, -float(slope) + error],
            "prefactor": float(math.exp(intercept)), "points": len(x)}  # fmt: skip


def joint_fit(runs: list[dict]) -> dict | None:
    """L(N, D) = E + A N^-alpha + B D^-beta over every run (N: parameters, D: training frames)."""
    from scipy.optimize import curve_fit

    if len(runs) < 6:
        return None
    n = np.array([r["parameters"] for r in runs], dtype=float)
    d = np.array([r["frames"] for r in runs], dtype=float)
    loss = np.array([r["test_force_mae_mev_per_a"] for r in runs])

    def model(inputs, e, log_a, alpha, log_b, beta):
        size, data = inputs
        return e + np.exp(log_a) * size**-alpha + np.exp(log_b) * data**-beta

    start = [0.5 * loss.min(), math.log(loss.max()) + 2, 0.3, math.log(loss.max()) + 1, 0.3]
    bounds = ([0, -20, 0, -20, 0], [loss.min(), 40, 3, 40, 3])
    try:
        values, covariance = curve_fit(model, (n, d), loss, p0=start, bounds=bounds, maxfev=20000)
    except (RuntimeError, ValueError) as error:
        return {"failed": str(error)}
    errors = 1.96 * np.sqrt(np.clip(np.diag(covariance), 0, None))
    names = ["E", "log_A", "alpha", "log_B", "beta"]
    fitted = {name: float(value) for name, value in zip(names, values)}
    fitted["interval_95"] = {name: [float(v - e), float(v + e)] for name, v, e in zip(names, values, errors)}
    residual = loss - model((n, d), *values)
    fitted["rms_relative_residual"] = float(np.sqrt(np.mean((residual / loss) ** 2)))
    return fitted


def compute_optimal(fit: dict, atoms_per_frame: float, budgets: list[float]) -> list[dict]:
    """Chinchilla's question with one pass over the data: a budget of C = 6 N T FLOP (T atoms processed)
    buys D = C / (6 N atoms_per_frame) frames seen once; the N with the lowest fitted L(N, D), on a log grid."""
    rows = []
    sizes = np.logspace(3, 9, 600)
    for budget in budgets:
        frames = budget / (6 * sizes * atoms_per_frame)
        loss = (
            fit["E"] + math.exp(fit["log_A"]) * sizes ** -fit["alpha"] + math.exp(fit["log_B"]) * frames ** -fit["beta"]
        )
        best = int(np.argmin(np.where(frames >= 1, loss, np.inf)))
        rows.append({"compute_flop": budget, "parameters": float(sizes[best]), "frames": float(frames[best]),
                     "fitted_force_mae_mev_per_a": float(loss[best])})  # fmt: skip
    return rows


def run_scaling(args) -> dict:
    """The grid, the fits and the report; `args` as `mdplugin bench scaling` passes them."""
    import ase.io

    output = Path(args.output)
    model_sizes = parse_sizes(args.model_sizes or ",".join(QUICK_MODEL_SIZES if args.quick else MODEL_SIZES))
    data_sizes = sorted(args.data_sizes or (QUICK_DATA_SIZES if args.quick else DATA_SIZES))
    if not args.train_data or not args.test_data:
        raise ValueError("scaling needs --train-data and --test-data (extxyz with energies and forces)")
    from mdplugin.errors import reason

    frames = []
    for path in args.train_data:
        try:
            frames += ase.io.read(path, index=":")
        except Exception as error:  # ase raises many kinds for a file it cannot parse
            raise ValueError(f"cannot read {path} ({reason(error)}); give an extxyz with energies and forces") from None
    if len(frames) < max(data_sizes):
        raise ValueError(f"the training files hold {len(frames)} frames; the largest --data-sizes is {max(data_sizes)}")
    if any(frame.pbc.any() for frame in frames) and args.interaction_range is None:
        raise ValueError("the training data is periodic: give --interaction-range (Å) for the local model")
    order = np.random.default_rng(args.seed).permutation(len(frames))
    shuffled = [frames[i] for i in order]
    atoms_per_frame = float(np.mean([len(frame) for frame in shuffled[: max(data_sizes)]]))
    machine = report.machine_info()
    runs = []
    for width, depth in model_sizes:
        for count in data_sizes:
            data = subset(shuffled, count, output / "data")
            runs.append(
                run_one(width, depth, count, data, args.test_data, args, output / "runs" / f"{width}x{depth}-D{count}")
            )
    largest_d = [r for r in runs if r["frames"] == max(data_sizes)]
    largest_n = [r for r in runs if (r["width"], r["depth"]) == model_sizes[-1]]
    results = {
        "grid": {
            "model_sizes": [f"{w}x{d}" for w, d in model_sizes],
            "data_sizes": data_sizes,
            "steps": args.steps,
            "batch": BATCH,
            "interaction_range": args.interaction_range,
            "atoms_per_frame": atoms_per_frame,
            "train_data": list(args.train_data),
            "test_data": list(args.test_data),
            "quick": args.quick,
        },  # fmt: skip
        "runs": runs,
        "fit_parameters": power_law(
            np.array([r["parameters"] for r in largest_d]), np.array([r["test_force_mae_mev_per_a"] for r in largest_d])
        ),  # fmt: skip
        "fit_data": power_law(
            np.array([r["frames"] for r in largest_n]), np.array([r["test_force_mae_mev_per_a"] for r in largest_n])
        ),  # fmt: skip
        "joint_fit": joint_fit(runs),
        "cpu_hours": sum(r["cpu_s"] for r in runs) / 3600,
    }
    if results["joint_fit"] and "alpha" in results["joint_fit"]:
        spent = 6 * max(r["parameters"] for r in runs) * args.steps * BATCH * atoms_per_frame  # the grid's largest run
        budgets = [spent / 100, spent / 10, spent, spent * 10]
        results["compute_optimal"] = compute_optimal(results["joint_fit"], atoms_per_frame, budgets)
    results["machine"] = report.finish(machine)
    output.mkdir(parents=True, exist_ok=True)
    report.write_json(results, output / "scaling.json")
    (output / "scaling.md").write_text(markdown(results))
    plot(results, output / "scaling.png")
    return results


def markdown(results: dict) -> str:
    grid = results["grid"]
    attention = f"interaction range {grid['interaction_range']} Å" if grid["interaction_range"] else "global attention"
    lines = [
        "# Scaling: test force error against model size and data",
        "",
        f"{len(results['runs'])} runs of `mdplugin train`, {grid['steps']} optimizer steps each (batch {grid['batch']}), "
        f"training data {', '.join(grid['train_data'])}, test (= validation) {', '.join(grid['test_data'])}, "
        f"{attention}; {results['cpu_hours']:.2f} CPU-hours."
        + (" Quick grid: the numbers only show that it runs." if grid["quick"] else ""),
        "",
        "| model | parameters | frames | test force MAE (meV/Å) | best over epochs | CPU s |",
        "|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        lines.append(f"| {r['width']}x{r['depth']} | {r['parameters']:,} | {r['frames']} | "
                     f"{r['test_force_mae_mev_per_a']:.1f} | {r['best_test_force_mae_mev_per_a']:.1f} | {r['cpu_s']:.0f} |")  # fmt: skip
    lines.append("")
    for key, label in (("fit_parameters", "L(N) at the largest data size"), ("fit_data", "L(D) at the largest model")):
        fit = results[key]
        if fit:
            low, high = fit["exponent_95"]
            lines.append(
                f"- {label}: exponent {fit['exponent']:.3f} (95 %: {low:.3f} to {high:.3f}), {fit['points']} points"
            )
    joint = results["joint_fit"]
    if joint and "alpha" in joint:
        interval = joint["interval_95"]
        lines.append(
            f"- Joint fit L = E + A N^-alpha + B D^-beta: E {joint['E']:.1f} meV/Å, alpha {joint['alpha']:.3f} "
            f"({interval['alpha'][0]:.3f} to {interval['alpha'][1]:.3f}), beta {joint['beta']:.3f} "
            f"({interval['beta'][0]:.3f} to {interval['beta'][1]:.3f}); rms relative residual "
            f"{joint['rms_relative_residual']:.1%}"
        )
        for row in results.get("compute_optimal", []):
            lines.append(f"  - compute {row['compute_flop']:.2e} FLOP (each frame once): about {row['parameters']:,.0f} "
                         f"parameters on {row['frames']:,.0f} frames, fitted {row['fitted_force_mae_mev_per_a']:.1f} meV/Å")  # fmt: skip
    elif joint:
        lines.append(f"- Joint fit failed: {joint['failed']}")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for count in results["grid"]["data_sizes"]:
        points = sorted((r["parameters"], r["test_force_mae_mev_per_a"]) for r in runs if r["frames"] == count)
        left.plot(*zip(*points), "o-", label=f"D = {count}")
    for size in results["grid"]["model_sizes"]:
        points = sorted(
            (r["frames"], r["test_force_mae_mev_per_a"]) for r in runs if f"{r['width']}x{r['depth']}" == size
        )
        right.plot(*zip(*points), "o-", label=size)
    for axes, name in ((left, "parameters N"), (right, "training frames D")):
        axes.set(xscale="log", yscale="log", xlabel=name, ylabel="test force MAE (meV/Å)")
        axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
