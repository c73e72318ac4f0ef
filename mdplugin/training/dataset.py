"""Labelled structures: reading them with ASE, splitting them, and padding them into batches."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

DOMAIN_CUTOFF = 6.0  # Å; in a periodic cell, element pairs never closer than this are not recorded


@dataclass
class Structure:
    """One labelled structure, in Å and eV."""

    positions: np.ndarray  # [N, 3] Å
    atomic_numbers: np.ndarray  # [N] int
    energy: float  # eV
    forces: np.ndarray  # [N, 3] eV/Å
    charge: int = 0
    multiplicity: int = 1
    cell: np.ndarray | None = None  # [3, 3] Å, rows are lattice vectors; None: an isolated structure
    pbc: np.ndarray | None = None  # [3] bool
    virial: np.ndarray | None = None  # [3, 3] eV, -stress x volume; only where the data has a stress label
    forces_only: bool = False  # train on the forces alone: the energy (and any stress) label is not used


def read_forces_only(path: str | Path) -> list[Structure]:
    """Frames to train on forces alone: rattled or collapsed configurations, whose energies and stresses
    lie far from the liquid's and would pull the fit of the thermal ones."""
    structures = read_structures(path)
    for structure in structures:
        structure.forces_only, structure.virial = True, None
    return structures


def read_structures(path: str | Path) -> list[Structure]:
    """Read every frame of an extxyz (or any ASE-readable) file with energies and forces."""
    import ase.io

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    try:
        frames = ase.io.read(path, index=":")
    except Exception as error:
        from mdplugin.errors import reason  # a bare StopIteration has no text

        raise ValueError(
            f"cannot read {path} with ASE ({reason(error)}); give an extxyz or another ASE-readable file"
        ) from error
    structures = []
    for index, atoms in enumerate(frames):
        if len(atoms) == 0:
            raise ValueError(f"{path}, frame {index}: the structure has no atoms")
        try:
            energy = atoms.get_potential_energy()
            forces = atoms.get_forces()
        except Exception:
            raise ValueError(
                f"{path}, frame {index}: no energy and forces; training needs both "
                "(extxyz: an energy=... key in the comment line and a forces column)"
            ) from None
        structure = Structure(
            positions=np.asarray(atoms.positions, dtype=np.float64),
            atomic_numbers=np.asarray(atoms.numbers, dtype=np.int64),
            energy=float(energy),
            forces=np.asarray(forces, dtype=np.float64),
            charge=int(atoms.info.get("charge", 0)),
            multiplicity=int(atoms.info.get("multiplicity", atoms.info.get("spin", 1))),
            cell=np.asarray(atoms.cell.array, dtype=np.float64) if atoms.pbc.any() else None,
            pbc=np.asarray(atoms.pbc, dtype=bool) if atoms.pbc.any() else None,
            virial=_virial_label(atoms),
        )
        _check_finite(structure, path, index)
        structures.append(structure)
    if not structures:
        raise ValueError(f"{path} holds no structures")
    return structures


def _virial_label(atoms) -> np.ndarray | None:
    """-stress x volume (eV) of a frame periodic in all directions that carries a stress, else None."""
    if not atoms.pbc.all():
        return None
    try:
        stress = atoms.get_stress(voigt=False)
    except Exception:  # no stress in this frame: it trains on energy and forces only
        return None
    return -np.asarray(stress, dtype=np.float64) * atoms.get_volume()


