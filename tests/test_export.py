"""The exporter and the export contract: parity, metadata, refusals, and the Python and ASE clients."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS
from click.testing import CliRunner
from conftest import FIXTURES

import mdplugin
from mdplugin.cli.main import main
from mdplugin.engines.ase_calculator import TransformerCalculator
from mdplugin.export.contract import ExportError, read_export_metadata
from mdplugin.export.exporter import default_output_path, export
from mdplugin.export.model_file import open_model
from mdplugin.model.checkpoint import build_checkpoint, save_checkpoint


@pytest.fixture()
def checkpoint(tmp_path, small_model):
    path = tmp_path / "model.pt"
    small_model.reference_energies.copy_(torch.tensor([-10.7, -48.8, -71.0, -102.6], dtype=torch.float64))
    save_checkpoint(
        build_checkpoint(small_model.float(), {"data_sha256": {"train.xyz": "abc"}, "date": "today"}, {}), path
    )
    return path


def eager_reference(checkpoint_path, positions, numbers):
    """Energy and forces of the checkpoint's model in float64, without TorchScript."""
    from mdplugin.export.exporter import ExportedPotential
    from mdplugin.model.checkpoint import load_model

    model = ExportedPotential(load_model(checkpoint_path).double())
    energy, forces, _ = model(torch.as_tensor(positions, dtype=torch.float64), torch.as_tensor(numbers), 0, 1)
    return energy.item(), forces.detach().numpy()


@pytest.mark.parametrize("name", ["water", "methanol", "methylamine-water"])
def test_float64_export_matches_the_python_model(checkpoint, expected_fixtures, name):
    path = export(checkpoint, dtype="float64")
    structure = expected_fixtures[name]
    positions, numbers = (
        np.array(structure["positions"]),
        [mdplugin.elements.atomic_number(s) for s in structure["symbols"]],
    )
    result = mdplugin.load(path)(positions, numbers)
    energy, forces = eager_reference(checkpoint, positions, numbers)
    assert abs(result.energy - energy) <= 1e-10 * abs(energy)
    assert np.abs(result.forces - forces).max() <= 1e-8 * np.abs(forces).max()
    assert result.per_atom_energy.sum() == pytest.approx(result.energy, rel=1e-12)


def test_float32_export_is_within_1e_5(checkpoint, expected_fixtures):
    path = export(checkpoint, dtype="float32")
    for structure in expected_fixtures.values():
        positions = np.array(structure["positions"])
        numbers = [mdplugin.elements.atomic_number(s) for s in structure["symbols"]]
        result = mdplugin.load(path)(positions, numbers)
        energy, forces = eager_reference(checkpoint, positions, numbers)
        # float32 keeps ~7 digits; energies of ~100 eV and forces of ~0.1 eV/Å both pass 1e-5 relative
        assert abs(result.energy - energy) <= 1e-5 * abs(energy)
        assert np.abs(result.forces - forces).max() <= 1e-5 * max(np.abs(forces).max(), 1.0)


def test_golden_fixtures_are_reproduced(expected_fixtures):
    potential = mdplugin.load(FIXTURES / "tiny-float64.pt")
    for structure in expected_fixtures.values():
        result = potential(np.array(structure["positions"]), structure["symbols"])
        assert result.energy == pytest.approx(structure["energy"], rel=1e-12)
        np.testing.assert_allclose(result.forces, structure["forces"], rtol=1e-8, atol=1e-12)


def test_metadata_is_inside_the_file(checkpoint):
    path = export(checkpoint, dtype="float64")
    metadata = read_export_metadata(path)
    assert metadata["format"] == "mdplugin-export" and metadata["format_version"] == 1
    assert metadata["elements"] == ["H", "C", "N", "O"]
    assert metadata["units"] == {"positions": "angstrom", "energy": "eV", "forces": "eV/angstrom"}
    assert metadata["interaction_range"] is None
    assert metadata["dtype"] == "float64"
    assert len(metadata["provenance"]["checkpoint_sha256"]) == 64
    assert metadata["provenance"]["training_data_sha256"] == {"train.xyz": "abc"}
    extra = {"mdplugin.txt": ""}
    torch.jit.load(str(path), _extra_files=extra)
    assert b"elements=H C N O\n" in extra["mdplugin.txt"]


def test_export_never_overwrites_and_never_collides_with_its_input(checkpoint):
    assert default_output_path(checkpoint) != checkpoint
    path = export(checkpoint)
    with pytest.raises(FileExistsError, match="--force"):
        export(checkpoint)
    export(checkpoint, overwrite=True)
    with pytest.raises(ExportError, match="overwrite its own checkpoint"):
        export(checkpoint, output=checkpoint, overwrite=True)
    assert path.is_file()


