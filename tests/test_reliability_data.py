"""Reliability of the data and training paths (issue 25): no user file replaced, no silent wrong answer."""

from __future__ import annotations

from pathlib import Path

import ase.io
import pytest
from click.testing import CliRunner

from mdplugin.cli.main import main

# ---------------------------------------------------------------------------- --resume keeps a user's own files

# 8 waters at 1 g/cm^3 fill a 6.2 Å cube, so the SPC/Fw cutoff stays below half of it
WATER = ["data", "water", "--labels", "classical", "--waters", "8", "--cutoff-angstrom", "3", "--switch-angstrom"]
WATER += ["2.5", "--temperatures", "300", "--densities", "1.0", "--test-frames", "0", "--stride", "5"]
WATER += ["--equilibration-steps", "10", "--jobs", "1", "--quiet"]
# a water molecule from SMILES: three atoms of GFN2-xTB per step
GENERATE = ["data", "generate", "O", "--temperatures", "300", "--test-frames", "0", "--stride", "2"]
GENERATE += ["--equilibration-steps", "2", "--jobs", "1", "--quiet"]


def _own_file(path: Path) -> bytes:
    """A training set a user keeps in the output directory: one frame of their own, made with ASE."""
    from ase.build import molecule
    from ase.calculators.emt import EMT

    atoms = molecule("H2O")
    atoms.calc = EMT()
    atoms.get_potential_energy()
    ase.io.write(path, atoms, format="extxyz")
    return path.read_bytes()


@pytest.mark.parametrize("command", [WATER, GENERATE], ids=["water", "generate"])
def test_resume_never_replaces_a_users_own_combined_file(tmp_path, command):
    out = tmp_path / "out"
    first = CliRunner().invoke(main, command + ["--frames", "1", "-o", str(out)])
    assert first.exit_code == 0, first.output
    # a combined file this command wrote is brought up to date by --resume
    more = CliRunner().invoke(main, command + ["--frames", "2", "--resume", "-o", str(out)])
    assert more.exit_code == 0, more.output
    assert len(ase.io.read(out / "train.extxyz", ":")) == 2
    # a file of the user's own under that name is not
    own = _own_file(out / "train.extxyz")
    again = CliRunner().invoke(main, command + ["--frames", "3", "--resume", "-o", str(out)])
    assert again.exit_code != 0
    assert "train.extxyz is not the combined file" in again.output and "--force" in again.output
    assert (out / "train.extxyz").read_bytes() == own
    # asked to, it is overwritten
    forced = CliRunner().invoke(main, command + ["--frames", "1", "--force", "-o", str(out)])
    assert forced.exit_code == 0, forced.output
    assert (out / "train.extxyz").read_bytes() != own
