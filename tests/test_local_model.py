"""The local model's exact properties, in float64: invariances, locality, periodic images, stress."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import vesin_torch

from mdplugin.export.exporter import ExportedLocalPotential, export
from mdplugin.export.loader import Potential
from mdplugin.export.model_file import open_model
from mdplugin.model.checkpoint import build_checkpoint, save_checkpoint
from mdplugin.model.transformer import ModelConfig, TransformerPotential
from mdplugin.units import GPA_PER_EV_PER_CUBIC_ANGSTROM

RANGE = 2.5  # Å per block; two blocks: an atom's energy depends on atoms within 5 Å
EXACT = 1e-10  # eV: float64 round-off of sums over a few hundred terms, with margin


@pytest.fixture(scope="module")
def local_model() -> ExportedLocalPotential:
    torch.manual_seed(3)
    config = ModelConfig(elements=[1, 6, 7, 8], width=32, depth=2, heads=4, interaction_range=RANGE)
    model = TransformerPotential(config)
    model.energy_scale.fill_(2.0)
    return torch.jit.script(ExportedLocalPotential(model.double().eval()))


def random_box(atoms: int, cell: np.ndarray, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions [N, 3] (Å) spread through a cell, and atomic numbers of H, C, N, O."""
    rng = np.random.default_rng(seed)
    positions = rng.random((atoms, 3)) @ cell
    numbers = rng.choice([1, 6, 7, 8], atoms)
    return torch.tensor(positions), torch.tensor(numbers)


ORTHORHOMBIC = np.diag([6.0, 6.5, 7.0])
TRICLINIC = np.array([[6.0, 0.0, 0.0], [1.5, 6.2, 0.0], [-1.0, 0.8, 6.6]])
PERIODIC = torch.ones(3, dtype=torch.bool)


def evaluate(module, positions, numbers, cell=None, pbc=PERIODIC):
    box = None if cell is None else torch.as_tensor(cell, dtype=torch.float64)
    return module(positions, numbers, 0, 1, box, pbc if cell is not None else None)


@pytest.mark.parametrize("cell", [ORTHORHOMBIC, TRICLINIC], ids=["orthorhombic", "triclinic"])
def test_energy_is_invariant_to_translation_and_wrapping(local_model, cell):
    positions, numbers = random_box(40, cell, seed=1)
    energy = evaluate(local_model, positions, numbers, cell)[0]
    shifted = positions + torch.tensor([0.37, -1.9, 12.4], dtype=torch.float64)
    assert abs(float(evaluate(local_model, shifted, numbers, cell)[0] - energy)) < EXACT
    wrapped = positions.clone()
    wrapped[5] += torch.tensor(cell[1]) - 2 * torch.tensor(cell[2])  # one atom moved by a lattice vector
    wrapped[17] -= torch.tensor(cell[0])
    assert abs(float(evaluate(local_model, wrapped, numbers, cell)[0] - energy)) < EXACT


def test_energy_is_invariant_to_permutation(local_model):
    positions, numbers = random_box(40, TRICLINIC, seed=2)
    energy, forces, per_atom, _ = evaluate(local_model, positions, numbers, TRICLINIC)
    order = torch.randperm(40, generator=torch.Generator().manual_seed(0))
    permuted = evaluate(local_model, positions[order], numbers[order], TRICLINIC)
    assert abs(float(permuted[0] - energy)) < EXACT
    torch.testing.assert_close(permuted[1], forces[order], atol=1e-12, rtol=0)
    torch.testing.assert_close(permuted[2], per_atom[order], atol=1e-12, rtol=0)


def test_energy_is_extensive_beyond_the_interaction_range(local_model):
    positions, numbers = random_box(8, np.eye(3) * 2.5, seed=3)
    single = evaluate(local_model, positions, numbers)[0]
    # a copy more than R away: no pair of the two molecules is in range in any block
    gap = positions[:, 0].max() - positions[:, 0].min() + RANGE + 0.01
    pair = torch.cat([positions, positions + torch.tensor([float(gap), 0.0, 0.0], dtype=torch.float64)])
    assert abs(float(evaluate(local_model, pair, torch.cat([numbers, numbers]))[0] - 2 * single)) < EXACT


