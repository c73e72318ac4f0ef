"""Shared fixtures: a small labelled data set, tiny models, and the golden export fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import ase
import ase.io
import numpy as np
import pytest
import torch
from ase.calculators.emt import EMT

from mdplugin.model.transformer import ModelConfig, TransformerPotential, init_distance_attention

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "export" / "fixtures"

# a six-atom "molecule" whose EMT energies and forces are cheap, smooth and rotation invariant
TOY_SYMBOLS = "CHHOHN"
TOY_POSITIONS = np.array([[0, 0, 0], [1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.2], [1.1, 1.1, 0.2], [-0.9, 0.3, 0.4]]) * 1.4


def write_toy_data(path: Path, frames: int, seed: int, noise: float = 0.05) -> Path:
    """Randomly distorted copies of the toy molecule, labelled with ASE's EMT (eV, eV/Å)."""
    rng = np.random.default_rng(seed)
    structures = []
    for _ in range(frames):
        atoms = ase.Atoms(TOY_SYMBOLS, positions=TOY_POSITIONS + rng.normal(0, noise, TOY_POSITIONS.shape))
        atoms.calc = EMT()
        atoms.get_potential_energy()
        structures.append(atoms)
    ase.io.write(path, structures, format="extxyz")
    return path


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory) -> Path:
    return write_toy_data(tmp_path_factory.mktemp("data") / "toy.extxyz", frames=240, seed=0)


@pytest.fixture(params=["quadratic", "gaussian", "fourier"])
def small_model(request) -> TransformerPotential:
    """A float64 model with random weights (distance-initialised attention for the quadratic
    embedding, as the trainer does by default) and a visible output scale."""
    torch.manual_seed(7)
    config = ModelConfig(
        elements=[1, 6, 7, 8], width=32, depth=2, heads=4, coordinate_features=16, coordinate_embedding=request.param
    )
    model = TransformerPotential(config)
    if request.param == "quadratic":
        init_distance_attention(model)
    model.energy_scale.fill_(3.0)
    return model.double().eval()


@pytest.fixture(scope="session")
def expected_fixtures() -> dict:
    return json.loads((FIXTURES / "expected.json").read_text())


def random_molecule(atoms: int, seed: int, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions [N, 3] (Å) spread like a small molecule, and species indices [N] for H C N O."""
    generator = torch.Generator().manual_seed(seed)
    positions = 1.5 * torch.randn(atoms, 3, generator=generator, dtype=dtype)
    species = torch.randint(0, 4, (atoms,), generator=generator)
    return positions, species


def pad_molecules(
    molecules: list[tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(positions, species) pairs -> padded positions [B, N, 3], species [B, N] and mask [B, N]."""
    atoms = max(len(s) for _, s in molecules)
    positions = torch.zeros(len(molecules), atoms, 3, dtype=molecules[0][0].dtype)
    species = torch.zeros(len(molecules), atoms, dtype=torch.long)
    mask = torch.zeros(len(molecules), atoms, dtype=torch.bool)
    for row, (p, s) in enumerate(molecules):
        positions[row, : len(s)], species[row, : len(s)], mask[row, : len(s)] = p, s, True
    return positions, species, mask
