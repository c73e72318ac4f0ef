"""One resumable, seeded trajectory writer and its process pool, for every kind of reference data.

A trajectory (a molecule's, `molecules.Trajectory`, or a box's, `water.BoxTrajectory`) is a frozen
dataclass with `path`, `frames` and `settings` (timestep_fs, stride, equilibration_steps) that also says:
- `provenance(created)`: the info every frame carries; `identity_keys`: the entries that must match for
  a file to be continued; `numbers`: the atomic numbers of each frame;
- `sampler()`: a function (index, last frame or None, info) -> (extxyz text, the frame as parsed back);
- `cost`: a relative cost, to start the longest trajectories first.

Frames are written one at a time and flushed, so an interrupted run continues with `resume` from its
last complete frame (a cut-off frame is dropped), and every frame is seeded by (trajectory seed, index):
a continued file is the one an uninterrupted run would have written.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class TrajectoryResult:
    path: Path
    frames: int  # frames in the file now
    written: int  # frames written by this run
    message: str = ""


# ---------------------------------------------------------------------------- extxyz text


def extxyz_text(atoms) -> str:
    import ase.io

    buffer = io.StringIO()
    ase.io.write(buffer, atoms, format="extxyz")
    return buffer.getvalue()


def parse_extxyz(text: str):
    import ase.io

    atoms = ase.io.read(io.StringIO(text), format="extxyz")
    atoms.set_constraint()
    return atoms


def frame_spans(path: Path) -> list[tuple[int, int]]:
    """Byte ranges of the complete frames at the start of an extxyz file (a cut-off last frame is left out)."""
    spans, start, index = [], 0, 0
    with open(path, "rb") as handle:
        lines = handle.readlines()
    while index < len(lines):
        try:
            atoms = int(lines[index])
        except ValueError:
            break
        end = index + 2 + atoms
        if end > len(lines) or not lines[end - 1].endswith(b"\n"):
            break
        length = sum(len(line) for line in lines[index:end])
        spans.append((start, start + length))
        start, index = start + length, end
    return spans


def count_frames(path: Path) -> int:
    """Complete frames in an extxyz file."""
    return len(frame_spans(path))


# ---------------------------------------------------------------------------- one trajectory


def time_fs(settings, index: int) -> float:
    """Simulated time of frame `index`: equilibration, then `stride` steps per frame."""
    return (settings.equilibration_steps + index * settings.stride) * settings.timestep_fs


def run_trajectory(
    trajectory, resume: bool = False, force: bool = False, on_frame: Callable[[], None] | None = None
) -> TrajectoryResult:
    """Write (or continue) one trajectory; returns how many frames the file holds and how many were added."""
    path, done, last = trajectory.path, 0, None
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if path.exists() and not force:
        if not resume:
            raise FileExistsError(f"{path} exists; pass --resume to continue it or --force to overwrite it")
        done, last = continue_from(trajectory)
        if done >= trajectory.frames:
            return TrajectoryResult(path, done, 0, f"{path}: complete ({done} frames), skipped")
        created = str(last.info.get("created", created)) if last is not None else created
    path.parent.mkdir(parents=True, exist_ok=True)
    info = trajectory.provenance(created)
    sample = trajectory.sampler()
    with open(path, "a" if done else "w") as handle:
        for index in range(done, trajectory.frames):
            text, last = sample(index, last, {**info, "frame": index, "time_fs": time_fs(trajectory.settings, index)})
            handle.write(text)
            handle.flush()
            if on_frame is not None:
                on_frame()
    return TrajectoryResult(path, trajectory.frames, trajectory.frames - done)


def continue_from(trajectory):
    """Frames already in the file and its last frame; an incomplete last frame is cut off. A file that
    holds another trajectory (other identity entries or atoms) is refused."""
    path = trajectory.path
    spans = frame_spans(path)
    if not spans:
        if path.stat().st_size:
            raise ValueError(f"{path} is not an extxyz file this command wrote; pass --force to overwrite it")
        return 0, None
    content = path.read_bytes()
    try:
        first, last = (parse_extxyz(content[a:b].decode()) for a, b in (spans[0], spans[-1]))
    except Exception as error:
        raise ValueError(
            f"{path} is not an extxyz file this command wrote ({error}); pass --force to overwrite it"
        ) from None
    expected = trajectory.provenance("")
    differ = [key for key in trajectory.identity_keys if str(first.info.get(key)) != str(expected[key])]
    if differ or not np.array_equal(first.numbers, trajectory.numbers):
        found = ", ".join(f"{k}={first.info.get(k)} (not {expected[k]})" for k in differ) or "other atoms"
        raise ValueError(
            f"{path} holds another trajectory ({found}); pass --force to overwrite it or choose another output directory"
        )
    if spans[-1][1] < len(content):
        with open(path, "r+b") as handle:
            handle.truncate(spans[-1][1])
    return len(spans), last


# ---------------------------------------------------------------------------- many trajectories

_progress_queue = None


def _start_worker(queue) -> None:
    global _progress_queue
    os.environ["OMP_NUM_THREADS"] = "1"  # one process per core; tblite's OpenMP would oversubscribe
    _progress_queue = queue


def _run_in_worker(trajectory, resume: bool, force: bool) -> TrajectoryResult:
    return run_trajectory(trajectory, resume, force, on_frame=lambda: _progress_queue.put(1))


def run_trajectories(
    trajectories: Sequence,
    jobs: int = 2,
    resume: bool = False,
    force: bool = False,
    on_frame: Callable[[], None] | None = None,
) -> list[TrajectoryResult]:
    """Run every trajectory, costliest first, in `jobs` worker processes of one OpenMP thread each.

    Even one job runs in a worker: tblite's OpenMP threads, once started in a process, cannot be
    reduced, and on a busy machine two spinning threads per process make xTB many times slower.
    """
    import multiprocessing

    order = sorted(trajectories, key=lambda trajectory: trajectory.cost, reverse=True)
    context = multiprocessing.get_context("spawn")  # workers start clean, with OMP_NUM_THREADS=1 set first
    queue = context.Queue()
    results = []
    with ProcessPoolExecutor(max(1, jobs), mp_context=context, initializer=_start_worker, initargs=(queue,)) as pool:
        pending = {pool.submit(_run_in_worker, t, resume, force): t for t in order}
        while pending:
            finished, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            _drain(queue, on_frame)
            for future in finished:
                trajectory = pending.pop(future)
                error = future.exception()
                if error is not None:
                    for other in pending:
                        other.cancel()
                    if isinstance(error, (ValueError, FileExistsError)):
                        raise error  # these name the file already
                    raise RuntimeError(f"{trajectory.path}: {type(error).__name__}: {error}") from error
                results.append(future.result())
        _drain(queue, on_frame)
    return results


def _drain(queue, on_frame) -> None:
    import queue as queues

    while True:
        try:
            queue.get_nowait()
        except queues.Empty:
            return
        if on_frame is not None:
            on_frame()


def frames_to_do(trajectories: Sequence, resume: bool, force: bool) -> int:
    """Frames the run will write (for a progress bar)."""
    total = 0
    for t in trajectories:
        done = count_frames(t.path) if resume and not force and t.path.exists() else 0
        total += max(0, t.frames - done)
    return total
