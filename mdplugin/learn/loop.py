"""Active learning in one call: from start structures and a reference to a committee that survives its own MD.

Round 0 labels frames of the reference's own Langevin MD at the target temperatures, plus rattled
close-contact frames trained on forces only. Every round then
1. trains a committee of K models that differ in their seed (round r warm-starts from round r-1's members);
2. runs Langevin MD with member 0 from each start structure at every target temperature and at
   `overheat` x the top one, and every `check_every` steps the committee's force deviation (max over atoms);
3. labels the frames whose deviation lies between the trust levels `lower` and `upper` (DP-GEN's selection:
   above `upper` a frame is taken as unphysical and the trajectory as failed there; the last frame before a
   failure is labelled), and adds them to the training data.
The loop stops when every trajectory runs its length with no failure and at most `converged_fraction` of
the checked frames lie above `lower`; the last committee is exported as one file (engines run member 0; its
`deviation` method, `mdplugin run`'s state data and the ASE results give the model deviation).

Everything lives in one folder: `state.json` (options and every round's record), `data/` (round-NNN.extxyz:
the frames each round added; rattled.extxyz), `round-NNN/` (the committee's checkpoints), `report.md`, and
`model-export.pt`. Each step is written before the state records it, so an interrupted run continues with
the same call where it stopped; a finished round is never repeated.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from mdplugin.data.trajectories import count_frames
from mdplugin.errors import reason
from mdplugin.learn.committee import Committee
from mdplugin.learn.options import LearnOptions
from mdplugin.learn.reference import SOURCE, ReferenceError, label, reference_calculator
from mdplugin.learn.solvated import check_solvated_starts, solvated_md

STATE = "state.json"
# a frame the committee rejects (deviation above `upper`) is still labelled when no pair of atoms comes closer
# than this fraction of its shortest distance in the training data: an ordinary geometry the models got wrong,
# not a blown-up one (DP-GEN discards all of them, which stalls a loop whose first models are poor)
PLAUSIBLE_RATIO = 0.8
MAX_RATTLED_FORCE = 30.0  # eV/Å: a rattled frame with a larger force component is not kept
BOND_STRETCH = 1.5  # a molecule's bond beyond this x its start length is broken: the trajectory failed
AUTO_LOWER_FLOOR = 0.05  # eV/Å: the automatic lower trust level is never below (a reference's own noise)
AUTO_UPPER = 3.0  # the automatic upper trust level, x the lower one
FALLBACK_LOWER = 0.15  # eV/Å: without a test set
FINE_TUNING = 0.5  # later rounds' peak learning rate, relative to round 1's
VALIDATE_STEPS = 500  # members validate (and save) about this many optimizer steps apart, not every short epoch
RESOURCES = ("max_rounds", "progress", "threads", "jobs")  # options a continued run may change


def check_options(options: LearnOptions) -> None:
    """Refuse, by name, options no run should start with (NaN included: it passes every comparison)."""
    if not options.structures:
        raise ValueError("give at least one start structure")
    if options.committee < 1:
        raise ValueError(f"--committee must be at least 1 (1: a single model, checked by closest contacts only), "
                         f"got {options.committee}")  # fmt: skip
    given = [level for level in (options.lower, options.upper) if level is not None]
    if not all(0 < level < math.inf for level in given) or (len(given) == 2 and not given[0] < given[1]):
        raise ValueError(f"the trust levels must satisfy 0 < lower < upper, got {options.lower} and {options.upper}")
    if not options.temperatures_k or not all(0 < t <= 5000 for t in options.temperatures_k):
        raise ValueError(f"temperatures must lie in (0, 5000] K, got {options.temperatures_k}")
    if not 1 <= options.overheat <= 3:
        raise ValueError(f"--overheat must lie in [1, 3] (1: the target temperatures only), got {options.overheat:g}")
    if not options.volume_scales or not all(0.5 <= v <= 2 for v in options.volume_scales):
        raise ValueError(f"--volume-scales must lie in [0.5, 2] (volume factors), got {options.volume_scales}")
    for name, value, limit in (("--timestep-fs", options.timestep_fs, 5.0), ("--rattle", options.rattle_angstrom, 1.0),
                               ("friction", options.friction_per_fs, 10.0)):  # fmt: skip
        if not 0 <= value <= limit or (name == "--timestep-fs" and value == 0):
            raise ValueError(f"{name} must lie in (0, {limit:g}], got {value:g}")
    if not 0 < options.learning_rate < 1 or not 0 <= options.ema_decay < 1 or options.jobs < 0:
        raise ValueError(
            f"need 0 < learning rate < 1, 0 <= EMA decay < 1 and jobs >= 0, got {options.learning_rate:g}, "
            f"{options.ema_decay:g} and {options.jobs}"
        )
    if options.solvate_nm is not None and not (0 < options.solvate_nm <= 5 and options.forcefield):
        raise ValueError(
            f"--solvate takes a padding in (0, 5] nm and force field files for the water, got {options.solvate_nm:g} "
            f"and {options.forcefield}"
        )
    if not 0 <= options.converged_fraction < 1:
        raise ValueError(f"--converged-fraction must lie in [0, 1), got {options.converged_fraction:g}")
    names = ("max_rounds", "initial_frames", "md_steps", "check_every", "training_steps", "steps_per_round",
             "trajectories", "batch_size")  # fmt: skip
    for name in names:
        if getattr(options, name) < 1:
            raise ValueError(f"{name} must be at least 1, got {getattr(options, name)}")


def temperatures(options: LearnOptions) -> list[float]:
    """Where the loop samples, from round 0 on: the targets and `overheat` x the top one."""
    return sorted({*options.temperatures_k, max(options.temperatures_k) * options.overheat})


def starting_points(starts: list, options: LearnOptions) -> list[tuple[str, object]]:
    """(name, structure) pairs to sample from: each start structure, and each periodic one also scaled to
    every volume in `volume_scales` (atoms and cell together)."""
    points = []
    for path, start in zip(options.structures, starts):
        if not start.pbc.all():
            points.append((path, start))
            continue
        for scale in options.volume_scales:
            scaled = start.copy()
            scaled.set_cell(start.cell.array * scale ** (1 / 3), scale_atoms=True)
            points.append((path if scale == 1 else f"{path} x{scale:g} volume", scaled))
    return points


def read_start(path: str):
    import ase.io

    if not Path(path).is_file():
        raise FileNotFoundError(f"start structure {path} does not exist")
    try:
        atoms = ase.io.read(path, index=0)  # the first frame of a trajectory
    except Exception as error:  # ase raises many kinds for a file it cannot parse
        raise ValueError(f"cannot read {path} as a structure ({reason(error)}); use XYZ/extxyz, PDB or CIF") from None
    if len(atoms) == 0:
        raise ValueError(f"start structure {path} holds no atoms")
    if not np.isfinite(atoms.positions).all():
        raise ValueError(f"start structure {path} has NaN or infinite positions")
    atoms.info[SOURCE] = str(path)  # a force field teacher reads the residues from it
    return atoms


# ---------------------------------------------------------------------------- state


class Run:
    """The run's folder and its state.json."""

    def __init__(self, options: LearnOptions):
        self.folder = Path(options.output)
        self.path = self.folder / STATE
        recorded = asdict(options)
        if self.path.exists():
            self.state = json.loads(self.path.read_text())
            fixed = {k: v for k, v in recorded.items() if k not in RESOURCES}
            before = {k: v for k, v in self.state["options"].items() if k in fixed}
            if before != {k: fixed[k] for k in before}:
                changed = sorted(k for k in before if before[k] != fixed[k])
                raise ValueError(
                    f"{self.folder} holds a run with other options ({', '.join(changed)}); continue it with the same "
                    "options (only --max-rounds, --threads and --jobs may change) or choose another --output"
                )
        else:
            self.state = {"options": recorded, "rounds": [], "data": {}}

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(STATE + ".partial")
        temporary.write_text(json.dumps(self.state, indent=2, default=str))
        temporary.replace(self.path)

    def data_files(self) -> list[str]:
        return [self.state["data"][key] for key in sorted(self.state["data"]) if key.startswith("round")]


