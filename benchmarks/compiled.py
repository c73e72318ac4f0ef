"""The compiled export (`mdplugin export --compile`) against the TorchScript export, in one run.

For the shipped md17, dipeptide and water models: the compile time; per-call time of the export as Python
clients call it (`model.module()`: checks, the local model's neighbour search, energy and forces) and per-step
time in OpenMM (CPU platform; TorchForce for the TorchScript file, PythonForce for the compiled one), with 1
and 2 threads, wall-clock and CPU time; and how far the compiled forces are from the TorchScript ones, next to
float32's own error (TorchScript float32 against the checkpoint evaluated in float64).

    python -m benchmarks.compiled [--repeats 7] [--quick] [--threads 1,2]
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repository root
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import ase
import ase.io
import numpy as np
import torch

from benchmarks import engines, report, structures
from benchmarks.speed_local import RETAINED_HEAP, retained_timing, water_box

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "examples/models"
TIMESTEP_FS = 0.5
KINDS = ("torchscript", "compiled")
SCALING_EDGES = (8, 13, 16, 22)  # water boxes of 1,536, 6,591, 12,288 and 31,944 atoms
# glibc's default heap, and the engines' setting (mdplugin.allocation; the same as these variables)
HEAPS = {"default heap": {"MDPLUGIN_RETAIN_HEAP": "0"}, "retained heap": RETAINED_HEAP}
TORCHSCRIPT_SCALING_ATOMS = 13000  # ~35 s a call at 31,944 atoms: measured up to 12,288 to keep the run short
FLAT = 0.25  # the target: time per atom within ±25 % of its median over the sizes


def cases(quick: bool) -> list[dict]:
    """(model, structure) pairs: the targets' aspirin and 192-atom water, and the ML/MM dipeptide."""
    dipeptide = ase.io.read(ROOT / "examples/mlmm/alanine-dipeptide.pdb")
    rows = [
        {"model": "md17", "structure": "aspirin", "atoms": structures.molecule("aspirin")},
        {
            "model": "dipeptide",
            "structure": "alanine dipeptide",
            "atoms": ase.Atoms(dipeptide.numbers, dipeptide.positions),
        },
        {"model": "water-classical", "structure": "water 4³ (periodic)", "atoms": water_box(4)},
    ]
    if not quick:
        rows.append({"model": "water-classical", "structure": "water 8³ (periodic)", "atoms": water_box(8)})
    return rows


