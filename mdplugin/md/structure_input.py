"""Reading and checking the input structure of `mdplugin run`: a PDB file, a file ASE reads
(XYZ/extxyz, CIF, ...) or a SMILES string embedded in 3D by RDKit, as an OpenMM topology, positions in nm
and the charge the input implies; a clear error for a structure with no atoms, a single atom or
coordinates that are not finite.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
from openmm import unit

from mdplugin.errors import reason


def read_structure(structure: str, seed: int | None = None) -> tuple[app.Topology, unit.Quantity, int | None]:
    """Topology, positions (nm) and the charge the input implies (None where it says nothing).

    A clear error for a structure with no atoms, a single atom, or coordinates that are not finite."""
    path = Path(structure)
    if path.is_file():
        if path.suffix.lower() in (".pdb", ".ent"):
            topology, positions, charge = _read_pdb(path)
        else:
            topology, positions, charge = _read_with_ase(path)
    elif path.suffix.lower() in (".pdb", ".ent", ".xyz", ".extxyz", ".cif", ".sdf", ".mol2"):
        raise FileNotFoundError(f"structure file {path} does not exist")
    else:
        topology, positions, charge = _embed_smiles(structure, seed)
    check_structure(structure, topology, positions)
    return topology, positions, charge


def check_structure(name: str, topology: app.Topology, positions: unit.Quantity) -> None:
    atoms = topology.getNumAtoms()
    if atoms == 0:
        raise ValueError(f"the structure {name} holds no atoms; give a PDB with ATOM/HETATM records or an XYZ file")
    if atoms == 1:
        raise ValueError(
            f"the structure {name} is a single atom: it has no internal motion, and once the centre-of-mass "
            "motion is removed no temperature; molecular dynamics needs at least two atoms"
        )
    coordinates = np.asarray(positions.value_in_unit(unit.nanometer), dtype=float)
    bad = np.flatnonzero(~np.isfinite(coordinates).all(axis=1))
    if len(bad):
        atom = list(topology.atoms())[bad[0]]
        raise ValueError(
            f"atom {bad[0] + 1} ({atom.element.symbol if atom.element else atom.name}) of {name} has NaN or "
            f"infinite coordinates ({len(bad)} atom(s) in all); fix the structure file"
        )


def _read_pdb(path: Path) -> tuple[app.Topology, unit.Quantity, None]:
    with open(path, errors="replace") as handle:
        lines = handle.readlines()
    records = atom_records(lines)
    if not records:
        raise ValueError(f"the structure {path} holds no atoms (no ATOM or HETATM records); give a complete PDB file")
    cryst1 = next((line for line in lines if line.startswith("CRYST1")), None)
    lengths = cryst1_lengths(path, cryst1) if cryst1 is not None else None  # before OpenMM's error about it
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # one "duplicate atom" line per merged atom; counted below instead
            pdb = app.PDBFile(str(path))
    except Exception as error:  # OpenMM's PDB reader raises many kinds for a file it cannot parse
        raise ValueError(
            f"cannot read {path} as a PDB file ({reason(error)}); check the file or convert it to XYZ"
        ) from None
    topology, positions = pdb.topology, pdb.positions
    if topology.getNumAtoms() < records:
        topology, positions = _read_merged_pdb(path, records, topology)
    if cryst1 is not None:
        if lengths is None:
            topology.setPeriodicBoxVectors(None)
        elif topology.getPeriodicBoxVectors() is not None:
            vectors = np.array(topology.getPeriodicBoxVectors().value_in_unit(unit.nanometer)) * 10.0
            topology.setPeriodicBoxVectors(box_vectors(openmm_box(path, vectors)))
    return topology, positions, None


def atom_records(lines: list[str]) -> int:
    """ATOM/HETATM records of the first model, one per atom (an alternate location past the first is no atom)."""
    count, first_location = 0, None
    for line in lines:
        if line.startswith("ENDMDL"):
            break
        if line.startswith(("ATOM", "HETATM")):
            location = line[16:17].strip()
            if location and first_location is None:
                first_location = location
            count += location in ("", first_location)
    return count


def _read_merged_pdb(path: Path, records: int, merged: app.Topology) -> tuple[app.Topology, unit.Quantity]:
    """Every atom of a PDB whose atoms OpenMM's reader merged: it keys atoms by residue and name, so a
    residue with repeated names (ASE writes every atom as residue MOL 1, named O, H, H, ...) loses all
    but one of each name. Read again with ASE, as one residue with unique names, with a warning."""
    import ase.io

    from mdplugin.md.options import RunWarning

    try:
        atoms = ase.io.read(str(path), index=0, format="proteindatabank")
    except Exception as error:  # ase raises many kinds for a file it cannot parse
        raise ValueError(
            f"{path} has {records} atoms, but OpenMM's PDB reader merged them into {merged.getNumAtoms()} (atoms "
            f"that share a name within one residue), and ASE cannot read it either ({reason(error)}); give each "
            "atom a unique name within its residue, or each molecule its own residue number"
        ) from None
    if len(atoms) != records:
        raise ValueError(
            f"{path} has {records} ATOM/HETATM records, but OpenMM's PDB reader keeps {merged.getNumAtoms()} and "
            f"ASE {len(atoms)}; give each atom a unique name within its residue, or each molecule its own residue "
            "number"
        )
    warnings.warn(
        f"{path}: OpenMM's PDB reader keeps one atom per name within a residue, and this file repeats names "
        f"within a residue (as ase.io.write does), so it would read {merged.getNumAtoms()} of its {records} atoms; "
        f"all {records} are read (with ASE), as one residue without bonds. For ML/MM or a force field, give each "
        "molecule its own residue number and unique atom names",
        RunWarning,
        3,
    )
    topology = topology_from_symbols(atoms.get_chemical_symbols())
    topology.setPeriodicBoxVectors(merged.getPeriodicBoxVectors())
    return topology, unit.Quantity(atoms.positions * 0.1, unit.nanometer)


def cryst1_lengths(path: Path, line: str) -> tuple[float, float, float] | None:
    """The cell lengths (Å) of a CRYST1 line; None for the 0 0 0 placeholder (no box: a warning), and an
    error for lengths no box has (negative, NaN, some zero)."""
    from mdplugin.md.options import RunWarning

    try:
        lengths = tuple(float(line[start : start + 9]) for start in (6, 15, 24))
    except ValueError:
        raise ValueError(f"{path}: cannot read the cell lengths of its CRYST1 line {line.strip()!r}") from None
    if all(length == 0 for length in lengths):
        warnings.warn(no_cell_message(path), RunWarning, 4)
        return None
    if not all(np.isfinite(length) and length > 0 for length in lengths):
        raise ValueError(
            f"{path}: the CRYST1 line gives cell lengths {', '.join(f'{v:g}' for v in lengths)} Å; a periodic box "
            "needs three positive lengths (or remove the CRYST1 line for a molecule without a box)"
        )
    return lengths


def _read_with_ase(path: Path) -> tuple[app.Topology, unit.Quantity, int | None]:
    import ase.io

    try:
        atoms = ase.io.read(str(path))
    except Exception as error:  # ase raises many kinds for a file it cannot parse
        raise ValueError(f"cannot read {path} as a structure ({reason(error)}); use PDB or XYZ/extxyz") from None
    if no_cell_placeholder(path, atoms):
        from mdplugin.md.options import RunWarning

        warnings.warn(no_cell_message(path), RunWarning, 3)
    check_full_periodicity(path, atoms.pbc)
    topology = topology_from_symbols(atoms.get_chemical_symbols())
    if atoms.pbc.any():
        if not np.isfinite(atoms.cell.array).all() or abs(np.linalg.det(atoms.cell.array)) < 1e-6:
            openmm_box(path, atoms.cell.array)  # the error naming what is wrong with it
        if np.linalg.det(atoms.cell.array) > 0:  # rotate into OpenMM's orientation (a along x, b in xy)
            atoms.set_cell(atoms.cell.standard_form()[0], scale_atoms=True)
        topology.setPeriodicBoxVectors(box_vectors(openmm_box(path, atoms.cell.array)))
    charge = atoms.info.get("charge")
    return topology, unit.Quantity(atoms.positions * 0.1, unit.nanometer), None if charge is None else int(charge)


def openmm_box(path: Path, cell) -> np.ndarray:
    """The periodic box (Å, rows are vectors) in the reduced form OpenMM requires (a along x, b in the xy
    plane, each vector shorter than twice its projection allows), the same lattice; a clear error for a
    cell that is no box: NaN, zero volume, or left-handed."""
    box = np.array(cell, dtype=float)
    if not np.isfinite(box).all():
        raise ValueError(f"{path}: the periodic cell has NaN or infinite entries; fix the cell (lattice) of the file")
    volume = float(np.linalg.det(box))
    if abs(volume) < 1e-6:
        raise ValueError(
            f"{path}: the periodic cell has zero volume (lengths {', '.join(f'{v:.3g}' for v in np.linalg.norm(box, axis=1))} Å); "
            "give three independent lattice vectors, or no cell and pbc F F F for a molecule"
        )
    if volume < 0 or not (box[0, 1] == box[0, 2] == box[1, 2] == 0):
        raise ValueError(
            f"{path}: the periodic cell is {'left-handed (negative volume)' if volume < 0 else 'not lower-triangular'}; "
            "OpenMM needs a right-handed cell with a along x and b in the xy plane: reorder or negate lattice "
            "vectors (e.g. swap b and c), or let ASE rotate it (atoms.set_cell(atoms.cell.standard_form()[0], "
            "scale_atoms=True))"
        )
    if min(box[0, 0], box[1, 1], box[2, 2]) <= 0:
        raise ValueError(
            f"{path}: the periodic cell has negative diagonal entries; OpenMM needs positive ones: negate those "
            "lattice vectors (the same lattice)"
        )
    # the same lattice, reduced: c shortened by b and a, then b by a (OpenMM: |bx| <= ax/2, |cx| <= ax/2, |cy| <= by/2)
    box[2] -= np.round(box[2, 1] / box[1, 1]) * box[1]
    box[2] -= np.round(box[2, 0] / box[0, 0]) * box[0]
    box[1] -= np.round(box[1, 0] / box[0, 0]) * box[0]
    return box


def box_vectors(box: np.ndarray) -> unit.Quantity:
    """Box rows in Å as OpenMM's box vectors (Vec3s in nm)."""
    return unit.Quantity([openmm.Vec3(*(row * 0.1)) for row in box], unit.nanometer)


