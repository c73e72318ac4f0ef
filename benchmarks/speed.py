"""Speed, scaling, memory and FLOP efficiency of an export, in Python, OpenMM and LAMMPS, against MACE.

For each size N (single MD17-like molecules, then non-periodic clusters of them) this measures the
median wall time of one MD step (energy + forces) in every engine, the engine overhead (engine time
over the raw export's time), the peak memory of an evaluation (a fresh subprocess per size, the
kernel's peak RSS), the matmul FLOPs of energy + forces against this CPU's float32 matmul rate,
and a MACE of comparable size on the same structures.

    python -m benchmarks.speed [--model M] [--sizes 10,20,...] [--repeats 5] [--quick]
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repository root
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ase
import ase.io
import numpy as np
import torch

from benchmarks import engines, mace_baseline, report, structures

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODELS = (ROOT / "examples/models/md17-export.pt", ROOT / "export/fixtures/tiny-float32.pt")
DEFAULT_SIZES = (10, 20, 50, 100, 200, 500, 1000, 2000)
QUICK_SIZES = (10, 50, 200)
ENGINES = ("raw", "openmm-reference", "openmm-cpu", "lammps-1", "lammps-2", "mace")
TIMESTEP_FS = 0.5
LARGE_N = 200  # the scaling exponent is also fitted over N >= LARGE_N, where attention dominates


def default_model() -> Path:
    return next((path for path in DEFAULT_MODELS if path.exists()), DEFAULT_MODELS[-1])


# ------------------------------------------------------------------------------------ measurements


def step_result(seconds: float, samples: list[float] | None = None) -> dict:
    """ms per step, steps/s and ns/day at TIMESTEP_FS for one engine and size."""
    result = {
        "ms_per_step": 1e3 * seconds,
        "steps_per_s": 1.0 / seconds,
        "ns_per_day": engines.ns_per_day(seconds, TIMESTEP_FS),
    }
    if samples:
        result["min_ms_per_step"] = 1e3 * min(samples)
    if samples is not None:
        result["samples_ms"] = [1e3 * s for s in samples]
    return result


def steps_per_sample(raw_seconds: float, target_seconds: float) -> int:
    """MD steps per timed sample, so that each sample lasts about `target_seconds`."""
    return int(min(200, max(1, round(target_seconds / raw_seconds))))


def time_raw(module: torch.jit.ScriptModule, atoms: ase.Atoms, dtype: torch.dtype, repeats: int) -> dict:
    positions, numbers = engines.raw_inputs(atoms, dtype)
    # a few calls let the TorchScript profiling executor specialise for this N before timing
    median, samples = engines.median_seconds(lambda: module(positions, numbers, 0, 1), repeats, warmup=3)
    return step_result(median, samples)


def time_openmm(model: Path, atoms: ase.Atoms, platform: str, repeats: int, steps: int, threads: int) -> dict:
    context, adapter = engines.openmm_context(model, atoms, platform, TIMESTEP_FS, threads)
    integrator = context.getIntegrator()
    median, samples = engines.median_seconds(lambda: integrator.step(steps), repeats, warmup=2)
    del context
    return {**step_result(median / steps, [s / steps for s in samples]), "steps_per_sample": steps, "adapter": adapter}


def time_lammps(
    model: Path, atoms: ase.Atoms, elements: list[str], ranks: int, repeats: int, steps: int, threads: int
) -> dict:
    result = engines.run_lammps(
        model, atoms, elements, [steps] * (repeats + 1), ranks, TIMESTEP_FS, threads_per_rank=max(1, threads // ranks)
    )
    samples = result["step_seconds"][1:]  # the first run pays for set-up and the first model calls
    return {**step_result(float(np.median(samples)), samples), "steps_per_sample": steps, "ranks": ranks}


def time_mace(model: torch.nn.Module, atoms: ase.Atoms, elements: list[int], dtype: torch.dtype, repeats: int) -> dict:
    start = time.perf_counter()
    batch = mace_baseline.mace_batch(atoms, elements, dtype)
    neighbour_list = time.perf_counter() - start
    median, samples = engines.median_seconds(lambda: mace_baseline.energy_and_forces(model, batch), repeats, warmup=3)
    edges = int(batch["edge_index"].shape[1])
    return {**step_result(median, samples), "neighbour_list_ms": 1e3 * neighbour_list, "edges": edges}


def count_flops(config: dict, atoms: ase.Atoms, dtype: torch.dtype) -> int:
    """Matmul FLOPs of one energy + forces evaluation (forward and the backward to the positions).

    Counted on the eager model (random weights: FLOPs do not depend on them) with the math attention
    backend, whose matmuls the counter sees; the fused CPU kernel does the same products.
    Element-wise work (norms, activations, softmax, the Gaussian embedding) is not counted.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from mdplugin.model.transformer import ModelConfig, TransformerPotential

    model = TransformerPotential(ModelConfig.from_dict(config)).to(dtype).eval().requires_grad_(False)
    species = model.species_of_atomic_number[torch.tensor(atoms.numbers)].unsqueeze(0)
    positions = torch.tensor(atoms.positions, dtype=dtype).unsqueeze(0).requires_grad_(True)
    mask = torch.ones_like(species, dtype=torch.bool)
    system = torch.tensor([0]), torch.tensor([1])
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        # backward() rather than autograd.grad: the counter's module hooks do not support the latter
        model(positions, species, mask, *system).sum().backward()
    return int(counter.get_total_flops())