class Clock:
    """Wall-clock and CPU seconds since it was made (CPU: this process and its finished children, the
    training workers)."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), cpu_seconds()

    def elapsed(self) -> dict[str, float]:
        return {"wall": time.perf_counter() - self.wall, "cpu": cpu_seconds() - self.cpu}


def cpu_seconds() -> float:
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def add_time(state: dict, seconds: dict[str, float]) -> None:
    """The run's total, over sessions (a step interrupted before it was recorded is not counted)."""
    totals = state.setdefault("seconds", {"wall": 0.0, "cpu": 0.0})
    for key in totals:
        totals[key] += seconds[key]


def write_frames(frames: list, path: Path) -> str:
    """Write labelled frames atomically (a run never reads a half-written file)."""
    import ase.io

    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".partial")
    ase.io.write(temporary, frames, format="extxyz")
    temporary.replace(path)
    return str(path)


# ---------------------------------------------------------------------------- round 0


def langevin(atoms, calculator, temperature_k: float, options: LearnOptions, seed: int):
    from ase import units
    from ase.constraints import FixCom
    from ase.md import velocitydistribution
    from ase.md.langevin import Langevin

    atoms.calc = calculator
    atoms.set_constraint(FixCom())
    rng = np.random.default_rng(seed)
    # thermalize_momenta is the name from ASE 3.28 on; MaxwellBoltzmannDistribution before
    thermalize = getattr(velocitydistribution, "thermalize_momenta", None)
    thermalize = thermalize or velocitydistribution.MaxwellBoltzmannDistribution
    thermalize(atoms, temperature_K=temperature_k, rng=rng)
    velocitydistribution.Stationary(atoms)
    return Langevin(atoms, timestep=options.timestep_fs * units.fs, temperature_K=temperature_k,
                    friction=options.friction_per_fs / units.fs, fixcm=False, rng=rng)  # fmt: skip


