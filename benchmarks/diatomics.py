"""Diatomic curves of every shipped model, without and with the repulsive core (`export --repulsion zbl`).

For each element pair of each model, E(r) of the two atoms alone from 0.1 Å to 3 Å (relative to E at 3 Å),
the shortest distance of that pair in the model's training data (or none recorded), and whether E falls
monotonically as r shrinks below 0.75 of it (the wall the core is for). The core is exactly zero at and
beyond each pair's shortest training distance, so the model's energies on its training data do not change.

    python -m benchmarks.diatomics [--models md17,dipeptide,water-classical,water-xtb]
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repository root
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks import report

ROOT = Path(__file__).resolve().parent.parent
RADII = np.linspace(0.1, 3.0, 291)  # Å
WALL = 0.75  # fraction of the shortest training distance below which E must rise monotonically


def curve(module: torch.jit.ScriptModule, pair: tuple[int, int]) -> np.ndarray:
    """E(r) - E(3 Å) in eV on RADII."""
    energies = []
    for r in RADII:
        positions = torch.tensor([[0.0, 0.0, 0.0], [r, 0.0, 0.0]], dtype=torch.float64)
        energies.append(float(module.forward(positions, torch.tensor(list(pair)), 0, 1)[0].detach()))
    return np.array(energies) - energies[-1]


def summary(energies: np.ndarray, cutoff: float) -> dict:
    below = RADII < WALL * cutoff
    rising = bool(np.all(np.diff(energies[below]) < 0)) if below.sum() > 1 else None
    return {
        "monotonic_below_wall": rising,
        "energy_at_0.5_A_eV": float(np.interp(0.5, RADII, energies)),
        "lowest_below_cutoff_eV": float(energies[RADII < cutoff].min()),
    }


def measure(names: list[str]) -> dict:
    import vesin_torch  # noqa: F401 - local exports call its neighbour list

    from mdplugin.elements import symbols
    from mdplugin.export.exporter import export
    from mdplugin.export.model_file import open_model
    from mdplugin.model.checkpoint import read_checkpoint

    results = []
    with tempfile.TemporaryDirectory(prefix="mdplugin-diatomics-") as scratch:
        for name in names:
            checkpoint = ROOT / "examples" / "models" / f"{name}.pt"
            recorded = read_checkpoint(checkpoint).get("domain", {}).get("shortest_distance") or {}
            modules = {
                repulsion: torch.jit.load(
                    str(
                        export(
                            checkpoint, Path(scratch) / f"{name}-{repulsion}.pt", dtype="float64", repulsion=repulsion
                        )
                    )
                )
                for repulsion in ("none", "zbl")
            }
            cutoffs = open_model(Path(scratch) / f"{name}-zbl.pt").metadata["repulsion"]["cutoffs"]
            elements = list(modules["none"].elements)
            for a, za in enumerate(elements):
                for zb in elements[a:]:
                    label = "-".join(symbols([za, zb]))
                    shortest = recorded.get(label)
                    entry = {
                        "model": name,
                        "pair": label,
                        "shortest_training_A": shortest,
                        "core_cutoff_A": cutoffs[label],
                    }
                    for repulsion, module in modules.items():
                        energies = curve(module, (za, zb))
                        # the wall is checked below 0.75 of the core's cutoff: the training minimum where recorded
                        entry[repulsion] = {"energies_eV": energies.tolist(), **summary(energies, cutoffs[label])}
                    results.append(entry)
                    print(name, label, flush=True)
    return {"radii_A": RADII.tolist(), "wall_fraction": WALL, "pairs": results, "machine": report.machine_info()}


def markdown(data: dict) -> str:
    rows = []
    for entry in data["pairs"]:
        shortest = entry["shortest_training_A"]
        rows.append(
            [
                entry["model"],
                entry["pair"],
                report.number(shortest, 3) or "not recorded",
                f"{entry['core_cutoff_A']:.3f}",
                *[
                    {True: "yes", False: "no", None: "–"}[entry[kind]["monotonic_below_wall"]]
                    for kind in ("none", "zbl")
                ],
                *[f"{entry[kind]['energy_at_0.5_A_eV']:.1f}" for kind in ("none", "zbl")],
                *[report.number(entry[kind]["lowest_below_cutoff_eV"], 3) for kind in ("none", "zbl")],
            ]
        )
    header = [
        "model",
        "pair",
        "shortest training distance Å",
        "core cutoff Å",
        "rises below 0.75x cutoff (bare)",
        "rises below 0.75x cutoff (core)",
        "E(0.5 Å) eV (bare)",
        "E(0.5 Å) eV (core)",
        "lowest E below the cutoff, eV (bare)",
        "(core)",
    ]
    return (
        "# Diatomic curves of the shipped models, without and with the repulsive core\n\n"
        "Two atoms alone, E(r) − E(3 Å) from 0.1 to 3 Å (float64 exports). `rises below 0.75x cutoff`: E grows "
        "monotonically as r shrinks below 0.75 of the core's cutoff, which is the pair's shortest training "
        "distance (md17 predates that record: its cutoffs are 0.8 x the sum of covalent radii). The core (`mdplugin export --repulsion zbl`) is ZBL below 0.75 of that distance, switched to "
        "zero at it: energies on the training data are unchanged. Curves: `diatomics.png`.\n\n"
        + report.markdown_table(header, rows, text_columns=2)
        + "\n\n"
        + report.machine_markdown(data["machine"])
        + "\n"
    )


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = data["pairs"]
    columns = 4
    rows = -(-len(pairs) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False)
    radii = np.array(data["radii_A"])
    for axis, entry in zip(axes.flat, pairs):
        for kind, style in (("none", "-"), ("zbl", "--")):
            axis.plot(radii, entry[kind]["energies_eV"], style, label="bare" if kind == "none" else "with core")
        if entry["shortest_training_A"]:
            axis.axvline(entry["shortest_training_A"], color="grey", lw=0.8)
        axis.set_ylim(-10, 30)
        axis.set_title(f"{entry['model']}: {entry['pair']}", fontsize=9)
        axis.set_xlabel("r (Å)")
    for axis in list(axes.flat)[len(pairs) :]:
        axis.axis("off")
    axes.flat[0].legend(fontsize=8)
    axes.flat[0].set_ylabel("E(r) − E(3 Å) (eV)")
    figure.tight_layout()
    figure.savefig(path, dpi=80)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="md17,dipeptide,water-classical,water-xtb")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    arguments = parser.parse_args(argv)
    torch.set_num_threads(1)
    data = measure(arguments.models.split(","))
    report.write_json(data, arguments.output / "diatomics.json")
    (arguments.output / "diatomics.md").write_text(markdown(data))
    plot(data, arguments.output / "diatomics.png")
    print(markdown(data))


if __name__ == "__main__":
    main()
