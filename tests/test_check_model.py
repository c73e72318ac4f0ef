"""mdplugin_check (export/check_model.cpp): libtorch alone, without Python, reproduces the golden fixtures."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from export_files import Payload, swapped_symbols, with_pickle

from mdplugin.engines.lammps_plugin import build_plugin, checker_path
from mdplugin.export.exporter import export
from mdplugin.model.checkpoint import build_checkpoint, save_checkpoint
from mdplugin.model.transformer import ModelConfig, TransformerPotential

FIXTURES = Path(__file__).resolve().parent.parent / "export" / "fixtures"
STRUCTURES = ["water", "methanol", "methylamine-water"]


@pytest.fixture(scope="session")
def checker() -> Path:
    build_plugin()  # incremental: a no-op when the checker is up to date
    return checker_path()


def run_checker(checker: Path, *arguments: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(checker), *map(str, arguments)], capture_output=True, text=True, timeout=60)


def parse(output: str) -> dict:
    """The checker's line records: metadata, energy, forces, per-atom energies (file order)."""
    parsed = {"metadata": {}, "forces": [], "per_atom_energy": [], "symbols": []}
    for line in output.splitlines():
        record, _, rest = line.partition(" ")
        if record == "metadata":
            key, _, value = rest.partition("=")
            parsed["metadata"][key] = value
        elif record == "energy":
            parsed["energy"] = float(rest)
        elif record == "force":
            _, symbol, *values = rest.split()
            parsed["symbols"].append(symbol)
            parsed["forces"].append([float(v) for v in values])
        elif record == "per_atom_energy":
            parsed["per_atom_energy"].append(float(rest.split()[2]))
    return parsed


@pytest.mark.parametrize("name", STRUCTURES)
def test_float64_export_reproduces_the_fixture_numbers(checker, expected_fixtures, name):
    result = run_checker(checker, FIXTURES / "tiny-float64.pt", FIXTURES / f"{name}.xyz")
    assert result.returncode == 0, result.stderr
    parsed, reference = parse(result.stdout), expected_fixtures[name]
    # the same float64 TorchScript graph as Python; 17 printed digits round-trip a double exactly
    assert parsed["symbols"] == reference["symbols"]
    assert parsed["energy"] == pytest.approx(reference["energy"], rel=1e-10)
    scale = np.abs(reference["forces"]).max()
    np.testing.assert_allclose(parsed["forces"], reference["forces"], rtol=1e-10, atol=1e-10 * scale)
    np.testing.assert_allclose(parsed["per_atom_energy"], reference["per_atom_energy"], rtol=1e-10)


@pytest.mark.parametrize("name", STRUCTURES)
def test_float32_export_agrees_to_single_precision(checker, expected_fixtures, name):
    result = run_checker(checker, FIXTURES / "tiny-float32.pt", FIXTURES / f"{name}.xyz")
    assert result.returncode == 0, result.stderr
    parsed, reference = parse(result.stdout), expected_fixtures[name]
    # float32 keeps ~7 significant digits: measured 1e-7 relative energy, 5e-8 eV/Å forces
    assert parsed["energy"] == pytest.approx(reference["energy"], rel=1e-6)
    np.testing.assert_allclose(parsed["forces"], reference["forces"], atol=1e-6)


def test_metadata_is_the_exports_mdplugin_txt(checker):
    result = run_checker(checker, FIXTURES / "tiny-float64.pt")
    assert result.returncode == 0, result.stderr
    metadata = parse(result.stdout)["metadata"]
    assert metadata["format"] == "mdplugin-export"
    assert metadata["format_version"] == "1"
    assert metadata["dtype"] == "float64"
    assert metadata["elements"] == "H C N O"
    assert metadata["atomic_numbers"] == "1 6 7 8"
    assert metadata["interaction_range"] == "none"


