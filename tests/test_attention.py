"""The attention analysis: its hand-run blocks are the model, its weights are distributions, its CLI writes files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import FIXTURES, pad_molecules, random_molecule

from mdplugin.analysis.attention import fit_decay, forward_with_attention, radius_holding, structure_attention
from mdplugin.cli.main import main


def padded_batch(sizes: list[int]) -> tuple[torch.Tensor, ...]:
    """Two random molecules padded to one batch, with charges and multiplicities."""
    positions, species, mask = pad_molecules([random_molecule(n, seed=20 + n) for n in sizes])
    return positions, species, mask, torch.tensor([0, 1]), torch.tensor([1, 2])


def test_manual_forward_reproduces_the_model(small_model):
    batch = padded_batch([9, 6])
    expected = small_model(*batch)
    per_atom, _ = forward_with_attention(small_model, *batch)
    # the same operations in the same order in float64: only summation-order round-off may differ
    torch.testing.assert_close(per_atom, expected, rtol=0, atol=1e-12)


def test_attention_rows_are_distributions_over_real_atoms(small_model):
    batch = padded_batch([9, 6])
    _, layers = forward_with_attention(small_model, *batch)
    assert len(layers) == small_model.config.depth
    for weights in layers:
        assert weights.shape == (2, small_model.config.heads, 9, 9)
        assert bool((weights >= 0).all())
        torch.testing.assert_close(weights.sum(-1), torch.ones_like(weights.sum(-1)), rtol=0, atol=1e-12)
        assert float(weights[1, :, :, 6:].abs().max()) == 0.0  # padding keys get no attention


def test_radius_holding_and_decay_fit_on_known_inputs():
    distances = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 3.0], [2.0, 3.0, 0.0]])
    weights = np.array([[[0.5, 0.45, 0.05], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]]])
    # query 0 reaches 90% at 1 Å, query 1 needs its farthest atom (3 Å), query 2 reaches 0.7 at 2 Å, 1.0 at 3 Å
    np.testing.assert_allclose(radius_holding(weights, distances), [[1.0, 3.0, 3.0]])
    r = np.linspace(0.5, 5.0, 10)
    fit = fit_decay(r, 0.3 * np.exp(-r / 1.7), np.ones_like(r))
    assert fit["decay_length"] == pytest.approx(1.7) and fit["amplitude"] == pytest.approx(0.3)
    assert fit_decay(r, np.exp(r), np.ones_like(r))["decay_length"] is None  # growing weights: no decay length


def test_structure_attention_refuses_unknown_elements(small_model):
    with pytest.raises(ValueError, match="not among the model's elements"):
        structure_attention(small_model, np.zeros((2, 3)), np.array([1, 26]))


def test_cli_writes_json_and_plot(tmp_path):
    output = tmp_path / "attention"
    arguments = [
        "analyze",
        "attention",
        str(FIXTURES / "methylamine-water.xyz"),
        "--model",
        str(FIXTURES / "tiny.pt"),
        "-o",
        str(output),
    ]
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 0, result.output
    summary = json.loads((output / "attention.json").read_text())
    assert (output / "attention.png").stat().st_size > 0
    assert len(summary["layers"]) == 2 and len(summary["layers"][0]["heads"]) == 4
    for layer in summary["layers"]:
        assert 0 < layer["radius_90"] <= max(layer["binned"]["distance"]) + summary["bin_width_angstrom"]
        assert layer["weighted_mean_distance"] > 0
    again = CliRunner().invoke(main, arguments)  # nothing is overwritten without --force
    assert again.exit_code != 0 and "--force" in again.output


def test_cli_refuses_an_export_with_a_clear_error(tmp_path):
    arguments = [
        "analyze",
        "attention",
        str(FIXTURES / "water.xyz"),
        "--model",
        str(FIXTURES / "tiny-float64.pt"),
        "-o",
        str(tmp_path),
    ]
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code != 0 and "training checkpoint" in result.output


def test_cli_refuses_one_atom_and_local_models(tmp_path):
    one_atom = tmp_path / "atom.xyz"
    one_atom.write_text("1\n\nO 0.0 0.0 0.0\n")
    base = ["analyze", "attention", "--model", str(FIXTURES / "tiny.pt"), "-o", str(tmp_path / "out")]
    result = CliRunner().invoke(main, [*base[:2], str(one_atom), *base[2:]])
    assert result.exit_code != 0 and "at least two" in result.output and "Traceback" not in result.output
    local = ["analyze", "attention", str(FIXTURES / "water.xyz"), "--model", str(FIXTURES / "tiny-local.pt")]
    result = CliRunner().invoke(main, [*local, "-o", str(tmp_path / "local")])
    assert result.exit_code != 0 and "local model" in result.output
