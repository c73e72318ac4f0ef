"""The one loader: every wrong, damaged or foreign model file gets a sentence naming the problem."""

from __future__ import annotations

import json
from pathlib import Path

import ase
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from export_files import Payload, swapped_symbols, with_metadata, with_pickle

import mdplugin
from mdplugin.cli import main
from mdplugin.engines.ase_calculator import TransformerCalculator
from mdplugin.export.contract import ExportError
from mdplugin.export.exporter import export
from mdplugin.export.model_file import ModelFileError, open_model
from mdplugin.model.checkpoint import CheckpointError, build_checkpoint
from mdplugin.model.transformer import ModelConfig, TransformerPotential

FIXTURES = Path(__file__).resolve().parents[1] / "export" / "fixtures"
TORCH_ADVICE = "weights_only"  # torch's suggestion to unpickle arbitrary code: never shown


def refused(path: Path) -> str:
    with pytest.raises((ValueError, FileNotFoundError)) as error:
        open_model(path).module()
    message = str(error.value)
    assert TORCH_ADVICE not in message and "Traceback" not in message
    return message


def test_empty_random_and_text_files(tmp_path):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    assert "empty (0 bytes)" in refused(empty)
    noise = tmp_path / "noise.pt"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    assert "not a torch archive" in refused(noise)
    with pytest.raises(ModelFileError, match="empty"):
        open_model(empty)


def test_a_pickle_with_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    torch.save({"format": "mdplugin-checkpoint", "payload": Payload(marker)}, path)
    message = refused(path)
    assert "never unpickles" in message
    assert not marker.exists()


def test_a_malicious_pickle_inside_an_export_is_refused(tmp_path):
    marker = tmp_path / "ran"
    path = with_pickle(FIXTURES / "tiny-float64.pt", tmp_path / "evil-export.pt", "data.pkl", Payload(marker))
    message = refused(path)
    assert "cannot read its model" in message
    assert not marker.exists()


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda record: {**record, "format_version": 7}, "format version 7"),
        (lambda record: {**record, "format": "other"}, "has format 'other'"),
        (lambda record: {k: v for k, v in record.items() if k != "dtype"}, "no 'dtype'"),
        (lambda record: {**record, "dtype": "float16"}, "unknown dtype"),
        (lambda record: {**record, "atomic_numbers": [6, 1, 7, 8]}, "corrupt or was edited"),
        (lambda record: [record], "not a JSON object"),
    ],
)
def test_damaged_metadata_names_the_check_that_failed(tmp_path, change, expected):
    path = with_metadata(FIXTURES / "tiny-float64.pt", tmp_path / "damaged.pt", record=change)
    assert expected in refused(path)


def test_invalid_json_metadata(tmp_path):
    from export_files import rewrite_entries

    path = rewrite_entries(FIXTURES / "tiny-float64.pt", tmp_path / "bad.pt", {"extra/mdplugin.json": b"{not json"})
    assert "not valid JSON" in refused(path)


def test_text_and_json_records_must_agree(tmp_path):
    """A reordered element list in mdplugin.txt would map H to carbon in C++ clients: refused everywhere."""
    path = swapped_symbols(FIXTURES / "tiny-float64.pt", tmp_path / "swapped.pt")
    assert "disagree about the elements" in refused(path)


def test_non_finite_weights_are_refused_by_export_and_loader(tmp_path):
    model = TransformerPotential(ModelConfig(width=16, depth=1, heads=2, coordinate_features=4))
    with torch.no_grad():
        model.head.weight[0, 0] = float("nan")
    checkpoint = tmp_path / "nan.pt"
    # save_checkpoint refuses NaN weights; a file from elsewhere (or an older mdplugin) may still hold them
    torch.save(build_checkpoint(model, {"date": "test", "data_sha256": {}}, {}), checkpoint)
    with pytest.raises(ExportError, match="non-finite weights"):
        export(checkpoint, tmp_path / "nan-export.pt")
    assert not (tmp_path / "nan-export.pt").exists()
    assert "non-finite weights" in refused(checkpoint)


def test_checkpoint_errors_say_what_failed(tmp_path):
    from mdplugin.model.checkpoint import read_checkpoint

    with pytest.raises(CheckpointError, match="exported TorchScript model"):
        read_checkpoint(FIXTURES / "tiny-float64.pt")
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(3)}, plain)
    assert "not an mdplugin checkpoint" in refused(plain)


