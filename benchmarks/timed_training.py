"""`mdplugin train` for a fixed wall-clock budget, to compare with a baseline trained for the same time.

`mdplugin train` schedules its learning rate over a number of epochs; how many epochs fit in a given
time depends on how busy the machine is. For an equal-time comparison this runs the same trainer
(`mdplugin.training.train.train`, every option of `mdplugin train` passed through unchanged) with two
differences: the schedule follows the budget spent instead of the step count (the trainer's own
warm-up fraction, then a cosine to 1% of the peak at the end of the budget, as
`benchmarks/mace_train.py` does for MACE), and training stops after the first epoch that ends past
the budget. The budget is wall-clock minutes and, optionally, CPU minutes of this process
(`--cpu-minutes`): the spent fraction is the larger of the two, so on a machine shared with other
jobs two runs started together stop together and the CPU time each actually got is recorded. The checkpoint,
its CSV log and the EMA weights are the trainer's own; the last epoch's checkpoint is the result.
Give `--epochs` larger than can fit (it only bounds the run).

    python -m benchmarks.timed_training --minutes 24 -- data/md17/ethanol/ethanol_300K_train.extxyz \
        -o runs/ethanol-local.pt --interaction-range 4 --width 64 --depth 4 --heads 4 --epochs 100000 --threads 1
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repository root
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import json
import math
import time
from pathlib import Path


class BudgetSpent(Exception):
    """Raised at the end of the first epoch past the budget, after the trainer saved its checkpoint."""


class Budget:
    """The fraction of a wall-clock (and optionally a CPU-time) budget spent since the first call."""

    def __init__(self, minutes: float, cpu_minutes: float | None = None):
        self.wall, self.cpu = 60.0 * minutes, (60.0 * cpu_minutes if cpu_minutes else None)
        self.start: tuple[float, float] | None = None

    def spent(self) -> float:
        if self.start is None:  # the clock starts at the first optimizer step, after loading the data
            self.start = (time.perf_counter(), time.process_time())
        wall, cpu = self.elapsed()
        return max(wall / self.wall, cpu / self.cpu if self.cpu else 0.0)

    def elapsed(self) -> tuple[float, float]:
        """Wall-clock and CPU seconds of this process since the start."""
        if self.start is None:
            return 0.0, 0.0
        return time.perf_counter() - self.start[0], time.process_time() - self.start[1]


def timed(budget: Budget):
    """A learning-rate function of the budget spent and an epoch-end hook that stops the run at the budget."""

    def learning_rate_at(step: int, total_steps: int, options) -> float:
        fraction = min(1.0, budget.spent())
        warmup = options.warmup_fraction
        if fraction < warmup:
            return options.learning_rate * max(fraction / warmup, 1e-3)
        progress = (fraction - warmup) / max(1e-12, 1.0 - warmup)
        return options.learning_rate * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))

    def on_epoch_end(epoch: int, row: dict) -> None:
        if budget.spent() >= 1.0:
            raise BudgetSpent

    return learning_rate_at, on_epoch_end


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, required=True, help="wall-clock training budget")
    parser.add_argument("--cpu-minutes", type=float, default=None, help="CPU-time budget of this process (optional)")
    parser.add_argument("train_arguments", nargs=argparse.REMAINDER, help="-- then the arguments of `mdplugin train`")
    args = parser.parse_args(argv)
    arguments = args.train_arguments[1:] if args.train_arguments[:1] == ["--"] else args.train_arguments

    import mdplugin.training.train as trainer
    from mdplugin.cli.main import main as cli

    budget = Budget(args.minutes, args.cpu_minutes)
    learning_rate_at, on_epoch_end = timed(budget)
    original = trainer.train

    def train_for_budget(options, resume: bool = False, on_epoch_end_hook=None):
        try:
            return original(options, resume, on_epoch_end=on_epoch_end)
        except BudgetSpent:
            return Path(options.output)

    trainer.learning_rate_at = learning_rate_at  # read by the training loop at every step
    trainer.train = train_for_budget  # the CLI imports it when the command runs
    cli(["train", *arguments], standalone_mode=False)

    from mdplugin.model.checkpoint import read_checkpoint

    output = Path(
        arguments[arguments.index("-o") + 1] if "-o" in arguments else arguments[arguments.index("--output") + 1]
    )
    history = read_checkpoint(output)["training"]["history"]
    trainer._plot_losses(history, output.with_name(output.stem + "_loss.png"))
    wall, cpu = budget.elapsed()
    summary = {
        "budget_minutes": args.minutes,
        "budget_cpu_minutes": args.cpu_minutes,
        "training_time_s": history[-1]["elapsed_s"],
        "cpu_time_s": cpu,
        "epochs": history[-1]["epoch"],
        "steps": history[-1]["step"],
        "schedule": "trainer warm-up fraction, then cosine in the budget spent (max of wall and CPU fractions) to 1% at its end",
    }
    output.with_suffix(".timing.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