def test_a_cell_shorter_than_the_range_sees_every_image(local_model):
    """A 2x2x2 supercell has exactly 8 times the energy of its cell, though the cell (3.2 Å) is
    shorter than 2R: several images of one atom, and the atom's own images, are in range."""
    cell = np.array([[3.2, 0.0, 0.0], [0.4, 3.3, 0.0], [0.2, -0.3, 3.4]])
    positions, numbers = random_box(4, cell, seed=4)
    energy = evaluate(local_model, positions, numbers, cell)[0]
    images = torch.tensor([[a, b, c] for a in range(2) for b in range(2) for c in range(2)], dtype=torch.float64)
    offsets = images @ torch.tensor(cell)
    super_positions = (positions[None] + offsets[:, None]).reshape(-1, 3)
    super_energy = evaluate(local_model, super_positions, numbers.repeat(8), 2 * cell)[0]
    assert abs(float(super_energy - 8 * energy)) < 8 * EXACT


def test_forces_are_minus_the_energy_gradient(local_model):
    positions, numbers = random_box(30, TRICLINIC, seed=5)
    _, forces, _, _ = evaluate(local_model, positions, numbers, TRICLINIC)
    step = 1e-5
    for atom, axis in [(0, 0), (7, 1), (21, 2)]:
        plus, minus = positions.clone(), positions.clone()
        plus[atom, axis] += step
        minus[atom, axis] -= step
        numeric = -(
            evaluate(local_model, plus, numbers, TRICLINIC)[0] - evaluate(local_model, minus, numbers, TRICLINIC)[0]
        ) / (2 * step)
        assert abs(float(numeric - forces[atom, axis])) < 1e-7  # central difference error ~ step^2 * E'''


@pytest.mark.parametrize("cell", [ORTHORHOMBIC, TRICLINIC], ids=["orthorhombic", "triclinic"])
def test_virial_is_minus_the_strain_derivative(local_model, cell):
    """Finite differences of the cell: deform positions and cell together by (1 + e) and compare
    -dE/de with the virial the model returns."""
    positions, numbers = random_box(30, cell, seed=6)
    virial = evaluate(local_model, positions, numbers, cell)[3]
    step = 1e-6
    for i, j in [(0, 0), (1, 2), (2, 1), (2, 2)]:
        strain = np.zeros((3, 3))
        strain[i, j] = step
        energies = []
        for sign in (1, -1):
            deformation = torch.tensor(np.eye(3) + sign * strain)
            energies.append(evaluate(local_model, positions @ deformation, numbers, cell @ deformation.numpy())[0])
        numeric = -(energies[0] - energies[1]) / (2 * step)
        assert abs(float(numeric - virial[i, j])) < 1e-6


def test_energy_and_forces_are_continuous_where_an_atom_crosses_the_range(local_model):
    """Two atoms pulled apart through r = R: energy and force change smoothly across the crossing."""
    numbers = torch.tensor([8, 1])
    distances = RANGE + torch.linspace(-1e-3, 1e-3, 21, dtype=torch.float64)
    energies, forces = [], []
    for distance in distances:
        positions = torch.tensor([[0.0, 0.0, 0.0], [float(distance), 0.0, 0.0]], dtype=torch.float64)
        energy, force, _, _ = evaluate(local_model, positions, numbers)
        energies.append(float(energy))
        forces.append(float(force[1, 0]))
    energies, forces = np.array(energies), np.array(forces)
    # f_c vanishes with all derivatives at R: within 1e-3 Å of it, energy and force are flat to round-off
    assert np.ptp(energies) < 1e-12 and np.abs(forces).max() < 1e-9
    # and the far side equals two isolated atoms exactly
    apart = evaluate(local_model, torch.tensor([[0.0, 0, 0], [50.0, 0, 0]], dtype=torch.float64), numbers)[0]
    assert abs(energies[-1] - float(apart)) < EXACT


