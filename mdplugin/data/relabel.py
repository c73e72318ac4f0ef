"""Active learning: frames of a model's own MD, labelled with the reference, as extxyz.

A model goes wrong where its MD goes where the training data never went (two atoms closer than any frame
held them, a box that expands). Frames of that MD, labelled with the reference the model learned and added
to its training set, teach it those regions. `relabel` reads a trajectory (extxyz or another ASE-readable
file with a cell, a LAMMPS dump or data file, or the DCD/XTC/PDB of `mdplugin run` with its topology PDB),
labels every `every`-th frame with the periodic labellers of `periodic_data` (GFN1-xTB for any composition,
the SPC/Fw model for pure water ordered O, H, H) and writes the frames as `mdplugin data water` writes its
own: cell and pbc, positions (Å), energy (eV), forces (eV/Å), stress (eV/Å^3, ASE's sign and Voigt order)
and provenance in info, here the source trajectory, its sha256 and the frame's index in it
(`source_frame`). The labels are those of the geometry as the text holds it.

A frame whose largest force exceeds `max_force` (eV/Å; a blown-up run's frames would dominate the loss), or
that xTB fails on (an SCF that does not converge, atoms too close for tblite), is skipped and counted. A
resumed run appends the selected frames whose `source_frame` the output does not hold yet; skipped frames
are not recorded, so a resumed run labels them again.
"""

from __future__ import annotations

import dataclasses
import itertools
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from mdplugin.data import molecules as rd
from mdplugin.data import water as pd
from mdplugin.data.labellers import ClassicalLabeller, WaterModel, XTBLabeller, reduced_cell
from mdplugin.data.trajectories import frame_spans, parse_extxyz
from mdplugin.hashing import file_sha256

MDTRAJ_SUFFIXES = (".dcd", ".xtc", ".pdb")  # what `mdplugin run --trajectory-format` writes
LAMMPS_FORMATS = {
    ".lammpstrj": "lammps-dump-text",
    ".dump": "lammps-dump-text",
    ".data": "lammps-data",
    ".lmp": "lammps-data",
}


@dataclass(frozen=True)
class Frame:
    """One frame of a source trajectory: its index there, atomic numbers, positions (Å) and cell (Å, rows
    are the vectors; None when the file gives no periodic cell)."""

    index: int
    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray | None
    step: int | None = None  # the MD step, where the file says it (a DCD of OpenMM)


@dataclass(frozen=True)
class RelabelOptions:
    labels: str = "gfn1-xtb"
    every: int = 1  # label frames 0, every, 2 every, ...
    max_frames: int | None = None  # at most this many of those (the first ones)
    max_force: float | None = None  # eV/Å; frames with a larger force are skipped
    water_model: WaterModel = WaterModel()  # of the classical labels
    type_elements: tuple[str, ...] | None = None  # element of LAMMPS atom types 1, 2, ... in a dump
    rattle: float = 0.0  # Å; each labelled frame's atoms are first displaced by Gaussians of this width
    seed: int = 0  # of the rattle: frame i is displaced by the generator seeded with (seed, i)


@dataclass
class RelabelResult:
    output: Path
    read: int = 0  # frames read from the trajectory
    selected: int = 0  # of those, frames to label (every, max_frames)
    already: int = 0  # selected frames the output held already (resume)
    labelled: int = 0  # frames written
    large_force: int = 0
    failed: int = 0
    not_finite: int = 0
    seconds: float = 0.0  # spent labelling
    max_force: float | None = None
    failure: str = ""
    skipped_frames: list[int] = field(default_factory=list)
    incomplete: str = ""  # why the trajectory's cut-off last frame was not labelled

    @property
    def attempted(self) -> int:
        return self.labelled + self.large_force + self.failed + self.not_finite

    def summary(self) -> str:
        skipped = self.large_force + self.failed + self.not_finite
        reasons = []
        if self.large_force:
            reasons.append(f"{self.large_force} with a force above {self.max_force:g} eV/Å")
        if self.failed:
            reasons.append(f"{self.failed} that the labeller failed on ({self.failure})")
        if self.not_finite:
            reasons.append(f"{self.not_finite} with non-finite positions or labels")
        lines = [
            f"read {self.read} frames, selected {self.selected}"
            + (f" ({self.already} already in {self.output})" if self.already else ""),
            f"labelled and wrote {self.labelled} to {self.output}; skipped {skipped}"
            + (f": {', '.join(reasons)} (source frames {_listed(self.skipped_frames)})" if skipped else ""),
        ]
        if self.incomplete:
            lines.append(self.incomplete)
        if self.attempted:
            lines.append(f"{self.seconds / self.attempted:.3g} s per frame ({self.seconds:.1f} s labelling)")
        return "\n".join(lines)


