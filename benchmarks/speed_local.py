"""Cost of the local model on periodic water boxes, against the global model and MACE, side by side.

Liquid water at 1 g/cm³ (waters on a cubic grid of 3.104 Å, each molecule jittered and randomly
oriented, orientations redrawn until no two molecules have atoms closer than 1.5 Å) in cubic
periodic boxes from about 200 to 32,000 atoms. For each size, in one process with one torch thread:

- local: the local export (contract v2) called with the cell and pbc, energy + forces (its own
  vesin neighbour list is inside the call);
- global: the global export (contract v1) on the same atoms as a non-periodic cluster; it is
  O(N²) and is stopped at the first size whose predicted call time exceeds `--global-limit-s`;
- mace: a random-weight MACE of about the local model's parameter count (cutoff 5 Å, periodic), the
  model call with compute_force=True; its neighbour list is timed apart; up to `--mace-max-atoms`
  (its memory grows by about 3 MB per atom) and stopped like the global model beyond `--mace-limit-s`;
- local-retained: the local model again, timed in a fresh process whose glibc malloc keeps freed
  memory (RETAINED_HEAP), so large calls stop paying page faults for their activations;
- openmm-cpu (at `--openmm-sizes` only): `VerletIntegrator.step(k) / k` of an OpenMM Context on the
  CPU platform (1 thread) whose only force is the local model's periodic `TorchForce`.

Times are medians of the timed samples after warm-up calls; ms per atom per step is the headline.
Memory: the peak RSS of a fresh process per size and model (as speed.py does). The crossover size is
where the local model's time per step falls below the global one's (log-log interpolation between
the measured sizes). Machine load is recorded before, during (per size) and after.

    python -m benchmarks.speed_local [--model LOCAL_EXPORT] [--edges 4,5,...] [--quick]
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repository root
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ase
import ase.io
import numpy as np
import torch

from benchmarks import engines, mace_baseline, report

ROOT = Path(__file__).resolve().parent.parent
GLOBAL_MODELS = (ROOT / "examples/models/md17-export.pt", ROOT / "export/fixtures/tiny-float32.pt")
# the shipped model's size, as a local model: width 64, depth 4, heads 4, attention within 3.5 Å
LOCAL_CONFIG = {"elements": [1, 6, 7, 8], "width": 64, "depth": 4, "heads": 4, "interaction_range": 3.5}
DEFAULT_EDGES = (4, 5, 6, 8, 10, 13, 16, 19, 22)  # molecules per box edge: 192 ... 31,944 atoms
QUICK_EDGES = (3, 4)
OPENMM_EDGES = (8, 13)  # 1,536 and 6,591 atoms
FLAT_FROM_ATOMS = 1500  # the flatness target covers 1,500 to 32,000 atoms
WATER_SPACING = 3.104  # Å: (18.015 g/mol / 1 g/cm³ / N_A)^(1/3), one molecule per grid cell
CLOSEST_CONTACT = 1.5  # Å: no two atoms of different molecules closer than this
ENGINES = ("local", "global", "mace", "openmm-cpu", "local-retained")
# glibc malloc returns every buffer above its mmap threshold (at most 32 MB) to the kernel when it is
# freed, so each call of a large system page-faults its activations in again (system time that grows
# faster than N here). These variables keep freed memory in the process: `local-retained` is the local
# model timed in a subprocess started with them (what jemalloc or tcmalloc via LD_PRELOAD also give).
RETAINED_HEAP = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 40), "MALLOC_TOP_PAD_": str(1 << 29)}
# MACE's evaluation needs about 3 MB per atom here (64 channels, ~50 neighbours within 5 Å in water):
# 1,536 atoms take ~5 GB, 32,000 would take ~100 GB. Its time per atom is flat, so a few sizes suffice.
MACE_MAX_ATOMS = 1600


def progress(message: str) -> None:
    print(f"[speed-local {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------- structures


def water_box(edge: int, seed: int = 0) -> ase.Atoms:
    """edge³ water molecules at 1 g/cm³ in a cubic periodic box, jittered and randomly oriented."""
    from ase.neighborlist import neighbor_list

    rng = np.random.default_rng(seed)
    bond, angle = 0.9572, np.deg2rad(104.52)
    molecule = np.array([[0.0, 0.0, 0.0], [bond, 0.0, 0.0], [bond * np.cos(angle), bond * np.sin(angle), 0.0]])
    molecule -= molecule.mean(0)
    grid = np.stack(np.meshgrid(*[np.arange(edge)] * 3, indexing="ij"), -1).reshape(-1, 3)
    centres = (grid + 0.5) * WATER_SPACING + rng.uniform(-0.15, 0.15, (len(grid), 3))
    rotations = random_rotations(len(grid), rng)
    length = edge * WATER_SPACING
    atoms = ase.Atoms("OH2" * len(grid), cell=[length] * 3, pbc=True)
    for _ in range(50):
        atoms.positions = (centres[:, None, :] + molecule @ rotations.transpose(0, 2, 1)).reshape(-1, 3)
        i, j, distance = neighbor_list("ijd", atoms, CLOSEST_CONTACT)
        clash = np.unique(i[(i // 3) != (j // 3)] // 3)
        if clash.size == 0:
            break
        rotations[clash] = random_rotations(clash.size, rng)
    else:
        raise RuntimeError(f"could not place {len(grid)} waters without contacts closer than {CLOSEST_CONTACT} Å")
    atoms.wrap()
    i, j, distance = neighbor_list("ijd", atoms, 3.0)
    between = (i // 3) != (j // 3)
    atoms.info["name"] = f"water {edge}³ ({len(grid)} molecules, {length:.1f} Å box)"
    atoms.info["closest_intermolecular_angstrom"] = float(distance[between].min()) if between.any() else None
    atoms.info["density_g_per_cm3"] = float(len(grid) * 18.015 / 6.02214076e23 / (length * 1e-8) ** 3)
    return atoms


def random_rotations(count: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(count, 3, 3)))
    q = q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]
    q[np.linalg.det(q) < 0, :, 0] *= -1
    return q


# ------------------------------------------------------------------------------------------- models


def random_local_export(directory: Path, config: dict = LOCAL_CONFIG) -> Path:
    """A random-weight local export of the given size (the speed does not depend on the weights)."""
    from mdplugin.export.exporter import export
    from mdplugin.model.checkpoint import build_checkpoint, provenance, save_checkpoint
    from mdplugin.model.transformer import ModelConfig, TransformerPotential

    torch.manual_seed(0)
    model = TransformerPotential(ModelConfig(**config))
    checkpoint_path = directory / "random-local.pt"
    save_checkpoint(build_checkpoint(model, provenance({}), {"note": "random weights for benchmarks"}), checkpoint_path)
    return export(checkpoint_path, directory / "random-local-export.pt", overwrite=True)


def default_global_model() -> Path:
    return next((path for path in GLOBAL_MODELS if path.exists()), GLOBAL_MODELS[-1])


def build_mace(parameters: int, channels: int | None = None) -> tuple[torch.nn.Module, int]:
    """The MACE closest to `parameters` for H and O (or with `channels`), float32."""
    if channels is not None:
        return mace_baseline.build_mace([1, 8], channels), channels
    return mace_baseline.comparable_mace([1, 8], parameters)


# ------------------------------------------------------------------------------------------- timing


def local_call(module, atoms: ase.Atoms, dtype: torch.dtype):
    positions, numbers = engines.raw_inputs(atoms, dtype)
    cell = torch.tensor(np.asarray(atoms.cell), dtype=dtype)
    pbc = torch.tensor(atoms.pbc)
    return lambda: module(positions, numbers, 0, 1, cell, pbc)


def global_call(module, atoms: ase.Atoms, dtype: torch.dtype):
    positions, numbers = engines.raw_inputs(atoms, dtype)
    return lambda: module(positions, numbers, 0, 1)


def wall_and_cpu_seconds(function, repeats: int, warmup: int) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU seconds (this process, all threads) of each timed call after `warmup` calls.

    With one thread the CPU time is the wall time on an idle core; on a machine shared with other jobs
    the wall time also counts the time the scheduler gave to them, the CPU time does not.
    """
    for _ in range(warmup):
        function()
    wall, cpu = [], []
    for _ in range(repeats):
        start = time.perf_counter(), time.process_time()
        function()
        wall.append(time.perf_counter() - start[0])
        cpu.append(time.process_time() - start[1])
    return wall, cpu


