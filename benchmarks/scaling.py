"""Does the Transformer potential improve predictably with model size and data? `mdplugin bench scaling`.

A grid of runs of `mdplugin train` (the package's own trainer, unchanged): model sizes (width x depth, heads
= width / 16, at least 2) times training-set sizes (the first D frames of a seeded shuffle of the training
files, so that smaller sets are subsets of larger ones). Every run gets the same number of optimizer steps
(`--steps`, batch 16, the cosine schedule ending at the last step): small sets are revisited more often,
and a run is compared with the others at equal optimisation effort. Its loss is the force MAE (meV/Å) on
the held-out test file, which is also the trainer's validation set (read once, never trained on), after
the last step; about ten validations per run (`--validate-every`), so that the small sets' short epochs are
not spent validating. `--jobs` trains grid points side by side (spawned processes, `--threads` each).

The anchor (`--mace-sizes`, optional, needs mace-torch): MACE at a few channel counts on the same subsets,
for the same steps and batch (benchmarks/mace_train.py, L_max 2), fitted the same way.

Fits (scipy's curve_fit, 95 % intervals from its covariance):
- L(N) = A N^-alpha at the largest D, and L(D) = B D^-beta at the largest N (straight lines in log-log);
- the joint form L(N, D) = E + A N^-alpha + B D^-beta (Hoffmann et al. 2022, "Chinchilla") over every run;
- the compute-optimal model size for a few budgets C = 6 N T FLOP (T: atoms processed), assuming each
  frame is seen once (D = T / atoms per frame), from the joint fit.
Runs are recorded one by one (runs/<size>-D<frames>/result.json) and skipped when present: an
interrupted grid continues with the same command. Results: scaling.json, scaling.md, scaling.png.

    mdplugin data water --labels classical --temperatures 300 --frames 2048 --test-frames 256 -o data/water-spcfw
    mdplugin bench scaling --train-data data/water-spcfw/train.extxyz --test-data data/water-spcfw/test.extxyz \
        --interaction-range 4 --jobs 2 --mace-sizes 8,16,32 --output runs/scaling
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
# spherical harmonics to L = 2 instead of the baseline's 3: a step of the 8-channel MACE then costs about what
# the largest Transformer's does (0.19 against 0.19 s on this machine), which keeps the anchor within budget
MACE_RECIPE = {"max_ell": 2}


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


def transformer_options(width: int, depth: int, count: int, data: Path, test: list[str], args, folder: Path):
    """The `mdplugin train` options of one grid point: equal optimizer steps, about ten validations."""
    from mdplugin.model.config import ModelConfig
    from mdplugin.training.options import TrainingOptions

    epochs = max(1, math.ceil(args.steps / math.ceil(count / BATCH)))
    model = ModelConfig(width=width, depth=depth, heads=max(2, width // 16), interaction_range=args.interaction_range)
    return TrainingOptions(
        train_files=[str(data)], validation_files=list(test), output=str(folder / "model.pt"), model=model,
        epochs=epochs, validate_every=max(1, epochs // 10), batch_size=BATCH, seed=args.seed, threads=args.threads,
        progress=False,
    )  # fmt: skip


def train_transformer(width: int, depth: int, count: int, data: Path, test: list[str], args, folder: Path) -> dict:
    """Train one Transformer grid point with the package's trainer; its test errors and cost."""
    from mdplugin.model.checkpoint import read_checkpoint
    from mdplugin.training.train import train

    options = transformer_options(width, depth, count, data, test, args, folder)
    train(options, resume=(folder / "model.pt").exists())
    checkpoint = read_checkpoint(folder / "model.pt")
    history = checkpoint["training"]["history"]
    return {
        "parameters": checkpoint["training"]["parameters"],
        "epochs": options.epochs,
        "steps": history[-1]["step"],
        "test_force_mae_mev_per_a": history[-1]["force_mae_mev_per_a"],
        "test_energy_mae_mev_per_atom": history[-1]["energy_mae_mev_per_atom"],
        "best_test_force_mae_mev_per_a": min(row["force_mae_mev_per_a"] for row in history),
    }


def train_mace(channels: int, count: int, data: Path, test: list[str], args, folder: Path) -> dict:
    """Train one MACE anchor point for the same optimizer steps and batch as the Transformer runs:
    benchmarks/mace_train.py's recipe with hidden features CHANNELSx0e + CHANNELSx1o and MACE_RECIPE."""
    from benchmarks import mace_train

    summary = mace_train.train_mace(
        [data], [Path(path) for path in test], folder, minutes=1e9, seed=args.seed, eval_every_s=1e12,
        recipe={**MACE_RECIPE, "hidden_irreps": f"{channels}x0e + {channels}x1o", "batch_size": BATCH}, steps=args.steps,
    )  # fmt: skip
    final = summary["history"][-1]
    return {
        "parameters": summary["parameters"],
        "epochs": summary["epochs"],
        "steps": summary["steps"],
        "test_force_mae_mev_per_a": final["force_mae_mev_per_a"],
        "test_energy_mae_mev_per_atom": final["energy_mae_mev_per_atom"],
        "best_test_force_mae_mev_per_a": final["force_mae_mev_per_a"],  # evaluated once, at the end
    }