def _listed(indices: list[int], shown: int = 10) -> str:
    more = f", ... ({len(indices) - shown} more)" if len(indices) > shown else ""
    return ", ".join(str(i) for i in indices[:shown]) + more


# ---------------------------------------------------------------------------- reading trajectories


def default_topology(trajectory: str | Path) -> Path:
    """The topology `mdplugin run` writes next to PREFIX.dcd (or .xtc): PREFIX-topology.pdb."""
    trajectory = Path(trajectory)
    return trajectory.with_name(trajectory.stem + "-topology.pdb")


def read_frames(
    path: str | Path, topology: str | Path | None = None, type_elements: tuple[str, ...] | None = None
) -> Iterator[Frame]:
    """The frames of a trajectory, one at a time: a DCD or XTC with a topology PDB (default: the
    PREFIX-topology.pdb that `mdplugin run` writes beside PREFIX.dcd), a multi-model PDB, or any file ASE reads
    (extxyz, a LAMMPS dump or data file, ...)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"trajectory {path} does not exist")
    if path.suffix.lower() in MDTRAJ_SUFFIXES:
        yield from _mdtraj_frames(path, trajectory_topology(path, topology))
    else:
        yield from _ase_frames(path, type_elements)


def trajectory_topology(trajectory: str | Path, topology: str | Path | None = None) -> Path | None:
    """The PDB that names a DCD or XTC's atoms: `topology`, or PREFIX-topology.pdb beside PREFIX.dcd; None
    for a file that holds its own elements."""
    trajectory = Path(trajectory)
    if trajectory.suffix.lower() not in (".dcd", ".xtc"):
        return None
    if topology is not None:
        if not Path(topology).is_file():
            raise ValueError(f"topology {topology} does not exist")
        return Path(topology)
    topology = default_topology(trajectory)
    if not topology.is_file():
        raise ValueError(
            f"{trajectory} holds no elements: give --topology PDB (`mdplugin run` writes {topology.name} beside it)"
        )
    return topology


def _mdtraj_frames(path: Path, topology: str | Path | None) -> Iterator[Frame]:
    import mdtraj

    first_step, interval = _dcd_steps(path)
    try:
        chunks = [mdtraj.load(str(path))] if topology is None else mdtraj.iterload(str(path), top=str(topology))
        index, numbers = 0, None
        for chunk in chunks:
            if numbers is None:
                numbers = _mdtraj_numbers(chunk.topology, topology or path)
            cells = chunk.unitcell_vectors
            for i in range(chunk.n_frames):
                cell = None if cells is None else cells[i].astype(np.float64) * 10  # nm -> Å
                if cell is not None and abs(np.linalg.det(cell)) < 1e-6:
                    cell = None  # a DCD of a non-periodic run may store an empty cell
                step = None if interval is None else first_step + index * interval
                yield Frame(index, numbers, chunk.xyz[i].astype(np.float64) * 10, cell, step)
                index += 1
    except Exception as error:  # mdtraj's readers raise many kinds
        with_topology = f" with {topology}" if topology is not None else ""
        raise ValueError(f"cannot read {path}{with_topology} ({type(error).__name__}: {error})") from None


def _dcd_steps(path: Path) -> tuple[int | None, int | None]:
    """The first frame's step and the steps between frames of a DCD that OpenMM wrote (None, None otherwise:
    mdtraj's times of a DCD are frame counts)."""
    from mdplugin.dcd import read_dcd_header

    if path.suffix.lower() != ".dcd":
        return None, None
    try:
        header = read_dcd_header(path)
    except (ValueError, OSError, struct.error):
        return None, None
    return header.first_step, header.interval


def _mdtraj_numbers(topology, source) -> np.ndarray:
    numbers = np.array([atom.element.atomic_number if atom.element else 0 for atom in topology.atoms])
    if (numbers < 1).any():
        first = int(np.argmin(numbers >= 1))
        raise ValueError(f"atom {first} of {source} has no element (a virtual site?); it cannot be labelled")
    return numbers


def _ase_frames(path: Path, type_elements: tuple[str, ...] | None) -> Iterator[Frame]:
    import ase.io

    format = LAMMPS_FORMATS.get(path.suffix.lower())
    options = {}
    if format == "lammps-dump-text":
        if type_elements:
            options["specorder"] = list(type_elements)
        elif not _dump_names_elements(path):
            raise ValueError(
                f"{path} is a LAMMPS dump without an element (or mass) column: give --type-elements, the element of "
                "each atom type in order, as in `pair_coeff * * O H`"
            )
    try:
        for index, atoms in enumerate(ase.io.iread(str(path), index=":", format=format, **options)):
            periodic = atoms.cell.rank == 3 and atoms.pbc.all()
            yield Frame(
                index, atoms.numbers.copy(), atoms.positions.copy(), atoms.cell.array.copy() if periodic else None
            )
    except Exception as error:  # ASE's readers raise many kinds
        raise ValueError(f"cannot read {path} with ASE ({type(error).__name__}: {error})") from None