def reference_md(
    start, calculator, temperature: float, frames: int, seed: int, options: LearnOptions, name: str
) -> list:
    """`frames` labelled frames of the reference's own Langevin MD, `initial_stride` steps apart."""
    atoms = start.copy()
    dynamics = langevin(atoms, calculator, temperature, options, seed=seed)
    labelled = []
    for frame in range(frames):
        try:
            dynamics.run(options.initial_stride)
        except ReferenceError:
            raise
        except Exception as error:
            raise ReferenceError(
                f"the reference's own MD of {name} at {temperature:g} K failed at frame {frame} "
                f"({type(error).__name__}: {error})"
            ) from None
        labelled.append(label(atoms, calculator, f"frame {frame} of the reference's MD of {name} at {temperature:g} K"))
    return labelled


def initial_data(run: Run, options: LearnOptions, starts: list) -> None:
    """Round 0: the reference's own MD frames (fully labelled), rattled frames (forces only) and the test set."""
    if "round-000" in run.state["data"]:
        return
    clock = Clock()
    thermal, rattled, test = [], [], []
    rng = np.random.default_rng(options.seed)
    for index, (name, start) in enumerate(starting_points(starts, options)):
        calculator = reference_calculator(options.reference, start)
        first = len(thermal)
        for temperature in temperatures(options):
            seed = options.seed + 1000 * index
            thermal += reference_md(start, calculator, temperature, options.initial_frames, seed, options, name)
            # the test set: a trajectory of its own, never trained on, the same for every round
            test += reference_md(
                start, calculator, temperature, options.test_frames, seed + 500, options, f"{name} (test)"
            )
        # thermal frames of this start, displaced further (as the stable water models' recipe did): close
        # contacts with forces a model should know; frames beyond MAX_RATTLED_FORCE would dominate the loss
        for frame in range(options.rattled_frames):
            shaken = thermal[first + int(rng.integers(len(thermal) - first))].copy()
            shaken.positions += rng.normal(0.0, options.rattle_angstrom, shaken.positions.shape)
            labelled = label(shaken, calculator, f"rattled frame {frame} of {name}")
            if np.abs(labelled.calc.results["forces"]).max() <= MAX_RATTLED_FORCE:
                rattled.append(labelled)
    run.state["data"]["round-000"] = write_frames(thermal, run.folder / "data" / "round-000.extxyz")
    if test:
        run.state["data"]["test"] = write_frames(test, run.folder / "data" / "test.extxyz")
    if rattled:
        run.state["data"]["rattled"] = write_frames(rattled, run.folder / "data" / "rattled.extxyz")
    run.state["round_0_seconds"] = clock.elapsed()
    add_time(run.state, run.state["round_0_seconds"])
    run.save()


