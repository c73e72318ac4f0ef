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


def training_domain(structures: list[Structure]) -> dict:
    """What the training structures cover: the shortest distance (Å) seen for each element pair,
    and the distinct total charges and spin multiplicities.

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
    }


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
