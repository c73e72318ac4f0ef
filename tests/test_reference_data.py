"""`mdplugin data`: GFN2-xTB reference data by Langevin MD with tblite (real xTB, tiny runs)."""

from __future__ import annotations

import re

import ase.io
import numpy as np
import pytest
from ase import Atoms
from click.testing import CliRunner

from mdplugin.cli.main import main
from mdplugin.data import molecules as rd
from mdplugin.data import trajectories
from mdplugin.training.dataset import read_structures

pytest.importorskip("tblite")
pytest.importorskip("rdkit")

TINY = rd.MDSettings(stride=2, equilibration_steps=4)


def _generate(out_dir, jobs=1, **options):
    water = rd.molecule_from_smiles("O", "water")
    return rd.generate([water], [300], out_dir, frames=3, test_frames=2, seed=7, settings=TINY, jobs=jobs, **options)


def _without_dates(text: str) -> str:
    return re.sub(r"created=\S+", "", text)


def test_frames_carry_the_xtb_energy_and_forces_of_their_geometry(tmp_path):
    from tblite.ase import TBLite

    results, combined = _generate(tmp_path)
    train = tmp_path / "water" / "water_300K_train.extxyz"
    assert {r.path for r in results} == {train, tmp_path / "water" / "water_300K_test.extxyz"}
    assert {p.name for p in combined} == {"train.extxyz", "test.extxyz", "test_300K.extxyz"}
    structures = read_structures(train)
    assert len(structures) == 3 and len(read_structures(tmp_path / "test.extxyz")) == 2
    for structure in structures:
        atoms = Atoms(numbers=structure.atomic_numbers, positions=structure.positions)
        atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
        assert structure.energy == pytest.approx(atoms.get_potential_energy(), rel=1e-8)
        np.testing.assert_allclose(structure.forces, atoms.get_forces(), atol=1e-6)
    frames = ase.io.read(train, index=":")
    assert [f.info["frame"] for f in frames] == [0, 1, 2]
    first = frames[0].info
    assert first["molecule"] == "water" and first["temperature_K"] == 300 and first["method"] == "GFN2-xTB"
    assert first["charge"] == 0 and first["multiplicity"] == 1 and first["tblite_version"]
    assert frames[0].get_momenta().any()
    test_seed = ase.io.read(tmp_path / "test.extxyz").info["trajectory_seed"]
    assert test_seed != first["trajectory_seed"]


def test_same_seed_same_frames_and_resume_equals_an_uninterrupted_run(tmp_path):
    _generate(tmp_path / "a", jobs=2)
    _generate(tmp_path / "b", jobs=2)
    train = tmp_path / "a" / "water" / "water_300K_train.extxyz"
    twin = tmp_path / "b" / "water" / "water_300K_train.extxyz"
    assert _without_dates(train.read_text()) == _without_dates(twin.read_text())

    complete = train.read_bytes()
    spans = trajectories.frame_spans(train)
    cut = spans[0][1] + (spans[1][1] - spans[1][0]) // 2  # one frame and half of the next
    twin.write_bytes(complete[:cut])
    with pytest.raises(FileExistsError, match="pass --resume to continue"):
        _generate(tmp_path / "b", jobs=2)
    results, _ = _generate(tmp_path / "b", jobs=2, resume=True)
    assert twin.read_bytes() == complete
    assert {r.path.name: r.written for r in results} == {"water_300K_train.extxyz": 2, "water_300K_test.extxyz": 0}


def test_resume_refuses_a_file_of_another_trajectory(tmp_path):
    _generate(tmp_path)
    train = tmp_path / "water" / "water_300K_train.extxyz"
    other = rd.plan([rd.molecule_from_smiles("O", "water")], [300], tmp_path, 5, 0, seed=8, settings=TINY)[0]
    with pytest.raises(ValueError, match="holds another trajectory.*pass --force"):
        trajectories.run_trajectory(other, resume=True)
    assert trajectories.count_frames(train) == 3


def test_bad_smiles_and_unsupported_elements_are_refused(tmp_path):
    with pytest.raises(ValueError, match="cannot parse the SMILES 'C1CC\\('"):
        rd.molecule_from_smiles("C1CC(")
    for symbol in ("Fr", "Og"):
        path = tmp_path / f"{symbol}.xyz"
        ase.io.write(path, Atoms(f"{symbol}H", positions=[[0, 0, 0], [0, 0, 2.5]]))
        with pytest.raises(ValueError, match=f"contains {symbol}; GFN2-xTB covers only H to Rn"):
            rd.molecule_from_file(path)
    radon = tmp_path / "rn.xyz"
    ase.io.write(radon, Atoms("Rn"))
    assert rd.molecule_from_file(radon).numbers.tolist() == [86]
    water = tmp_path / "water.xyz"
    ase.io.write(water, Atoms("OH2", positions=[[0, 0, 0], [0.76, 0.59, 0], [-0.76, 0.59, 0]]))
    with pytest.raises(ValueError, match="cannot have spin multiplicity 2"):
        rd.molecule_from_file(water, multiplicity=2)


def test_cli_generates_refuses_to_overwrite_and_reports_errors(tmp_path):
    runner = CliRunner()
    args = ["data", "generate", "O", "--name", "water", "-o", str(tmp_path), "--temperatures", "300"]
    args += [
        "--frames",
        "2",
        "--test-frames",
        "0",
        "--stride",
        "2",
        "--equilibration-steps",
        "2",
        "--jobs",
        "1",
        "--quiet",
    ]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert trajectories.count_frames(tmp_path / "water" / "water_300K_train.extxyz") == 2

    again = runner.invoke(main, args)
    assert again.exit_code != 0 and "exists; pass --resume" in again.output and "--force" in again.output
    assert runner.invoke(main, args + ["--resume"]).output.count("complete (2 frames), skipped") == 1
    assert runner.invoke(main, args + ["--force"]).exit_code == 0

    bad = runner.invoke(main, ["data", "generate", "C1CC(", "-o", str(tmp_path / "bad")])
    assert bad.exit_code != 0 and "cannot parse the SMILES" in bad.output
