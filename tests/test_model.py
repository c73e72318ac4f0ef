"""Physical and contractual properties of the Transformer potential (float64 where precision matters)."""

from __future__ import annotations

import pytest
import torch
from conftest import pad_molecules, random_molecule

from mdplugin.export.exporter import ExportedPotential
from mdplugin.model.transformer import ModelConfig, TransformerPotential, init_distance_attention
from mdplugin.training.train import random_rotations

ZERO = torch.zeros(1, dtype=torch.long)
ONE = torch.ones(1, dtype=torch.long)


def energy(model, positions, species):
    """Total energy (eV) of one structure."""
    mask = torch.ones(1, len(species), dtype=torch.bool)
    return model(positions.unsqueeze(0), species.unsqueeze(0), mask, ZERO, ONE).sum()


def forces(model, positions, species):
    positions = positions.clone().requires_grad_(True)
    return -torch.autograd.grad(energy(model, positions, species), positions)[0]


def test_translation_invariance(small_model):
    positions, species = random_molecule(12, seed=1)
    shifted = positions + torch.tensor([13.0, -7.5, 2.25], dtype=torch.float64)
    # centring inside the model makes this exact up to float64 rounding of the shifted coordinates
    assert torch.allclose(
        energy(small_model, positions, species), energy(small_model, shifted, species), rtol=0, atol=1e-10
    )


def test_forces_sum_to_zero(small_model):
    positions, species = random_molecule(15, seed=2)
    total = forces(small_model, positions, species).sum(0)
    assert total.abs().max() < 1e-12  # translation invariance ⇒ no net force


def test_permutation_equivariance(small_model):
    positions, species = random_molecule(10, seed=3)
    order = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    e, f = energy(small_model, positions, species), forces(small_model, positions, species)
    e_perm, f_perm = (
        energy(small_model, positions[order], species[order]),
        forces(small_model, positions[order], species[order]),
    )
    assert torch.allclose(e, e_perm, rtol=1e-13, atol=0)  # no positional encoding: the order of atoms is irrelevant
    assert torch.allclose(f[order], f_perm, rtol=0, atol=1e-12)


def test_padded_batch_equals_structures_one_by_one(small_model):
    sizes = [4, 9, 6]
    molecules = [random_molecule(n, seed=10 + n) for n in sizes]
    positions, species, mask = pad_molecules(molecules)
    positions[~mask] = 123.0  # garbage in padding must not leak into real atoms
    charge, multiplicity = torch.zeros(3, dtype=torch.long), torch.ones(3, dtype=torch.long)
    batched = small_model(positions, species, mask, charge, multiplicity).sum(1)
    single = torch.stack([energy(small_model, p, s) for p, s in molecules])
    assert torch.allclose(batched, single, rtol=1e-13, atol=0)


def test_forces_equal_central_finite_differences(small_model):
    positions, species = random_molecule(7, seed=4)
    analytic = forces(small_model, positions, species)
    step = 1e-5  # Å; central differences have O(step²) ≈ 1e-10 truncation error
    numeric = torch.zeros_like(positions)
    for atom in range(7):
        for axis in range(3):
            plus, minus = positions.clone(), positions.clone()
            plus[atom, axis] += step
            minus[atom, axis] -= step
            numeric[atom, axis] = -(energy(small_model, plus, species) - energy(small_model, minus, species)) / (
                2 * step
            )
    assert torch.allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


