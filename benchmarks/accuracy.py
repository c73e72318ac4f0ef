"""Accuracy of the trained checkpoint on held-out GFN2-xTB test frames (mdplugin.analysis.accuracy does the work).

With `--compare LABEL=PATH` (repeatable) it instead puts several trained models side by side on the
same test files, per molecule and temperature: Transformer checkpoints (global or local), a MACE
trained by `benchmarks/mace_train.py` on the same training files, or a recorded accuracy JSON of an
earlier run (its rows are reused; its zero-force MAEs show whether the test frames are the same).
The training wall-clock, CPU time and steps of each model come from its checkpoint (and the
`.timing.json` that `benchmarks/timed_training.py` writes beside it). The local Transformer's force
MAE is reported as a ratio to MACE's.

python -m benchmarks.accuracy [--checkpoint examples/models/md17.pt] [--test-data data/md17/test.extxyz] [--quick]
python -m benchmarks.accuracy --compare local=L.pt --compare MACE=runs/mace/mace.pt --test-data T.extxyz \
    --name accuracy-local -o benchmarks/results
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repository root
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import json
import os
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CHECKPOINT = ROOT / "examples/models/md17.pt"
DEFAULT_TEST_DATA = (ROOT / "data/md17/test.extxyz", ROOT / "examples/data/md17-test.extxyz")


class NothingToMeasure(RuntimeError):
    """No checkpoint or no test data: the accuracy benchmark cannot run (the message says what is missing)."""


def resolve_inputs(checkpoint: str | Path | None, test_files: list[str | Path] | None) -> tuple[Path, list[Path]]:
    checkpoint = Path(checkpoint) if checkpoint else DEFAULT_CHECKPOINT
    if not checkpoint.is_file():
        raise NothingToMeasure(f"no checkpoint {checkpoint}; train one (`mdplugin train`) or pass --checkpoint")
    files = (
        [Path(path) for path in test_files]
        if test_files
        else [path for path in DEFAULT_TEST_DATA if path.is_file()][:1]
    )
    missing = [str(path) for path in files if not path.is_file()]
    if not files or missing:
        raise NothingToMeasure(
            f"no test data ({', '.join(missing) or ' or '.join(map(str, DEFAULT_TEST_DATA))}); "
            "make it with `mdplugin data md17` or pass --test-data"
        )
    return checkpoint, files


def run_accuracy(
    checkpoint: str | Path | None = None,
    test_files: list[str | Path] | None = None,
    output: str | Path = ROOT / "benchmarks/results",
    quick: bool = False,
) -> dict:
    """Write accuracy.json and accuracy.md to `output`; returns the report."""
    from benchmarks.report import cpu_model
    from mdplugin.analysis.accuracy import accuracy_report, write_accuracy_report

    checkpoint, files = resolve_inputs(checkpoint, test_files)
    hardware = f"{cpu_model()} ({os.cpu_count()} cores), torch {torch.__version__}"
    report = accuracy_report(checkpoint, files, rotation_samples=1 if quick else 5, hardware=hardware)
    write_accuracy_report(report, output)
    return report


# ------------------------------------------------------------------------------ side-by-side comparison

TARGET_RATIO = 1.5  # the local Transformer's force MAE within 1.5x MACE's (issue 11)


def parse_comparison(values: list[str]) -> list[tuple[str, Path]]:
    """LABEL=PATH pairs, in order; each path must exist."""
    models = []
    for value in values:
        label, separator, path = value.partition("=")
        if not separator or not label or not path:
            raise ValueError(f"--compare takes LABEL=PATH, got {value!r}")
        if not Path(path).is_file():
            raise FileNotFoundError(f"--compare {label}: {path} does not exist")
        models.append((label, Path(path)))
    if len({label for label, _ in models}) != len(models):
        raise ValueError("--compare labels must differ")
    return models


def model_kind(path: Path) -> str:
    """'recorded' (an accuracy JSON), 'mace' (benchmarks/mace_train.py) or 'transformer' (a checkpoint)."""
    if path.suffix == ".json":
        return "recorded"
    from benchmarks.mace_train import is_mace_checkpoint

    return "mace" if is_mace_checkpoint(path) else "transformer"


def transformer_entry(path: Path, files: list[Path]) -> dict:
    from mdplugin.analysis.accuracy import group_by_label
    from mdplugin.model.checkpoint import model_from_checkpoint, read_checkpoint
    from mdplugin.model.transformer import count_parameters
    from mdplugin.training.train import evaluate

    checkpoint = read_checkpoint(path)
    model = model_from_checkpoint(checkpoint)
    history = checkpoint["training"].get("history", [])
    timing_path = path.with_suffix(".timing.json")
    timing = json.loads(timing_path.read_text()) if timing_path.is_file() else {}
    results = {
        key: evaluate(model, structures) for path_ in files for key, structures in sorted(group_by_label(path_).items())
    }
    range_ = checkpoint["config"].get("interaction_range")
    return {
        "kind": "transformer",
        "description": f"{'local, interaction range ' + format(range_, 'g') + ' Å' if range_ else 'global attention'}",
        "local": range_ is not None,
        "parameters": count_parameters(model),
        "model_config": checkpoint["config"],
        "epochs": history[-1]["epoch"] if history else None,
        "steps": history[-1]["step"] if history else None,
        "training_time_s": history[-1]["elapsed_s"] if history else None,
        "cpu_time_s": timing.get("cpu_time_s"),
        "budget": {key: timing[key] for key in ("budget_minutes", "budget_cpu_minutes", "schedule") if key in timing},
        "training_options": checkpoint["training"].get("options"),
        "results": results,
    }


def mace_entry(path: Path, files: list[Path]) -> dict:
    import torch

    from benchmarks import mace_train
    from mdplugin.analysis.accuracy import frames_by_label

    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    model = mace_train.load_mace(path)
    elements = list(checkpoint["model_settings"]["atomic_numbers"])
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        results = {
            key: mace_train.evaluate(model, mace_train.graphs_of(frames, elements))
            for path_ in files
            for key, frames in sorted(frames_by_label(path_).items())
        }
    finally:
        torch.set_default_dtype(previous)
    return {
        "kind": "mace",
        "description": f"MACE {checkpoint['recipe']['hidden_irreps']}, r_max {checkpoint['recipe']['r_max_angstrom']} Å",
        "local": False,
        "parameters": checkpoint["parameters"],
        "recipe": checkpoint["recipe"],
        "epochs": checkpoint["epochs"],
        "steps": checkpoint["steps"],
        "training_time_s": checkpoint["training_time_s"],
        "cpu_time_s": checkpoint.get("cpu_time_s"),
        "budget": {
            "budget_minutes": checkpoint["budget_minutes"],
            "budget_cpu_minutes": checkpoint.get("budget_cpu_minutes"),
        },
        "results": results,
    }


def recorded_entry(path: Path) -> dict:
    """An accuracy JSON written earlier (`accuracy_report`): its rows, and the steps from a training.csv beside it."""
    recorded = json.loads(path.read_text())
    log = path.with_name("training.csv")
    steps = None
    if log.is_file():
        import csv

        rows = list(csv.DictReader(log.open()))
        steps = int(rows[-1]["step"]) if rows else None
    range_ = recorded.get("model_config", {}).get("interaction_range")
    return {
        "kind": "recorded",
        "description": f"recorded result ({path}), {'local' if range_ else 'global attention'}",
        "local": range_ is not None,
        "parameters": recorded["parameters"],
        "model_config": recorded.get("model_config"),
        "epochs": recorded.get("epochs"),
        "steps": steps,
        "training_time_s": recorded.get("training_time_s"),
        "cpu_time_s": None,
        "budget": {},
        "results": {
            (row["molecule"], float(row["temperature_K"])): {
                "energy_mae_mev_per_atom": row["energy_mae_mev_per_atom"],
                "force_mae_mev_per_a": row["force_mae_mev_per_a"],
                "zero_force_mae_mev_per_a": row["zero_force_mae_mev_per_a"],
            }
            for row in recorded["rows"]
        },
    }


def run_comparison(
    models: list[tuple[str, Path]],
    test_files: list[str | Path],
    output: str | Path = ROOT / "benchmarks/results",
    name: str = "accuracy-local",
    notes: list[str] | None = None,
) -> dict:
    """Evaluate every model on the same test files; write `name`.json and `name`.md; returns the report."""
    from benchmarks.report import machine_info
    from mdplugin.analysis.accuracy import group_by_label, zero_force_mae

    files = [Path(path) for path in test_files]
    missing = [str(path) for path in files if not path.is_file()]
    if not files or missing:
        raise NothingToMeasure(
            f"no test data ({', '.join(missing)}); make it with `mdplugin data md17` or pass --test-data"
        )
    machine = machine_info()
    groups = {key: structures for path in files for key, structures in sorted(group_by_label(path).items())}
    entries = {}
    for label, path in models:
        kind = model_kind(path)
        if kind == "recorded":
            entry = recorded_entry(path)
        else:
            entry = (mace_entry if kind == "mace" else transformer_entry)(path, files)
        entries[label] = {"path": str(path), **entry}
    rows = []
    for (molecule, temperature), structures in groups.items():
        row = {
            "molecule": molecule,
            "temperature_K": temperature,
            "frames": len(structures),
            "zero_force_mae_mev_per_a": zero_force_mae(structures),
            "models": {},
        }
        for label, entry in entries.items():
            result = entry["results"].get((molecule, temperature))
            if result is not None:
                row["models"][label] = {key: result[key] for key in ("energy_mae_mev_per_atom", "force_mae_mev_per_a")}
                if "zero_force_mae_mev_per_a" in result:  # recorded: was it measured on these very frames?
                    row["models"][label]["same_test_frames"] = (
                        abs(result["zero_force_mae_mev_per_a"] - row["zero_force_mae_mev_per_a"]) < 0.05
                    )
        rows.append(row)
    for entry in entries.values():
        del entry["results"]
    report = {
        "benchmark": name,
        "machine": machine,
        "test_files": [str(path) for path in files],
        "models": entries,
        "rows": rows,
        "target": target_verdict(entries, rows),
        "notes": notes or [],
    }
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    (output / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (output / f"{name}.md").write_text(comparison_markdown(report))
    return report


def target_verdict(entries: dict, rows: list[dict]) -> dict:
    """The local Transformer's force MAE over MACE's, per test set, against TARGET_RATIO."""
    local = next((label for label, entry in entries.items() if entry["kind"] == "transformer" and entry["local"]), None)
    mace = next((label for label, entry in entries.items() if entry["kind"] == "mace"), None)
    if local is None or mace is None:
        return {"local": local, "mace": mace, "ratios": [], "met": None}
    ratios = [
        {
            "molecule": row["molecule"],
            "temperature_K": row["temperature_K"],
            "ratio": row["models"][local]["force_mae_mev_per_a"] / row["models"][mace]["force_mae_mev_per_a"],
        }
        for row in rows
        if local in row["models"] and mace in row["models"]
    ]
    return {
        "local": local,
        "mace": mace,
        "target_ratio": TARGET_RATIO,
        "ratios": ratios,
        "largest_ratio": max((r["ratio"] for r in ratios), default=None),
        "met": bool(ratios) and all(r["ratio"] <= TARGET_RATIO for r in ratios),
    }


def comparison_markdown(report: dict) -> str:
    from benchmarks.report import machine_markdown, markdown_table

    entries, rows = report["models"], report["rows"]
    training = [
        [
            label,
            entry["description"],
            f"{entry['parameters']:,}",
            entry["epochs"],
            f"{entry['steps']:,}" if entry.get("steps") else None,
            f"{entry['training_time_s'] / 60:.1f}" if entry.get("training_time_s") else None,
            f"{entry['cpu_time_s'] / 60:.1f}" if entry.get("cpu_time_s") else None,
        ]
        for label, entry in entries.items()
    ]
    header = ["molecule", "T (K)", "frames", "zero-force MAE"]
    for label in entries:
        header += [f"{label} E", f"{label} F"]
    verdict = report["target"]
    if verdict["met"] is not None:
        header.append(f"{verdict['local']} / {verdict['mace']} F")
    ratio_of = {(r["molecule"], r["temperature_K"]): r["ratio"] for r in verdict["ratios"]}
    table = []
    for row in rows:
        cells = [
            row["molecule"],
            f"{row['temperature_K']:.0f}",
            row["frames"],
            f"{row['zero_force_mae_mev_per_a']:.1f}",
        ]
        for label in entries:
            result = row["models"].get(label)
            cells += (
                [f"{result['energy_mae_mev_per_atom']:.2f}", f"{result['force_mae_mev_per_a']:.1f}"]
                if result
                else [None, None]
            )
        if verdict["met"] is not None:
            ratio = ratio_of.get((row["molecule"], row["temperature_K"]))
            cells.append(f"{ratio:.2f}" if ratio is not None else None)
        table.append(cells)
    lines = [
        "# Accuracy: the local Transformer against a trained MACE and the global Transformer",
        "",
        machine_markdown(report["machine"])
        + " (the machine of this evaluation; the training runs are described below).",
        "",
        "## Training",
        "",
        markdown_table(
            ["model", "what", "parameters", "epochs", "steps", "wall-clock (min)", "CPU time (min)"],
            training,
            text_columns=2,
        ),
        "",
        "## Test errors",
        "",
        "Energy MAE (E) in meV/atom, force MAE (F) in meV/Å (mean over force components), on the test files "
        + ", ".join(f"`{path}`" for path in report["test_files"])
        + ". The zero-force MAE is what predicting no force at all would score.",
        "",
        markdown_table(header, table, text_columns=2),
        "",
    ]
    same = [
        (label, row["models"][label]["same_test_frames"])
        for row in rows
        for label in entries
        if "same_test_frames" in row["models"].get(label, {})
    ]
    for label in dict(same):
        flags = [flag for name, flag in same if name == label]
        lines.append(
            f"- `{label}` is a recorded result: its zero-force MAEs "
            + (
                "equal these test files' on every set, so it was measured on the same frames."
                if all(flags)
                else "differ from these test files': it was measured on other frames."
            )
        )
    if verdict["met"] is not None:
        ratios = ", ".join(f"{r['ratio']:.2f} at {r['temperature_K']:.0f} K" for r in verdict["ratios"])
        lines.append(
            f"- **Target: the local Transformer's force MAE within {verdict['target_ratio']}x MACE's: "
            f"{'met' if verdict['met'] else 'not met'}** ({verdict['local']} / {verdict['mace']}: {ratios})."
        )
    lines += [f"- {note}" for note in report["notes"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help=f"training checkpoint (default: {DEFAULT_CHECKPOINT})"
    )
    parser.add_argument("--test-data", type=Path, action="append", default=None, help="test file (repeatable)")
    parser.add_argument(
        "-o", "--output", type=Path, default=ROOT / "benchmarks/results", help="directory for accuracy.json/.md"
    )
    parser.add_argument("--quick", action="store_true", help="one rotation sample per frame")
    parser.add_argument(
        "--compare", action="append", default=None, metavar="LABEL=PATH", help="models side by side (repeatable)"
    )
    parser.add_argument("--name", default="accuracy-local", help="--compare: file stem of the JSON and Markdown")
    parser.add_argument("--note", action="append", default=None, help="--compare: a line added under the table")
    args = parser.parse_args(argv)
    if args.compare:
        run_comparison(parse_comparison(args.compare), args.test_data or [], args.output, args.name, args.note)
        print((args.output / f"{args.name}.md").read_text())
        return
    run_accuracy(args.checkpoint, args.test_data, args.output, args.quick)
    print((args.output / "accuracy.md").read_text())


if __name__ == "__main__":
    main()