def timed(function, atoms: int, repeats: int, warmup: int, steps: int = 1) -> dict:
    """Medians per step (a call runs `steps` MD steps): wall-clock ms, CPU ms, and both per atom."""
    wall, cpu = wall_and_cpu_seconds(function, repeats, warmup)
    wall = [seconds / steps for seconds in wall]
    cpu = [seconds / steps for seconds in cpu]
    median, cpu_median = float(np.median(wall)), float(np.median(cpu))
    return {
        "ms_per_step": 1e3 * median,
        "ms_per_atom": 1e3 * median / atoms,
        "cpu_ms_per_step": 1e3 * cpu_median,
        "cpu_ms_per_atom": 1e3 * cpu_median / atoms,
        "min_ms_per_step": 1e3 * min(wall),
        "samples_ms": [1e3 * s for s in wall],
        "cpu_samples_ms": [1e3 * s for s in cpu],
        "repeats": repeats,
        "warmup": warmup,
    }


def repeats_for(estimate_s: float | None, settings: dict) -> tuple[int, int]:
    """Timed samples and warm-up calls: fewer where one call is long (median of at least 3)."""
    if estimate_s is not None and estimate_s > 5.0:
        return 3, 1
    if estimate_s is not None and estimate_s > 1.0:
        return max(3, min(settings["repeats"], 5)), 2
    return settings["repeats"], 3  # the TorchScript profiling executor specialises over the first calls


def time_mace(model, atoms: ase.Atoms, repeats: int, warmup: int) -> dict:
    start = time.perf_counter()
    batch = mace_baseline.mace_batch(atoms, [1, 8], torch.float32)
    neighbour_list = time.perf_counter() - start
    result = timed(lambda: mace_baseline.energy_and_forces(model, batch), len(atoms), repeats, warmup)
    return {**result, "neighbour_list_ms": 1e3 * neighbour_list, "edges": int(batch["edge_index"].shape[1])}