def test_unknown_format_version_is_refused(checkpoint, tmp_path):
    path = export(checkpoint)
    future = tmp_path / "future.pt"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(future, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename.endswith("extra/mdplugin.json"):
                metadata = json.loads(data)
                metadata["format_version"] = 99
                data = json.dumps(metadata).encode()
            target.writestr(item, data)
    with pytest.raises(ExportError, match="format version 99"):
        open_model(future).module()


def test_a_file_that_is_not_an_export_is_refused(tmp_path, checkpoint):
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(ExportError, match="not a TorchScript export"):
        read_export_metadata(text)
    with pytest.raises(ExportError, match="without mdplugin metadata"):
        read_export_metadata(checkpoint)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        mdplugin.load(tmp_path / "missing.pt")


@pytest.mark.parametrize(
    "positions, numbers, message",
    [
        (np.zeros((3, 2)), [1, 1, 8], "shape \\[N, 3\\]"),
        (np.array([[0.0, 0, 0], [np.nan, 0, 0]]), [1, 1], "NaN"),
        (np.zeros((2, 3)) + [[0, 0, 0], [1, 0, 0]], [1, 26], "atomic number 26 is not one of the model's elements"),
        (np.zeros((0, 3)), [], "no atoms"),
    ],
)
def test_bad_input_gives_a_clear_error(positions, numbers, message):
    potential = mdplugin.load(FIXTURES / "tiny-float64.pt")
    with pytest.raises(ValueError, match=message):
        potential(positions, numbers)


def test_unknown_symbol_gives_a_clear_error():
    with pytest.raises(ValueError, match="unknown element symbol 'Xx'"):
        mdplugin.load(FIXTURES / "tiny-float64.pt")([[0, 0, 0]], ["Xx"])


def test_ase_calculator_equals_the_export(expected_fixtures):
    structure = expected_fixtures["methanol"]
    atoms = Atoms(structure["symbols"], positions=structure["positions"])
    atoms.calc = TransformerCalculator(FIXTURES / "tiny-float64.pt")
    assert atoms.get_potential_energy() == pytest.approx(structure["energy"], rel=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), structure["forces"], rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(atoms.get_potential_energies(), structure["per_atom_energy"], rtol=1e-10)


def test_ase_velocity_verlet_conserves_energy(expected_fixtures):
    """NVE with Velocity Verlet at 0.25 fs, 400 steps (0.1 ps).

    Verlet's energy error is bounded and O(dt²): for a small molecule at ~300 K with a smooth
    potential, fluctuations are ~1e-4 eV; with a conservative model the drift must stay below
    1 meV/atom over 0.1 ps (a non-conservative or jumpy energy drifts by far more).
    """
    from ase.md.velocitydistribution import thermalize_momenta

    structure = expected_fixtures["methanol"]
    atoms = Atoms(structure["symbols"], positions=structure["positions"])
    atoms.calc = TransformerCalculator(FIXTURES / "tiny-float64.pt")
    BFGS(atoms, logfile=None).run(fmax=0.05, steps=50)
    thermalize_momenta(atoms, 300, rng=np.random.default_rng(0))
    dynamics = VelocityVerlet(atoms, timestep=0.25 * units.fs)
    totals = []
    for _ in range(40):
        dynamics.run(10)
        totals.append(atoms.get_total_energy())
    excursion = (max(totals) - min(totals)) / len(atoms)
    assert excursion < 1e-3, excursion


def test_ase_calculator_refuses_periodic_cells():
    atoms = Atoms("H2O", positions=[[0, 0, 0], [0.95, 0, 0], [0, 0.95, 0]], cell=[10, 10, 10], pbc=True)
    atoms.calc = TransformerCalculator(FIXTURES / "tiny-float64.pt")
    with pytest.raises(ValueError, match="periodic"):
        atoms.get_potential_energy()


def test_cli_export_and_info(checkpoint):
    runner = CliRunner()
    result = runner.invoke(main, ["export", str(checkpoint), "--dtype", "float64"])
    assert result.exit_code == 0, result.output
    exported = default_output_path(checkpoint)
    again = runner.invoke(main, ["export", str(checkpoint)])
    assert again.exit_code != 0 and "--force" in again.output
    info = runner.invoke(main, ["info", str(exported), "--json"])
    assert json.loads(info.output)["elements"] == ["H", "C", "N", "O"]
    readable = runner.invoke(main, ["info", str(checkpoint)])
    assert "kind: checkpoint" in readable.output
    bad = runner.invoke(main, ["info", str(FIXTURES / "water.xyz")])
    assert bad.exit_code != 0 and "neither an mdplugin checkpoint nor an export" in bad.output