def test_a_file_that_is_not_an_export_is_a_clear_error(checker, tmp_path):
    (tmp_path / "notes.pt").write_text("not a model\n")
    result = run_checker(checker, tmp_path / "notes.pt")
    assert result.returncode == 1
    assert "is not a valid TorchScript export" in result.stderr and "mdplugin export" in result.stderr

    torch.jit.save(torch.jit.script(torch.nn.Linear(3, 1)), str(tmp_path / "plain.pt"))
    result = run_checker(checker, tmp_path / "plain.pt")
    assert result.returncode == 1
    assert "without mdplugin metadata" in result.stderr


def test_a_compiled_export_is_named_as_such(checker, tmp_path):
    """A .pt2 file (an AOT-Inductor package: `mdplugin export --compile`) is not TorchScript; the message says
    which file to give instead. Any zip archive of that name takes the same path."""
    import zipfile

    with zipfile.ZipFile(tmp_path / "model-export.pt2", "w") as archive:
        archive.writestr("model-export/extra/mdplugin.txt", "format=mdplugin-export\nformat_version=4\n")
    result = run_checker(checker, tmp_path / "model-export.pt2")
    assert result.returncode == 1
    assert "is a compiled export" in result.stderr and "without --compile" in result.stderr


def test_missing_file_and_unknown_element_are_clear_errors(checker, tmp_path):
    result = run_checker(checker, tmp_path / "missing.pt")
    assert result.returncode == 1 and "cannot open model file" in result.stderr

    (tmp_path / "fluoromethane.xyz").write_text("2\n\nC 0 0 0\nF 0 0 1.38\n")
    result = run_checker(checker, FIXTURES / "tiny-float64.pt", tmp_path / "fluoromethane.xyz")
    assert result.returncode == 1 and "element 'F' is not one of the model's elements (H C N O)" in result.stderr


def test_model_exceptions_are_reported_with_their_message(checker):
    result = run_checker(checker, FIXTURES / "tiny-float64.pt", FIXTURES / "water.xyz", "--charge", "100")
    assert result.returncode == 1
    assert "ValueError: total charge 100 is outside the model's range" in result.stderr


def test_element_symbols_that_disagree_with_their_atomic_numbers_are_refused(checker, tmp_path):
    """mdplugin.txt saying "elements=C H N O" beside "atomic_numbers=1 6 7 8" would map H to carbon."""
    corrupt = swapped_symbols(FIXTURES / "tiny-float64.pt", tmp_path / "swapped.pt")
    result = run_checker(checker, corrupt, FIXTURES / "water.xyz")
    assert result.returncode == 1
    assert "pairs element C with atomic number 1, but C is 6" in result.stderr
    assert "energy" not in result.stdout


@pytest.mark.parametrize("entry", ["data.pkl", "constants.pkl"])
def test_a_pickle_that_names_a_function_is_refused_without_running_it(checker, tmp_path, entry):
    marker = tmp_path / "executed"
    corrupt = with_pickle(FIXTURES / "tiny-float64.pt", tmp_path / "malicious.pt", entry, Payload(marker))
    result = run_checker(checker, corrupt, FIXTURES / "water.xyz")
    assert result.returncode == 1, result.stderr  # an error, not a crash (a signal gives a negative code)
    assert "is not a valid TorchScript export" in result.stderr and "mdplugin export" in result.stderr
    assert not marker.exists()


def test_a_pickle_of_another_object_is_refused_not_asserted(checker, tmp_path):
    """libtorch fails an internal assert when data.pkl holds no module; the checker names the file instead."""
    corrupt = with_pickle(FIXTURES / "tiny-float64.pt", tmp_path / "dictionary.pt", "data.pkl", {"weights": [1, 2]})
    result = run_checker(checker, corrupt, FIXTURES / "water.xyz")
    assert result.returncode == 1
    assert "is not a valid TorchScript export (its pickled contents are not a TorchScript module)" in result.stderr
    assert "INTERNAL ASSERT" not in result.stderr