# ---------------------------------------------------------------------------- training


def train_committee(run: Run, options: LearnOptions, number: int) -> list[str]:
    """Round `number`'s members: trained from scratch in round 1, warm-started from the round before later."""
    from dataclasses import replace

    from mdplugin.model.checkpoint import read_checkpoint
    from mdplugin.training.options import TrainingOptions

    folder = run.folder / f"round-{number:03d}"
    folder.mkdir(parents=True, exist_ok=True)
    model = options.model
    frames = sum(count_frames(Path(path)) for path in run.data_files())
    frames += count_frames(Path(run.state["data"]["rattled"])) if "rattled" in run.state["data"] else 0
    steps_per_epoch = max(1, math.ceil(0.9 * frames / options.batch_size))  # 10 % held out for validation
    epochs = math.ceil(options.training_steps / steps_per_epoch)
    if number > 1:  # the previous round's members' epochs, and this round's fine-tuning on the grown data
        done = read_checkpoint(run.folder / f"round-{number - 1:03d}" / "member-0.pt")["resume"]["epoch"]
        epochs = done + math.ceil(options.steps_per_round / steps_per_epoch)
    members, work = [], []
    for member in range(options.committee):
        path = folder / f"member-{member}.pt"
        members.append(str(path))
        previous = run.folder / f"round-{number - 1:03d}" / f"member-{member}.pt"
        resume = path.exists()
        if resume and read_checkpoint(path)["resume"]["epoch"] >= epochs:
            continue
        if not resume and number > 1:
            shutil.copyfile(previous, path)  # warm start: continue the previous round's member
            resume = True
        settings = TrainingOptions(
            train_files=run.data_files(),
            validation_files=[run.state["data"]["test"]] if "test" in run.state["data"] else [],
            forces_only_files=[run.state["data"]["rattled"]] if "rattled" in run.state["data"] else [],
            output=str(path),
            model=replace(model),
            seed=options.seed + member,
            epochs=epochs,
            validate_every=max(1, round(VALIDATE_STEPS / steps_per_epoch)),
            batch_size=options.batch_size,
            # a later round warms up and decays again from FINE_TUNING x the first round's peak: the schedule it
            # left ended near 1 % of it, too low to learn the frames the round added
            learning_rate=options.learning_rate * (1.0 if number == 1 else FINE_TUNING),
            restart_schedule=number > 1,
            weight_decay=0.0,
            ema_decay=options.ema_decay,
            threads=options.threads,
            drop_outliers=True,  # a selected frame far outside the rest (a torn geometry) is left out, and recorded
            progress=False,
        )
        work.append((settings, resume))
    train_members(work, jobs(options, len(work)))
    return members


def jobs(options: LearnOptions, members: int) -> int:
    """Members trained at once: as asked, or as many as the cores hold at `threads` each."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    wanted = options.jobs or max(1, cores // options.threads)
    return max(1, min(wanted, members))


def train_member(settings, resume: bool) -> None:
    from mdplugin.training.train import train

    train(settings, resume=resume)


def train_members(work: list, processes: int) -> None:
    """Train each (settings, resume) pair: in this process, or in `processes` fresh ones side by side (members
    are independent; each writes only its own checkpoint, so an interruption loses no finished member)."""
    if processes <= 1:
        for settings, resume in work:
            train_member(settings, resume)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        for result in [pool.submit(train_member, settings, resume) for settings, resume in work]:
            result.result()  # a member's error is raised here, with its message


# ---------------------------------------------------------------------------- sampling


def trust_levels(run: Run, options: LearnOptions, committee: Committee) -> tuple[float, float]:
    """The run's trust levels (eV/Å), decided once and recorded: as given, or (not given) from round 1's
    committee on the test set: `lower` at its 99th percentile, so that frames like those the members learned
    fall below it whatever the model's accuracy, and `upper` at AUTO_UPPER x lower."""
    if "trust_levels" not in run.state:
        lower, upper, source = options.lower, options.upper, "given"
        if lower is None:
            known = known_deviation(committee, run)
            lower = max(AUTO_LOWER_FLOOR, known["p99"]) if known else FALLBACK_LOWER
            source = "round 1's test-set deviation, 99th percentile" if known else "no test set: the fallback"
        if upper is None:
            upper = AUTO_UPPER * lower
        if not lower < upper:
            raise ValueError(f"--upper {upper:g} must exceed the lower trust level {lower:g} ({source})")
        run.state["trust_levels"] = {"lower": lower, "upper": upper, "lower_from": source}
    levels = run.state["trust_levels"]
    return levels["lower"], levels["upper"]