def time_openmm(model: Path, atoms: ase.Atoms, repeats: int, estimate_s: float) -> dict:
    """ms per step of a periodic all-ML OpenMM System on the CPU platform (1 thread), Verlet at 0.5 fs."""
    import openmm
    import openmm.unit as unit

    from mdplugin.engines.openmm_force import create_system

    topology = engines.openmm_topology(atoms)
    cell = np.asarray(atoms.cell) / 10.0
    topology.setPeriodicBoxVectors([openmm.Vec3(*row) * unit.nanometer for row in cell])
    system = create_system(model, topology, remove_cm_motion=False, device="cpu")
    integrator = openmm.VerletIntegrator(0.5 * unit.femtoseconds)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"), {"Threads": "1"})
    context.setPositions(atoms.positions / 10.0)
    steps = int(max(1, min(20, round(0.5 / max(estimate_s, 1e-6)))))
    result = timed(lambda: integrator.step(steps), len(atoms), repeats, warmup=2 if estimate_s < 5 else 1, steps=steps)
    del context
    return {**result, "steps_per_sample": steps}


# ------------------------------------------------------------------------------------------- memory


def peak_memory(kind: str, model: str, atoms: ase.Atoms) -> dict:
    """Peak RSS of evaluating `atoms` with one model kind (local, global, mace) in a fresh process."""
    with tempfile.TemporaryDirectory(prefix="mdplugin-memory-") as directory:
        path = Path(directory) / "structure.extxyz"
        ase.io.write(path, atoms, format="extxyz")
        command = [sys.executable, str(Path(__file__).resolve()), "--memory-probe", kind, str(path), "--model", model]
        completed = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    if completed.returncode != 0:
        lines = completed.stderr.strip().splitlines()
        raise RuntimeError(lines[-1] if lines else f"memory probe failed (exit {completed.returncode})")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def memory_probe(kind: str, structure: Path, model: str) -> dict:
    """In the probe process: peak RSS of two evaluations of the structure, and its excess over a
    baseline taken after loading the model and evaluating a 3-atom piece (libraries paged in)."""
    torch.set_num_threads(1)
    atoms = ase.io.read(structure)
    if kind == "mace":
        mace = mace_baseline.build_mace([1, 8], int(model))
        calls = [
            lambda a=a: mace_baseline.energy_and_forces(mace, mace_baseline.mace_batch(a, [1, 8]))
            for a in (atoms[:3], atoms)
        ]
    else:
        module, metadata = engines.load_module(model)
        make = local_call if kind == "local" else global_call
        piece = atoms[:3]
        calls = [make(module, a, getattr(torch, metadata["dtype"])) for a in (piece, atoms)]
    for _ in range(2):
        calls[0]()
    baseline = engines.status_mb("VmRSS")
    for _ in range(2):
        calls[1]()
    peak = engines.status_mb("VmHWM")
    return {"rss_baseline_mb": baseline, "peak_rss_mb": peak, "evaluation_mb": peak - baseline}


def retained_timing(
    model: str, atoms: ase.Atoms, repeats: int, warmup: int, environment: dict[str, str] = RETAINED_HEAP
) -> dict:
    """The local model timed in a fresh process with `environment` (default RETAINED_HEAP) in its environment."""
    with tempfile.TemporaryDirectory(prefix="mdplugin-timing-") as directory:
        path = Path(directory) / "structure.extxyz"
        ase.io.write(path, atoms, format="extxyz")
        command = [sys.executable, str(Path(__file__).resolve()), "--timing-probe", str(path), "--model", model]
        command += ["--repeats", str(repeats), "--warmup", str(warmup)]
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=3600, env={**os.environ, **environment}
        )
    if completed.returncode != 0:
        lines = completed.stderr.strip().splitlines()
        raise RuntimeError(lines[-1] if lines else f"timing probe failed (exit {completed.returncode})")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def timing_probe(structure: Path, model: str, repeats: int, warmup: int) -> dict:
    torch.set_num_threads(1)
    atoms = ase.io.read(structure)
    module, metadata = engines.load_module(model)
    result = timed(local_call(module, atoms, getattr(torch, metadata["dtype"])), len(atoms), repeats, warmup)
    return {**result, "environment": {key: os.environ.get(key) for key in RETAINED_HEAP}}


# ------------------------------------------------------------------------------------------- driver


def predicted_seconds(previous: dict | None, atoms: int, exponent: float) -> float | None:
    """A call's time at `atoms` from the last measured size, time ∝ N^exponent."""
    if previous is None:
        return None
    return previous["ms_per_step"] / 1e3 * (atoms / previous["atoms"]) ** exponent