def test_a_local_export_is_evaluated_as_an_isolated_structure(checker, tmp_path):
    """Contract v2: the checker links vesin-torch, which the local export's forward() calls, and passes
    no cell, so the numbers are those of Python's forward without a cell."""
    import vesin_torch  # noqa: F401 - torch.jit.load of a local export needs its neighbour list class

    torch.manual_seed(5)
    model = TransformerPotential(ModelConfig(elements=[1, 6, 7, 8], width=16, depth=2, heads=2, interaction_range=2.0))
    model.energy_scale.fill_(2.0)
    save_checkpoint(build_checkpoint(model, {"date": "test", "data_sha256": {}}, {}), tmp_path / "local.pt")
    path = export(tmp_path / "local.pt", tmp_path / "local-export.pt", dtype="float64")
    result = run_checker(checker, path, FIXTURES / "methylamine-water.xyz")
    assert result.returncode == 0, result.stderr
    parsed = parse(result.stdout)
    assert parsed["metadata"]["model_kind"] == "local" and parsed["metadata"]["format_version"] == "3"
    structure = [line.split() for line in (FIXTURES / "methylamine-water.xyz").read_text().splitlines()[2:]]
    positions = torch.tensor([[float(v) for v in row[1:4]] for row in structure], dtype=torch.float64)
    numbers = torch.tensor([{"H": 1, "C": 6, "N": 7, "O": 8}[row[0]] for row in structure])
    energy, forces, _, _ = torch.jit.load(str(path))(positions, numbers, 0, 1, None, None)
    # the same float64 graph in libtorch and in Python
    assert parsed["energy"] == pytest.approx(float(energy.detach()), rel=1e-12)
    np.testing.assert_allclose(parsed["forces"], forces.detach().numpy(), rtol=0, atol=1e-12)


def write_extxyz(path: Path, structure: dict) -> Path:
    """Extended XYZ with every digit of the positions (the fixture file keeps 8 decimals)."""
    cell = " ".join(repr(float(value)) for row in structure["cell"] for value in row)
    pbc = " ".join("T" if periodic else "F" for periodic in structure["pbc"])
    lines = [str(len(structure["symbols"])), f'Lattice="{cell}" Properties=species:S:1:pos:R:3 pbc="{pbc}"']
    lines += [f"{s} {x!r} {y!r} {z!r}" for s, (x, y, z) in zip(structure["symbols"], structure["positions"])]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_local_export_on_a_periodic_box_reproduces_the_fixture(checker, tmp_path):
    """The Lattice of an extended XYZ file reaches the local model's forward as its cell."""
    reference = json.loads((FIXTURES / "expected-local.json").read_text())["water-box"]
    result = run_checker(checker, FIXTURES / "tiny-local-float64.pt", write_extxyz(tmp_path / "box.xyz", reference))
    assert result.returncode == 0, result.stderr
    parsed = parse(result.stdout)
    virial = [
        float(v) for v in next(line for line in result.stdout.splitlines() if line.startswith("virial ")).split()[1:]
    ]
    # the same float64 graph as Python, on the same positions
    assert parsed["energy"] == pytest.approx(reference["energy"], rel=1e-12)
    scale = np.abs(reference["forces"]).max()
    np.testing.assert_allclose(parsed["forces"], reference["forces"], rtol=0, atol=1e-10 * scale)
    np.testing.assert_allclose(parsed["per_atom_energy"], reference["per_atom_energy"], rtol=1e-12)
    np.testing.assert_allclose(np.reshape(virial, (3, 3)), reference["virial"], rtol=0, atol=1e-10)


def test_a_periodic_structure_is_refused_for_a_global_model(checker):
    result = run_checker(checker, FIXTURES / "tiny-float64.pt", FIXTURES / "water-box.extxyz")
    assert result.returncode == 1
    assert "is periodic" in result.stderr and "global attention" in result.stderr