def vacuum_md(committee: Committee, options: LearnOptions, start, temperature: float, seed: int):
    """Member 0's Langevin MD (ASE) from `start`: yields (atoms, member 0's result there) every `check_every`
    steps."""
    from mdplugin.engines.ase_calculator import TransformerCalculator

    atoms = start.copy()
    dynamics = langevin(atoms, TransformerCalculator(committee.members[0]), temperature, options, seed)
    while True:
        dynamics.run(options.check_every)
        yield atoms, driven(atoms)


def sample(
    committee: Committee,
    options: LearnOptions,
    start,
    temperature: float,
    seed: int,
    levels: tuple[float, float],
    trajectory=None,
) -> tuple[dict, list]:
    """One trajectory with member 0 (`trajectory`: its geometries every `check_every` steps, by default
    `vacuum_md`), checked at each: its record and the frames selected for labelling. A committee checks by its
    force deviation (DP-GEN's trust levels); a single model can only check its closest contacts against the
    training data's (flagged below 1x, failed below PLAUSIBLE_RATIO). Both fail a molecule whose start bond
    stretches beyond BOND_STRETCH x its length."""
    lead = committee.members[0]
    shortest = (lead.info.domain or {}).get("shortest_distance", {})
    bonds = [] if start.pbc.any() else covalent_bonds(start)
    if trajectory is None:
        trajectory = vacuum_md(committee, options, start, temperature, seed)
    record = {"temperature_k": temperature, "steps": 0, "checks": 0, "above_lower": 0, "failed": None,
              "max_deviation": 0.0, "deviations": [], "closest_ratios": []}  # fmt: skip
    candidates, last_good = [], None
    while record["steps"] < options.md_steps:
        try:
            atoms, lead_result = next(trajectory)
        except (ValueError, RuntimeError, FloatingPointError) as error:  # the model refused what the MD reached
            record["failed"] = f"step {record['steps']}: {type(error).__name__}: {error}"
            break
        record["steps"] += options.check_every
        if not np.isfinite(atoms.positions).all():
            record["failed"] = f"step {record['steps']}: non-finite positions"
            break
        broken = stretched_bond(atoms, bonds)
        if broken is not None:
            record["failed"] = f"step {record['steps']}: bond {broken} stretched beyond {BOND_STRETCH:g}x its length"
            break
        ratio = closest_ratio(atoms, shortest)
        record["checks"] += 1
        record["closest_ratios"].append(ratio)
        if committee.size > 1:
            deviation = committee.deviation(atoms, lead=lead_result).max_force
            record["deviations"].append(deviation)
            record["max_deviation"] = max(record["max_deviation"], deviation)
            flagged, failure = deviation >= levels[0], deviation >= levels[1]
            why = f"force deviation {deviation:.3f} eV/Å above {levels[1]:g}"
        else:
            flagged, failure = ratio < 1.0, ratio < PLAUSIBLE_RATIO
            why = f"closest contact {ratio:.2f}x the training data's shortest, below {PLAUSIBLE_RATIO:g}x"
        if failure:
            record["above_lower"] += 1
            record["failed"] = f"step {record['steps']}: {why}"
            if ratio >= PLAUSIBLE_RATIO:
                last_good = atoms.copy()  # an ordinary geometry the models disagree on: label it
            break
        if flagged:
            record["above_lower"] += 1
            candidates.append(atoms.copy())
        last_good = atoms.copy()
    if record["failed"] and last_good is not None:
        candidates.append(last_good)  # the last frame before the failure: where the data must grow
    if len(candidates) > options.max_new_frames:
        keep = np.linspace(0, len(candidates) - 1, options.max_new_frames).round().astype(int)
        candidates = [candidates[i] for i in sorted(set(keep))]
    return record, candidates


def driven(atoms):
    """Member 0's energy and forces at the atoms' positions, as its calculator left them after the MD step."""
    from types import SimpleNamespace

    results = atoms.calc.results
    return SimpleNamespace(energy=results["energy"], forces=results["forces"]) if "forces" in results else None


