"""Training refuses what cannot train, with a sentence instead of a traceback, and never writes NaN weights."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
import torch
from ase.calculators.singlepoint import SinglePointCalculator
from click.testing import CliRunner
from conftest import write_toy_data

from mdplugin.cli.main import main
from mdplugin.model.checkpoint import CheckpointError, build_checkpoint, read_checkpoint, save_checkpoint
from mdplugin.model.transformer import ModelConfig, TransformerPotential
from mdplugin.training.train import TrainingDiverged, TrainingOptions, train

TINY = dict(
    model=ModelConfig(width=32, depth=1, heads=4, coordinate_features=24), batch_size=8, progress=False, threads=1
)
TINY_CLI = ["--width", "32", "--depth", "1", "--heads", "4", "--batch-size", "8", "--quiet", "--threads", "1"]


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    return write_toy_data(tmp_path_factory.mktemp("data") / "small.extxyz", frames=40, seed=4)


@pytest.mark.parametrize("label", ["energy", "forces"])
def test_a_non_finite_label_stops_training_before_the_first_step(tmp_path, small_data, label):
    frames = ase.io.read(small_data, index=":")
    broken = frames[7]
    energy, forces = broken.get_potential_energy(), broken.get_forces().copy()
    if label == "energy":
        energy = float("nan")
    else:
        forces[2, 1] = float("inf")
    broken.calc = SinglePointCalculator(broken, energy=energy, forces=forces)
    data = tmp_path / "broken.extxyz"
    ase.io.write(data, frames, format="extxyz")
    output = tmp_path / "model.pt"
    with pytest.raises(ValueError, match=rf"broken\.extxyz, frame 7: the {label}") as error:
        train(TrainingOptions(train_files=[str(data)], output=str(output), epochs=1, **TINY))
    assert "remove that frame" in str(error.value)
    assert not output.exists()  # stopped before any step, so before any checkpoint


def test_a_diverging_run_names_the_learning_rate_and_writes_no_checkpoint(tmp_path, small_data):
    output = tmp_path / "model.pt"
    # 100 is 1e5 times the default peak: measured to give NaN gradients at the second step
    options = TrainingOptions(
        train_files=[str(small_data)], output=str(output), epochs=2, learning_rate=100.0, warmup_fraction=0, **TINY
    )
    with pytest.raises(TrainingDiverged, match="learning rate is most likely too high") as error:
        train(options)
    assert "--learning-rate" in str(error.value) and "epoch 1" in str(error.value)
    assert not output.exists()


def test_a_run_that_diverges_after_a_good_epoch_keeps_that_epoch(tmp_path, small_data):
    output = tmp_path / "model.pt"
    common = dict(train_files=[str(small_data)], output=str(output), **TINY)
    train(TrainingOptions(epochs=1, **common))
    with pytest.raises(TrainingDiverged, match="keeps epoch 1, the last one"):
        train(TrainingOptions(epochs=2, learning_rate=100.0, **common), resume=True)
    checkpoint = read_checkpoint(output)
    assert len(checkpoint["training"]["history"]) == 1
    assert all(torch.isfinite(weight).all() for weight in checkpoint["state_dict"].values())


def test_a_checkpoint_with_nan_weights_is_never_written(tmp_path):
    model = TransformerPotential(ModelConfig(elements=[1, 8], width=16, depth=1, heads=2))
    with torch.no_grad():
        next(model.parameters())[0, 0] = float("nan")
    path = tmp_path / "nan.pt"
    with pytest.raises(CheckpointError, match="NaN or infinite values"):
        save_checkpoint(build_checkpoint(model, provenance={}, training={}), path)
    assert not path.exists() and not (tmp_path / "nan.pt.partial").exists()


def test_library_refuses_zero_epochs_and_batches(tmp_path, small_data):
    common = dict(train_files=[str(small_data)], output=str(tmp_path / "m.pt"))
    with pytest.raises(ValueError, match="epochs must be at least 1"):
        train(TrainingOptions(**{**common, **TINY, "epochs": 0}))
    with pytest.raises(ValueError, match="batch size must be at least 1"):
        train(TrainingOptions(**{**common, **TINY, "batch_size": 0}))
    with pytest.raises(ValueError, match="names a directory"):
        train(TrainingOptions(**{**common, **TINY, "output": str(tmp_path)}))
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--batch-size", "0"], "'--batch-size': 0 is not in the range x>=1"),
        (["--epochs", "0"], "'--epochs': 0 is not in the range x>=1"),
        (["-o", ""], "the output path is empty"),
        (["-o", "new-folder/"], "names a directory"),
        (["-o", "missing/model.pt"], "folder missing of the output path"),
    ],
)
def test_cli_train_refuses_bad_options_without_a_traceback(tmp_path, small_data, monkeypatch, arguments, message):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["train", str(small_data), *TINY_CLI, *arguments])
    assert result.exit_code == 2, result.output  # a usage error, not an exception
    assert message in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written, not even beside a folder


@pytest.mark.parametrize("output, message", [("", "the output path is empty"), ("new-folder/", "names a directory")])
def test_cli_export_refuses_an_empty_or_folder_output(tmp_path, monkeypatch, output, message):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["export", "model.pt", "-o", output])
    assert result.exit_code == 2 and message in result.output, result.output
    assert list(tmp_path.iterdir()) == []


def test_cli_train_into_an_existing_folder_is_refused(tmp_path, small_data):
    folder = tmp_path / "runs"
    folder.mkdir()
    result = CliRunner().invoke(main, ["train", str(small_data), "-o", str(folder), *TINY_CLI])
    assert result.exit_code == 2 and "is a directory" in result.output, result.output
    assert list(folder.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


def test_resume_refuses_a_different_architecture_and_keeps_the_recorded_one(tmp_path, small_data):
    output = tmp_path / "model.pt"
    first = CliRunner().invoke(main, ["train", str(small_data), "-o", str(output), "--epochs", "1", *TINY_CLI])
    assert first.exit_code == 0, first.output

    resume = ["train", str(small_data), "-o", str(output), "--resume", "--quiet", "--threads", "1"]
    conflicting = CliRunner().invoke(main, [*resume, "--epochs", "2", "--width", "64", "--coordinate-range", "6"])
    assert conflicting.exit_code == 1
    assert (
        "width 64 (checkpoint: 32)" in conflicting.output
        and "coordinate_range 6.0 (checkpoint: 8.0)" in conflicting.output
    )
    assert len(read_checkpoint(output)["training"]["history"]) == 1  # the checkpoint was left alone

    # the same run, nothing repeated but --epochs: width, depth, heads, batch size come from the checkpoint
    resumed = CliRunner().invoke(main, [*resume, "--epochs", "2", "--width", "32"])
    assert resumed.exit_code == 0, resumed.output
    checkpoint = read_checkpoint(output)
    assert len(checkpoint["training"]["history"]) == 2
    assert (checkpoint["config"]["width"], checkpoint["config"]["depth"]) == (32, 1)
    assert checkpoint["training"]["options"]["batch_size"] == 8


def test_resuming_a_finished_run_says_so(tmp_path, small_data):
    output = tmp_path / "model.pt"
    options = TrainingOptions(train_files=[str(small_data)], output=str(output), epochs=1, **TINY)
    train(options)
    before = output.read_bytes()
    with pytest.raises(ValueError, match="already holds 1 epochs, and 1 were asked for"):
        train(options, resume=True)
    assert output.read_bytes() == before


def test_bench_refuses_atom_counts_below_one():
    result = CliRunner().invoke(main, ["bench", "speed", "--sizes", "10,0"])
    assert result.exit_code == 2 and "every value must be at least 1; 0 is not" in result.output, result.output


@pytest.mark.parametrize(
    "device, message",
    [
        ("banana", "unknown device 'banana'; use cpu, cuda or cuda:N"),
        ("meta", "training runs on cpu or cuda, not 'meta'"),
        ("cuda:7", "cuda:7"),  # no CUDA here, or fewer than eight devices
    ],
)
def test_cli_train_refuses_a_device_it_cannot_use(tmp_path, small_data, monkeypatch, device, message):
    if device == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has eight CUDA devices")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["train", str(small_data), *TINY_CLI, "--device", device])
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_cuda_training_without_cuda_names_the_fix(tmp_path, small_data):
    with pytest.raises(ValueError, match="sees no CUDA device; use --device cpu"):
        train(TrainingOptions(train_files=[str(small_data)], output=str(tmp_path / "m.pt"), device="cuda", **TINY))


def test_periodic_data_without_stress_at_one_density_gets_a_warning(tmp_path):
    """Forces do not fix a many-body model's pressure: periodic frames with no stress label and one volume per
    atom are named; a stress label or a second density silences it."""
    import ase
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    from mdplugin.training.dataset import periodic_data_warning, read_structures

    def frames(scales, stress: bool):
        written = []
        rng = np.random.default_rng(0)
        for scale in scales:
            atoms = bulk("Cu", "fcc", a=3.6 * scale, cubic=True).repeat((2, 2, 2))
            atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
            atoms.calc = EMT()
            labels = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
            if stress:
                labels["stress"] = atoms.get_stress()
            atoms.calc = SinglePointCalculator(atoms, **labels)
            written.append(atoms)
        path = tmp_path / f"{len(scales)}-{stress}.extxyz"
        ase.io.write(path, written)
        return read_structures(path)

    message = periodic_data_warning(frames([1.0, 1.0, 1.0], stress=False))
    assert message and "no stress" in message and "one density" in message
    assert periodic_data_warning(frames([1.0, 1.0], stress=True)) is None
    assert periodic_data_warning(frames([0.97, 1.0, 1.03], stress=False)) is None