def _check_finite(structure: Structure, path: Path, index: int) -> None:
    """Refuse a NaN or infinite label or position: one such frame turns every weight into NaN."""
    problems = []
    if not np.isfinite(structure.energy):
        problems.append(f"the energy is {structure.energy}")
    if structure.cell is not None and not np.isfinite(structure.cell).all():
        problems.append("the cell is not finite")
    if structure.virial is not None and not np.isfinite(structure.virial).all():
        problems.append("the stress is not finite")
    for name, values in (("forces", structure.forces), ("positions", structure.positions)):
        bad = ~np.isfinite(values).all(axis=1)
        if bad.any():
            atoms = np.flatnonzero(bad)
            shown = ", ".join(str(a) for a in atoms[:5]) + (", ..." if len(atoms) > 5 else "")
            problems.append(f"the {name} of atom{'s' if len(atoms) > 1 else ''} {shown} are not finite")
    if problems:
        raise ValueError(
            f"{path}, frame {index}: {'; '.join(problems)}. Training needs finite energies, forces and positions: "
            "remove that frame or recompute its labels"
        )


def training_domain(structures: list[Structure], interaction_range: float | None = None) -> dict:
    """What the training structures cover: the shortest distance (Å) seen for each element pair,
    the distinct total charges and spin multiplicities, and, for a local model (`interaction_range`), the
    most neighbours any atom had within that range (a compiled export sizes its neighbour table from it).

    Pairs are named by their two symbols in order of atomic number ("H-C", "C-O", "H-H").
    """
    from mdplugin.elements import symbols

    elements = sorted({int(z) for s in structures for z in s.atomic_numbers})
    index = np.zeros(max(elements, default=0) + 1, dtype=np.int64)
    index[elements] = np.arange(len(elements))
    count = len(elements)
    shortest = np.full(count * count, np.inf)
    for s in structures:
        first, second, distances = _pairs(s)
        species = index[s.atomic_numbers]
        low = np.minimum(species[first], species[second])
        high = np.maximum(species[first], species[second])
        np.minimum.at(shortest, low * count + high, distances)
    names = symbols(elements)
    return {
        "shortest_distance": {
            f"{names[i]}-{names[j]}": float(shortest[i * count + j])
            for i in range(count)
            for j in range(i, count)
            if np.isfinite(shortest[i * count + j])
        },
        "charges": sorted({int(s.charge) for s in structures}),
        "multiplicities": sorted({int(s.multiplicity) for s in structures}),
        **({} if interaction_range is None else {"max_neighbours": most_neighbours(structures, interaction_range)}),
    }


def most_neighbours(structures: list[Structure], cutoff: float) -> int:
    """The most atoms (periodic images included) any atom of `structures` has closer than `cutoff` (Å)."""
    from vesin_torch import NeighborList

    most = 0
    for s in structures:
        positions = torch.from_numpy(s.positions)
        if s.cell is None:
            cell, periodic = torch.zeros(3, 3, dtype=positions.dtype), torch.zeros(3, dtype=torch.bool)
        else:
            cell, periodic = torch.from_numpy(s.cell), torch.from_numpy(s.pbc)
        (centers,) = NeighborList(cutoff=cutoff, full_list=True).compute(positions, cell, periodic, quantities="i")
        if len(centers):
            most = max(most, int(torch.bincount(centers).max()))
    return most