def no_cell_message(path: Path | str) -> str:
    return (
        f"{path} has a periodic cell of zero lengths (such as CRYST1 0 0 0), a placeholder for no cell: it is "
        "treated as a molecule without a periodic box; give the cell lengths for a periodic system"
    )


def no_cell_placeholder(path: Path | str, atoms) -> bool:
    """True for an ase.Atoms marked periodic with a cell of zero lengths (ASE reads CRYST1 0 0 0 so): it
    is then set non-periodic, as OpenMM reads that PDB, so that `run` and `evaluate` agree."""
    if not atoms.pbc.any() or np.any(atoms.cell.array != 0):
        return False
    atoms.pbc = False
    return True


# no covalent bond is this short (H2: 0.74 Å): closer atoms are a duplicated atom or a broken file
SHORTEST_PAIR_DISTANCE = 0.5


def check_overlaps(name: str, atoms) -> None:
    """An error for two atoms (or an atom and a periodic image, its own included) closer than
    SHORTEST_PAIR_DISTANCE: the model gives such a structure a finite, meaningless energy."""
    from ase.neighborlist import neighbor_list

    if len(atoms) < 2 and not atoms.pbc.any():
        return
    if atoms.pbc.all():
        # spheres of radius SHORTEST_PAIR_DISTANCE / 2 around every atom cannot fit (closest packing, 74 %):
        # some pair is closer, and listing the pairs of so dense a cell could exhaust the memory
        volume_per_atom = abs(atoms.cell.volume) / len(atoms)
        if volume_per_atom < 4 / 3 * np.pi * (SHORTEST_PAIR_DISTANCE / 2) ** 3 / 0.74:
            raise ValueError(
                f"{name}: {len(atoms)} atoms in a periodic cell of {abs(atoms.cell.volume):.3g} Å^3 "
                f"({volume_per_atom:.3g} Å^3 per atom) must overlap, closer than any bond "
                f"({SHORTEST_PAIR_DISTANCE} Å): is the cell in Å (a cell in nm is 10 times too small)?"
            )
    first, second, distance = neighbor_list("ijd", atoms, SHORTEST_PAIR_DISTANCE, self_interaction=False)
    if not len(first):
        return
    k = int(np.argmin(distance))
    i, j = int(first[k]), int(second[k])
    symbols = atoms.get_chemical_symbols()
    where = "on a periodic image of itself" if i == j else f"and atom {j} ({symbols[j]})"
    direct = float(np.linalg.norm(atoms.positions[i] - atoms.positions[j]))
    image = " (one on the other's periodic image)" if i != j and direct > distance[k] + 1e-6 else ""
    raise ValueError(
        f"{name}: atom {i} ({symbols[i]}) {where} {distance[k]:.2f} Å apart{image}, closer than any bond "
        f"({SHORTEST_PAIR_DISTANCE} Å): the file holds a duplicated atom or a cell too small for its atoms; fix "
        "the structure (remove the duplicate, or give the right cell)"
    )