def test_energy_is_smooth_along_a_path(small_model):
    """Halving the step along a straight path halves the largest energy change: no jumps."""
    start, species = random_molecule(8, seed=5)
    direction = torch.randn(start.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    direction /= direction.norm()

    def largest_jump(points):
        t = torch.linspace(0, 1.0, points, dtype=torch.float64)  # a 1 Å path
        energies = torch.stack([energy(small_model, start + ti * direction, species) for ti in t])
        return energies.diff().abs().max()

    coarse, fine = largest_jump(201), largest_jump(401)
    # a smooth energy gives ratio ≈ 0.5; a discontinuity keeps the jump and gives ratio ≈ 1
    assert fine / coarse < 0.6, (coarse.item(), fine.item())


def test_rotation_spread_is_reported(small_model, record_property):
    positions, species = random_molecule(9, seed=8)
    rotations = random_rotations(100, torch.Generator().manual_seed(0), torch.float64)
    energies = torch.stack([energy(small_model, positions @ r, species) for r in rotations])
    spread_mev_per_atom = 1000 * (energies.max() - energies.min()).item() / len(species)
    record_property("rotation_spread_mev_per_atom", spread_mev_per_atom)
    print(f"untrained model: energy spread under 100 rotations {spread_mev_per_atom:.3f} meV/atom")
    assert torch.isfinite(energies).all()
    assert torch.allclose(
        rotations @ rotations.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(100, 3, 3), atol=1e-12
    )
    assert torch.allclose(torch.det(rotations), torch.ones(100, dtype=torch.float64), atol=1e-12)


def test_scripted_inference_path_matches_eager(small_model):
    positions, species = random_molecule(11, seed=9)
    numbers = torch.tensor([1, 6, 7, 8])[species]
    eager = ExportedPotential(small_model)
    scripted = torch.jit.script(ExportedPotential(small_model))
    for a, b in zip(eager(positions, numbers, 0, 1), scripted(positions, numbers, 0, 1)):
        assert torch.allclose(a, b, rtol=1e-14, atol=1e-14)


def test_charge_and_multiplicity_change_the_energy(small_model):
    positions, species = random_molecule(6, seed=11)
    mask = torch.ones(1, 6, dtype=torch.bool)
    neutral = small_model(positions[None], species[None], mask, ZERO, ONE).sum()
    cation = small_model(positions[None], species[None], mask, ONE, ONE).sum()
    triplet = small_model(positions[None], species[None], mask, ZERO, 3 * ONE).sum()
    assert neutral != cation and neutral != triplet


def test_distance_initialised_attention_is_a_gaussian_kernel_of_distance():
    torch.manual_seed(3)
    model = TransformerPotential(ModelConfig(elements=[1, 6, 7, 8], width=64, depth=2, heads=4)).double()
    init_distance_attention(model)
    positions, species = random_molecule(12, seed=5)
    mask = torch.ones(1, 12, dtype=torch.bool)
    x, _ = model.embed(positions[None], species[None], mask, ZERO, ONE)
    attention = model.blocks[0].attention
    q, k, _ = attention.qkv(model.blocks[0].attention_norm(x)).view(1, 12, 3, 4, 16).unbind(2)
    logits = torch.einsum("bihd,bjhd->bhij", q, k)[0] / 4.0  # [heads, i, j]
    squared = torch.cdist(positions, positions).pow(2)
    # softmax over keys j ignores terms that depend on the query i only: compare row-centred values
    kernel = -(squared - squared.mean(1, keepdim=True))
    gammas = []
    for head in range(4):
        centred = (logits[head] - logits[head].mean(1, keepdim=True)).detach()
        gamma = float((centred * kernel).sum() / (kernel * kernel).sum())  # least-squares logit = gamma * kernel
        residual = centred - gamma * kernel
        assert residual.std() < 0.1 * (gamma * kernel).std(), f"head {head} is not a Gaussian kernel of distance"
        gammas.append(gamma)
    print("starting kernel exponents (1/Å^2):", [f"{g:.3f}" for g in gammas])
    assert 0.05 < gammas[0] and gammas[-1] < 4.0
    assert all(1.8 < b / a < 2.2 for a, b in zip(gammas, gammas[1:]))  # doubling from head to head


def test_distance_initialisation_needs_the_quadratic_embedding():
    model = TransformerPotential(ModelConfig(coordinate_embedding="fourier", width=32, heads=4, coordinate_features=8))
    with pytest.raises(ValueError, match="needs coordinate_embedding 'quadratic'.*--attention-init random"):
        init_distance_attention(model)
