"""Side-by-side training runs: their per-epoch validation errors as one Markdown table and JSON.

Each run is given as NAME=CSV, the log `mdplugin train` writes next to its checkpoint. The CSVs are
copied next to the table, so the table can be made again from what is committed:

    python benchmarks/training_curves.py --title "Interaction range and depth on classical water" \
        --out benchmarks/results/water/recipes/recipes --note "..." \
        "3.5 Å x 4=runs/s19/A-r16-d32.csv" "5 Å x 3=runs/s19/D-R5-d3.csv"
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

# column of the training log: its heading and the decimals shown
COLUMNS = {
    "force_mae_mev_per_a": ("force MAE (meV/Å)", 1),
    "energy_mae_mev_per_atom": ("energy MAE (meV/atom)", 1),
    "stress_mae_gpa": ("stress MAE (GPa)", 3),
    "elapsed_s": ("elapsed (s)", 0),
}


def read_log(path: Path) -> list[dict[str, float]]:
    """The rows of a training log; refuses a file that is not one, or that has no epoch yet."""
    with open(path) as handle:
        rows = list(csv.DictReader(handle))
    missing = set(COLUMNS) - set(rows[0] if rows else {})
    if not rows or missing:
        raise SystemExit(
            f"{path} is not a training log with epochs (`mdplugin train` writes one beside its checkpoint)"
        )
    return [{key: float(value) for key, value in row.items()} for row in rows]


def markdown(title: str, note: str, runs: dict[str, list[dict[str, float]]]) -> str:
    epochs = max(len(rows) for rows in runs.values())
    lines = [f"# {title}", "", note, ""]
    for column, (label, decimals) in COLUMNS.items():
        lines += [f"## {label}", "", "| epoch | " + " | ".join(runs) + " |", "| ---: |" + " ---: |" * len(runs)]
        for epoch in range(epochs):
            cells = [f"{rows[epoch][column]:.{decimals}f}" if epoch < len(rows) else "–" for rows in runs.values()]
            lines.append(f"| {epoch + 1} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="NAME=CSV")
    parser.add_argument("--title", required=True)
    parser.add_argument("--note", default="")
    parser.add_argument("--out", required=True, type=Path, help="path stem: writes STEM.md, STEM.json, STEM-*.csv")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    runs = {}
    for index, item in enumerate(args.runs):
        name, _, path = item.partition("=")
        if not path:
            raise SystemExit(f"give each run as NAME=CSV, not {item!r}")
        runs[name] = read_log(Path(path))
        copy = args.out.parent / f"{args.out.name}-{index + 1}.csv"
        if Path(path).resolve() != copy.resolve():
            shutil.copyfile(path, copy)
    args.out.with_suffix(".json").write_text(json.dumps({"title": args.title, "note": args.note, "runs": runs}) + "\n")
    args.out.with_suffix(".md").write_text(markdown(args.title, args.note, runs))
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