def covalent_bonds(atoms) -> list[tuple[int, int, float]]:
    """A molecule's covalent bonds (ASE's natural cutoffs, x1.1) with their lengths."""
    from ase.neighborlist import natural_cutoffs, neighbor_list

    first, second, distance = neighbor_list("ijd", atoms, natural_cutoffs(atoms, mult=1.1))
    return [(int(i), int(j), float(d)) for i, j, d in zip(first, second, distance) if i < j]


def stretched_bond(atoms, bonds: list[tuple[int, int, float]]) -> str | None:
    """The first bond longer than BOND_STRETCH x its start length, named, or None."""
    for i, j, length in bonds:
        if np.linalg.norm(atoms.positions[i] - atoms.positions[j]) > BOND_STRETCH * length:
            return f"{atoms[i].symbol}{i}-{atoms[j].symbol}{j}"
    return None


def closest_ratio(atoms, shortest: dict[str, float]) -> float:
    """The smallest distance / shortest-training-distance over the element pairs the training data had."""
    from ase.neighborlist import neighbor_list

    from mdplugin.elements import symbols

    if not shortest or len(atoms) < 2:
        return float("inf")
    first, second, distance = neighbor_list("ijd", atoms, max(shortest.values()))
    numbers = atoms.numbers
    ratio = float("inf")
    for i, j, d in zip(first, second, distance):
        low, high = sorted((int(numbers[i]), int(numbers[j])))
        key = "-".join(symbols([low, high]))
        if key in shortest and shortest[key] > 0:
            ratio = min(ratio, d / shortest[key])
    return ratio


def converged(records: list[dict], options: LearnOptions) -> bool:
    checks = sum(r["checks"] for r in records)
    above = sum(r["above_lower"] for r in records)
    complete = all(r["failed"] is None and r["steps"] >= options.md_steps for r in records)
    return complete and checks > 0 and above <= options.converged_fraction * checks


# ---------------------------------------------------------------------------- the loop


def learn(options: LearnOptions, say=print) -> dict:
    """Run (or continue) the loop; returns the state. See the module docstring."""
    from mdplugin.threads import torch_threads

    check_options(options)
    starts = [read_start(path) for path in options.structures]
    if options.solvate_nm is not None:
        check_solvated_starts(options, starts)
    for index, start in enumerate(starts):  # a reference that refuses a start structure: before anything is written
        label(start, reference_calculator(options.reference, start), f"start structure {options.structures[index]}")
    periodic = any(start.pbc.any() for start in starts)
    if periodic and options.model.interaction_range is None:
        raise ValueError(
            "the start structures are periodic: give the model an interaction range (--interaction-range, Å); "
            "global attention cannot see periodic images"
        )
    run = Run(options)
    with torch_threads(options.threads):
        initial_data(run, options, starts)
        say(f"{run.folder}: {len(run.data_files())} data file(s) so far (round 0: the reference's own MD), "
            f"{len(run.state['rounds'])} round(s) done")  # fmt: skip
        while not run.state.get("converged") and len(run.state["rounds"]) < options.max_rounds:
            number = len(run.state["rounds"]) + 1
            clock = Clock()
            members = train_committee(run, options, number)
            committee = Committee.load(members, threads=options.threads)
            levels = trust_levels(run, options, committee) if committee.size > 1 else (math.nan, math.nan)
            lead_export = export_lead(members[0], options)
            records, selected = [], []
            for index, (name, start) in enumerate(starting_points(starts, options)):
                for temperature in temperatures(options):
                    for repeat in range(options.trajectories):
                        seed = options.seed + 7919 * number + 101 * index + 13 * repeat + int(temperature)
                        trajectory = None if lead_export is None else solvated_md(lead_export, start, options,
                                                                                 temperature, seed)  # fmt: skip
                        record, frames = sample(committee, options, start, temperature, seed, levels, trajectory)
                        record["structure"] = name
                        records.append(record)
                        selected += frames
            done = converged(records, options)
            new_frames = []
            if not done and selected:
                for i, frame in enumerate(selected):
                    calculator = reference_calculator(options.reference, frame)
                    new_frames.append(label(frame, calculator, f"selected frame {i} of round {number}"))
                key = f"round-{number:03d}"
                run.state["data"][key] = write_frames(new_frames, run.folder / "data" / f"{key}.extxyz")
            summary = summarize_round(number, members, records, len(new_frames), options, levels)
            summary["test_deviation"] = known_deviation(committee, run)
            summary["seconds"] = clock.elapsed()
            add_time(run.state, summary["seconds"])
            run.state["rounds"].append(summary)
            run.state["converged"] = done
            run.save()
            say(
                f"round {number}: {summary['failures']} failed trajectories, {summary['fraction_above_lower']:.1%} of "
                f"{summary['checks']} checks flagged ("
                + (
                    f"force deviation above {levels[0]:.3g} eV/Å"
                    if options.committee > 1
                    else "contacts closer than the training data's"
                )
                + f"), {len(new_frames)} frames added"
                + (" - converged" if done else "")
            )
        from mdplugin.export.committee import export_committee
        from mdplugin.export.exporter import export

        export_path = run.folder / "model-export.pt"  # the committee: member 0 runs, the others give the deviation
        members = run.state["rounds"][-1]["members"]
        if len(members) > 1:
            export_committee(members, export_path, dtype="float32", overwrite=True)
        else:
            export(members[0], export_path, dtype="float32", overwrite=True)
        run.state["export"] = str(export_path)
        run.save()
    write_report(run)
    return run.state


