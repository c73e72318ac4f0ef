"""The optional repulsive core (`mdplugin export --repulsion zbl`): zero wherever the training data reaches,
a smooth wall below it, inside the exported energy of both model kinds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import vesin_torch  # noqa: F401 - the local export's forward() calls its neighbour list

from mdplugin.export.exporter import export
from mdplugin.model.checkpoint import build_checkpoint, save_checkpoint
from mdplugin.model.repulsion import SWITCH_START, core_cutoffs
from mdplugin.model.transformer import ModelConfig, TransformerPotential

SHORTEST = {"H-H": 1.5, "H-O": 0.95, "O-O": 2.5}  # the training data's closest pairs, as a checkpoint records them


@pytest.fixture(scope="module", params=["global", "local"])
def exports(request, tmp_path_factory):
    """A tiny model of each kind, exported without and with the core (float64)."""
    torch.manual_seed(5)
    config = ModelConfig(
        elements=[1, 8], width=32, depth=2, heads=4, interaction_range=3.0 if request.param == "local" else None
    )
    directory = tmp_path_factory.mktemp(request.param)
    checkpoint = directory / "model.pt"
    domain = {"shortest_distance": SHORTEST}
    save_checkpoint(
        build_checkpoint(TransformerPotential(config), {"date": "test", "data_sha256": {}}, {}, domain=domain),
        checkpoint,
    )
    plain = torch.jit.load(str(export(checkpoint, directory / "plain.pt", dtype="float64")))
    core = torch.jit.load(str(export(checkpoint, directory / "core.pt", dtype="float64", repulsion="zbl")))
    return request.param, plain, core


def evaluate(module, positions: np.ndarray, numbers: list[int]):
    result = module.forward(torch.tensor(positions, dtype=torch.float64), torch.tensor(numbers), 0, 1)
    return float(result[0].detach()), result[1].detach().numpy()


def test_the_core_is_zero_where_the_training_data_reaches(exports):
    """Water molecules whose every pair is at least the shortest training distance: energies and forces are
    those of the model without the core, to the last bit."""
    _, plain, core = exports
    water = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
    positions = np.concatenate([water, water + [2.8, 0.3, 0.2], water + [0.2, 2.9, -0.4]])
    numbers = [8, 1, 1] * 3
    distances = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    names = {1: "H", 8: "O"}
    for i in range(9):
        for j in range(i + 1, 9):
            pair = "-".join(sorted((names[numbers[i]], names[numbers[j]]), key=lambda name: {"H": 1, "O": 8}[name]))
            assert distances[i, j] >= SHORTEST[pair]
    assert evaluate(plain, positions, numbers)[0] == evaluate(core, positions, numbers)[0]
    np.testing.assert_array_equal(evaluate(plain, positions, numbers)[1], evaluate(core, positions, numbers)[1])


@pytest.mark.parametrize(("pair", "numbers"), [("H-O", [8, 1]), ("O-O", [8, 8]), ("H-H", [1, 1])])
def test_a_diatomic_is_a_smooth_wall_below_the_shortest_distance(exports, pair, numbers):
    """E(r) of two atoms: strongly repulsive at short range (the bare model is not), monotonic below 0.75 of
    the shortest training distance, and its force the derivative of its energy across the switch."""
    _, plain, core = exports
    shortest = SHORTEST[pair]
    radii = np.linspace(0.1, 1.3 * shortest, 400)
    energies = np.array([evaluate(core, np.array([[0, 0, 0], [r, 0, 0]]), numbers)[0] for r in radii])
    forces = np.array([evaluate(core, np.array([[0, 0, 0], [r, 0, 0]]), numbers)[1][1, 0] for r in radii])
    bare = np.array([evaluate(plain, np.array([[0, 0, 0], [r, 0, 0]]), numbers)[0] for r in radii])
    inside = radii < SWITCH_START * shortest
    assert np.all(np.diff(energies[inside]) < 0), pair  # repulsive all the way in
    assert energies[0] - energies[-1] > 10.0  # eV at 0.1 Å
    np.testing.assert_array_equal(energies[radii >= shortest], bare[radii >= shortest])
    # F = -dE/dr on the second atom, across the switch (central differences on the grid, away from the
    # steepest part, where the grid is too coarse for them)
    step = radii[1] - radii[0]
    numeric = -(energies[2:] - energies[:-2]) / (2 * step)
    smooth = radii[1:-1] > 0.4
    scale = np.abs(numeric[smooth]).max()
    np.testing.assert_allclose(forces[1:-1][smooth], numeric[smooth], rtol=1e-3, atol=1e-3 * scale)


def test_cutoffs_come_from_the_data_or_the_covalent_radii():
    table, by_name = core_cutoffs([1, 6, 8], {"H-O": 0.95})
    assert by_name["H-O"] == 0.95 and table[0][2] == table[2][0] == 0.95
    assert by_name["C-C"] == pytest.approx(0.8 * 2 * 0.76)  # no C-C in the data: below any bond


def test_a_committee_carries_the_core_of_its_members(exports, tmp_path):
    """`mdplugin export m0.pt m1.pt --repulsion zbl`: member 0 is the single core export, in every method."""
    from mdplugin.export.committee import export_committee

    kind = exports[0]
    config = ModelConfig(
        elements=[1, 8], width=32, depth=2, heads=4, interaction_range=3.0 if kind == "local" else None
    )
    paths = []
    for seed in (5, 6):
        torch.manual_seed(seed)
        path = tmp_path / f"m{seed}.pt"
        save_checkpoint(
            build_checkpoint(
                TransformerPotential(config),
                {"date": "test", "data_sha256": {}},
                {},
                domain={"shortest_distance": SHORTEST},
            ),
            path,
        )
        paths.append(path)
    single = torch.jit.load(str(export(paths[0], tmp_path / "single.pt", dtype="float64", repulsion="zbl")))
    committee = torch.jit.load(
        str(export_committee(paths, tmp_path / "committee.pt", dtype="float64", repulsion="zbl"))
    )
    positions = np.array([[0.0, 0.0, 0.0], [0.6, 0.0, 0.0], [1.6, 0.4, 0.0]])  # an O-O pair deep in the core
    numbers = [8, 8, 1]
    assert evaluate(committee, positions, numbers)[0] == pytest.approx(
        evaluate(single, positions, numbers)[0], rel=1e-12
    )
    assert evaluate(single, positions, numbers)[0] > 50.0  # eV: the core, not the network


def test_the_per_block_energies_refuse_rows_that_do_not_match(exports):
    """exchange_energies with a core of another length than the tokens: an error, not a broadcast sum."""
    kind, _, core = exports
    if kind != "local":
        pytest.skip("the per-block methods are the local model's")
    tokens = core.exchange_tokens(torch.tensor([8, 1, 1]), 0, 1)
    with pytest.raises(Exception, match="one core energy per token row"):
        core.exchange_energies(tokens, torch.tensor([8, 1, 1]), torch.zeros(1, dtype=tokens.dtype))