def matmul_gflops(size: int = 2048, repeats: int = 7, dtype: torch.dtype = torch.float32) -> float:
    """This CPU's dense matmul rate (GFLOP/s) with torch's current threads: the FLOP floor's yardstick."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    median, _ = engines.median_seconds(lambda: torch.matmul(a, b), repeats, warmup=2)
    return 2 * size**3 / median / 1e9


def peak_memory(model: Path, atoms: ase.Atoms, threads: int) -> dict:
    """Peak RSS of evaluating `atoms`, in a fresh Python process (so earlier sizes do not count)."""
    with tempfile.TemporaryDirectory(prefix="mdplugin-memory-") as directory:
        path = Path(directory) / "structure.xyz"
        ase.io.write(path, atoms, format="extxyz")
        command = [sys.executable, str(Path(__file__).resolve()), "--memory-probe", str(path), "--model", str(model)]
        command += ["--threads", str(threads)]
        completed = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if completed.returncode != 0:
        raise RuntimeError(
            completed.stderr.strip().splitlines()[-1] if completed.stderr.strip() else "memory probe failed"
        )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def memory_probe(model: Path, structure: Path) -> dict:
    """In the probe process: peak RSS (MB) of evaluating `structure`, and its excess over a warmed-up baseline.

    The baseline is the RSS after loading the export and evaluating a 3-atom piece of the structure
    twice (libraries paged in, thread pools and the TorchScript executor set up), so the difference
    is what evaluating N atoms itself costs. Peaks are the kernel's VmHWM: getrusage's ru_maxrss
    survives fork and exec on Linux, so in a child it would report the parent's peak.
    """
    module, metadata = engines.load_module(model)
    positions, numbers = engines.raw_inputs(ase.io.read(structure), getattr(torch, metadata["dtype"]))
    for _ in range(2):
        module(positions[:3], numbers[:3], 0, 1)
    baseline = engines.status_mb("VmRSS")
    for _ in range(3):
        module(positions, numbers, 0, 1)
    peak = engines.status_mb("VmHWM")
    return {"rss_baseline_mb": baseline, "peak_rss_mb": peak, "evaluation_mb": peak - baseline}


def fit_exponent(sizes: list[int], milliseconds: list[float]) -> float | None:
    """Slope of log(time) against log(N): time ∝ N^slope."""
    if len(sizes) < 2:
        return None
    return float(np.polyfit(np.log(sizes), np.log(milliseconds), 1)[0])


# ------------------------------------------------------------------------------------------- driver


def measure_size(target: int, context: dict, settings: dict) -> dict:
    """Every engine and metric for one requested size; a failing engine is recorded, not fatal."""
    atoms = structures.structure_of_size(target, context["atomic_numbers"], seed=target)
    dtype, repeats, threads = context["dtype"], settings["repeats"], settings["threads"]
    row = {"target_atoms": target, "atoms": len(atoms), "structure": atoms.info["name"], "engines": {}, "errors": {}}
    raw = time_raw(context["module"], atoms, dtype, repeats)
    row["engines"]["raw"] = {**raw, "relative_to_raw": 1.0}
    progress(f"N={len(atoms)} raw: {raw['ms_per_step']:.3g} ms")
    steps = steps_per_sample(raw["ms_per_step"] / 1e3, settings["sample_seconds"])
    measurements = {
        "openmm-reference": lambda: time_openmm(context["model"], atoms, "Reference", repeats, steps, threads),
        "openmm-cpu": lambda: time_openmm(context["model"], atoms, "CPU", repeats, steps, threads),
        "lammps-1": lambda: time_lammps(context["model"], atoms, context["elements"], 1, repeats, steps, threads),
        "lammps-2": lambda: time_lammps(context["model"], atoms, context["elements"], 2, repeats, steps, threads),
        "mace": lambda: time_mace(context["mace"], atoms, context["atomic_numbers"], dtype, repeats),
    }
    for name, measure in measurements.items():
        if name not in settings["engines"] or name in context["skipped"]:
            continue
        try:
            row["engines"][name] = measure()
            row["engines"][name]["relative_to_raw"] = row["engines"][name]["ms_per_step"] / raw["ms_per_step"]
            progress(f"N={len(atoms)} {name}: {row['engines'][name]['ms_per_step']:.3g} ms")
        except Exception as error:  # one engine failing at one size must not lose the other numbers
            row["errors"][name] = f"{type(error).__name__}: {str(error).strip()[-500:]}"
            progress(f"N={len(atoms)} {name}: failed, {row['errors'][name]}")
    flops = count_flops(context["config"], atoms, dtype)
    floor_ms = 1e3 * flops / (context["matmul_gflops"] * 1e9)
    row["flops"] = {"gflop": flops / 1e9, "floor_ms": floor_ms, "efficiency": floor_ms / raw["ms_per_step"]}
    if settings["memory"]:
        try:
            row["memory"] = peak_memory(context["model"], atoms, threads)
        except Exception as error:
            row["errors"]["memory"] = str(error)
    return row


def progress(message: str) -> None:
    print(f"[speed {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def prepare(model: Path, settings: dict) -> dict:
    """The loaded export, its metadata, the yardstick matmul rate, MACE, and engines to skip (with why)."""
    module, metadata = engines.load_module(model)
    context = {
        "model": model,
        "module": module,
        "metadata": metadata,
        "dtype": getattr(torch, metadata["dtype"]),
        "config": metadata["model_config"],
        "elements": list(metadata["elements"]),
        "atomic_numbers": list(metadata["atomic_numbers"]),
        "skipped": {},
        "matmul_gflops": matmul_gflops(repeats=3 if settings["quick"] else 7, dtype=getattr(torch, metadata["dtype"])),
        "mace": None,
    }
    lammps = [name for name in ("lammps-1", "lammps-2") if name in settings["engines"]]
    if lammps and (reason := engines.lammps_unavailable_reason()):
        context["skipped"].update(dict.fromkeys(lammps, reason))
    if "mace" in settings["engines"]:
        reason = mace_baseline.unavailable_reason()
        if reason:
            context["skipped"]["mace"] = reason
        else:
            context["mace"], context["mace_channels"] = mace_baseline.comparable_mace(
                context["atomic_numbers"], metadata["parameters"], context["dtype"]
            )
    return context


def run_speed(
    model: str | Path | None = None,
    output: str | Path = ROOT / "benchmarks/results",
    sizes: list[int] | None = None,
    repeats: int | None = None,
    quick: bool = False,
    engine_names: list[str] | None = None,
    threads: int | None = None,
    memory: bool = True,
) -> dict:
    """Measure, then write speed.json, speed.md and the plots to `output`; returns the results."""
    if threads:
        torch.set_num_threads(threads)
    model = Path(model) if model else default_model()
    settings = {
        "sizes": list(sizes or (QUICK_SIZES if quick else DEFAULT_SIZES)),
        "repeats": repeats or (3 if quick else 7),
        "quick": quick,
        "engines": list(engine_names or ENGINES),
        "threads": torch.get_num_threads(),
        "timestep_fs": TIMESTEP_FS,
        "sample_seconds": 0.02 if quick else 0.2,
        "memory": memory,
    }
    unknown = set(settings["engines"]) - set(ENGINES)
    if unknown:
        raise ValueError(f"unknown engines {sorted(unknown)}; choose from {', '.join(ENGINES)}")
    machine = report.machine_info()
    progress(f"model {model}; sizes {settings['sizes']}; engines {', '.join(settings['engines'])}")
    context = prepare(model, settings)
    rows = [measure_size(target, context, settings) for target in settings["sizes"]]
    machine = report.finish(machine)
    results = {
        "benchmark": "speed",
        "machine": machine,
        "model": {
            "path": str(model),
            "parameters": context["metadata"]["parameters"],
            "dtype": context["metadata"]["dtype"],
            "config": context["config"],
        },
        "settings": settings,
        "matmul_gflops": context["matmul_gflops"],
        "mace": mace_baseline.describe(context),
        "skipped": context["skipped"],
        "memory_method": "peak RSS (VmHWM in /proc/self/status) of a fresh process per size; evaluation_mb = peak - RSS after loading the export and evaluating 3 atoms",
        "rows": rows,
        "scaling": scaling(rows),
    }
    write_results(results, Path(output))
    return results


def scaling(rows: list[dict]) -> dict:
    """Fitted exponents time ∝ N^k per engine: over all sizes, and over N >= LARGE_N."""
    fits = {}
    for engine in ENGINES:
        points = [(row["atoms"], row["engines"][engine]["ms_per_step"]) for row in rows if engine in row["engines"]]
        large = [(n, t) for n, t in points if n >= LARGE_N]
        fits[engine] = {
            "exponent_all": fit_exponent(*zip(*points)) if len(points) >= 2 else None,
            "exponent_large": fit_exponent(*zip(*large)) if len(large) >= 2 else None,
        }
    return fits


# ------------------------------------------------------------------------------------------ writing


def write_results(results: dict, output: Path) -> None:
    output.mkdir(parents=True, exist_ok=True)
    report.write_json(results, output / "speed.json")
    (output / "speed.md").write_text(markdown(results) + water_section(output))
    plot(results, output)


def water_section(output: Path) -> str:
    """The periodic-water comparison (local model, global model, MACE) of `speed_local.py`, and the compiled
    exports against TorchScript of `compiled.py`, when they have run."""
    sections = [output / "speed-local.md", output / "compiled.md"]
    return "".join("\n" + report.demoted(section.read_text()) for section in sections if section.is_file())


def rewrite_markdown(output: Path) -> None:
    """Rebuild speed.md from speed.json and the latest water and compiled results (after `speed_local.py` or
    `compiled.py` ran)."""
    path = output / "speed.json"
    if path.is_file():
        (output / "speed.md").write_text(markdown(json.loads(path.read_text())) + water_section(output))


def markdown(results: dict) -> str:
    rows, fmt = results["rows"], report.number
    names = [name for name in ENGINES[1:5] if any(name in row["engines"] for row in rows)]
    speed_rows = []
    for row in rows:
        raw = row["engines"]["raw"]
        cells = [
            row["atoms"],
            row["structure"],
            fmt(raw["ms_per_step"]),
            fmt(raw["steps_per_s"]),
            fmt(raw["ns_per_day"]),
        ]
        for name in names:
            entry = row["engines"].get(name)
            cells.append(f"{fmt(entry['ms_per_step'])} (×{entry['relative_to_raw']:.2f})" if entry else None)
        speed_rows.append(cells)
    sections = [
        "# Speed of the exported model",
        "",
        report.machine_markdown(results["machine"]),
        "",
        f"Model `{results['model']['path']}` ({results['model']['parameters']:,} parameters, "
        f"{results['model']['dtype']}). Medians of {results['settings']['repeats']} timed samples after warm-up; "
        f"one step is energy + forces; ns/day at {TIMESTEP_FS} fs. Engine columns: ms per MD step "
        "(× the raw export's time: the engine overhead).",
        "",
        report.markdown_table(["N", "structure", "raw ms", "steps/s", "ns/day", *names], speed_rows, text_columns=2),
        "",
        "## Scaling (time ∝ N^k)",
        "",
        report.markdown_table(
            ["engine", "k (all N)", f"k (N ≥ {LARGE_N})"],
            [
                [name, fmt(fit["exponent_all"]), fmt(fit["exponent_large"])]
                for name, fit in results["scaling"].items()
                if fit["exponent_all"] is not None
            ],
        ),
        "",
        "## FLOP floor",
        "",
        f"Matmul FLOPs of energy + forces (forward and backward to the positions, counted with FlopCounterMode) "
        f"over this CPU's float32 matmul rate, {results['matmul_gflops']:.0f} GFLOP/s (a 2048² matmul, same threads). "
        "Efficiency = floor time / measured raw time.",
        "",
        report.markdown_table(
            ["N", "GFLOP/step", "floor ms", "raw ms", "efficiency"],
            [
                [
                    row["atoms"],
                    fmt(row["flops"]["gflop"]),
                    fmt(row["flops"]["floor_ms"]),
                    fmt(row["engines"]["raw"]["ms_per_step"]),
                    f"{100 * row['flops']['efficiency']:.1f}%",
                ]
                for row in rows
            ],
        ),
    ]
    sections += mace_markdown(results) + memory_markdown(results) + skipped_markdown(results)
    return "\n".join(sections) + "\n"


def mace_markdown(results: dict) -> list[str]:
    mace, fmt = results["mace"], report.number
    if "skipped" in mace:
        return ["", "## MACE baseline", "", f"Not measured: {mace['skipped']}"]
    rows = [
        [
            row["atoms"],
            fmt(row["engines"]["raw"]["ms_per_step"]),
            fmt(row["engines"]["mace"]["ms_per_step"]),
            fmt(row["engines"]["mace"]["neighbour_list_ms"]),
            row["engines"]["mace"]["edges"],
            f"{row['engines']['mace']['relative_to_raw']:.2f}",
        ]
        for row in results["rows"]
        if "mace" in row["engines"]
    ]
    return [
        "",
        "## MACE baseline",
        "",
        f"MACE with random weights, {mace['parameters']:,} parameters ({mace['channels']} channels, L=1, 2 interactions, "
        f"r_max {mace['r_max_angstrom']} Å), {mace['mode']}; {mace['timed']}.",
        "",
        report.markdown_table(["N", "ours ms", "MACE ms", "MACE neighbour list ms", "edges", "MACE / ours"], rows),
    ]


def memory_markdown(results: dict) -> list[str]:
    rows = [
        [row["atoms"], f"{row['memory']['peak_rss_mb']:.0f}", f"{row['memory']['evaluation_mb']:.0f}"]
        for row in results["rows"]
        if "memory" in row
    ]
    if not rows:
        return []
    return [
        "",
        "## Peak memory",
        "",
        results["memory_method"] + ".",
        "",
        report.markdown_table(["N", "peak RSS MB", "evaluation MB"], rows),
    ]


def skipped_markdown(results: dict) -> list[str]:
    lines = [f"- {name}: skipped, {reason}" for name, reason in results["skipped"].items()]
    lines += [
        f"- {name} at N={row['atoms']}: failed, {error}"
        for row in results["rows"]
        for name, error in row["errors"].items()
    ]
    return ["", "## Skipped and failed", "", *lines] if lines else []


def plot(results: dict, output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (speed_axes, memory_axes) = plt.subplots(1, 2, figsize=(12, 4.8))
    for engine in ENGINES:
        points = [
            (row["atoms"], row["engines"][engine]["ms_per_step"]) for row in results["rows"] if engine in row["engines"]
        ]
        if not points:
            continue
        exponent = results["scaling"][engine]["exponent_large"] or results["scaling"][engine]["exponent_all"]
        label = engine if exponent is None else f"{engine} (k = {exponent:.2f})"
        speed_axes.loglog(*zip(*points), "o-", label=label)
    floor = [(row["atoms"], row["flops"]["floor_ms"]) for row in results["rows"]]
    speed_axes.loglog(*zip(*floor), "k--", label="FLOP floor (raw)")
    speed_axes.set(xlabel="atoms N", ylabel="ms per MD step (energy + forces)", title="Cost against size")
    speed_axes.legend(fontsize=8)
    memory = [
        (row["atoms"], row["memory"]["evaluation_mb"], row["memory"]["peak_rss_mb"])
        for row in results["rows"]
        if "memory" in row
    ]
    if memory:
        sizes, evaluation, peak = zip(*memory)
        memory_axes.loglog(sizes, peak, "o-", label="peak RSS")
        memory_axes.loglog(sizes, np.maximum(evaluation, 1e-1), "s-", label="peak − warmed-up baseline")
        memory_axes.legend(fontsize=8)
    memory_axes.set(xlabel="atoms N", ylabel="MB", title="Peak memory of one evaluation (raw export)")
    figure.tight_layout()
    figure.savefig(output / "speed.png", dpi=120)
    plt.close(figure)


# ---------------------------------------------------------------------------------------------- CLI


def parse_sizes(text: str) -> list[int]:
    sizes = [int(value) for value in text.split(",") if value.strip()]
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"--sizes needs positive integers separated by commas, got {text!r}")
    return sizes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help=f"export to measure (default: {default_model()})")
    parser.add_argument(
        "-o", "--output", type=Path, default=ROOT / "benchmarks/results", help="directory for speed.json/.md/.png"
    )
    parser.add_argument("--sizes", type=parse_sizes, default=None, help="comma-separated atom counts")
    parser.add_argument("--repeats", type=int, default=None, help="timed samples per engine and size (median reported)")
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated subset of " + ",".join(ENGINES))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-size memory subprocesses")
    parser.add_argument(
        "--quick", action="store_true", help="few sizes and repeats: checks the pipeline, not final numbers"
    )
    parser.add_argument("--memory-probe", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_probe is not None:
        if args.threads:
            torch.set_num_threads(args.threads)
        print(json.dumps(memory_probe(args.model or default_model(), args.memory_probe)))
        return
    run_speed(
        args.model,
        args.output,
        args.sizes,
        args.repeats,
        args.quick,
        args.engines.split(","),
        args.threads,
        not args.no_memory,
    )
    print((Path(args.output) / "speed.md").read_text())


if __name__ == "__main__":
    main()
