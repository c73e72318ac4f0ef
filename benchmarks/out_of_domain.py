"""Does a committee say when it leaves what it learned, before the dynamics break? Lead times, measured.

A committee export of a molecule's model (e.g. `mdplugin learn` on enol malonaldehyde with GFN2-xTB) meets:
1. its own kind of frames (the training data's test file, or frames of its own MD): the deviation there;
2. a tautomer it never saw (keto malonaldehyde, from SMILES, relaxed with GFN2-xTB, then thermal frames of
   GFN2-xTB MD): the deviation there, against the threshold;
3. a collision: two copies of the molecule 8 Å apart fly into each other (NVE with member 0, 0.25 fs,
   relative speed `--speed` Å/fs); every step the largest force deviation and the longest bond relative to
   its start. The lead time is the time from the first deviation above the threshold to the first bond
   stretched beyond 1.5x its start (or to the closest approach when no bond breaks).

    python -m benchmarks.out_of_domain runs/learn/malonaldehyde/model-export.pt --molecule O=CC=CO \
        --tautomer O=CCC=O --threshold 0.3 --output benchmarks/results/learn
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repository root
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks import report


def relaxed(text: str, seed: int = 0):
    """The molecule of a structure file or a SMILES string, relaxed with GFN2-xTB (ase.Atoms with its GFN2
    calculator). Give the file the model was trained from for its own form: a SMILES embedding may pick
    another conformer (malonaldehyde's open chain instead of the hydrogen-bonded ring)."""
    from ase import Atoms
    from ase.optimize import BFGS

    from mdplugin.data.labellers import GFN2xTB
    from mdplugin.data.molecules import molecule_from_input

    molecule = molecule_from_input(text, seed=seed)
    atoms = Atoms(numbers=molecule.numbers, positions=molecule.positions)
    atoms.calc = GFN2xTB(molecule)
    BFGS(atoms, logfile=None).run(fmax=0.02, steps=300)
    return atoms


def thermal_frames(atoms, temperature_k: float, frames: int, stride: int, seed: int) -> list:
    """Frames of Langevin MD on the atoms' own calculator (the reference), 0.5 fs steps."""
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    atoms = atoms.copy()
    atoms.calc = relaxed_calculator(atoms)
    rng = np.random.default_rng(seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_k, rng=rng)
    dynamics = Langevin(atoms, 0.5 * units.fs, temperature_K=temperature_k, friction=0.01 / units.fs, rng=rng)
    out = []
    for _ in range(frames):
        dynamics.run(stride)
        out.append(atoms.copy())
    return out


def relaxed_calculator(atoms):
    from mdplugin.data.labellers import GFN2xTB
    from mdplugin.data.molecules import Molecule

    return GFN2xTB(Molecule("frame", atoms.numbers, atoms.positions))


def deviations(model, frames: list) -> list[float]:
    return [model.deviation(frame.positions, frame.numbers)[0] for frame in frames]


def bonds(atoms) -> list[tuple[int, int, float]]:
    """Covalent bonds of a structure (natural cutoffs) with their lengths."""
    from ase.neighborlist import natural_cutoffs, neighbor_list

    first, second, distance = neighbor_list("ijd", atoms, natural_cutoffs(atoms, mult=1.1))
    return [(int(i), int(j), float(d)) for i, j, d in zip(first, second, distance) if i < j]


def collision(model, molecule, speed: float, threshold: float, steps: int) -> dict:
    """Two copies 8 Å apart along x, approaching at `speed` Å/fs; NVE with member 0 (0.25 fs steps)."""
    from ase import units
    from ase.md.verlet import VelocityVerlet

    from mdplugin.engines.ase_calculator import TransformerCalculator

    left, right = molecule.copy(), molecule.copy()
    left.positions -= left.get_center_of_mass()
    right.positions -= right.get_center_of_mass()
    right.positions[:, 0] += 8.0
    pair = left + right
    n = len(left)
    velocities = np.zeros((len(pair), 3))
    velocities[:n, 0], velocities[n:, 0] = speed / 2, -speed / 2  # Å/fs
    pair.set_velocities(velocities / units.fs)
    start = {(i, j): d for i, j, d in bonds(pair)}
    pair.calc = TransformerCalculator(model)
    dynamics = VelocityVerlet(pair, 0.25 * units.fs)
    trace, crossed, broken = [], None, None
    for step in range(steps):
        dynamics.run(1)
        time_fs = (step + 1) * 0.25
        deviation = model.deviation(pair.positions, pair.numbers)[0]
        stretch = max(float(pair.get_distance(i, j)) / d for (i, j), d in start.items())
        separation = float(np.linalg.norm(pair[:n].get_center_of_mass() - pair[n:].get_center_of_mass()))
        trace.append({"time_fs": time_fs, "deviation": deviation, "longest_bond_ratio": stretch,
                      "separation_angstrom": separation})  # fmt: skip
        if crossed is None and deviation > threshold:
            crossed = time_fs
        if broken is None and stretch > 1.5:
            broken = time_fs
            break
    closest = min(trace, key=lambda row: row["separation_angstrom"])["time_fs"]
    end = broken if broken is not None else closest
    return {"speed_angstrom_per_fs": speed, "threshold_crossed_fs": crossed, "bond_broken_fs": broken,
            "closest_approach_fs": closest, "lead_time_fs": None if crossed is None else end - crossed,
            "trace": trace}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("committee", help="a committee export of a molecule's model")
    parser.add_argument("--molecule", required=True, help="the structure file it was trained from (or a SMILES)")
    parser.add_argument("--tautomer", required=True, help="SMILES of a form it never saw")
    parser.add_argument("--threshold", type=float, default=0.3, help="eV/Å")
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--speeds", default="0.02,0.05", help="collision speeds, Å/fs")
    parser.add_argument("--output", default="benchmarks/results/learn")
    args = parser.parse_args()

    import mdplugin

    model = mdplugin.load(args.committee)
    if not model.info.committee:
        raise SystemExit(f"{args.committee} is a single model; give a committee export")
    machine = report.machine_info()
    own = relaxed(args.molecule)
    other = relaxed(args.tautomer)
    results = {"committee": args.committee, "members": model.info.committee, "threshold": args.threshold}
    for name, start in (("trained form", own), ("unseen tautomer", other)):
        frames = thermal_frames(start, 300.0, args.frames, 20, seed=1)
        values = deviations(model, [start, *frames])
        results[name] = {"relaxed": values[0], "median": float(np.median(values[1:])),
                         "max": float(np.max(values[1:])), "above_threshold": float(np.mean(np.array(values[1:]) > args.threshold))}  # fmt: skip
    results["collisions"] = [collision(model, own, float(v), args.threshold, 4000) for v in args.speeds.split(",")]
    results["machine"] = report.finish(machine)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    report.write_json(results, output / "out_of_domain.json")
    lines = ["# Out-of-domain detection by the committee", "",
             f"{args.committee} ({model.info.committee} members), threshold {args.threshold} eV/Å, trained on "
             f"`{args.molecule}`; the unseen form `{args.tautomer}`. Deviation = largest per-atom force deviation.", "",
             "| frames | relaxed | median (300 K MD) | max | fraction above threshold |", "|---|---|---|---|---|"]  # fmt: skip
    for name in ("trained form", "unseen tautomer"):
        r = results[name]
        lines.append(
            f"| {name} | {r['relaxed']:.3f} | {r['median']:.3f} | {r['max']:.3f} | {r['above_threshold']:.0%} |"
        )
    lines += ["", "| collision speed (Å/fs) | threshold crossed (fs) | bond broken (fs) | closest approach (fs) | lead time (fs) |",
              "|---|---|---|---|---|"]  # fmt: skip
    for c in results["collisions"]:
        lines.append(f"| {c['speed_angstrom_per_fs']} | {c['threshold_crossed_fs']} | {c['bond_broken_fs']} | "
                     f"{c['closest_approach_fs']} | {c['lead_time_fs']} |")  # fmt: skip
    (output / "out_of_domain.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps({k: v for k, v in results.items() if k not in ("collisions", "machine")}, indent=1))


if __name__ == "__main__":
    main()
