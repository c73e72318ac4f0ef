"""Regenerate the golden fixtures shared by the OpenMM, LAMMPS, ASE and C++ tests.

A tiny global model with fixed-seed random weights (elements H, C, N, O), exported in float64 and
float32, three small molecules, and the energies, forces and per-atom energies the Python model gives
them (expected.json); and a tiny local model (contract v2) with a periodic water box in a triclinic
cell, its energy, forces, per-atom energies and virial (expected-local.json).
Run from the repository root: python export/make_fixtures.py
"""

from __future__ import annotations

import json
from pathlib import Path

import ase.io
import numpy as np
import torch
from ase import Atoms

from mdplugin.export.exporter import export
from mdplugin.export.loader import Potential
from mdplugin.model.checkpoint import build_checkpoint, save_checkpoint
from mdplugin.model.transformer import ModelConfig, TransformerPotential

HERE = Path(__file__).parent / "fixtures"

STRUCTURES = {
    "water": Atoms("OHH", positions=[[0.0, 0.0, 0.119], [0.0, 0.763, -0.477], [0.0, -0.763, -0.477]]),
    "methanol": Atoms(
        "CHHHOH",
        positions=[
            [-0.047, 0.665, 0.0],
            [-1.086, 0.969, 0.0],
            [0.437, 1.069, 0.889],
            [0.437, 1.069, -0.889],
            [-0.047, -0.756, 0.0],
            [0.870, -1.051, 0.0],
        ],
    ),  # fmt: skip
    "methylamine-water": Atoms(
        "CNHHHHHOHH",
        positions=[
            [0.0, 0.0, 0.0],
            [1.47, 0.0, 0.0],
            [-0.36, 1.03, 0.0],
            [-0.36, -0.51, 0.89],
            [-0.36, -0.51, -0.89],
            [1.81, 0.95, 0.0],
            [1.81, -0.47, 0.82],
            [3.9, 0.2, 0.1],
            [4.5, 0.9, 0.3],
            [4.4, -0.6, 0.0],
        ],
    ),  # fmt: skip
}


LOCAL_RANGE = 2.5  # Å per block; two blocks


def water_box(seed: int = 5) -> Atoms:
    """Twelve waters in a triclinic cell in OpenMM's and LAMMPS's reduced form (a along x, b in the xy plane)."""
    rng = np.random.default_rng(seed)
    cell = np.array([[7.4, 0.0, 0.0], [1.2, 7.1, 0.0], [-0.9, 1.1, 6.9]])
    grid = np.array([[i, j, k] for i in range(3) for j in range(2) for k in range(2)]) / [3, 2, 2] + 0.1
    oxygens = (grid + rng.normal(0, 0.02, grid.shape)) @ cell
    symbols, positions = [], []
    for oxygen in oxygens:
        rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        hydrogens = oxygen + np.array([[0.9572, 0.0, 0.0], [-0.2400, 0.9266, 0.0]]) @ rotation.T
        symbols += ["O", "H", "H"]
        positions += [oxygen, *hydrogens]
    return Atoms(symbols, positions=positions, cell=cell, pbc=True)


def write_local_fixtures(provenance: dict) -> None:
    torch.manual_seed(4321)
    config = ModelConfig(elements=[1, 6, 7, 8], width=32, depth=2, heads=4, interaction_range=LOCAL_RANGE)
    model = TransformerPotential(config)
    with torch.no_grad():
        model.energy_scale.fill_(5.0)
        model.reference_energies.copy_(torch.tensor([-10.7, -48.8, -71.0, -102.6]))
    checkpoint = HERE / "tiny-local.pt"
    save_checkpoint(build_checkpoint(model, provenance, {"history": []}), checkpoint)
    for dtype in ("float64", "float32"):
        export(checkpoint, HERE / f"tiny-local-{dtype}.pt", dtype=dtype, overwrite=True)
    reference = Potential.load(checkpoint, dtype="float64")
    atoms = water_box()
    ase.io.write(HERE / "water-box.extxyz", atoms, format="extxyz")
    result = reference.evaluate_atoms(atoms)
    expected = {
        "water-box": {
            "symbols": atoms.get_chemical_symbols(),
            "positions": atoms.positions.tolist(),
            "cell": atoms.cell.array.tolist(),
            "pbc": [True, True, True],
            "energy": result.energy,
            "forces": result.forces.tolist(),
            "per_atom_energy": result.per_atom_energy.tolist(),
            "virial": result.virial.tolist(),
        }
    }
    assert np.all(np.isfinite(result.forces))
    (HERE / "expected-local.json").write_text(json.dumps(expected, indent=1))


def main() -> None:
    torch.manual_seed(1234)
    config = ModelConfig(
        elements=[1, 6, 7, 8], width=32, depth=2, heads=4, coordinate_features=16, coordinate_embedding="gaussian"
    )
    model = TransformerPotential(config)
    with torch.no_grad():  # plausible output scale and reference energies for a random model
        model.energy_scale.fill_(5.0)
        model.reference_energies.copy_(torch.tensor([-10.7, -48.8, -71.0, -102.6]))
    provenance = {"date": "fixture", "data_sha256": {}, "command": "export/make_fixtures.py"}
    checkpoint = HERE / "tiny.pt"
    save_checkpoint(build_checkpoint(model, provenance, {"history": []}), checkpoint)
    for dtype in ("float64", "float32"):
        export(checkpoint, HERE / f"tiny-{dtype}.pt", dtype=dtype, overwrite=True)

    reference = Potential.load(checkpoint, dtype="float64")
    expected = {}
    for name, atoms in STRUCTURES.items():
        ase.io.write(HERE / f"{name}.xyz", atoms, format="xyz")
        result = reference(atoms.positions, atoms.numbers)
        expected[name] = {
            "symbols": atoms.get_chemical_symbols(),
            "positions": atoms.positions.tolist(),
            "energy": result.energy,
            "forces": result.forces.tolist(),
            "per_atom_energy": result.per_atom_energy.tolist(),
        }
        assert np.all(np.isfinite(result.forces))
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1))
    write_local_fixtures(provenance)
    print(f"wrote fixtures to {HERE}")


if __name__ == "__main__":
    main()