def measure_size(edge: int, context: dict, settings: dict, last: dict) -> dict:
    atoms = water_box(edge, seed=edge)
    count = len(atoms)
    row = {
        "edge": edge,
        "atoms": count,
        "structure": atoms.info["name"],
        "density_g_per_cm3": atoms.info["density_g_per_cm3"],
        "closest_intermolecular_angstrom": atoms.info["closest_intermolecular_angstrom"],
        "load_average": list(os.getloadavg()),
        "engines": {},
        "skipped": {},
        "errors": {},
        "memory": {},
    }
    plans = {
        "local": (
            1.0,
            None,
            lambda r, w: timed(local_call(context["local"], atoms, context["local_dtype"]), count, r, w),
        ),
        "global": (
            1.9,
            settings["global_limit_s"],
            lambda r, w: timed(global_call(context["global"], atoms, context["global_dtype"]), count, r, w),
        ),
        "mace": (1.0, settings["mace_limit_s"], lambda r, w: time_mace(context["mace"], atoms, r, w)),
        "local-retained": (1.0, None, lambda r, w: retained_timing(str(context["local_path"]), atoms, r, w)),
    }
    for name, (exponent, limit, measure) in plans.items():
        if name not in settings["engines"] or name in context["skipped"]:
            continue
        estimate = predicted_seconds(last.get(name), count, exponent)
        if name == "mace" and count > settings["mace_max_atoms"]:
            row["skipped"][name] = f"above --mace-max-atoms {settings['mace_max_atoms']} (memory)"
            continue
        if limit is not None and estimate is not None and estimate > limit:
            row["skipped"][name] = f"predicted {estimate:.0f} s per call (> {limit:g} s) from N={last[name]['atoms']}"
            progress(f"N={count} {name}: skipped, {row['skipped'][name]}")
            continue
        repeats, warmup = repeats_for(estimate, settings)
        try:
            row["engines"][name] = measure(repeats, warmup)
            last[name] = {"atoms": count, "ms_per_step": row["engines"][name]["ms_per_step"]}
            entry = row["engines"][name]
            progress(f"N={count} {name}: {entry['ms_per_step']:.4g} ms ({entry['cpu_ms_per_step']:.4g} ms CPU)")
        except Exception as error:  # one engine failing at one size must not lose the others
            row["errors"][name] = f"{type(error).__name__}: {str(error).strip()[-400:]}"
            progress(f"N={count} {name}: failed, {row['errors'][name]}")
    if "openmm-cpu" in settings["engines"] and edge in settings["openmm_edges"] and "local" in row["engines"]:
        try:
            estimate = row["engines"]["local"]["ms_per_step"] / 1e3
            row["engines"]["openmm-cpu"] = time_openmm(
                context["local_path"], atoms, min(settings["repeats"], 5), estimate
            )
            row["engines"]["openmm-cpu"]["relative_to_local"] = (
                row["engines"]["openmm-cpu"]["ms_per_step"] / row["engines"]["local"]["ms_per_step"]
            )
            progress(f"N={count} openmm-cpu: {row['engines']['openmm-cpu']['ms_per_step']:.4g} ms per step")
        except Exception as error:
            row["errors"]["openmm-cpu"] = f"{type(error).__name__}: {str(error).strip()[-400:]}"
            progress(f"N={count} openmm-cpu: failed, {row['errors']['openmm-cpu']}")
    if settings["memory"]:
        models = {
            "local": str(context["local_path"]),
            "global": str(context["global_path"]),
            "mace": str(context["mace_channels"]),
        }
        for name in ("local", "global", "mace"):
            if name not in row["engines"]:
                continue
            try:
                row["memory"][name] = peak_memory(name, models[name], atoms)
            except Exception as error:
                row["errors"][f"memory-{name}"] = str(error)[-400:]
    return row


def prepare(local_model: Path | None, global_model: Path | None, settings: dict, directory: Path) -> dict:
    local_path = Path(local_model) if local_model else random_local_export(directory)
    global_path = Path(global_model) if global_model else default_global_model()
    local, local_metadata = engines.load_module(local_path)
    if local_metadata.get("model_kind") != "local":
        raise ValueError(
            f"{local_path} is not a local model (model_kind {local_metadata.get('model_kind')!r}); pass a local export"
        )
    context = {
        "local_path": local_path,
        "local": local,
        "local_metadata": local_metadata,
        "local_dtype": getattr(torch, local_metadata["dtype"]),
        "global_path": global_path,
        "skipped": {},
        "mace": None,
        "mace_channels": None,
    }
    if "global" in settings["engines"]:
        context["global"], context["global_metadata"] = engines.load_module(global_path)
        context["global_dtype"] = getattr(torch, context["global_metadata"]["dtype"])
    if "mace" in settings["engines"]:
        reason = mace_baseline.unavailable_reason()
        if reason:
            context["skipped"]["mace"] = reason
        else:
            context["mace"], context["mace_channels"] = build_mace(local_metadata["parameters"])
    return context