def export_lead(member: str, options: LearnOptions) -> str | None:
    """--solvate: member 0 as the export its ML/MM runs load (beside its checkpoint); None in vacuum."""
    if options.solvate_nm is None:
        return None
    from mdplugin.export.exporter import export

    return str(export(member, Path(member).with_name("member-0-export.pt"), dtype="float32", overwrite=True))


def known_deviation(committee: Committee, run: Run) -> dict | None:
    """The committee's force deviation on the test set (eV/Å): how much it disagrees where the reference's own
    MD goes. Trust levels below its upper percentiles flag frames like those the models were trained on."""
    import ase.io

    if committee.size < 2 or "test" not in run.state["data"]:
        return None
    values = [committee.deviation(frame).max_force for frame in ase.io.read(run.state["data"]["test"], index=":")]
    return {name: float(np.percentile(values, q)) for name, q in (("median", 50), ("p90", 90), ("p99", 99))}


def summarize_round(number: int, members: list[str], records: list[dict], added: int, options, levels) -> dict:
    from mdplugin.model.checkpoint import read_checkpoint

    checks = sum(r["checks"] for r in records)
    above = sum(r["above_lower"] for r in records)
    last = read_checkpoint(members[0])["training"]["history"][-1]
    if options.committee > 1:  # the force deviation, eV/Å
        bins = [0, levels[0] / 2, levels[0], levels[1], np.inf]
        values = [value for r in records for value in r["deviations"]]
    else:  # a single model's closest contact over the training data's shortest
        bins = [0, PLAUSIBLE_RATIO, 1.0, 1.2, np.inf]
        values = [value for r in records for value in r["closest_ratios"]]
    histogram = np.histogram(values, bins=bins)[0]
    return {
        "round": number,
        "members": members,
        "validation_force_mae_mev_per_a": last["force_mae_mev_per_a"],  # the test set when the run has one
        "validation_energy_mae_mev_per_atom": last["energy_mae_mev_per_atom"],
        "trajectories": [{k: v for k, v in r.items() if k not in ("deviations", "closest_ratios")} for r in records],
        "failures": sum(r["failed"] is not None for r in records),
        "checks": checks,
        "fraction_above_lower": above / checks if checks else 1.0,
        "deviation_histogram": {
            "bins": [*bins[:-1], "inf"],
            "of": "force deviation, eV/Å" if options.committee > 1 else "closest contact / training shortest",
            "counts": histogram.tolist(),
        },  # fmt: skip
        "frames_added": added,
    }


