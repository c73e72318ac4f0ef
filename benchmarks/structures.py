"""Benchmark structures: MD17-like molecules, and non-periodic clusters of them for larger sizes.

Molecules come from SMILES (RDKit: ETKDG embedding, then an MMFF minimisation), so no file is
downloaded. Clusters place randomly rotated molecules on a cubic grid whose spacing is the largest
molecule's diameter plus a gap: no two atoms of different molecules come closer than the gap.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import ase
import numpy as np

# the MD17 molecules under the names and SMILES of mdplugin.data.molecules (the training data),
# plus paracetamol (rMD17) and water, which tops clusters up to a requested size
SMILES = {
    "ethanol": "CCO",
    "malonaldehyde": "O=C/C=C\\O",
    "uracil": "O=c1cc[nH]c(=O)[nH]1",
    "benzene": "c1ccccc1",
    "toluene": "Cc1ccccc1",
    "salicylic_acid": "OC(=O)c1ccccc1O",
    "naphthalene": "c1ccc2ccccc2c1",
    "paracetamol": "CC(=O)Nc1ccc(O)cc1",
    "aspirin": "CC(=O)Oc1ccccc1C(=O)O",
    "water": "O",
}
LARGEST_SINGLE_MOLECULE = 25  # atoms; larger requested sizes become clusters
CLUSTER_GAP = 2.5  # Å between the bounding spheres of neighbouring molecules


def molecule(name: str, seed: int = 0) -> ase.Atoms:
    """One MD17-like molecule by name, with hydrogens, in Å, centred on its centroid."""
    return _embedded_molecule(name, seed).copy()


@functools.cache
def _embedded_molecule(name: str, seed: int) -> ase.Atoms:
    from rdkit import Chem
    from rdkit.Chem import AllChem

    if name not in SMILES:
        raise ValueError(f"unknown molecule {name!r}; choose from {', '.join(SMILES)}")
    rdkit_molecule = Chem.AddHs(Chem.MolFromSmiles(SMILES[name]))
    if AllChem.EmbedMolecule(rdkit_molecule, randomSeed=seed) != 0:
        raise RuntimeError(f"RDKit could not embed {name}")
    AllChem.MMFFOptimizeMolecule(rdkit_molecule)
    positions = rdkit_molecule.GetConformer().GetPositions()
    numbers = [atom.GetAtomicNum() for atom in rdkit_molecule.GetAtoms()]
    atoms = ase.Atoms(numbers=numbers, positions=positions - positions.mean(0))
    atoms.info["name"] = name
    return atoms


def structure(name_or_path: str, seed: int = 0) -> ase.Atoms:
    """A molecule by name, or the first frame of a structure file (any format ASE reads)."""
    if Path(name_or_path).is_file():
        import ase.io

        atoms = ase.io.read(name_or_path)
        atoms.info["name"] = Path(name_or_path).stem
        return atoms
    return molecule(name_or_path, seed)


def molecules_for(elements: list[int]) -> list[str]:
    """Names of the molecules made only of `elements` (atomic numbers), smallest first."""
    allowed = set(elements)
    names = [name for name in SMILES if set(molecule(name).numbers) <= allowed]
    if not names:
        raise ValueError(f"none of the benchmark molecules uses only the elements {sorted(allowed)}")
    return sorted(names, key=lambda name: len(molecule(name)))


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly distributed 3x3 rotation matrix (QR of a Gaussian matrix, signs fixed)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def cluster_composition(target_atoms: int, names: list[str]) -> list[str]:
    """Greedy: the largest molecule while it fits, then smaller ones to get close to the target."""
    sizes = {name: len(molecule(name)) for name in names}
    chosen: list[str] = []
    remaining = target_atoms
    for name in sorted(names, key=sizes.get, reverse=True):
        while sizes[name] <= remaining:
            chosen.append(name)
            remaining -= sizes[name]
    if not chosen:
        chosen.append(min(names, key=sizes.get))
    return chosen


def cluster(names: list[str], seed: int = 0) -> ase.Atoms:
    """The molecules `names`, each randomly rotated, on a cubic grid without overlaps."""
    rng = np.random.default_rng(seed)
    templates = {name: molecule(name) for name in set(names)}
    radius = max(np.linalg.norm(atoms.positions, axis=1).max() for atoms in templates.values())
    spacing = 2 * radius + CLUSTER_GAP
    side = math.ceil(len(names) ** (1 / 3))
    grid = np.array([(i, j, k) for i in range(side) for j in range(side) for k in range(side)], dtype=float)
    grid = (grid[: len(names)] - (side - 1) / 2) * spacing
    result = ase.Atoms()
    for name, centre in zip(names, grid):
        template = templates[name]
        result += ase.Atoms(numbers=template.numbers, positions=template.positions @ random_rotation(rng).T + centre)
    result.positions -= result.positions.mean(0)
    counts = {name: names.count(name) for name in dict.fromkeys(names)}
    result.info["name"] = "cluster: " + " + ".join(f"{count} {name}" for name, count in counts.items())
    result.info["molecules"] = len(names)
    return result


def structure_of_size(target_atoms: int, elements: list[int], seed: int = 0) -> ase.Atoms:
    """A single molecule closest to `target_atoms` when small, else a cluster of molecules."""
    names = molecules_for(elements)
    if target_atoms <= LARGEST_SINGLE_MOLECULE:
        singles = [name for name in names if name != "water"] or names
        return molecule(min(singles, key=lambda name: (abs(len(molecule(name)) - target_atoms), name)))
    return cluster(cluster_composition(target_atoms, names), seed=seed)


def minimum_intermolecular_distance(atoms: ase.Atoms, molecule_sizes: list[int]) -> float:
    """Shortest distance (Å) between atoms of different molecules, for checking a cluster."""
    labels = np.repeat(np.arange(len(molecule_sizes)), molecule_sizes)
    distances = np.linalg.norm(atoms.positions[:, None] - atoms.positions[None], axis=-1)
    distances[labels[:, None] == labels[None]] = np.inf
    return float(distances.min())
