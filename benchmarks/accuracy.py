"""Accuracy of the trained checkpoint on held-out GFN2-xTB test frames (mdplugin.analysis.accuracy does the work).

python -m benchmarks.accuracy [--checkpoint examples/models/md17.pt] [--test-data data/md17/test.extxyz] [--quick]
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repository root
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
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
    args = parser.parse_args(argv)
    run_accuracy(args.checkpoint, args.test_data, args.output, args.quick)
    print((args.output / "accuracy.md").read_text())


if __name__ == "__main__":
    main()