def run_point(point: tuple[str, int, int, int], data: Path, test: list[str], args, folder: Path) -> dict:
    """One grid point (kind, width or MACE channels, depth, frames), or its recorded result. Runs in a worker
    process with --jobs: its own torch threads, its own folder."""
    import torch

    kind, size, depth, count = point
    result_path = folder / "result.json"
    if result_path.exists():
        return json.loads(result_path.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    started, cpu = time.time(), time.process_time()
    if kind == "mace":
        trained = train_mace(size, count, data, test, args, folder)
    else:
        trained = train_transformer(size, depth, count, data, test, args, folder)
    result = {"model": kind, "size": point_label(point), "width": size, "depth": depth, "frames": count, **trained,
              "wall_s": time.time() - started, "cpu_s": time.process_time() - cpu}  # fmt: skip
    result_path.write_text(json.dumps(result, indent=2))
    return result


def point_label(point: tuple[str, int, int, int]) -> str:
    kind, size, depth, _ = point
    return f"MACE {size}ch" if kind == "mace" else f"{size}x{depth}"


def run_points(points: list, data: dict[int, Path], test: list[str], args, output: Path) -> list[dict]:
    """Every grid point, `args.jobs` at a time in spawned processes (one torch thread each); the largest
    first, so that the last ones to finish are short."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    def folder(point) -> Path:
        return output / "runs" / f"{point_label(point).replace(' ', '-')}-D{point[3]}"

    def cost(point) -> float:
        kind, size, depth, _ = point
        return (8 if kind == "mace" else 1) * size * size * depth + 1e5  # a rough per-step cost, for the order only

    jobs = getattr(args, "jobs", 1)
    if jobs <= 1:
        return [run_point(p, data[p[3]], test, args, folder(p)) for p in points]
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = {
            p: pool.submit(run_point, p, data[p[3]], test, args, folder(p)) for p in sorted(points, key=cost)[::-1]
        }
        return [futures[p].result() for p in points]


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
    # the form has five parameters; when the data barely depend on one axis it fits the points with an
    # exponent at its bound or intervals that include zero, and then says nothing about that axis
    loose = [name for name, low, high in zip(names, bounds[0], bounds[1])
             if name in ("alpha", "beta") and (math.isclose(fitted[name], high, rel_tol=1e-3) or fitted["interval_95"][name][0] <= low)]  # fmt: skip
    fitted["determined"] = not loose
    if loose:
        fitted["why_not"] = (f"{' and '.join(loose)} at a bound or with a 95 % interval reaching zero: the runs do not "
                             "pin that term down")  # fmt: skip
    return fitted


def loglinear_fit(runs: list[dict]) -> dict | None:
    """log L = log C - alpha log N - beta log D over every run (least squares): the two exponents with 95 %
    intervals, well determined wherever the runs span both axes (no floor term: a local description)."""
    if len(runs) < 4:
        return None
    design = np.column_stack([np.ones(len(runs)), -np.log([r["parameters"] for r in runs]),
                              -np.log([r["frames"] for r in runs])])  # fmt: skip
    target = np.log([r["test_force_mae_mev_per_a"] for r in runs])
    values, *_ = np.linalg.lstsq(design, target, rcond=None)
    residual = target - design @ values
    variance = residual @ residual / (len(runs) - 3)
    errors = 1.96 * np.sqrt(np.diag(variance * np.linalg.inv(design.T @ design)))
    return {"alpha": float(values[1]), "alpha_95": [float(values[1] - errors[1]), float(values[1] + errors[1])],
            "beta": float(values[2]), "beta_95": [float(values[2] - errors[2]), float(values[2] + errors[2])],
            "prefactor": float(math.exp(values[0])), "rms_log_residual": float(math.sqrt(variance))}  # fmt: skip


def compute_optimal(fit: dict, atoms_per_frame: float, budgets: list[float]) -> list[dict]:
    """Chinchilla's question with one pass over the data: a budget of C = 6 N T FLOP (T atoms processed)
    buys D = C / (6 N atoms_per_frame) frames seen once; the N with the lowest fitted L(N, D), on a log grid."""
    rows = []
    sizes = np.logspace(3, 9, 600)
    for budget in budgets:
        frames = budget / (6 * sizes * atoms_per_frame)
        loss = joint_prediction(fit, sizes, frames)
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
    mace_sizes = list(getattr(args, "mace_sizes", None) or [])
    data = {count: subset(shuffled, count, output / "data") for count in data_sizes}
    points = [("transformer", w, d, count) for w, d in model_sizes for count in data_sizes]
    mace_data_sizes = sorted(getattr(args, "mace_data_sizes", None) or data_sizes)
    if not set(mace_data_sizes) <= set(data_sizes):
        raise ValueError(f"--mace-data-sizes {mace_data_sizes} must be among --data-sizes {data_sizes}")
    points += [("mace", channels, 2, count) for channels in mace_sizes for count in mace_data_sizes]
    everything = run_points(points, data, args.test_data, args, output)
    runs = [r for r in everything if r.get("model", "transformer") == "transformer"]
    mace = [r for r in everything if r.get("model") == "mace"]
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
            "mace_sizes": mace_sizes,
            "mace_data_sizes": mace_data_sizes if mace_sizes else [],
            "mace_recipe": MACE_RECIPE if mace_sizes else None,
            "jobs": getattr(args, "jobs", 1),
            "threads_per_job": args.threads,
        },  # fmt: skip
        "runs": runs,
        "mace_runs": mace,
        "fit_parameters": power_law(
            np.array([r["parameters"] for r in largest_d]), np.array([r["test_force_mae_mev_per_a"] for r in largest_d])
        ),  # fmt: skip
        "fit_data": power_law(
            np.array([r["frames"] for r in largest_n]), np.array([r["test_force_mae_mev_per_a"] for r in largest_n])
        ),  # fmt: skip
        "joint_fit": joint_fit(runs),
        "loglinear_fit": loglinear_fit(runs),
        "cpu_hours": sum(r["cpu_s"] for r in everything) / 3600,
    }
    if mace:
        largest = [r for r in mace if r["frames"] == max(data_sizes)]
        biggest = [r for r in mace if r["width"] == max(mace_sizes)]
        results["mace_fit_parameters"] = power_law(
            np.array([r["parameters"] for r in largest]), np.array([r["test_force_mae_mev_per_a"] for r in largest])
        )
        results["mace_loglinear_fit"] = loglinear_fit(mace)
        results["mace_fit_data"] = power_law(
            np.array([r["frames"] for r in biggest]), np.array([r["test_force_mae_mev_per_a"] for r in biggest])
        )
    if results["joint_fit"] and results["joint_fit"].get("determined"):
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
        f"{attention}; {results['cpu_hours']:.2f} CPU-hours in all ({grid.get('jobs', 1)} jobs of "
        f"{grid.get('threads_per_job', 1)} thread)."
        + (" Quick grid: the numbers only show that it runs." if grid["quick"] else ""),
        "",
        *run_table(results["runs"]),
        "",
    ]
    for key, label in (("fit_parameters", "L(N) at the largest data size"), ("fit_data", "L(D) at the largest model")):
        lines += fit_line(results.get(key), label)
    lines += loglinear_line(results.get("loglinear_fit"), "Every run")
    joint = results["joint_fit"]
    if joint and "alpha" in joint:
        interval = joint["interval_95"]
        lines.append(
            f"- Joint fit L = E + A N^-alpha + B D^-beta: E {joint['E']:.1f} meV/Å, alpha {joint['alpha']:.3f} "
            f"({interval['alpha'][0]:.3f} to {interval['alpha'][1]:.3f}), beta {joint['beta']:.3f} "
            f"({interval['beta'][0]:.3f} to {interval['beta'][1]:.3f}); rms relative residual "
            f"{joint['rms_relative_residual']:.1%}"
            + (
                ""
                if joint.get("determined", True)
                else f". **Not determined**: {joint['why_not']}; no compute-optimal size is derived from it"
            )  # fmt: skip
        )
        for row in results.get("compute_optimal", []):
            lines.append(f"  - compute {row['compute_flop']:.2e} FLOP (each frame once): about {row['parameters']:,.0f} "
                         f"parameters on {row['frames']:,.0f} frames, fitted {row['fitted_force_mae_mev_per_a']:.1f} meV/Å")  # fmt: skip
    elif joint:
        lines.append(f"- Joint fit failed: {joint['failed']}")
    if results.get("mace_runs"):
        recipe = ", ".join(f"{key} {value}" for key, value in grid["mace_recipe"].items())
        lines += [
            "",
            "## Anchor: MACE on the same data",
            "",
            f"benchmarks/mace_train.py's recipe ({recipe}; hidden features Cx0e + Cx1o for C channels), the same "
            f"{grid['steps']} steps of batch {grid['batch']}, the same training subsets and test file.",
            "",
            *run_table(results["mace_runs"]),
            "",
        ]
        lines += fit_line(results.get("mace_fit_parameters"), "MACE L(N) at the largest data size")
        lines += fit_line(results.get("mace_fit_data"), "MACE L(D) at the largest MACE")
        lines += loglinear_line(results.get("mace_loglinear_fit"), "Every MACE run")
    return "\n".join(lines) + "\n"


def run_table(runs: list[dict]) -> list[str]:
    lines = [
        "| model | parameters | frames | test force MAE (meV/Å) | best over epochs | CPU s |",
        "|---|---|---|---|---|---|",
    ]
    for r in runs:
        name = r.get("size", f"{r['width']}x{r['depth']}")
        lines.append(f"| {name} | {r['parameters']:,} | {r['frames']} | {r['test_force_mae_mev_per_a']:.1f} | "
                     f"{r['best_test_force_mae_mev_per_a']:.1f} | {r['cpu_s']:.0f} |")  # fmt: skip
    return lines


def fit_line(fit: dict | None, label: str) -> list[str]:
    if not fit:
        return []
    low, high = fit["exponent_95"]
    return [f"- {label}: exponent {fit['exponent']:.3f} (95 %: {low:.3f} to {high:.3f}), {fit['points']} points"]


def loglinear_line(fit: dict | None, label: str) -> list[str]:
    if not fit:
        return []
    return [f"- {label}, L = C N^-alpha D^-beta: alpha {fit['alpha']:.3f} ({fit['alpha_95'][0]:.3f} to "
            f"{fit['alpha_95'][1]:.3f}), beta {fit['beta']:.3f} ({fit['beta_95'][0]:.3f} to {fit['beta_95'][1]:.3f}), "
            f"rms residual {fit['rms_log_residual']:.1%} (in log L)"]  # fmt: skip


def joint_prediction(fit: dict, parameters, frames):
    return (
        fit["E"]
        + math.exp(fit["log_A"]) * parameters ** -fit["alpha"]
        + math.exp(fit["log_B"]) * frames ** -fit["beta"]
    )


def plot(results: dict, path: Path) -> None:
    """Left: error against parameters, one line per data size; right: against frames, one line per model.
    Dotted: the joint fit in the same colour; black squares: the MACE anchor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs, mace = results["runs"], results.get("mace_runs", [])
    joint = results["joint_fit"] if results["joint_fit"] and results["joint_fit"].get("determined") else None
    loglinear = results.get("loglinear_fit")

    def fitted(parameters, frames):  # the joint fit where it is determined, else the log-linear one
        if joint:
            return joint_prediction(joint, parameters, frames)
        return loglinear["prefactor"] * parameters ** -loglinear["alpha"] * frames ** -loglinear["beta"]

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    sizes = sorted({r["parameters"] for r in runs})
    frames = sorted({r["frames"] for r in runs})
    for count in results["grid"]["data_sizes"]:
        points = sorted((r["parameters"], r["test_force_mae_mev_per_a"]) for r in runs if r["frames"] == count)
        (line,) = left.plot(*zip(*points), "o-", label=f"D = {count}")
        if joint or loglinear:
            axis = np.geomspace(sizes[0], sizes[-1], 50)
            left.plot(axis, fitted(axis, count), ":", color=line.get_color())
    for size in results["grid"]["model_sizes"]:
        chosen = [r for r in runs if f"{r['width']}x{r['depth']}" == size]
        points = sorted((r["frames"], r["test_force_mae_mev_per_a"]) for r in chosen)
        (line,) = right.plot(*zip(*points), "o-", label=f"{size} ({chosen[0]['parameters'] / 1e3:,.0f}k)")
        if joint or loglinear:
            axis = np.geomspace(frames[0], frames[-1], 50)
            right.plot(axis, fitted(chosen[0]["parameters"], axis), ":", color=line.get_color())
    if mace:
        largest = sorted((r["parameters"], r["test_force_mae_mev_per_a"]) for r in mace if r["frames"] == max(frames))
        if largest:
            left.plot(*zip(*largest), "ks--", label=f"MACE, D = {max(frames)}")
        for channels in results["grid"]["mace_sizes"]:
            points = sorted((r["frames"], r["test_force_mae_mev_per_a"]) for r in mace if r["width"] == channels)
            right.plot(*zip(*points), "s--", color=str(0.6 - 0.6 * channels / max(results["grid"]["mace_sizes"])),
                       label=f"MACE {channels}ch")  # fmt: skip
    for axes, name in ((left, "parameters N"), (right, "training frames D")):
        axes.set(xscale="log", yscale="log", xlabel=name, ylabel="test force MAE (meV/Å)")
        axes.legend(fontsize=7)
    if joint or loglinear:
        form = "E + A N^-α + B D^-β" if joint else "C N^-α D^-β"
        left.set_title(f"dotted: the fit {form} over every run", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