def _dump_names_elements(path: Path) -> bool:
    """Whether a LAMMPS text dump's atom columns say the elements (element, or mass, which ASE maps)."""
    with open(path) as handle:
        for line in handle:
            if line.startswith("ITEM: ATOMS"):
                columns = line.split()[2:]
                return "element" in columns or "mass" in columns
    return False


def complete_frames(path: str | Path) -> tuple[int | None, str]:
    """How many leading frames of a LAMMPS text dump or a DCD are whole, and a sentence about a last frame that
    is cut off (a run killed or still writing); (None, "") for other formats. A cut-off frame anywhere but
    at the end is refused: the file is damaged."""
    path = Path(path)
    if path.suffix.lower() == ".dcd":
        from mdplugin.dcd import read_dcd_header

        try:
            header = read_dcd_header(path)
        except (ValueError, OSError, struct.error):
            return None, ""
        whole, left = divmod(path.stat().st_size - header.header_bytes, header.frame_bytes)
        if left <= 0:
            return whole, ""
        return whole, (
            f"dropped the last frame of {path}: it is cut off ({left} of its {header.frame_bytes} bytes; was the run "
            "stopped while writing?); the frames before it are whole"
        )
    if LAMMPS_FORMATS.get(path.suffix.lower()) != "lammps-dump-text":
        return None, ""
    frames: list[tuple[int, int]] = []  # (atoms the frame's header declares, atom lines it holds)
    declared, in_atoms = 0, False
    with open(path) as handle:
        lines = iter(handle)
        for line in lines:
            if line.startswith("ITEM:"):
                in_atoms = line.startswith("ITEM: ATOMS")
                if line.startswith("ITEM: NUMBER OF ATOMS"):
                    count = next(lines, "").split()
                    declared = int(count[0]) if count and count[0].isdigit() else 0
                elif in_atoms:
                    frames.append((declared, 0))
            elif in_atoms and line.strip():
                frames[-1] = (frames[-1][0], frames[-1][1] + 1)
    for index, (declared, found) in enumerate(frames):
        if found < declared:
            what = f"frame {index} of {path} holds {found} of its {declared} atoms"
            if index < len(frames) - 1:
                raise ValueError(f"{what}, and frames follow it: the dump is damaged; relabel a whole copy of it")
            return (
                index,
                f"dropped the last frame of {path}: it is cut off ({found} of its {declared} atoms; was the run stopped while writing?)",
            )
    return len(frames), ""


# ---------------------------------------------------------------------------- checks and provenance


def check_frame(frame: Frame, labels: str, source: Path, model: WaterModel) -> None:
    """Refuse a frame the labels cannot describe, with what to do instead."""
    if frame.cell is None:
        raise ValueError(
            f"frame {frame.index} of {source} has no periodic cell (three lattice vectors, periodic in x, y and z); "
            "the periodic labels need one: write the trajectory with its box (extxyz Lattice, a DCD with unit cells)"
        )
    if labels == "classical":
        waters = len(frame.numbers) // 3
        if len(frame.numbers) % 3 or not np.array_equal(frame.numbers, np.tile([8, 1, 1], waters)):
            from mdplugin.elements import symbols

            order = " ".join(symbols(frame.numbers[:6].tolist())) + (" ..." if len(frame.numbers) > 6 else "")
            raise ValueError(
                f"--labels classical is the SPC/Fw model of pure water, ordered O, H, H per molecule; frame "
                f"{frame.index} of {source} holds {_formula(frame.numbers)} ({order}): use --labels gfn1-xtb"
            )
        cell = reduced_cell(frame.cell)
        shortest = float(np.abs(np.diag(cell)).min())  # the widths of a reduced cell
        if model.cutoff_angstrom > shortest / 2:
            raise ValueError(
                f"the classical cutoff {model.cutoff_angstrom:g} Å is more than half the width ({shortest:.2f} Å) of "
                f"frame {frame.index}'s box; give the --cutoff-angstrom and --switch-angstrom of the training data "
                "(`data water` refused cutoffs this long for such boxes)"
            )
    elif frame.numbers.min() < 1 or frame.numbers.max() > rd.MAX_ATOMIC_NUMBER:
        raise ValueError(f"frame {frame.index} of {source} holds elements GFN1-xTB has no parameters for (H to Rn)")


