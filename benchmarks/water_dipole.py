"""The box dipole of water frames: is a data set sampled from the equilibrium liquid?

A new box (waters on a lattice, randomly oriented, energy-minimised) starts polarised, and its total
dipole M relaxes over ~10 ps at 300 K. Frames taken before that sample a non-equilibrium liquid. With
SPC/Fw charges (O -0.82 e, H +0.41 e) and tin-foil Ewald boundaries, <M^2> = 3 V eps0 kT (eps - 1),
about (8 e·Å)^2 for 64 waters at 300 K and eps ~ 80. Waters are consecutive O, H, H triples.

    python benchmarks/water_dipole.py data/water-classical/train.extxyz data/water-classical-eq/train.extxyz \
        --out benchmarks/results/water/box-dipole
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

HYDROGEN_CHARGE = 0.41  # e, SPC/Fw


def whole_waters(atoms) -> np.ndarray:
    """[M, 3, 3] positions (Å) of each water's O, H, H relative to its oxygen, made whole by the minimum
    image. Refuses frames that are not O, H, H triples or hold NaN or infinite positions."""
    numbers = atoms.numbers
    if len(numbers) == 0 or len(numbers) % 3 or not (numbers.reshape(-1, 3) == [8, 1, 1]).all():
        raise ValueError(
            "the atoms are not waters in O, H, H order, one after another (as `mdplugin data water` writes)"
        )
    if not np.isfinite(atoms.positions).all():
        raise ValueError("a frame holds NaN or infinite positions")
    positions = atoms.positions.reshape(-1, 3, 3)
    offsets = positions - positions[:, :1]
    if atoms.pbc.all():
        fractional = offsets @ np.linalg.inv(atoms.cell.array)
        offsets = (fractional - np.round(fractional)) @ atoms.cell.array
    elif atoms.pbc.any():
        raise ValueError("a frame is periodic along some axes only; whole waters need a fully periodic or no cell")
    return offsets


def box_dipole(atoms) -> float:
    """|sum of the molecular dipoles| (e·Å)."""
    offsets = whole_waters(atoms)
    return float(np.linalg.norm(HYDROGEN_CHARGE * (offsets[:, 1] + offsets[:, 2]).sum(0)))


def summarise(path: str) -> dict:
    import ase.io

    by_state = defaultdict(list)
    try:
        frames = ase.io.read(path, ":")
    except Exception as error:  # ASE raises many kinds for unreadable files
        raise SystemExit(f"{path} is not a readable structure file: {error}") from None
    if not frames:
        raise SystemExit(f"{path} holds no frames")
    for index, atoms in enumerate(frames):
        try:
            dipole = box_dipole(atoms)
        except ValueError as error:
            raise SystemExit(f"{path}, frame {index}: {error}") from None
        state = (atoms.info.get("temperature_K"), atoms.info.get("density_g_cm3"))
        by_state[state].append((float(atoms.info.get("time_fs", 0.0)), dipole))
    states = {}
    for (temperature, density), rows in sorted(by_state.items(), key=lambda item: str(item[0])):
        rows = np.array(sorted(rows))
        quarter = max(1, len(rows) // 4)
        states[f"{temperature} K, {density} g/cm3"] = {
            "frames": len(rows),
            "time_ps": [rows[0, 0] / 1000, rows[-1, 0] / 1000],
            "rms_e_angstrom": float(np.sqrt((rows[:, 1] ** 2).mean())),
            "first_quarter_mean": float(rows[:quarter, 1].mean()),
            "last_quarter_mean": float(rows[-quarter:, 1].mean()),
        }
    everything = np.concatenate([[s["rms_e_angstrom"] ** 2] * s["frames"] for s in states.values()])
    return {"file": path, "rms_e_angstrom": float(np.sqrt(everything.mean())), "states": states}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--out", type=Path, help="path stem: writes STEM.json and STEM.md")
    args = parser.parse_args()
    results = [summarise(path) for path in args.files]
    lines = ["| file | state | frames | time (ps) | rms \\|M\\| (e·Å) | mean \\|M\\|, first / last quarter |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for result in results:
        lines.append(f"| {result['file']} | all | – | – | {result['rms_e_angstrom']:.1f} | – |")
        for state, s in result["states"].items():
            lines.append(
                f"| | {state} | {s['frames']} | {s['time_ps'][0]:.1f}–{s['time_ps'][1]:.1f} | {s['rms_e_angstrom']:.1f} "
                f"| {s['first_quarter_mean']:.1f} / {s['last_quarter_mean']:.1f} |"
            )
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
        title = "# Box dipole of water data sets\n\n" + __doc__.split("\n\n")[1] + "\n\n"
        args.out.with_suffix(".md").write_text(title + table)


if __name__ == "__main__":
    main()