def run_speed_local(
    model: str | Path | None = None,
    global_model: str | Path | None = None,
    output: str | Path = ROOT / "benchmarks/results",
    edges: list[int] | None = None,
    repeats: int | None = None,
    quick: bool = False,
    engine_names: list[str] | None = None,
    memory: bool = True,
    openmm_edges: list[int] | None = None,
    global_limit_s: float = 60.0,
    mace_limit_s: float = 60.0,
    mace_max_atoms: int = MACE_MAX_ATOMS,
    merge: bool = False,
) -> dict:
    """Measure, then write speed-local.json/.md/.png and the water section of speed.md; returns the results."""
    torch.set_num_threads(1)
    settings = {
        "edges": list(edges or (QUICK_EDGES if quick else DEFAULT_EDGES)),
        "repeats": repeats or (3 if quick else 7),
        "quick": quick,
        "engines": list(engine_names or ENGINES),
        "openmm_edges": list(
            openmm_edges if openmm_edges is not None else (QUICK_EDGES[:1] if quick else OPENMM_EDGES)
        ),
        "threads": 1,
        "memory": memory,
        "global_limit_s": global_limit_s,
        "mace_limit_s": mace_limit_s,
        "mace_max_atoms": mace_max_atoms,
        "timestep_fs": 0.5,
    }
    unknown = set(settings["engines"]) - set(ENGINES)
    if unknown:
        raise ValueError(f"unknown engines {sorted(unknown)}; choose from {', '.join(ENGINES)}")
    machine = report.machine_info()
    with tempfile.TemporaryDirectory(prefix="mdplugin-speed-local-") as directory:
        context = prepare(model, global_model, settings, Path(directory))
        progress(f"local {context['local_path']}; global {context['global_path']}; edges {settings['edges']}")
        last: dict = {}
        rows = [measure_size(edge, context, settings, last) for edge in settings["edges"]]
        local_model_path = str(model) if model else "random weights, " + json.dumps(LOCAL_CONFIG)
    machine = report.finish(machine)
    results = {
        "benchmark": "speed-local",
        "machine": machine,
        "local_model": {
            "path": local_model_path,
            "parameters": context["local_metadata"]["parameters"],
            "dtype": context["local_metadata"]["dtype"],
            "interaction_range": context["local_metadata"]["interaction_range"],
            "config": context["local_metadata"]["model_config"],
        },
        "global_model": {
            "path": str(context["global_path"]),
            "parameters": context.get("global_metadata", {}).get("parameters"),
            "dtype": context.get("global_metadata", {}).get("dtype"),
        },
        "mace": mace_description(context),
        "settings": settings,
        "skipped": context["skipped"],
        "memory_method": "peak RSS (VmHWM) of a fresh process per size and model, two evaluations; "
        "evaluation MB = peak - RSS after loading the model and evaluating 3 atoms",
        "rows": rows,
        "summary": summarise(rows),
    }
    if merge and (Path(output) / "speed-local.json").is_file():
        results = merged(json.loads((Path(output) / "speed-local.json").read_text()), results)
    write_results(results, Path(output))
    return results


def merged(earlier: dict, later: dict) -> dict:
    """The earlier results with the later run's engines added to the rows of the same box edge."""
    rows = {row["edge"]: row for row in earlier["rows"]}
    for row in later["rows"]:
        if row["edge"] not in rows:
            rows[row["edge"]] = row
            continue
        target = rows[row["edge"]]
        for key in ("engines", "skipped", "errors", "memory"):
            target[key].update(row[key])
        target.setdefault("load_average_merged", row["load_average"])
    earlier["rows"] = [rows[edge] for edge in sorted(rows)]
    earlier.setdefault("merged_runs", []).append({"machine": later["machine"], "engines": later["settings"]["engines"]})
    earlier["summary"] = summarise(earlier["rows"])
    return earlier


def mace_description(context: dict) -> dict:
    """speed.py's description of the MACE baseline, run here on periodic boxes."""
    description = mace_baseline.describe(context)
    if context["mace"] is not None:
        description["periodic"] = True
        description["mode"] = "eager, float32, random weights (L=1 features, 2 interactions, correlation 3)"
    return description


# ------------------------------------------------------------------------------------------ summary


def fit_exponent(points: list[tuple[int, float]]) -> float | None:
    if len(points) < 2:
        return None
    sizes, values = zip(*points)
    return float(np.polyfit(np.log(sizes), np.log(values), 1)[0])


def crossover(rows: list[dict], metric: str = "ms_per_step") -> dict:
    """Where the local model's time per step falls below the global one's, and how it was found.

    Between two measured sizes: log-log interpolation of the time ratio. Past the largest size the
    global model ran: extrapolated, the global time ∝ N^k fitted over its three largest sizes and
    the local time ∝ N fitted likewise.
    """
    pairs = [
        (row["atoms"], row["engines"]["local"][metric], row["engines"]["global"][metric])
        for row in rows
        if "local" in row["engines"] and "global" in row["engines"]
    ]
    if not pairs:
        return {"atoms": None, "how": "no size has both models"}
    ratios = [(n, local / global_) for n, local, global_ in pairs]  # < 1: the local model is faster
    if ratios[0][1] < 1:
        return {
            "atoms": None,
            "how": f"the local model is already faster at the smallest size, N={ratios[0][0]}",
            "ratios": ratios,
        }
    for (n0, r0), (n1, r1) in zip(ratios, ratios[1:]):
        if r0 >= 1 > r1:  # log-log interpolation of the ratio between the two sizes
            t = np.log(r0) / (np.log(r0) - np.log(r1))
            size = float(np.exp(np.log(n0) + t * (np.log(n1) - np.log(n0))))
            return {"atoms": size, "how": f"interpolated between N={n0:,} and N={n1:,}", "ratios": ratios}
    if len(pairs) >= 2:
        tail = pairs[-3:]
        sizes = np.log([n for n, _, _ in tail])
        global_fit = np.polyfit(sizes, np.log([g for _, _, g in tail]), 1)
        local_fit = np.polyfit(sizes, np.log([local for _, local, _ in tail]), 1)
        if global_fit[0] > local_fit[0]:
            size = float(np.exp((local_fit[1] - global_fit[1]) / (global_fit[0] - local_fit[0])))
            return {
                "atoms": size,
                "how": f"extrapolated past N={pairs[-1][0]:,} (global ∝ N^{global_fit[0]:.2f}, local ∝ N^{local_fit[0]:.2f} "
                f"over N={tail[0][0]:,}-{tail[-1][0]:,})",
                "extrapolated": True,
                "ratios": ratios,
            }
    return {
        "atoms": None,
        "how": f"the global model is faster at every size measured (up to N={ratios[-1][0]:,})",
        "ratios": ratios,
    }


