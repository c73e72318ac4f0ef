"""`mdplugin run` when things go wrong: restarts of another run, blow-ups, absurd inputs, interrupted
runs, output folders, runs outside the model's training domain, and the torch thread choice."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mdtraj
import numpy as np
import openmm
import pytest
import torch
from click.testing import CliRunner

from mdplugin.cli.main import main
from mdplugin.dcd import read_dcd_header
from mdplugin.md.reporters import DomainCheck, RunFailed, RunWarning, StateReporter
from mdplugin.md.simulate import read_state_data
from mdplugin.threads import MOST_THREADS, choose_threads

FIXTURES = Path(__file__).resolve().parents[1] / "export" / "fixtures"
MODEL = str(FIXTURES / "tiny-float64.pt")
CHECKPOINT = FIXTURES / "tiny.pt"
SHIPPED = str(Path(__file__).resolve().parents[1] / "examples" / "models" / "md17-export.pt")
WATER = str(FIXTURES / "water.xyz")
METHANOL = str(FIXTURES / "methanol.xyz")


def run(*arguments: str):
    return CliRunner().invoke(main, ["run", *arguments], catch_exceptions=False)


def water_run(output: Path | str, *extra: str, steps: str = "20"):
    """Water on the Reference platform, a row and a frame every 5 steps, a checkpoint every 10."""
    return run(WATER, "--model", MODEL, "-o", str(output), "--steps", steps, "--report-interval", "5",
               "--checkpoint-interval", "10", "--platform", "Reference", "--seed", "5", "--threads", "1", "--quiet",
               *extra)  # fmt: skip


def checkpoint_with_domain(path: Path, shortest: dict[str, float]) -> str:
    """The tiny fixture checkpoint with a training-domain record (neutral singlets only)."""
    checkpoint = torch.load(CHECKPOINT, map_location="cpu", weights_only=True)
    checkpoint["domain"] = {"shortest_distance": shortest, "charges": [0], "multiplicities": [1]}
    torch.save(checkpoint, path)
    return str(path)


# --------------------------------------------------------------------------------------- restart


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--structure-override", METHANOL), "structure: the checkpoint holds 3 atoms (OH2), the structure given 6"),
        (("--model", str(FIXTURES / "tiny-float32.pt")), "model: the checkpoint was run with"),
        (("--temperature-k", "3000"), "--temperature-k was 300.0, now 3000.0"),
        (("--timestep-fs", "1"), "--timestep-fs was 0.5, now 1.0"),
        (("--ensemble", "nve"), "--ensemble was nvt, now nve"),
    ],
    ids=["structure", "model", "temperature", "timestep", "ensemble"],
)
def test_restart_refuses_a_checkpoint_of_another_run(tmp_path, extra, message):
    prefix = tmp_path / "water"
    assert water_run(prefix).exit_code == 0
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    structure, model, options = WATER, MODEL, list(extra)
    if options[0] == "--structure-override":
        structure, options = options[1], []
    elif options[0] == "--model":
        model, options = options[1], []
    result = run(structure, "--model", model, "-o", str(prefix), "--steps", "10", "--report-interval", "5",
                 "--platform", "Reference", "--threads", "1", "--quiet", "--restart", f"{prefix}.chk", *options)  # fmt: skip
    assert result.exit_code != 0
    assert "belongs to a different run" in result.output and message in result.output, result.output
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before  # nothing touched


def test_a_checkpoint_without_its_run_record_continues_with_a_warning(tmp_path):
    assert water_run(tmp_path / "water", steps="10").exit_code == 0
    shutil.copy(tmp_path / "water.chk", tmp_path / "moved.chk")  # without water-run.json beside it
    result = water_run(tmp_path / "water", "--restart", str(tmp_path / "moved.chk"), steps="5")
    assert result.exit_code == 0, result.output
    assert "moved-run.json is missing, so mdplugin cannot check that" in result.output
    assert "ending at step 15" in result.output


def dcd_frames(prefix: Path) -> tuple[np.ndarray, list[int]]:
    """Positions (nm) of every frame and the step of each, from the DCD header."""
    trajectory = mdtraj.load(f"{prefix}.dcd", top=f"{prefix}-topology.pdb")
    header = read_dcd_header(Path(f"{prefix}.dcd"))
    assert header.frames == trajectory.n_frames
    return trajectory.xyz, [header.first_step + i * header.interval for i in range(header.frames)]


def test_a_resumed_interrupted_run_has_each_step_once(tmp_path):
    """A run killed after its step-10 checkpoint has written rows and frames up to step 15; resuming
    from that checkpoint must give the files of an uninterrupted run (Reference: bit for bit)."""
    assert water_run(tmp_path / "whole").exit_code == 0
    prefix = tmp_path / "split"
    assert water_run(prefix, steps="10").exit_code == 0
    shutil.copy(f"{prefix}.chk", tmp_path / "step10.chk")
    assert water_run(prefix, "--restart", f"{prefix}.chk", steps="5").exit_code == 0  # to step 15
    shutil.copy(tmp_path / "step10.chk", f"{prefix}.chk")  # ... and killed before its final checkpoint
    result = water_run(prefix, "--restart", f"{prefix}.chk", steps="10")
    assert result.exit_code == 0, result.output
    assert "ending at step 20" in result.output
    whole_positions, whole_steps = dcd_frames(tmp_path / "whole")
    positions, steps = dcd_frames(prefix)
    assert steps == whole_steps == [5, 10, 15, 20]
    assert np.array_equal(positions, whole_positions)
    rows = [line.split(",")[0] for line in Path(f"{prefix}.csv").read_text().splitlines()[1:]]
    assert rows == ["5", "10", "15", "20"]  # no step twice in the file itself
    assert json.loads(Path(f"{prefix}-summary.json").read_text())["final_step"] == 20


def test_restart_into_new_files_numbers_the_frames_from_the_checkpoint(tmp_path):
    assert water_run(tmp_path / "first").exit_code == 0
    result = water_run(tmp_path / "second", "--restart", str(tmp_path / "first.chk"), steps="10")
    assert result.exit_code == 0, result.output
    _, steps = dcd_frames(tmp_path / "second")
    assert steps == [25, 30]
    assert list(read_state_data(tmp_path / "second.csv")["Step"]) == [25, 30]


def test_restart_of_an_xtc_run_drops_frames_after_the_checkpoint(tmp_path):
    prefix = tmp_path / "water"
    assert water_run(prefix, "--trajectory-format", "xtc", steps="10").exit_code == 0
    shutil.copy(f"{prefix}.chk", tmp_path / "step10.chk")
    assert water_run(prefix, "--trajectory-format", "xtc", "--restart", f"{prefix}.chk", steps="5").exit_code == 0
    result = water_run(prefix, "--trajectory-format", "xtc", "--restart", str(tmp_path / "step10.chk"), steps="10")
    assert result.exit_code == 0, result.output
    trajectory = mdtraj.load(f"{prefix}.xtc", top=f"{prefix}-topology.pdb")
    assert np.allclose(trajectory.time, [0.0025, 0.005, 0.0075, 0.01])  # ps: steps 5, 10, 15, 20 of 0.5 fs


# -------------------------------------------------------------------------------------- blow-ups


def test_a_run_that_blows_up_stops_and_its_summary_says_so(tmp_path):
    """Methanol in NVE with 10 fs steps heats to ~1e5 K within a few steps (measured: 6e4 K at step 5)."""
    prefix = tmp_path / "hot"
    result = run(METHANOL, "--model", SHIPPED, "-o", str(prefix), "--ensemble", "nve", "--timestep-fs", "10",
                 "--steps", "100", "--report-interval", "5", "--platform", "Reference", "--seed", "3",
                 "--threads", "1", "--quiet")  # fmt: skip
    assert result.exit_code != 0
    assert "--timestep-fs 10 is above 2 fs" in result.output  # the warning before the run
    assert "the run blew up at step" in result.output and "marks the run as failed" in result.output
    summary = json.loads(Path(f"{prefix}-summary.json").read_text())
    assert summary["status"] == "failed" and "blew up" in summary["failure"]
    assert summary["energy_drift_mev_per_atom_ps"] is None  # never a drift of a broken run
    assert summary["final_step"] < 100


def test_an_nve_energy_jump_is_a_blow_up():
    """The NVE watch: total energy 1 eV/atom away from the first report stops the run; less does not."""
    system = openmm.System()
    for _ in range(3):
        system.addParticle(1.0)
    reporter = StateReporter(Path("/dev/null"), 1, system, "nve", 300.0, periodic=False)
    first = -1000.0
    reporter.watch(1, first, 300.0, True)
    reporter.watch(2, first + 0.5 * 96.485 * 3, 300.0, True)  # 0.5 eV/atom: kept
    with pytest.raises(RunFailed, match="NVE total energy moved"):
        reporter.watch(3, first + 1.5 * 96.485 * 3, 300.0, True)
    with pytest.raises(RunFailed, match="NaN or infinite"):
        reporter.watch(4, first, 300.0, False)


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--timestep-fs", "1000"), "--timestep-fs 1000 is outside 0-10 fs"),
        (("--temperature-k", "1e9"), "--temperature-k 1e+09 is outside 0-10,000 K"),
    ],
    ids=["timestep", "temperature"],
)
def test_absurd_run_parameters_are_refused(tmp_path, extra, message):
    result = water_run(tmp_path / "out", *extra)
    assert result.exit_code != 0
    assert message in result.output
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------- outputs


def test_plots_that_were_not_written_are_not_listed(tmp_path):
    result = water_run(tmp_path / "short", "--plot", steps="3")
    assert result.exit_code == 0, result.output
    assert "energy_plot" not in result.output and "no plots written" in result.output
    assert not list(tmp_path.glob("*.png"))
    files = json.loads((tmp_path / "short-summary.json").read_text())["files"]
    assert all(Path(path).exists() for path in files.values())


@pytest.mark.parametrize("existing", [False, True], ids=["trailing-slash", "existing-folder"])
def test_an_output_folder_gets_the_files_inside_it(tmp_path, existing):
    folder = tmp_path / "results"
    if existing:
        folder.mkdir()
    result = water_run(folder if existing else f"{folder}/", steps="5")
    assert result.exit_code == 0, result.output
    assert (folder / "md.csv").exists() and (folder / "md-summary.json").exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["results"]  # nothing beside the folder


# ----------------------------------------------------------------------------------------- domain


def test_close_contacts_outside_the_training_domain_are_flagged(tmp_path):
    """Water's O-H bond (0.97 Å) is shorter than 0.9 x the 1.2 Å this record claims as the training minimum."""
    model = checkpoint_with_domain(tmp_path / "model.pt", {"H-O": 1.2, "H-H": 1.0})
    result = run(WATER, "--model", model, "-o", str(tmp_path / "warn"), "--steps", "10", "--report-interval", "5",
                 "--platform", "Reference", "--no-minimize", "--seed", "1", "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.count("Warning: at step 5 the H-O distance") == 1  # once, not at every report
    assert "below 0.9 x the shortest H-O distance in the model's training data (1.200 Å)" in result.output
    data = read_state_data(tmp_path / "warn.csv")
    ratios = data["Shortest distance / training (ratio)"]
    assert len(ratios) == 2 and np.all(ratios < 0.9) and np.all(ratios > 0.7)
    summary = json.loads((tmp_path / "warn-summary.json").read_text())
    assert summary["closest_pair"] == "H-O" and summary["closest_distance_ratio"] == pytest.approx(ratios.min())

    result = run(WATER, "--model", model, "-o", str(tmp_path / "stop"), "--steps", "10", "--report-interval", "5",
                 "--platform", "Reference", "--no-minimize", "--quiet", "--domain-check", "stop")  # fmt: skip
    assert result.exit_code != 0
    assert "the run was stopped (--domain-check stop)" in result.output
    assert json.loads((tmp_path / "stop-summary.json").read_text())["status"] == "failed"
    assert list(read_state_data(tmp_path / "stop.csv")["Step"]) == [5]  # the row that shows it, then the stop


def test_a_model_without_a_domain_record_skips_the_check_and_says_so(tmp_path):
    result = water_run(tmp_path / "water", steps="5")
    assert result.exit_code == 0, result.output
    assert "domain check: skipped" in result.output
    summary = json.loads((tmp_path / "water-summary.json").read_text())
    assert summary["domain_check"].startswith("skipped") and summary["closest_distance_ratio"] is None


def test_a_charge_or_multiplicity_outside_training_is_warned_about(tmp_path):
    model = checkpoint_with_domain(tmp_path / "model.pt", {"H-O": 0.8})
    common = ("--model", model, "--steps", "5", "--platform", "Reference", "--no-minimize", "--quiet")
    result = run(WATER, "-o", str(tmp_path / "cation"), "--charge", "1", "--multiplicity", "2", *common)
    assert result.exit_code == 0, result.output
    assert "trained on total charge 0 only, and this system has total charge 1" in result.output
    assert "trained on spin multiplicity 1 only, and this system has spin multiplicity 2" in result.output
    result = run(WATER, "-o", str(tmp_path / "neutral"), *common)
    assert result.exit_code == 0 and "Warning" not in result.output


# ---------------------------------------------------------------------------------------- threads


def test_thread_choice(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert choose_threads(9).count == 1 and choose_threads(9).reason == "small system"
    assert 1 <= choose_threads(5000).count <= MOST_THREADS
    assert choose_threads(5000, requested=3).count == 3  # an explicit request wins
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert choose_threads(9) == choose_threads(5000)
    assert choose_threads(9).count == 2 and choose_threads(9).reason == "OMP_NUM_THREADS"
    assert choose_threads(9, requested=1).count == 1


def test_run_chooses_one_thread_for_a_small_molecule_and_reports_it(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    result = run(WATER, "--model", MODEL, "-o", str(tmp_path / "water"), "--steps", "5", "--platform", "Reference",
                 "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "water-summary.json").read_text())
    assert summary["threads"] == 1 and summary["threads_reason"] == "small system"
    assert "1 torch thread: small system" in result.output
    assert torch.get_num_threads() == before  # restored after the run


def test_the_domain_check_uses_the_minimum_image_in_a_periodic_box():
    from openmm.app import Element

    hydrogen, oxygen = Element.getBySymbol("H"), Element.getBySymbol("O")
    check = DomainCheck({"H-O": 0.95, "H-H": 1.5}, [hydrogen, oxygen, hydrogen])
    positions = np.array([[0.2, 0.0, 0.0], [5.9, 0.0, 0.0], [3.0, 3.0, 3.0]])
    assert check.shortest_distances(positions, None) == {}  # nothing within 1.5 x 1.5 Å, the search range
    periodic = check.shortest_distances(positions, np.eye(3) * 6.0)
    assert periodic["H-O"] == pytest.approx(0.3)  # across the boundary
    with pytest.warns(RunWarning, match="at step 1 the H-O distance is 0.300 Å"):
        assert check.check(positions, np.eye(3) * 6.0, step=1) == pytest.approx(0.3 / 0.95)


def test_the_domain_check_of_an_ml_mm_run_looks_at_the_model_atoms_only():
    """ML/MM: a water the force field computes may come close to anything; only the model's atoms
    (here the last three) are checked against its training distances."""
    from openmm.app import Element

    hydrogen, oxygen = Element.getBySymbol("H"), Element.getBySymbol("O")
    positions = np.array([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.5, 0.0], [3.0, 0.0, 0.0], [3.96, 0.0, 0.0],
                          [3.0, 0.96, 0.0]])  # fmt: skip
    every_atom = DomainCheck({"H-O": 0.95}, [oxygen, hydrogen, hydrogen] * 2)
    with pytest.warns(RunWarning, match="H-O distance is 0.500 Å"):
        every_atom.check(positions, None, step=1)
    model_atoms = DomainCheck({"H-O": 0.95}, [oxygen, hydrogen, hydrogen], atoms=[3, 4, 5])
    assert model_atoms.check(positions, None, step=1) == pytest.approx(0.96 / 0.95)