def test_float32_export_keeps_its_digits_far_from_the_origin():
    """Positions are centred in float64 before the float32 model sees them."""
    case = json.loads((FIXTURES / "expected.json").read_text())["methanol"]
    model = mdplugin.load(FIXTURES / "tiny-float32.pt")
    positions = np.array(case["positions"])
    near = model(positions, case["symbols"])
    far = model(positions + 1e6, case["symbols"])
    np.testing.assert_allclose(far.forces, near.forces, atol=1e-5)
    np.testing.assert_allclose(far.forces, np.array(case["forces"]), atol=1e-4)


def test_fractional_or_huge_charge_is_an_error_not_a_truncation():
    model = mdplugin.load(FIXTURES / "tiny-float64.pt")
    positions = [[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]]
    with pytest.raises(ValueError, match="whole number"):
        model(positions, ["O", "H", "H"], charge=0.5)
    with pytest.raises(ValueError, match="far outside"):
        model(positions, ["O", "H", "H"], charge=2**70)


def test_ase_calculator_recomputes_when_the_charge_changes():
    atoms = ase.Atoms("OHH", positions=[[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
    atoms.calc = TransformerCalculator(FIXTURES / "tiny-float64.pt")
    neutral = atoms.get_potential_energy()
    atoms.info["charge"] = 1
    cation = atoms.get_potential_energy()
    atoms.info["multiplicity"] = 2
    doublet = atoms.get_potential_energy()
    direct = mdplugin.load(FIXTURES / "tiny-float64.pt")(atoms.positions, atoms.numbers, 1, 2).energy
    assert neutral != cation and cation != doublet and doublet == pytest.approx(direct, abs=1e-12)


@pytest.mark.filterwarnings("ignore:Please use")  # ASE suggests a newer finite-difference API
def test_ase_stress_equals_finite_differences_of_the_cell():
    import ase.io

    atoms = ase.io.read(FIXTURES / "water-box.extxyz")
    atoms.calc = TransformerCalculator(FIXTURES / "tiny-local-float64.pt")
    numeric = atoms.calc.calculate_numerical_stress(atoms, d=1e-5)
    np.testing.assert_allclose(atoms.get_stress(), numeric, atol=1e-7)


def test_evaluate_periodic_files(tmp_path):
    """A global model refuses a periodic file; a local model evaluates it and reports the pressure."""
    runner = CliRunner()
    box = FIXTURES / "water-box.extxyz"
    result = runner.invoke(main, ["evaluate", str(FIXTURES / "tiny-float64.pt"), str(box)])
    assert result.exit_code != 0 and "global attention" in result.output
    result = runner.invoke(main, ["evaluate", str(FIXTURES / "tiny-local-float64.pt"), str(box)])
    assert result.exit_code == 0, result.output
    expected = json.loads((FIXTURES / "expected-local.json").read_text())["water-box"]["energy"]
    assert f"energy: {expected:.6f} eV" in result.output and "pressure" in result.output
    pdb = tmp_path / "box.pdb"
    import ase.io

    ase.io.write(pdb, ase.io.read(box))  # CRYST1 line
    result = runner.invoke(main, ["evaluate", str(FIXTURES / "tiny-float64.pt"), str(pdb)])
    assert result.exit_code != 0 and "global attention" in result.output
    end_only = tmp_path / "end.pdb"
    end_only.write_text("END\n")
    result = runner.invoke(main, ["evaluate", str(FIXTURES / "tiny-float64.pt"), str(end_only)])
    assert result.exit_code != 0 and "Traceback" not in result.output


def test_python_api_chooses_and_restores_threads(monkeypatch):
    """Small systems run on one thread by default (torch's default can be 100x slower on a busy
    machine); an explicit count is used; torch's global setting is restored after each call."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, positions, numbers, charge: int, multiplicity: int):
            seen.append(torch.get_num_threads())
            return positions.sum(), positions, positions[:, 0]

    from mdplugin.export.loader import Potential
    from mdplugin.export.model_file import ModelInfo

    info = ModelInfo("global", ("H",), (1,), None, None, (0, 0), (1, 1), dtype="float64")
    Potential(Spy(), info)([[0.0, 0.0, 0.0]], [1])
    Potential(Spy(), info, threads=2)([[0.0, 0.0, 0.0]], [1])
    assert seen == [1, 2] and torch.get_num_threads() == before


def test_a_cell_without_pbc_is_an_error_not_an_isolated_structure():
    case = json.loads((FIXTURES / "expected-local.json").read_text())["water-box"]
    model = mdplugin.load(FIXTURES / "tiny-local-float64.pt")
    with pytest.raises(ValueError, match="without pbc"):
        model(case["positions"], case["symbols"], cell=case["cell"])
    periodic = model(case["positions"], case["symbols"], cell=case["cell"], pbc=[True] * 3)
    assert periodic.energy == pytest.approx(case["energy"], abs=1e-9)