def _pairs(structure: Structure) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Atom indices and distances (Å) of every pair: all pairs of an isolated structure; of a periodic
    one, the pairs closer than DOMAIN_CUTOFF, periodic images (and an atom's own images) included."""
    if structure.cell is None:
        first, second = np.triu_indices(len(structure.atomic_numbers), k=1)
        return first, second, np.linalg.norm(structure.positions[first] - structure.positions[second], axis=1)
    from vesin_torch import NeighborList

    first, second, distances = NeighborList(cutoff=DOMAIN_CUTOFF, full_list=False).compute(
        torch.from_numpy(structure.positions),
        torch.from_numpy(structure.cell),
        periodic=torch.from_numpy(structure.pbc),
        quantities="ijd",
    )
    return first.numpy(), second.numpy(), distances.numpy()


def split(
    structures: list[Structure], validation_fraction: float, seed: int
) -> tuple[list[Structure], list[Structure]]:
    """A seeded random split into training and validation sets; the validation set is drawn from the
    fully labelled structures only (forces-only ones all train)."""
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation fraction must be between 0 and 1, got {validation_fraction}")
    labelled = [s for s in structures if not s.forces_only]
    order = np.random.default_rng(seed).permutation(len(labelled))
    n_validation = max(1, int(round(validation_fraction * len(labelled))))
    if n_validation >= len(labelled):
        raise ValueError(f"{len(labelled)} fully labelled structures are too few to split off a validation set")
    training = [labelled[i] for i in order[n_validation:]] + [s for s in structures if s.forces_only]
    return training, [labelled[i] for i in order[:n_validation]]


def check_elements(structures: list[Structure], elements: list[int], source: str) -> None:
    """Refuse structures that hold an element the model does not know."""
    from mdplugin.elements import symbols

    present = set(np.unique(np.concatenate([s.atomic_numbers for s in structures])).tolist())
    missing = sorted(present - set(elements))
    if missing:
        raise ValueError(
            f"{source} contains {', '.join(symbols(missing))}, which the model does not know "
            f"(it knows {', '.join(symbols(elements))}); train a model that includes them"
        )


def collate(
    structures: list[Structure], species_of_atomic_number: Tensor, dtype: torch.dtype = torch.float32
) -> dict[str, Tensor]:
    """Pad structures of different sizes into one batch with a mask (True for real atoms)."""
    batch, atoms = len(structures), max(len(s.atomic_numbers) for s in structures)
    positions = torch.zeros(batch, atoms, 3, dtype=dtype)
    forces = torch.zeros(batch, atoms, 3, dtype=dtype)
    numbers = torch.zeros(batch, atoms, dtype=torch.long)
    mask = torch.zeros(batch, atoms, dtype=torch.bool)
    cell = torch.zeros(batch, 3, 3, dtype=dtype)
    pbc = torch.zeros(batch, 3, dtype=torch.bool)
    virial = torch.zeros(batch, 3, 3, dtype=dtype)
    has_virial = torch.zeros(batch, dtype=torch.bool)
    for i, s in enumerate(structures):
        n = len(s.atomic_numbers)
        if s.cell is not None:
            cell[i], pbc[i] = torch.from_numpy(s.cell), torch.from_numpy(s.pbc)
        if s.virial is not None:
            virial[i], has_virial[i] = torch.from_numpy(s.virial), True
        positions[i, :n] = torch.from_numpy(s.positions)
        forces[i, :n] = torch.from_numpy(s.forces)
        numbers[i, :n] = torch.from_numpy(s.atomic_numbers)
        mask[i, :n] = True
    return {
        "positions": positions,
        "species": species_of_atomic_number[numbers] * mask,  # padding gets species 0, masked out later
        "mask": mask,
        "charge": torch.tensor([s.charge for s in structures], dtype=torch.long),
        "multiplicity": torch.tensor([s.multiplicity for s in structures], dtype=torch.long),
        "energy": torch.tensor([s.energy for s in structures], dtype=dtype),
        "forces": forces,
        "atom_count": mask.sum(1).to(dtype),
        "cell": cell,  # zeros and pbc False for isolated structures
        "pbc": pbc,
        "virial": virial,  # eV; zeros where has_virial is False
        "has_virial": has_virial,
        "has_energy": torch.tensor([not s.forces_only for s in structures], dtype=torch.bool),
    }


def fit_reference_energies(structures: list[Structure], elements: list[int]) -> tuple[np.ndarray, float]:
    """Per-element reference energies E0 by least squares, and the RMS force component (eV/Å).

    energy ≈ sum over atoms of E0[element]; the network learns the residual, and its output is
    scaled by the RMS force so that a unit-sized network output gives forces of the right size.
    """
    structures = [s for s in structures if not s.forces_only]  # the trainer refuses data with none left
    index = {z: i for i, z in enumerate(elements)}
    counts = np.zeros((len(structures), len(elements)))
    for row, s in enumerate(structures):
        for z in s.atomic_numbers:
            counts[row, index[int(z)]] += 1
    energies = np.array([s.energy for s in structures])
    e0, *_ = np.linalg.lstsq(counts, energies, rcond=None)
    force_rms = float(np.sqrt(np.mean(np.concatenate([s.forces.ravel() for s in structures]) ** 2)))
    return e0, max(force_rms, 1e-3)  # at least 1 meV/Å: data of relaxed structures still trains


def periodic_data_warning(structures: list[Structure], spread: float = 0.03) -> str | None:
    """A sentence when periodic training data cannot fix a many-body model's virial: no frame carries a
    stress label and every box has about the same volume per atom (within `spread`). Forces alone leave the
    pressure free; a local water model trained so expanded from 1.02 to 0.76 g/cm³ in 1.9 ps of NPT."""
    periodic = [s for s in structures if s.cell is not None and s.pbc is not None and bool(np.all(s.pbc))]
    if not periodic or any(s.virial is not None for s in periodic):
        return None
    volumes = np.array([abs(np.linalg.det(s.cell)) / len(s.atomic_numbers) for s in periodic])
    if volumes.max() > (1 + spread) * volumes.min():
        return None
    return (
        f"the {len(periodic)} periodic training frames carry no stress and all have about one density "
        f"({volumes.mean():.2f} Å^3 per atom): the model's pressure is then unconstrained and NPT may drift far "
        "from the data's density; add stress labels (mdplugin data water labels them) or boxes at other "
        "densities (mdplugin learn samples 0.9x and 1.1x the volume)"
    )


# ---------------------------------------------------------------------------- outlier frames

OUTLIER_SIGMAS = 25.0  # robust standard deviations (1.4826 MAD) from the median that flag a frame
OUTLIER_ENERGY_EV_PER_ATOM = 0.5  # ... and at least this far in energy per atom: thermal spreads are ~0.05
OUTLIER_FORCE_DECADES = 2.0  # ... and a largest force at least 100x the typical frame's largest
OUTLIER_CLOSEST_ANGSTROM = 0.5  # no chemistry puts two nuclei closer (H2: 0.74 Å); a blown-up frame does


@dataclass
class Outlier:
    """A frame far outside the rest of the data: its file, its index there, and why."""

    source: str
    index: int
    structure: Structure
    reasons: list[str]

    def describe(self) -> str:
        return f"{self.source} frame {self.index}: {'; '.join(self.reasons)}"


def find_outliers(frames: list[tuple[str, int, Structure]], sigmas: float = OUTLIER_SIGMAS) -> list[Outlier]:
    """Fully labelled frames (source file, index in it, structure) whose labels or geometry lie far outside the
    others: the energy per atom left after a per-element reference fit, the largest force, or two atoms closer
    than any chemistry puts them. Robust statistics (median and MAD, with the fit repeated without the flagged
    frames), so one absurd frame cannot hide itself by dragging the mean; a frame must be both many robust
    deviations and a physically large distance away. Forces-only frames (rattled, collapsed) are not judged."""
    frames = [f for f in frames if not f[2].forces_only]
    reasons: dict[int, list[str]] = {}
    for row, text in _energy_outliers([s for _, _, s in frames], sigmas).items():
        reasons.setdefault(row, []).append(text)
    for row, text in _force_outliers([s for _, _, s in frames], sigmas).items():
        reasons.setdefault(row, []).append(text)
    closest = np.array([_closest_distance(s) for _, _, s in frames])
    typical = float(np.median(closest[np.isfinite(closest)])) if np.isfinite(closest).any() else np.inf
    for row, distance in enumerate(closest):
        if distance < min(OUTLIER_CLOSEST_ANGSTROM, 0.6 * typical):
            reasons.setdefault(row, []).append(
                f"two atoms {distance:.3g} Å apart (the typical frame's closest pair: {typical:.3g} Å)"
            )
    return [Outlier(frames[row][0], frames[row][1], frames[row][2], reasons[row]) for row in sorted(reasons)]


def _energy_outliers(structures: list[Structure], sigmas: float) -> dict[int, str]:
    """Rows whose energy per atom, less the per-element references fitted on the others, is an outlier."""
    if len(structures) < 5:
        return {}  # too few frames to say what is typical
    elements = sorted({int(z) for s in structures for z in s.atomic_numbers})
    column = {z: i for i, z in enumerate(elements)}
    counts = np.zeros((len(structures), len(elements)))
    for row, s in enumerate(structures):
        np.add.at(counts[row], [column[int(z)] for z in s.atomic_numbers], 1)
    atoms = counts.sum(1)
    energies = np.array([s.energy for s in structures])
    # a first screen on the raw energy per atom, so an absurd frame does not pull the first fit
    keep = _typical(energies / atoms, sigmas, OUTLIER_ENERGY_EV_PER_ATOM)
    residual = energies / atoms
    for _ in range(5):
        e0, *_ = np.linalg.lstsq(counts[keep], energies[keep], rcond=None)
        residual = (energies - counts @ e0) / atoms
        again = _typical(residual, sigmas, OUTLIER_ENERGY_EV_PER_ATOM, keep)
        if np.array_equal(again, keep):
            break
        keep = again
    median = float(np.median(residual[keep]))
    spread = 1.4826 * float(np.median(np.abs(residual[keep] - median)))
    return {
        int(row): f"energy {structures[row].energy:.6g} eV, {residual[row] - median:+.3g} eV/atom from the typical "
        f"frame after the per-element reference fit (typical spread {spread:.2g} eV/atom)"
        for row in np.flatnonzero(~keep)
    }


def _force_outliers(structures: list[Structure], sigmas: float) -> dict[int, str]:
    """Rows whose largest per-atom force is orders of magnitude above the typical frame's largest."""
    if len(structures) < 5:
        return {}
    largest = np.array([np.linalg.norm(s.forces, axis=1).max() for s in structures])
    decades = np.log10(np.maximum(largest, 1e-6))
    median = float(np.median(decades))
    spread = 1.4826 * float(np.median(np.abs(decades - median)))
    flagged = decades - median > max(sigmas * spread, OUTLIER_FORCE_DECADES)
    return {
        int(row): f"largest force {largest[row]:.3g} eV/Å ({10 ** (decades[row] - median):.2g} times the typical "
        f"frame's largest, {10**median:.3g} eV/Å)"
        for row in np.flatnonzero(flagged)
    }


def _typical(values: np.ndarray, sigmas: float, floor: float, among: np.ndarray | None = None) -> np.ndarray:
    """Which values lie within max(sigmas robust deviations, floor) of the median of `among` (default: all)."""
    reference = values if among is None else values[among]
    median = np.median(reference)
    spread = 1.4826 * np.median(np.abs(reference - median))
    return np.abs(values - median) <= max(sigmas * spread, floor)


def _closest_distance(structure: Structure) -> float:
    """Å; inf for one atom, or a periodic frame with no pair within DOMAIN_CUTOFF."""
    _, _, distances = _pairs(structure)
    return float(distances.min()) if len(distances) else np.inf


def outlier_message(outliers: list[Outlier], frames: int, shown: int = 10) -> str:
    listed = "\n  ".join(o.describe() for o in outliers[:shown])
    more = f"\n  ... and {len(outliers) - shown} more" if len(outliers) > shown else ""
    return (
        f"{len(outliers)} of the {frames} fully labelled frames lie far outside the rest of the data (a wrong "
        f"label, a unit slip, a blown-up MD frame):\n  {listed}{more}\nTrained on, they would set the reference "
        "energies, the force normalisation and the recorded training domain. Check or recompute those frames, "
        "remove them, or pass --drop-outliers to train without them"
    )
