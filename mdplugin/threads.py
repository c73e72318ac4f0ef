"""How many CPU threads torch should use for one model evaluation per MD step.

torch's default (one thread per logical CPU) suits large batched work. An MD step of a small
molecule is a few milliseconds of small matrix products: extra threads only wait on each other, and
on a busy machine they wait on other processes too (measured here: 100 steps of ethanol took 52 s
with torch's default on two shared cores, 0.5 s with one thread).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

SMALL_SYSTEM_ATOMS = 500  # below this one thread is fastest: too little work per step to share
MOST_THREADS = 4  # more rarely pays off for one model evaluation and hurts neighbours on shared machines


@dataclass(frozen=True)
class ThreadChoice:
    count: int
    reason: str  # why: "requested", "OMP_NUM_THREADS", "small system" or "physical cores"


def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads of one core count once)."""
    try:
        allowed = os.sched_getaffinity(0)
    except AttributeError:  # not on Linux
        allowed = set(range(os.cpu_count() or 1))
    cores = set()
    try:
        with open("/proc/cpuinfo") as handle:
            processor, package = None, "0"
            for line in handle:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "processor":
                    processor = int(value)
                elif key == "physical id":
                    package = value
                elif key == "core id" and processor in allowed:
                    cores.add((package, value))
    except (OSError, ValueError):
        pass
    return max(1, min(len(cores) or len(allowed), len(allowed)))


def choose_threads(atoms: int, requested: int | None = None) -> ThreadChoice:
    """The torch thread count for MD of `atoms` atoms.

    An explicit request wins; else OMP_NUM_THREADS when set to a positive integer; else one thread
    for a small system (< 500 atoms), otherwise min(physical cores, 4).
    """
    if requested is not None:
        if requested < 1:
            raise ValueError(f"the thread count must be at least 1, got {requested}")
        return ThreadChoice(int(requested), "requested")
    environment = os.environ.get("OMP_NUM_THREADS", "").strip()
    if environment.isdigit() and int(environment) >= 1:
        return ThreadChoice(int(environment), "OMP_NUM_THREADS")
    if atoms < SMALL_SYSTEM_ATOMS:
        return ThreadChoice(1, "small system")
    return ThreadChoice(min(physical_cores(), MOST_THREADS), "physical cores")


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the body with torch using `count` threads, then restore the previous count."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