def _formula(numbers: np.ndarray) -> str:
    from ase.symbols import Symbols

    return Symbols(numbers).get_chemical_formula()


def provenance(trajectory: Path, topology: Path | None, digest: str, options: RelabelOptions, created: str) -> dict:
    """Info every written frame carries: what labelled it, and which trajectory it came from."""
    from importlib.metadata import version

    import ase

    from mdplugin import __version__

    info = {
        "charge": 0,
        "multiplicity": 1,
        "method": pd.METHOD[options.labels],
        "code": "tblite" if options.labels == "gfn1-xtb" else "openmm",
        "sampler": f"frames of the MD in {trajectory.name} (a model's own MD, relabelled for active learning)",
        "source_trajectory": str(trajectory.resolve()),
        "source_sha256": digest,
        "every": options.every,
        "ase_version": ase.__version__,
        "mdplugin_version": __version__,
        "created": created,
    }
    if topology is not None:
        info["source_topology"] = str(Path(topology).resolve())
    if trajectory.suffix.lower() in MDTRAJ_SUFFIXES:
        info["mdtraj_version"] = version("mdtraj")
    if options.max_force is not None:
        info["max_force_eV_per_angstrom"] = options.max_force
    if options.rattle > 0:
        info["rattle_angstrom"] = options.rattle
        info["rattle_seed"] = options.seed
        info["sampler"] += (
            f"; every atom then displaced by a Gaussian of {options.rattle:g} Å per axis (seeded by rattle_seed and "
            "the source frame)"
        )
    if options.labels == "gfn1-xtb":
        info["tblite_version"] = version("tblite")
        info["labeller"] = (
            "tblite GFN1-xTB, periodic, default settings (accuracy 1, electronic temperature 300 K, at most 250 "
            "SCF iterations), a fresh SCF from the atomic guess per frame"
        )
    else:
        import openmm

        model = options.water_model
        info.update(
            openmm_version=openmm.__version__,
            labeller=model.describe(),
            cutoff_angstrom=model.cutoff_angstrom,
            switch_angstrom=model.switch_angstrom,
            ewald_tolerance=model.ewald_tolerance,
            stress_method="central finite difference of the energy, strain 1e-5",
        )
    return info


_IDENTITY_KEYS = ("source_sha256", "method", "cutoff_angstrom", "switch_angstrom", "ewald_tolerance")


def _written_frames(output: Path, expected: dict) -> set[int]:
    """The source frames an earlier run wrote to `output`; an incomplete last frame is cut off, and a file of
    another trajectory or other labels is refused."""
    spans = frame_spans(output)
    if not spans:
        if output.stat().st_size:
            raise ValueError(f"{output} is not an extxyz file `data relabel` wrote; pass --force to overwrite it")
        return set()
    content = output.read_bytes()
    done = set()
    for start, end in spans:
        info = parse_extxyz(content[start:end].decode()).info
        if "source_frame" not in info:
            raise ValueError(f"{output} holds frames `data relabel` did not write; pass --force to overwrite it")
        differ = [k for k in _IDENTITY_KEYS if str(info.get(k)) != str(expected.get(k))]
        if differ:
            found = ", ".join(f"{k}={info.get(k)} (not {expected.get(k)})" for k in differ)
            raise ValueError(
                f"{output} holds frames of another trajectory or other labels ({found}); pass --force to overwrite "
                "it or choose another output"
            )
        done.add(int(info["source_frame"]))
    if spans[-1][1] < len(content):
        with open(output, "r+b") as handle:
            handle.truncate(spans[-1][1])
    return done


# ---------------------------------------------------------------------------- relabelling


