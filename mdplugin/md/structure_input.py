"""Reading and checking the input structure of `mdplugin run`: a PDB file, a file ASE reads
(XYZ/extxyz, CIF, ...) or a SMILES string embedded in 3D by RDKit, as an OpenMM topology, positions in nm
and the charge the input implies; a clear error for a structure with no atoms, a single atom or
coordinates that are not finite.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import openmm.app as app
from openmm import unit


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
        if not any(line.startswith(("ATOM", "HETATM")) for line in handle):
            raise ValueError(
                f"the structure {path} holds no atoms (no ATOM or HETATM records); give a complete PDB file"
            )
    try:
        pdb = app.PDBFile(str(path))
    except Exception as error:  # OpenMM's PDB reader raises many kinds for a file it cannot parse
        raise ValueError(f"cannot read {path} as a PDB file ({error}); check the file or convert it to XYZ") from None
    return pdb.topology, pdb.positions, None


def _read_with_ase(path: Path) -> tuple[app.Topology, unit.Quantity, int | None]:
    import ase.io

    try:
        atoms = ase.io.read(str(path))
    except Exception as error:  # ase raises many kinds for a file it cannot parse
        raise ValueError(f"cannot read {path} as a structure ({error}); use PDB or XYZ/extxyz") from None
    topology = topology_from_symbols(atoms.get_chemical_symbols())
    if atoms.pbc.any():
        topology.setPeriodicBoxVectors(atoms.cell.array * 0.1)  # Å -> nm
    charge = atoms.info.get("charge")
    return topology, unit.Quantity(atoms.positions * 0.1, unit.nanometer), None if charge is None else int(charge)


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