def test_neighbor_entry_point_with_ghost_atoms_equals_the_periodic_evaluation(local_model):
    """The LAMMPS path: local atoms plus explicit ghost images within the receptive field, a plain
    non-periodic pair list, energy of the local atoms only."""
    cell = TRICLINIC
    positions, numbers = random_box(24, cell, seed=7)
    energy, forces, per_atom, virial = evaluate(local_model, positions, numbers, cell)
    images = torch.tensor(
        [[a, b, c] for a in range(-2, 3) for b in range(-2, 3) for c in range(-2, 3) if (a, b, c) != (0, 0, 0)],
        dtype=torch.float64,
    )
    ghosts = (positions[None] + (images @ torch.tensor(cell))[:, None]).reshape(-1, 3)
    ghost_numbers = numbers.repeat(len(images))
    # keep ghosts within the receptive field (2 blocks x R) of some local atom
    near = torch.cdist(ghosts, positions).min(1).values < 2 * RANGE
    all_positions = torch.cat([positions, ghosts[near]])
    all_numbers = torch.cat([numbers, ghost_numbers[near]])
    calculator = vesin_torch.NeighborList(cutoff=RANGE, full_list=True)
    i, j = calculator.compute(all_positions, torch.zeros(3, 3, dtype=torch.float64), False, "ij")
    pairs = torch.stack([i.long(), j.long()])
    result = local_model.forward_neighbors(all_positions, all_numbers, pairs, len(positions), 0, 1)
    assert abs(float(result[0] - energy)) < EXACT
    torch.testing.assert_close(result[2], per_atom, atol=1e-12, rtol=0)
    # forces on ghosts belong to their owners (what LAMMPS's reverse communication does)
    owner = torch.cat([torch.arange(24), torch.arange(24).repeat(len(images))[near]])
    summed = torch.zeros_like(positions).index_add_(0, owner, result[1])
    torch.testing.assert_close(summed, forces, atol=1e-10, rtol=0)
    # the virial from pair gradients: W = -sum_e d_e (x) g_e
    displacement = all_positions[pairs[1]] - all_positions[pairs[0]]
    torch.testing.assert_close(-(displacement.T @ result[3]), virial, atol=1e-9, rtol=0)
    # ghosts are read, not updated: the last block updates only the local atoms, the first fewer than all
    from mdplugin.model.transformer import neighbor_slots, rows_to_update

    index, _, bias = neighbor_slots(
        all_positions, pairs[0], pairs[1], torch.zeros(pairs.size(1), 3, dtype=torch.float64), RANGE
    )
    rows = rows_to_update(index, bias, len(positions), 2)
    assert len(rows[1]) == len(positions) and len(positions) < len(rows[0]) < len(all_positions)


def test_bad_cells_get_clear_errors(local_model):
    positions, numbers = random_box(10, ORTHORHOMBIC, seed=8)
    with pytest.raises(torch.jit.Error, match="zero volume"):
        evaluate(local_model, positions, numbers, np.array([[5.0, 0, 0], [0, 5.0, 0], [5.0, 5.0, 0]]))
    with pytest.raises(torch.jit.Error, match="NaN or infinite"):
        evaluate(local_model, positions, numbers, np.diag([5.0, np.nan, 5.0]))
    with pytest.raises(torch.jit.Error, match="shape"):
        local_model(positions, numbers, 0, 1, torch.eye(2, dtype=torch.float64), PERIODIC)


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf")])
def test_interaction_range_must_be_positive(value):
    with pytest.raises(ValueError, match="interaction_range must be a positive"):
        ModelConfig(interaction_range=value)