def relabel(
    trajectory: str | Path,
    output: str | Path,
    options: RelabelOptions = RelabelOptions(),
    topology: str | Path | None = None,
    resume: bool = False,
    force: bool = False,
    on_frame: Callable[[], None] | None = None,
) -> RelabelResult:
    """Label the selected frames of `trajectory` with `options.labels` and write them to `output` (extxyz);
    `on_frame` is called after each selected frame. Raises FileExistsError for an existing output without
    `resume` or `force`, ValueError for a trajectory or frame the labels cannot take."""
    trajectory, output = Path(trajectory), Path(output)
    if options.labels not in pd.LABELS:
        raise ValueError(f"unknown labels {options.labels!r}; choose from {', '.join(pd.LABELS)}")
    if options.every < 1 or (options.max_frames is not None and options.max_frames < 1):
        raise ValueError("--every and --max-frames must be at least 1")
    if not (np.isfinite(options.rattle) and 0 <= options.rattle <= 1):
        raise ValueError(f"--rattle {options.rattle} Å is outside 0-1 Å; a few tenths of an Å at most makes sense")
    if not trajectory.is_file():
        raise ValueError(f"trajectory {trajectory} does not exist")
    if output.exists() and output.resolve() == trajectory.resolve():
        raise ValueError(f"the output {output} is the trajectory itself; choose another -o")
    rd.check_outputs([output], resume, force)
    from mdplugin.model.checkpoint import check_writable

    check_writable(output.parent)
    topology = trajectory_topology(trajectory, topology)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    info = provenance(trajectory, topology, file_sha256(trajectory), options, created)
    done = _written_frames(output, info) if resume and not force and output.exists() else set()

    # the first frame read and checked before the output is touched: a trajectory the labels cannot take
    # leaves no file behind; a frame cut off at the end of the file (a run killed mid-write) is never labelled
    whole, incomplete = complete_frames(trajectory)
    frames = read_frames(trajectory, topology, options.type_elements)
    if whole is not None:
        frames = itertools.islice(frames, whole)
    first = next(frames, None)
    if first is None:
        raise ValueError(f"{trajectory} holds no frames" + (f" that are whole ({incomplete})" if incomplete else ""))
    check_frame(first, options.labels, trajectory, options.water_model)

    result = RelabelResult(output, max_force=options.max_force, incomplete=incomplete)
    classical: dict[int, ClassicalLabeller] = {}  # by the number of waters
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "a" if done else "w") as handle:
        for frame in itertools.chain([first], frames):
            result.read += 1
            if frame.index % options.every:
                continue
            if options.max_frames is not None and result.selected >= options.max_frames:
                break
            result.selected += 1
            check_frame(frame, options.labels, trajectory, options.water_model)
            if frame.index in done:
                result.already += 1
                if on_frame is not None:
                    on_frame()
                continue
            if options.labels == "classical":
                waters = len(frame.numbers) // 3
                label = classical.setdefault(waters, ClassicalLabeller(waters, options.water_model))
            else:
                label = XTBLabeller()
            frame_info = {**info, "system": _system(frame.numbers), "source_frame": frame.index}
            if frame_info["system"] == "water":
                frame_info["waters"] = len(frame.numbers) // 3
            if frame.step is not None:
                frame_info["source_step"] = frame.step
            if options.rattle > 0:
                generator = np.random.default_rng([options.seed, frame.index])
                frame = dataclasses.replace(
                    frame, positions=frame.positions + generator.normal(0.0, options.rattle, frame.positions.shape)
                )
            start = time.perf_counter()
            text, reason = _labelled_text(frame, label, frame_info, options.max_force)
            result.seconds += time.perf_counter() - start
            if reason is None:
                handle.write(text)
                handle.flush()
                result.labelled += 1
            else:
                result.skipped_frames.append(frame.index)
                if reason == "force":
                    result.large_force += 1
                elif reason == "not finite":
                    result.not_finite += 1
                else:
                    result.failed += 1
                    result.failure = result.failure or reason
            if on_frame is not None:
                on_frame()
    return result


def _labelled_text(frame: Frame, label, info: dict, max_force: float | None) -> tuple[str, str | None]:
    """The extxyz text of the labelled frame, and why it is skipped (None: it is not): "not finite", "force",
    or the labeller's error message."""
    from ase.calculators.calculator import CalculationFailed, InputError
    from openmm import OpenMMException

    if not (np.isfinite(frame.positions).all() and np.isfinite(frame.cell).all()):
        return "", "not finite"
    try:
        text, atoms = pd._labelled(frame.positions, None, frame.cell, frame.numbers, label, info)
    except (CalculationFailed, InputError, OpenMMException) as error:
        # tblite: the SCF did not converge, or atoms are too close; OpenMM: coordinates it cannot take
        lines = str(error).strip().splitlines()
        code = "openmm" if isinstance(error, OpenMMException) else "tblite"
        return "", f"{code}: {lines[-1] if lines else type(error).__name__}"
    forces = atoms.get_forces()
    if not (np.isfinite(atoms.get_potential_energy()) and np.isfinite(forces).all()):
        return "", "not finite"
    if max_force is not None and np.linalg.norm(forces, axis=1).max() > max_force:
        return "", "force"
    return text, None


def _system(numbers: np.ndarray) -> str:
    pure_water = len(numbers) % 3 == 0 and np.array_equal(numbers, np.tile([8, 1, 1], len(numbers) // 3))
    return "water" if pure_water else _formula(numbers)