def timing_summary(rows: list[dict], metric: str, local: str = "local") -> dict:
    """For one timing metric (wall-clock `ms_per_step` or `cpu_ms_per_step`): flatness of the local
    model's time per atom over N >= FLAT_FROM_ATOMS, exponents, the ratio to MACE, the crossover."""
    if local != "local":  # the same summary for another measurement of the local model
        rows = [
            {**row, "engines": {**row["engines"], "local": row["engines"][local]}}
            for row in rows
            if local in row["engines"]
        ]
    summary: dict = {"metric": metric, "local": local, "crossover": crossover(rows, metric)}
    per_atom = [
        (row["atoms"], row["engines"]["local"][metric] / row["atoms"]) for row in rows if "local" in row["engines"]
    ]
    flat = [(n, t) for n, t in per_atom if n >= FLAT_FROM_ATOMS]
    if flat:
        median = float(np.median([t for _, t in flat]))
        deviations = [t / median - 1 for _, t in flat]
        summary["flatness"] = {
            "sizes": [n for n, _ in flat],
            "median_ms_per_atom": median,
            "largest_deviation": float(max(deviations, key=abs)),
            "max_over_min": max(t for _, t in flat) / min(t for _, t in flat),
            "within_25_percent": all(abs(d) <= 0.25 for d in deviations),
        }
    for name in ("local", "global", "mace"):
        points = [(row["atoms"], row["engines"][name][metric]) for row in rows if name in row["engines"]]
        summary[f"{name}_time_exponent"] = fit_exponent(points)
        summary[f"{name}_time_exponent_large"] = fit_exponent([(n, t) for n, t in points if n >= FLAT_FROM_ATOMS])
    ratios = [
        (row["atoms"], row["engines"]["local"][metric] / row["engines"]["mace"][metric])
        for row in rows
        if "local" in row["engines"] and "mace" in row["engines"]
    ]
    summary["local_over_mace"] = {
        "per_size": ratios,
        "largest": max((r for _, r in ratios), default=None),
        "at_most_one_tenth": bool(ratios) and all(r <= 0.1 for _, r in ratios),
    }
    return summary


def summarise(rows: list[dict]) -> dict:
    """Timing targets by wall-clock and by CPU time, and the growth of each model's memory."""
    summary: dict = {"wall": timing_summary(rows, "ms_per_step"), "cpu": timing_summary(rows, "cpu_ms_per_step")}
    if any("local-retained" in row["engines"] for row in rows):
        summary["wall_retained"] = timing_summary(rows, "ms_per_step", "local-retained")
        summary["cpu_retained"] = timing_summary(rows, "cpu_ms_per_step", "local-retained")
    for name in ("local", "global", "mace"):
        memory = [(row["atoms"], row["memory"][name]["evaluation_mb"]) for row in rows if name in row["memory"]]
        large = [(n, m) for n, m in memory if n >= FLAT_FROM_ATOMS and m > 0]
        summary[f"{name}_memory"] = {
            "exponent_large": fit_exponent(large),
            "evaluation_mb_per_1000_atoms": (
                float(np.polyfit([n for n, _ in large], [m for _, m in large], 1)[0] * 1000)
                if len(large) >= 2
                else None
            ),
        }
    return summary


# ------------------------------------------------------------------------------------------ writing


def write_results(results: dict, output: Path) -> None:
    output.mkdir(parents=True, exist_ok=True)
    report.write_json(results, output / "speed-local.json")
    (output / "speed-local.md").write_text(markdown(results))
    plot(results, output)
    from benchmarks import speed

    speed.rewrite_markdown(output)  # speed.md carries the water summary beside the global model's results


def percent(value: float | None) -> str | None:
    return None if value is None else f"{100 * value:+.0f}%"