def check_full_periodicity(path: Path, pbc) -> None:
    """OpenMM knows only boxes periodic in all three directions: a slab (pbc T T F) or a wire (T F F)
    would silently become a 3-D periodic box, so it is refused with the fix."""
    flags = [bool(flag) for flag in pbc]
    if any(flags) and not all(flags):
        periodic = "".join(axis for axis, flag in zip("xyz", flags) if flag)
        shown = " ".join("T" if flag else "F" for flag in flags)
        raise ValueError(
            f'{path} is periodic along {periodic} only (pbc="{shown}"), but OpenMM boxes are periodic in all three '
            "directions, so the run would simulate a 3-D periodic crystal of it; add vacuum along the "
            'non-periodic direction(s) (e.g. 15 Å beyond the atoms) and mark the cell pbc="T T T", or run it in '
            "LAMMPS with a non-periodic boundary there (boundary p p f)"
        )


def _embed_smiles(smiles: str, seed: int | None) -> tuple[app.Topology, unit.Quantity, int]:
    from rdkit import Chem, RDLogger
    from rdkit.Chem import AllChem

    RDLogger.DisableLog("rdApp.*")
    molecule = Chem.MolFromSmiles(smiles)
    if molecule is None:
        raise ValueError(f"{smiles!r} is neither an existing structure file nor a valid SMILES string")
    molecule = Chem.AddHs(molecule)
    parameters = AllChem.ETKDGv3()
    parameters.randomSeed = 42 if seed is None else seed
    if AllChem.EmbedMolecule(molecule, parameters) != 0:
        raise ValueError(f"RDKit could not generate 3D coordinates for {smiles!r} (ETKDG embedding failed)")
    topology = topology_from_symbols([atom.GetSymbol() for atom in molecule.GetAtoms()])
    atoms = list(topology.atoms())
    for bond in molecule.GetBonds():
        topology.addBond(atoms[bond.GetBeginAtomIdx()], atoms[bond.GetEndAtomIdx()])
    positions = molecule.GetConformer().GetPositions() * 0.1  # Å -> nm
    return topology, unit.Quantity(positions, unit.nanometer), Chem.GetFormalCharge(molecule)


def topology_from_symbols(symbols: list[str]) -> app.Topology:
    """One chain, one residue 'MOL', atoms named by element and count (C1, H1, H2, ...)."""
    topology = app.Topology()
    residue = topology.addResidue("MOL", topology.addChain())
    counts: dict[str, int] = {}
    for symbol in symbols:
        counts[symbol] = counts.get(symbol, 0) + 1
        topology.addAtom(f"{symbol}{counts[symbol]}"[:4], app.Element.getBySymbol(symbol), residue)
    return topology


def formula(symbols: list[str]) -> str:
    return "".join(f"{symbol}{count if count > 1 else ''}" for symbol, count in Counter(symbols).items())