def write_report(run: Run) -> Path:
    """report.md (one row per round, and what the loop ended with) and report.png (the same, drawn)."""
    options = run.state["options"]
    check = (
        f"committee of {options['committee']}, trust levels {trust(run.state)}"
        if options["committee"] > 1
        else f"a single model, checked by closest contacts only (flagged below 1x, failed below {PLAUSIBLE_RATIO}x "
        "the training data's shortest distance per element pair)"
    )
    lines = [
        "# Active learning",
        "",
        f"Reference `{options['reference']}`, start structures {', '.join(options['structures'])}, "
        f"temperatures {options['temperatures_k']} K (and {options['overheat']}x the top one), {check}; "
        f"{options.get('trajectories', 1)} trajectories of {options['md_steps']} steps x {options['timestep_fs']} fs "
        "per structure and temperature.",
        "",
        f"| round | {'test' if 'test' in run.state['data'] else 'validation'} force MAE (meV/Å) | failed trajectories "
        "| test-set deviation median / p99 (eV/Å) | checks | flagged | frames added | "
        "wall clock (min) | CPU (min) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in run.state["rounds"]:
        time = r.get("seconds", {})
        lines.append(
            f"| {r['round']} | {r['validation_force_mae_mev_per_a']:.1f} | {r['failures']} / {len(r['trajectories'])} "
            f"| {known(r.get('test_deviation'))} | {r['checks']} | {r['fraction_above_lower']:.1%} | {r['frames_added']} "
            f"| {time.get('wall', math.nan) / 60:.1f} | {time.get('cpu', math.nan) / 60:.1f} |"
        )
    ending = "converged" if run.state.get("converged") else f"did not converge in {len(run.state['rounds'])} rounds"
    wall = run.state.get("seconds", {})
    lines += [
        "",
        f"The loop {ending}: {wall.get('wall', math.nan) / 60:.1f} min wall clock, "
        f"{wall.get('cpu', math.nan) / 60:.1f} min CPU in all (round 0's reference MD included). Exported: "
        f"`{run.state.get('export')}` (engines run member 0"
        + (", its `deviation` gives the members' force deviation)." if options["committee"] > 1 else ")."),
    ]
    if run.state["rounds"]:
        failures = [t for t in run.state["rounds"][-1]["trajectories"] if t["failed"]]
        lines += ["", f"Last round: {len(failures)} failed trajectories"
                  + "".join(f"\n- {t['structure']} at {t['temperature_k']:g} K: {t['failed']}" for t in failures)]  # fmt: skip
        plot_rounds(run.state["rounds"], run.folder / "report.png")
        lines += ["", "![rounds](report.png)"]
    path = run.folder / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def trust(state: dict) -> str:
    levels = state.get("trust_levels")
    if not levels:
        return "not decided yet"
    return f"{levels['lower']:.3g}-{levels['upper']:.3g} eV/Å (lower: {levels['lower_from']})"


def known(deviation: dict | None) -> str:
    return "–" if not deviation else f"{deviation['median']:.3f} / {deviation['p99']:.3f}"


def plot_rounds(rounds: list[dict], path: Path) -> None:
    """Validation error, flagged fraction and failures, and each round's check histogram."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    numbers = [r["round"] for r in rounds]
    figure, (error, checks, histogram) = plt.subplots(1, 3, figsize=(13, 3.6))
    error.plot(numbers, [r["validation_force_mae_mev_per_a"] for r in rounds], "o-")
    error.set(xlabel="round", ylabel="test (or validation) force MAE (meV/Å)", yscale="log")
    checks.plot(numbers, [100 * r["fraction_above_lower"] for r in rounds], "o-", label="checks flagged")
    checks.plot(numbers, [100 * r["failures"] / max(1, len(r["trajectories"])) for r in rounds], "s--",
                label="trajectories failed")  # fmt: skip
    checks.set(xlabel="round", ylabel="%", ylim=(-2, 102))
    checks.legend()
    for r in rounds:
        counts = np.array(r["deviation_histogram"]["counts"], dtype=float)
        histogram.plot(range(len(counts)), counts / max(1.0, counts.sum()), "o-", label=f"round {r['round']}")
    edges = rounds[-1]["deviation_histogram"].get("bins", rounds[-1]["deviation_histogram"].get("bins_ev_per_a"))

    def text(edge) -> str:
        return edge if isinstance(edge, str) else f"{edge:.3g}"

    histogram.set_xticks(range(len(edges) - 1), [f"{text(a)}-{text(b)}" for a, b in zip(edges[:-1], edges[1:])])
    histogram.set(ylabel="fraction of checks", title=rounds[-1]["deviation_histogram"].get("of", "force deviation"))
    histogram.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