def markdown(results: dict, heading: str = "#") -> str:
    rows, fmt = results["rows"], report.number

    def both(entry: dict | None, key: str, scale: float = 1.0) -> str | None:
        """wall-clock (CPU time) of one entry."""
        if entry is None:
            return None
        return (
            f"{fmt(entry[key] / scale)} ({fmt(entry['cpu_' + key] / scale)})"
            if f"cpu_{key}" in entry
            else fmt(entry[key] / scale)
        )

    table = []
    for row in rows:
        cells = [row["atoms"], row["structure"]]
        local, global_, mace = (row["engines"].get(name) for name in ("local", "global", "mace"))
        for entry in (local, global_, mace):
            cells += [fmt(entry["ms_per_step"]) if entry else None, both(entry, "ms_per_atom")]
        cells.append(both(row["engines"].get("local-retained"), "ms_per_atom"))
        cells.append(f"{global_['ms_per_step'] / local['ms_per_step']:.2f}" if local and global_ else None)
        cells.append(f"{local['cpu_ms_per_atom'] / mace['cpu_ms_per_atom']:.3f}" if local and mace else None)
        table.append(cells)
    local_model, global_model, mace = results["local_model"], results["global_model"], results["mace"]
    mace_text = (
        f"MACE: {mace['parameters']:,} parameters ({mace['channels']} channels, r_max {mace['r_max_angstrom']} Å, periodic), "
        f"{mace['mode']}; {mace['timed']}."
        if "skipped" not in mace
        else f"MACE: not measured, {mace['skipped']}."
    )
    lines = [
        f"{heading} Periodic water: the local model against the global model and MACE",
        "",
        report.machine_markdown(results["machine"]),
        "",
        f"Local model: {local_model['path']} ({local_model['parameters']:,} parameters, {local_model['dtype']}, "
        f"interaction range {local_model['interaction_range']} Å), called with the cell and pbc. Global model: "
        f"`{global_model['path']}` ({(global_model['parameters'] or 0):,} parameters) on the same atoms as a "
        f"non-periodic cluster. {mace_text} One torch thread; medians of up to {results['settings']['repeats']} timed "
        "calls after warm-up (3 for calls over 5 s); one call = energy + forces. ms/atom columns: wall-clock "
        "(CPU time of the process in parentheses: on a machine shared with other jobs the wall-clock also counts "
        "their turns on the core, the CPU time does not). Boxes: liquid water at 1 g/cm³, waters on a jittered "
        f"grid with random orientations (no intermolecular contact under {CLOSEST_CONTACT} Å).",
        "",
        report.markdown_table(
            [
                "N",
                "box",
                "local ms",
                "local ms/atom",
                "global ms",
                "global ms/atom",
                "MACE ms",
                "MACE ms/atom",
                "local, retained heap: ms/atom",
                "global / local (wall)",
                "local / MACE (CPU)",
            ],
            table,
            text_columns=2,
        ),  # fmt: skip
        "",
    ]
    lines += summary_markdown(results, heading)
    lines += openmm_markdown(results, heading) + memory_markdown(results, heading) + skipped_markdown(results, heading)
    return "\n".join(lines) + "\n"


def summary_markdown(results: dict, heading: str) -> list[str]:
    summary, fmt = results["summary"], report.number
    lines = [f"{heading}# Targets", ""]
    clocks = [("wall", "wall-clock"), ("cpu", "CPU time")]
    clocks += [(f"{c}_retained", f"{label}, retained heap") for c, label in clocks if f"{c}_retained" in summary]
    for clock, label in clocks:
        timing = summary[clock]
        flat = timing.get("flatness")
        if flat:
            verdict = "met" if flat["within_25_percent"] else "not met"
            lines.append(
                f"- **Time per atom flat within ±25% from {min(flat['sizes']):,} to {max(flat['sizes']):,} atoms, "
                f"by {label}: {verdict}.** Median {fmt(flat['median_ms_per_atom'])} ms/atom; largest deviation "
                f"{percent(flat['largest_deviation'])}; slowest / fastest {flat['max_over_min']:.2f}; "
                f"time ∝ N^{fmt(timing['local_time_exponent_large'])} over that range."
            )
    for clock, label in clocks:
        ratio = summary[clock]["local_over_mace"]
        if ratio["per_size"]:
            verdict = "met" if ratio["at_most_one_tenth"] else "not met"
            lines.append(
                f"- **At most 1/10 of MACE's time per atom, by {label}: {verdict}.** Local / MACE: "
                + ", ".join(f"{r:.3f} at N={n:,}" for n, r in ratio["per_size"])
                + "."
            )
    for name in ("local", "global", "mace"):
        memory = summary[f"{name}_memory"]
        if memory["exponent_large"] is not None:
            lines.append(
                f"- **Memory, {name}:** evaluation memory ∝ N^{fmt(memory['exponent_large'])} from {FLAT_FROM_ATOMS:,} atoms "
                f"up, {fmt(memory['evaluation_mb_per_1000_atoms'])} MB per 1,000 atoms (slope of a straight-line fit)."
            )
    for clock, label in clocks:
        cross = summary[clock]["crossover"]
        size = f"**about {cross['atoms']:,.0f} atoms** ({cross['how']})" if cross["atoms"] else cross["how"]
        lines.append(
            f"- **Crossover** (the local model becomes faster per step than the global one), by {label}: {size}."
        )
    exponents = ", ".join(
        f"{name} N^{fmt(summary['cpu'][f'{name}_time_exponent'])}"
        for name in ("local", "global", "mace")
        if summary["cpu"][f"{name}_time_exponent"] is not None
    )
    lines += [f"- CPU time per step over all sizes measured: {exponents}.", ""]
    return lines