def test_export_round_trip_keeps_the_periodic_energy(local_model, tmp_path):
    """An export file (contract v2) loads through the one loader and gives the scripted module's numbers."""
    torch.manual_seed(3)
    config = ModelConfig(elements=[1, 6, 7, 8], width=32, depth=2, heads=4, interaction_range=RANGE)
    model = TransformerPotential(config)
    model.energy_scale.fill_(2.0)
    checkpoint = tmp_path / "local.pt"
    save_checkpoint(build_checkpoint(model, {"date": "today", "data_sha256": {}}, {}), checkpoint)
    path = export(checkpoint, tmp_path / "local-export.pt", dtype="float64")
    model_file = open_model(path)
    assert model_file.metadata["format_version"] == 3 and model_file.metadata["model_kind"] == "local"
    assert model_file.info.is_local and model_file.info.interaction_range == RANGE
    assert model_file.info.receptive_field == 2 * RANGE
    potential = Potential.load(model_file)
    positions, numbers = random_box(30, TRICLINIC, seed=9)
    result = potential(positions.numpy(), numbers.numpy(), cell=TRICLINIC, pbc=[True, True, True])
    expected = evaluate(local_model, positions, numbers, TRICLINIC)
    assert abs(result.energy - float(expected[0])) < EXACT
    np.testing.assert_allclose(result.virial, expected[3].numpy(), atol=1e-10)
    # a float32 export of the same checkpoint agrees to float32 precision, even far from the origin
    single = Potential.load(export(checkpoint, tmp_path / "local-float32.pt", dtype="float32"))
    far = single(positions.numpy() + 1e6, numbers.numpy(), cell=TRICLINIC, pbc=[True, True, True])
    np.testing.assert_allclose(far.forces, result.forces, atol=2e-4)


def write_periodic_data(path, frames: int, seed: int):
    """Strained, rattled copies of a copper crystal (16 atoms), labelled with EMT: energy, forces, stress."""
    import ase.io
    from ase.build import bulk
    from ase.calculators.emt import EMT

    rng = np.random.default_rng(seed)
    base = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 1))
    structures = []
    for _ in range(frames):
        atoms = base.copy()
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + rng.normal(0, 0.02, (3, 3))), scale_atoms=True)
        atoms.positions += rng.normal(0, 0.08, atoms.positions.shape)
        atoms.calc = EMT()
        atoms.get_stress()
        structures.append(atoms)
    ase.io.write(path, structures, format="extxyz")
    return path


def test_training_on_periodic_data_with_stress_labels(tmp_path):
    """A local model trains on periodic frames with stress labels; its validation stress error drops."""
    import ase.io

    from mdplugin.model.checkpoint import load_model
    from mdplugin.training.dataset import read_structures
    from mdplugin.training.train import TrainingOptions, evaluate, train

    data = write_periodic_data(tmp_path / "box.extxyz", frames=48, seed=0)
    structures = read_structures(data)
    assert structures[0].virial is not None and structures[0].cell is not None
    options = TrainingOptions(
        train_files=[str(data)], output=str(tmp_path / "box.pt"), epochs=40, batch_size=8,
        model=ModelConfig(width=32, depth=2, heads=4, interaction_range=3.0), learning_rate=2e-3, threads=1, progress=False, seed=1,
    )  # fmt: skip
    train(options)
    history = torch.load(tmp_path / "box.pt", weights_only=True)["training"]["history"]
    assert "stress_mae_gpa" in history[0]
    # 240 steps of a tiny model: the errors fall several-fold (measured 2.6 -> 0.37 GPa, 610 -> 48 meV/Å;
    # 0.8 GPa and 110 meV/Å without the radial Gaussians)
    assert history[-1]["stress_mae_gpa"] < 0.6 * history[0]["stress_mae_gpa"]
    assert history[-1]["force_mae_mev_per_a"] < 0.6 * history[0]["force_mae_mev_per_a"]
    # the trainer's stress is the export's: -virial / volume, symmetrised
    model = load_model(tmp_path / "box.pt").double()
    potential = Potential.load(tmp_path / "box.pt", dtype="float64")
    atoms = ase.io.read(data, 0)
    result = potential.evaluate_atoms(atoms)
    predicted = -0.5 * (result.virial + result.virial.T) / atoms.get_volume()
    error = np.abs(predicted + structures[0].virial / atoms.get_volume()).mean() * GPA_PER_EV_PER_CUBIC_ANGSTROM
    # evaluate() reads float32 frames: agreement to float32 rounding (a sign, volume or unit slip is >= 0.1 GPa)
    assert error == pytest.approx(evaluate(model, structures[:1])["stress_mae_gpa"], abs=1e-5)