def progress(message: str) -> None:
    print(f"[compiled {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def timed(function, repeats: int, warmup: int, sample_seconds: float = 0.05) -> dict:
    """Median wall-clock and CPU time (ms) per call of `function()` over `repeats` samples after `warmup`
    calls; a sample is as many calls as last about `sample_seconds` (sub-millisecond calls are timed in batches)."""
    for _ in range(warmup):
        function()
    start = time.perf_counter()
    function()
    calls = max(1, round(sample_seconds / max(time.perf_counter() - start, 1e-6)))
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(calls):
            function()
        wall.append((time.perf_counter() - start) / calls)
        cpu.append((time.process_time() - start_cpu) / calls)
    return {
        "ms": 1e3 * statistics.median(wall),
        "cpu_ms": 1e3 * statistics.median(cpu),
        "calls_per_sample": calls,
        "samples_ms": [1e3 * s for s in wall],
    }


def call_arguments(atoms: ase.Atoms) -> tuple:
    positions = torch.tensor(atoms.positions, dtype=torch.float64)
    numbers = torch.tensor(atoms.numbers, dtype=torch.long)
    if atoms.pbc.any():
        return positions, numbers, 0, 1, torch.tensor(atoms.cell.array), torch.ones(3, dtype=torch.bool)
    return positions, numbers, 0, 1


def openmm_step(path: Path, atoms: ase.Atoms, threads: int, repeats: int, steps: int) -> dict:
    import openmm
    import openmm.unit as unit

    from mdplugin.engines.openmm_force import create_system

    topology = engines.openmm_topology(atoms)
    if atoms.pbc.any():
        topology.setPeriodicBoxVectors(atoms.cell.array / 10.0)
    system = create_system(path, topology, remove_cm_motion=False, device="cpu")
    integrator = openmm.VerletIntegrator(TIMESTEP_FS * unit.femtoseconds)
    platform = openmm.Platform.getPlatformByName("CPU")
    context = openmm.Context(system, integrator, platform, {"Threads": str(threads)})
    context.setPositions(atoms.positions / 10.0)
    result = timed(lambda: integrator.step(steps), repeats, warmup=1, sample_seconds=0)
    adapter = type(system.getForce(0)).__name__
    del context
    per_step = {key: result[key] / steps for key in ("ms", "cpu_ms")}
    return {**per_step, "steps_per_sample": steps, "force": adapter}


def accuracy(files: dict, checkpoint: Path, atoms: ase.Atoms) -> dict:
    """Max |F_compiled - F_torchscript| and float32's own error max |F_float32 - F_float64|, over max |F|."""
    from mdplugin.export.model_file import open_model

    arguments = call_arguments(atoms)
    script = open_model(files["torchscript"]).module()(*arguments)
    compiled = open_model(files["compiled"]).module()(*arguments)
    reference = open_model(checkpoint).module("float64")(*arguments)
    scale = float(reference[1].abs().max())
    return {
        "compiled_vs_torchscript": float((compiled[1] - script[1]).abs().max()) / scale,
        "torchscript_float32_vs_float64": float((script[1] - reference[1]).abs().max()) / scale,
        "compiled_float32_vs_float64": float((compiled[1] - reference[1]).abs().max()) / scale,
        "energy_compiled_vs_torchscript_ev": abs(float(compiled[0].detach()) - float(script[0].detach())),
    }


def measure(case: dict, files: dict, settings: dict) -> dict:
    from mdplugin.export.model_file import open_model

    atoms, row = case["atoms"], {key: case[key] for key in ("model", "structure")}
    row.update({"atoms_count": len(atoms), "call": {}, "openmm": {}})
    arguments = call_arguments(atoms)
    for threads in settings["threads"]:
        torch.set_num_threads(threads)
        # each compiled package fixes its kernels' thread count: the one compiled with `threads`
        paths = {"torchscript": files["torchscript"], "compiled": files["compiled"][threads]}
        modules = {kind: open_model(paths[kind]).module() for kind in KINDS}
        for kind in KINDS:
            call = timed(lambda module=modules[kind]: module(*arguments), settings["repeats"], warmup=5)
            row["call"][f"{kind}-{threads}"] = call
            progress(f"{case['structure']} {kind} {threads} thread(s): {call['ms']:.3g} ms per call")
        if len(atoms) > settings["openmm_max_atoms"]:
            continue
        steps = max(1, min(50, round(0.2 / (1e-3 * row["call"][f"torchscript-{threads}"]["ms"]))))
        for kind in KINDS:
            step = openmm_step(paths[kind], atoms, threads, settings["repeats"], steps)
            row["openmm"][f"{kind}-{threads}"] = step
            progress(f"{case['structure']} OpenMM {step['force']} {threads} thread(s): {step['ms']:.3g} ms per step")
    one_thread = {"torchscript": files["torchscript"], "compiled": files["compiled"][min(files["compiled"])]}
    row["accuracy"] = accuracy(one_thread, MODELS / f"{case['model']}.pt", atoms)
    return row


def scaling(files: dict, edges: list[int]) -> list[dict]:
    """Time per atom of the water model over box sizes, each export with each heap, one thread, each size in a
    fresh process (speed_local's timing probe), so that one configuration's heap does not carry over."""
    rows = []
    for edge in edges:
        atoms = water_box(edge, seed=edge)
        row = {"atoms": len(atoms), "structure": atoms.info["name"], "timings": {}}
        for kind in KINDS:
            if kind == "torchscript" and len(atoms) > TORCHSCRIPT_SCALING_ATOMS:
                continue
            for heap, environment in HEAPS.items():
                # two warm-up calls: TorchScript's profiling executor optimises on the second
                result = retained_timing(str(files[kind]), atoms, 2, 2, environment)
                row["timings"][f"{kind}, {heap}"] = result
                progress(f"{len(atoms)} atoms {kind}, {heap}: {1e3 * result['ms_per_atom']:.3g} us/atom")
        rows.append(row)
    return rows


def flatness(rows: list[dict], configuration: str, key: str) -> dict | None:
    """Largest deviation of the time per atom from its median over the sizes, and whether it is within FLAT."""
    values = [row["timings"][configuration][key] for row in rows if configuration in row["timings"]]
    if len(values) < 2:
        return None
    median = float(np.median(values))
    deviation = max(abs(value / median - 1) for value in values)
    return {"median_us_per_atom": 1e3 * median, "largest_deviation": deviation, "flat": deviation <= FLAT}


def run(output: Path, repeats: int, quick: bool, threads: list[int]) -> dict:
    from mdplugin.export.compiled import compile_export
    from mdplugin.export.model_file import open_model

    machine = report.machine_info()
    settings = {"repeats": repeats, "threads": threads, "timestep_fs": TIMESTEP_FS, "openmm_max_atoms": 200}
    rows, compiled, all_cases = [], {}, cases(quick)
    with tempfile.TemporaryDirectory(prefix="mdplugin-compiled-") as directory:
        # every package first: Inductor's compile workers must be gone before anything is timed
        for name in dict.fromkeys(case["model"] for case in all_cases):
            compiled[name] = {}
            for count in threads:  # a package per thread count: its kernels' count is fixed when compiling
                path = Path(directory) / f"{name}-{count}-export.pt2"
                compile_export(MODELS / f"{name}.pt", path, threads=count)
                compiled[name][count] = {"path": path, **open_model(path).metadata["compiled"]}
                progress(f"compiled {name} for {count} thread(s) in {compiled[name][count]['compile_seconds']} s")
        time.sleep(5)
        for case in all_cases:
            name = case["model"]
            paths = {count: entry["path"] for count, entry in compiled[name].items()}
            rows.append(measure(case, {"torchscript": MODELS / f"{name}-export.pt", "compiled": paths}, settings))
        edges = list(SCALING_EDGES[:2] if quick else SCALING_EDGES)
        water = {"torchscript": MODELS / "water-classical-export.pt",
                 "compiled": compiled["water-classical"][min(threads)]["path"]}  # fmt: skip
        scaling_rows = scaling(water, edges)
    results = {
        "benchmark": "compiled",
        "machine": report.finish(machine),
        "settings": settings,
        "compiled": {
            name: {count: {k: v for k, v in entry.items() if k != "path"} for count, entry in packages.items()}
            for name, packages in compiled.items()
        },
        "rows": rows,
        "scaling": scaling_rows,
        "flatness": {
            configuration: {
                "wall": flatness(scaling_rows, configuration, "ms_per_atom"),
                "cpu": flatness(scaling_rows, configuration, "cpu_ms_per_atom"),
            }
            for configuration in scaling_rows[0]["timings"]
        },
    }
    output.mkdir(parents=True, exist_ok=True)
    report.write_json(results, output / "compiled.json")
    (output / "compiled.md").write_text(markdown(results))
    from benchmarks.speed import rewrite_markdown

    rewrite_markdown(output)
    return results


def markdown(results: dict) -> str:
    fmt, rows, threads = report.number, results["rows"], results["settings"]["threads"]

    def pair(entry: dict | None) -> str | None:
        return f"{fmt(entry['ms'])} ({fmt(entry['cpu_ms'])})" if entry else None

    def per_atom(entry: dict | None) -> str | None:
        return f"{fmt(1e3 * entry['ms_per_atom'])} ({fmt(1e3 * entry['cpu_ms_per_atom'])})" if entry else None

    def speedup(table: dict, n: int, key: str = "ms") -> str | None:
        before, after = table.get(f"torchscript-{n}"), table.get(f"compiled-{n}")
        return f"{before[key] / after[key]:.2f}x" if before and after else None

    call_rows, openmm_rows = [], []
    for row in rows:
        for n in threads:
            label = [row["model"], row["structure"], row["atoms_count"], n]
            call_rows.append([*label, pair(row["call"].get(f"torchscript-{n}")), pair(row["call"].get(f"compiled-{n}")),
                              speedup(row["call"], n), speedup(row["call"], n, "cpu_ms")])  # fmt: skip
            if row["openmm"]:
                openmm_rows.append([*label, pair(row["openmm"].get(f"torchscript-{n}")),
                                    pair(row["openmm"].get(f"compiled-{n}")), speedup(row["openmm"], n)])  # fmt: skip
    accuracy_rows = [
        [row["model"], row["structure"], f"{row['accuracy']['compiled_vs_torchscript']:.1e}",
         f"{row['accuracy']['torchscript_float32_vs_float64']:.1e}", f"{row['accuracy']['compiled_float32_vs_float64']:.1e}"]
        for row in rows
    ]  # fmt: skip
    compile_rows = [
        [name, count, entry["compile_seconds"], entry["neighbour_capacity"] or "–"]
        for name, packages in results["compiled"].items()
        for count, entry in packages.items()
    ]
    configurations = list(results["scaling"][0]["timings"]) if results["scaling"] else []
    scaling_rows_md = [
        [row["atoms"], *[per_atom(row["timings"].get(name)) for name in configurations]] for row in results["scaling"]
    ]
    flat_lines = []
    for name, clocks in results["flatness"].items():
        for clock, label in (("wall", "wall-clock"), ("cpu", "CPU time")):
            entry = clocks[clock]
            if entry:
                verdict = "met" if entry["flat"] else "not met"
                flat_lines.append(
                    f"- **{name}, {label}: flat within ±{FLAT:.0%} {verdict}**: median "
                    f"{entry['median_us_per_atom']:.3g} µs/atom, largest deviation {entry['largest_deviation']:+.0%}."
                )
    warning = report.busy_warning(results["machine"])
    lines = [
        "# Compiled exports against TorchScript",
        "",
        report.machine_markdown(results["machine"]),
        "",
        *([warning, ""] if warning else []),
        "`mdplugin export --compile` (AOT-Inductor package, contract version 4) against the shipped TorchScript "
        f"exports (float32 both). Medians of {results['settings']['repeats']} samples after warm-up, wall-clock ms "
        "(CPU ms of this process in parentheses). `python -m benchmarks.compiled`.",
        "",
        "## Per call (Python: `open_model(path).module()(positions, numbers, ...)`, energy + forces)",
        "",
        report.markdown_table(
            [
                "model",
                "structure",
                "N",
                "threads",
                "TorchScript ms",
                "compiled ms",
                "speed-up (wall)",
                "speed-up (CPU)",
            ],
            call_rows,
            text_columns=2,
        ),  # fmt: skip
        "",
        f"## Per MD step, OpenMM CPU platform (Verlet {TIMESTEP_FS} fs; TorchScript: TorchForce; compiled: PythonForce)",
        "",
        report.markdown_table(
            ["model", "structure", "N", "threads", "TorchForce ms", "PythonForce + compiled ms", "speed-up"],
            openmm_rows,
            text_columns=2,
        ),  # fmt: skip
        "",
        "## Agreement (max |ΔF| / max |F|)",
        "",
        "Compiled against TorchScript, both float32; float32's own error for scale: each float32 export against "
        "the checkpoint evaluated in float64.",
        "",
        report.markdown_table(
            ["model", "structure", "compiled vs TorchScript", "TorchScript f32 vs f64", "compiled f32 vs f64"],
            accuracy_rows,
            text_columns=2,
        ),  # fmt: skip
        "",
        "## Time per atom from 1,536 to 31,944 atoms (water model, one thread)",
        "",
        "µs per atom per call, wall-clock (CPU time in parentheses); each size and configuration in a fresh "
        "process; default heap: glibc's; retained heap: the setting the engine adapters now apply "
        "(mdplugin.allocation: freed buffers stay in the process).",
        "",
        report.markdown_table(["N", *configurations], scaling_rows_md, text_columns=1),
        "",
        *flat_lines,
        "",
        "## Compile time",
        "",
        report.markdown_table(["model", "kernel threads", "seconds", "neighbour slots per atom"], compile_rows),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks/results")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and sizes (water up to 6,591 atoms)")
    parser.add_argument("--threads", default="1,2", help="torch (and OpenMM CPU) thread counts, comma-separated")
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 7)
    run(args.output, repeats, args.quick, [int(n) for n in args.threads.split(",")])


if __name__ == "__main__":
    main()