def openmm_markdown(results: dict, heading: str) -> list[str]:
    rows = [
        [row["atoms"], report.number(row["engines"]["local"]["ms_per_step"]), report.number(row["engines"]["openmm-cpu"]["ms_per_step"]),
         report.number(row["engines"]["openmm-cpu"]["ms_per_atom"]), f"{row['engines']['openmm-cpu']['relative_to_local']:.2f}"]
        for row in results["rows"]
        if "openmm-cpu" in row["engines"]
    ]  # fmt: skip
    if not rows:
        return []
    return [
        f"{heading}# OpenMM (CPU platform, 1 thread, periodic TorchForce, Verlet 0.5 fs)",
        "",
        report.markdown_table(["N", "raw local ms", "OpenMM ms/step", "OpenMM ms/atom", "OpenMM / raw"], rows),
        "",
    ]


def memory_markdown(results: dict, heading: str) -> list[str]:
    rows = []
    for row in results["rows"]:
        if not row["memory"]:
            continue
        cells = [row["atoms"]]
        for name in ("local", "global", "mace"):
            entry = row["memory"].get(name)
            cells += [
                f"{entry['peak_rss_mb']:.0f}" if entry else None,
                f"{entry['evaluation_mb']:.0f}" if entry else None,
            ]
        rows.append(cells)
    if not rows:
        return []
    return [
        f"{heading}# Peak memory",
        "",
        results["memory_method"] + ".",
        "",
        report.markdown_table(
            ["N", "local peak MB", "local eval MB", "global peak MB", "global eval MB", "MACE peak MB", "MACE eval MB"],
            rows,
        ),
        "",
    ]


def skipped_markdown(results: dict, heading: str) -> list[str]:
    lines = [f"- {name}: skipped, {reason}" for name, reason in results["skipped"].items()]
    for row in results["rows"]:
        lines += [f"- {name} at N={row['atoms']:,}: skipped, {reason}" for name, reason in row["skipped"].items()]
        lines += [f"- {name} at N={row['atoms']:,}: failed, {error}" for name, error in row["errors"].items()]
    loads = [f"{row['atoms']:,}: {row['load_average'][0]:.1f}" for row in results["rows"]]
    lines.append(f"- 1-minute load average when each size started (N: load): {'; '.join(loads)}.")
    return [f"{heading}# Skipped, failed, load", "", *lines, ""]


def plot(results: dict, output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (time_axes, memory_axes) = plt.subplots(1, 2, figsize=(12, 4.8))
    for index, name in enumerate(("local", "global", "mace", "openmm-cpu", "local-retained")):
        entries = [(row["atoms"], row["engines"][name]) for row in results["rows"] if name in row["engines"]]
        if entries:
            sizes, colour = [n for n, _ in entries], f"C{index}"
            time_axes.loglog(sizes, [e["ms_per_atom"] for _, e in entries], "o-", color=colour, label=f"{name} (wall)")
            cpu = [e["cpu_ms_per_atom"] for _, e in entries]
            time_axes.loglog(sizes, cpu, "s--", color=colour, label=f"{name} (CPU)")
    time_axes.set(
        xlabel="atoms N (periodic water)", ylabel="ms per atom per step (energy + forces)", title="Cost per atom"
    )
    time_axes.legend(fontsize=8)
    for name in ("local", "global", "mace"):
        points = [
            (row["atoms"], row["memory"][name]["peak_rss_mb"]) for row in results["rows"] if name in row["memory"]
        ]
        if points:
            memory_axes.loglog(*zip(*points), "o-", label=f"{name} peak RSS")
    memory_axes.set(xlabel="atoms N", ylabel="MB", title="Peak memory (fresh process per size)")
    memory_axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(output / "speed-local.png", dpi=120)
    plt.close(figure)


# ---------------------------------------------------------------------------------------------- CLI


def parse_integers(text: str) -> list[int]:
    values = [int(value) for value in text.split(",") if value.strip()]
    if any(value < 1 for value in values):
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", type=Path, default=None, help="local export (default: random weights, the shipped size)"
    )
    parser.add_argument(
        "--global-model", type=Path, default=None, help=f"global export (default: {default_global_model()})"
    )
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "benchmarks/results")
    parser.add_argument("--edges", type=parse_integers, default=None, help="water molecules per box edge (N = 3 edge³)")
    parser.add_argument("--openmm-edges", type=parse_integers, default=None, help="box edges also run in OpenMM")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument(
        "--global-limit-s", type=float, default=60.0, help="skip the global model past this predicted call time"
    )
    parser.add_argument("--mace-limit-s", type=float, default=60.0, help="skip MACE past this predicted call time")
    parser.add_argument("--mace-max-atoms", type=int, default=MACE_MAX_ATOMS, help="largest box MACE runs (memory)")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--merge", action="store_true", help="add these engines to the existing results in --output")
    parser.add_argument("--memory-probe", nargs=2, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--timing-probe", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.timing_probe is not None:
        print(json.dumps(timing_probe(args.timing_probe, str(args.model), args.repeats or 5, args.warmup)))
        return
    if args.memory_probe is not None:
        kind, structure = args.memory_probe
        print(json.dumps(memory_probe(kind, Path(structure), str(args.model))))
        return
    run_speed_local(
        args.model,
        args.global_model,
        args.output,
        args.edges,
        args.repeats,
        args.quick,
        args.engines.split(","),
        not args.no_memory,
        args.openmm_edges,
        args.global_limit_s,
        args.mace_limit_s,
        args.mace_max_atoms,
        args.merge,
    )
    print((Path(args.output) / "speed-local.md").read_text())


if __name__ == "__main__":
    main()
