"""Training: it learns, it resumes exactly, its checkpoints round-trip, and bad input is refused clearly."""

from __future__ import annotations

import itertools
import math

import ase
import ase.calculators.singlepoint
import ase.io
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import write_toy_data

from mdplugin.cli.main import main
from mdplugin.elements import symbols
from mdplugin.export.info import describe
from mdplugin.model.checkpoint import CheckpointError, build_checkpoint, load_model, read_checkpoint, save_checkpoint
from mdplugin.model.transformer import ModelConfig, TransformerPotential, init_distance_attention
from mdplugin.training.dataset import Structure, read_forces_only, read_structures, split, training_domain
from mdplugin.training.train import TrainingOptions, evaluate, train

TINY = dict(
    model=ModelConfig(width=32, depth=2, heads=4, coordinate_features=24),
    batch_size=16,
    learning_rate=3e-3,
    progress=False,
)


def test_training_lowers_the_validation_force_error(tmp_path, toy_data):
    options = TrainingOptions(
        train_files=[str(toy_data)], output=str(tmp_path / "model.pt"), epochs=40, augment_rotations=False, **TINY
    )
    train(options)
    checkpoint = read_checkpoint(options.output)
    trained = load_model(options.output)
    # the same initial weights the trainer started from, with the same fitted E0 and scale
    torch.manual_seed(options.seed)
    untrained = TransformerPotential(ModelConfig.from_dict(checkpoint["config"]))
    init_distance_attention(untrained)
    untrained.reference_energies.copy_(trained.reference_energies)
    untrained.energy_scale.copy_(trained.energy_scale)
    _, validation = split(read_structures(toy_data), options.validation_fraction, options.seed)
    before = evaluate(untrained, validation)["force_mae_mev_per_a"]
    after = evaluate(trained, validation)["force_mae_mev_per_a"]
    print(f"validation force MAE: {before:.0f} -> {after:.0f} meV/Å")
    assert after < before / 5  # measured ≈ 9x in 40 epochs; 5x leaves room for thread-count noise
    assert (tmp_path / "model.csv").is_file() and (tmp_path / "model_loss.png").is_file()


def test_a_restarted_schedule_warms_up_and_decays_again_over_the_added_epochs(tmp_path, toy_data):
    from dataclasses import replace

    first = TrainingOptions(train_files=[str(toy_data)], output=str(tmp_path / "model.pt"), epochs=3, **TINY)
    train(first)
    train(replace(first, epochs=6, restart_schedule=True, learning_rate=first.learning_rate / 2), resume=True)
    rates = [row["learning_rate"] for row in read_checkpoint(tmp_path / "model.pt")["training"]["history"]]
    assert rates[2] < 0.02 * first.learning_rate  # the first run's schedule ended near 1 % of its peak
    assert rates[3] > 10 * rates[2] and rates[3] <= first.learning_rate / 2  # up again, to the new peak at most
    assert rates[5] < 0.02 * first.learning_rate / 2  # and down near 1 % of it at the new end
    continued = tmp_path / "continued.pt"
    train(replace(first, output=str(continued)))
    train(replace(first, output=str(continued), epochs=6), resume=True)  # without: the schedule goes on
    rates = [row["learning_rate"] for row in read_checkpoint(continued)["training"]["history"]]
    assert rates[3] < first.learning_rate / 2


def test_interrupted_and_resumed_run_matches_an_uninterrupted_one(tmp_path, toy_data):
    common = dict(train_files=[str(toy_data)], epochs=4, ema_decay=0.9, **TINY)
    train(TrainingOptions(output=str(tmp_path / "straight.pt"), **common))

    class Interrupt(Exception):
        pass

    def stop_after_two(epoch, metrics):
        if epoch == 2:
            raise Interrupt

    interrupted = TrainingOptions(output=str(tmp_path / "resumed.pt"), **common)
    with pytest.raises(Interrupt):
        train(interrupted, on_epoch_end=stop_after_two)
    assert read_checkpoint(interrupted.output)["resume"]["epoch"] == 2
    train(interrupted, resume=True)

    straight = read_checkpoint(tmp_path / "straight.pt")
    resumed = read_checkpoint(tmp_path / "resumed.pt")
    for name, weight in straight["state_dict"].items():
        assert torch.equal(weight, resumed["state_dict"][name]), name  # bitwise: same data order, rotations, optimizer
    assert [row["force_mae_mev_per_a"] for row in straight["training"]["history"]] == [
        row["force_mae_mev_per_a"] for row in resumed["training"]["history"]
    ]


def test_validating_every_few_epochs_trains_the_same_weights(tmp_path, toy_data):
    common = dict(train_files=[str(toy_data)], epochs=5, **TINY)
    train(TrainingOptions(output=str(tmp_path / "every.pt"), **common))
    train(TrainingOptions(output=str(tmp_path / "sparse.pt"), validate_every=2, **common))
    every, sparse = read_checkpoint(tmp_path / "every.pt"), read_checkpoint(tmp_path / "sparse.pt")
    assert [row["epoch"] for row in sparse["training"]["history"]] == [2, 4, 5]  # and always the last epoch
    for name, weight in every["state_dict"].items():
        assert torch.equal(weight, sparse["state_dict"][name]), name
    with pytest.raises(ValueError, match="validate_every"):
        train(TrainingOptions(output=str(tmp_path / "bad.pt"), validate_every=0, **common))


def test_checkpoint_round_trips(tmp_path, toy_data):
    options = TrainingOptions(train_files=[str(toy_data)], output=str(tmp_path / "model.pt"), epochs=1, **TINY)
    train(options)
    checkpoint = torch.load(options.output, weights_only=True)  # no pickled code runs
    assert checkpoint["format"] == "mdplugin-checkpoint"
    assert checkpoint["elements"] == [1, 6, 7, 8]
    for key in ("command", "date", "data_sha256", "versions"):
        assert key in checkpoint["provenance"]
    model = load_model(options.output)
    for name, weight in model.state_dict().items():
        assert torch.equal(weight, checkpoint["state_dict"][name])
    assert model.reference_energies.tolist() == pytest.approx(checkpoint["reference_energies"])


def test_data_without_forces_is_refused(tmp_path):
    path = tmp_path / "no_forces.extxyz"
    ase.io.write(path, [ase.Atoms("H2O", positions=[[0, 0, 0], [0.9, 0, 0], [0, 0.9, 0]])], format="extxyz")
    with pytest.raises(ValueError, match="no energy and forces"):
        read_structures(path)


def test_unknown_element_is_refused(tmp_path, toy_data):
    options = TrainingOptions(
        train_files=[str(toy_data)], output=str(tmp_path / "m.pt"), epochs=1, elements=[1, 6, 8], **TINY
    )
    with pytest.raises(ValueError, match="contains N, which the model does not know"):
        train(options)


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("not a model")
    with pytest.raises(CheckpointError, match="not an mdplugin checkpoint"):
        read_checkpoint(text)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="not an mdplugin checkpoint"):
        read_checkpoint(foreign)


def test_an_empty_dataset_is_refused(tmp_path):
    empty = tmp_path / "empty.extxyz"
    empty.write_text("")
    with pytest.raises(ValueError, match="holds no structures|cannot read"):
        read_structures(empty)


def test_cli_train_refuses_to_overwrite_and_documents_its_options(tmp_path):
    data = write_toy_data(tmp_path / "d.extxyz", frames=20, seed=1)
    existing = tmp_path / "model.pt"
    existing.write_text("user file")
    result = CliRunner().invoke(main, ["train", str(data), "-o", str(existing), "--epochs", "1"])
    assert result.exit_code != 0 and "exists; pass --resume" in result.output
    assert existing.read_text() == "user file"
    help_text = CliRunner().invoke(main, ["train", "--help"]).output
    for option in ("--validation", "--epochs", "--force-weight", "--ema-decay", "--augment", "--resume", "--seed"):
        assert option in help_text


def test_cli_train_runs(tmp_path):
    data = write_toy_data(tmp_path / "d.extxyz", frames=40, seed=2)
    output = tmp_path / "model.pt"
    result = CliRunner().invoke(
        main,
        [
            "train",
            str(data),
            "-o",
            str(output),
            "--epochs",
            "2",
            "--width",
            "32",
            "--depth",
            "1",
            "--heads",
            "4",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert len(read_checkpoint(output)["training"]["history"]) == 2


def test_training_domain_names_pairs_by_atomic_number():
    water = Structure(
        positions=np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [0.0, 0.96, 0.0]]),
        atomic_numbers=np.array([8, 1, 1]),
        energy=0.0,
        forces=np.zeros((3, 3)),
    )
    methyl = Structure(
        positions=np.array([[0.0, 0.0, 0.0], [1.09, 0.0, 0.0], [0.0, 0.0, 1.43], [0.0, 1.0, 1.8]]),
        atomic_numbers=np.array([6, 1, 8, 1]),
        energy=0.0,
        forces=np.zeros((4, 3)),
        charge=-1,
        multiplicity=2,
    )
    domain = training_domain([water, methyl])
    distances = domain["shortest_distance"]
    assert list(distances) == ["H-H", "H-C", "H-O", "C-O"]  # ordered by atomic number; no C-C or O-O pair
    assert distances["H-H"] == pytest.approx(0.96 * 2**0.5)
    assert distances["H-C"] == pytest.approx(1.09)
    assert distances["H-O"] == pytest.approx(min(0.96, (0.37**2 + 1) ** 0.5))
    assert distances["C-O"] == pytest.approx(1.43)
    assert domain["charges"] == [-1, 0] and domain["multiplicities"] == [1, 2]


def test_checkpoint_records_the_domain_of_its_training_structures(tmp_path, toy_data):
    options = TrainingOptions(train_files=[str(toy_data)], output=str(tmp_path / "model.pt"), epochs=1, **TINY)
    train(options)
    domain = read_checkpoint(options.output)["domain"]
    training_set, _ = split(read_structures(toy_data), options.validation_fraction, options.seed)
    # brute force over every pair of every training structure (validation structures are not trained on)
    expected: dict[str, float] = {}
    for structure in training_set:
        for i, j in itertools.combinations(range(len(structure.atomic_numbers)), 2):
            pair = "-".join(symbols(sorted(structure.atomic_numbers[[i, j]])))
            distance = float(np.linalg.norm(structure.positions[i] - structure.positions[j]))
            expected[pair] = min(expected.get(pair, np.inf), distance)
    assert domain["shortest_distance"] == pytest.approx(expected, abs=1e-12)
    assert domain["charges"] == [0] and domain["multiplicities"] == [1]


def test_info_shows_the_domain_and_the_limits_of_global_attention(tmp_path, toy_data):
    options = TrainingOptions(train_files=[str(toy_data)], output=str(tmp_path / "model.pt"), epochs=1, **TINY)
    train(options)
    shown = CliRunner().invoke(main, ["info", options.output])
    assert shown.exit_code == 0, shown.output
    assert "shortest_distance" in shown.output and '"H-C":' in shown.output and "charges: [0]" in shown.output
    assert "not size-extensive" in shown.output and "one molecule per model evaluation" in shown.output

    # a checkpoint written before the domain was recorded still loads and is described
    checkpoint = read_checkpoint(options.output)
    del checkpoint["domain"]
    old = tmp_path / "old.pt"
    torch.save(checkpoint, old)
    load_model(old)
    assert describe(old)["domain"].startswith("not recorded")


def test_info_shows_the_domain_an_export_carries(tmp_path, toy_data):
    options = TrainingOptions(train_files=[str(toy_data)], output=str(tmp_path / "model.pt"), epochs=1, **TINY)
    train(options)
    exported = tmp_path / "model-export.pt"
    assert CliRunner().invoke(main, ["export", options.output, "-o", str(exported)]).exit_code == 0
    summary = describe(exported)
    recorded = read_checkpoint(options.output)["domain"]["shortest_distance"]
    assert summary["domain"]["shortest_distance"] == {pair: round(d, 3) for pair, d in recorded.items()}
    assert "not size-extensive" in summary["limits"]


def test_info_does_not_warn_about_a_local_model(tmp_path):
    local = TransformerPotential(ModelConfig(elements=[1, 8], width=16, depth=1, heads=2, interaction_range=3.0))
    path = tmp_path / "local.pt"
    save_checkpoint(build_checkpoint(local, provenance={}, training={}), path)
    assert "limits" not in describe(path)  # a finite interaction range is size-extensive


def test_training_domain_of_a_periodic_cell_sees_across_its_faces():
    # O near one face and H near the opposite one: 2.8 Å apart in the cell, 0.2 Å through the face;
    # each atom also meets its own image one 3 Å cell length away
    cell = Structure(
        positions=np.array([[0.1, 1.0, 1.0], [2.9, 1.0, 1.0]]),
        atomic_numbers=np.array([8, 1]),
        energy=0.0,
        forces=np.zeros((2, 3)),
        cell=3.0 * np.eye(3),
        pbc=np.array([True, True, True]),
    )
    distances = training_domain([cell])["shortest_distance"]
    assert distances == pytest.approx({"H-H": 3.0, "H-O": 0.2, "O-O": 3.0})


def test_training_domain_counts_the_most_neighbours_within_a_local_models_range():
    # the same two atoms: within 3.1 Å, O sees its own 6 images at 3 Å, H at 0.2 Å (through the face) and
    # 2.8 Å (in the cell), and the 4 images of the first shifted by one cell along y or z (3.007 Å): 12
    cell = Structure(
        positions=np.array([[0.1, 1.0, 1.0], [2.9, 1.0, 1.0]]),
        atomic_numbers=np.array([8, 1]),
        energy=0.0,
        forces=np.zeros((2, 3)),
        cell=3.0 * np.eye(3),
        pbc=np.array([True, True, True]),
    )
    assert training_domain([cell], interaction_range=3.1)["max_neighbours"] == 12
    assert "max_neighbours" not in training_domain([cell])  # a global model: no neighbour table


def _shifted_copy(source, path, energy_shift: float, squeeze: float = 1.0):
    """The frames of source with every energy moved by energy_shift (eV) and, if squeeze < 1, the
    first two atoms pulled together (forces kept): labels no fully labelled frame agrees with."""
    frames = ase.io.read(source, index=":")
    for atoms in frames:
        energy, forces = atoms.get_potential_energy() + energy_shift, atoms.get_forces()
        atoms.positions[1] = atoms.positions[0] + squeeze * (atoms.positions[1] - atoms.positions[0])
        atoms.calc = ase.calculators.singlepoint.SinglePointCalculator(atoms, energy=energy, forces=forces)
    ase.io.write(path, frames, format="extxyz")
    return str(path)


def test_forces_only_frames_never_use_their_energy_labels(tmp_path, toy_data):
    extra = write_toy_data(tmp_path / "extra.extxyz", frames=40, seed=5, noise=0.15)
    common = dict(train_files=[str(toy_data)], epochs=2, forces_only_weight=0.5, **TINY)
    runs = {}
    for name, shift in (("true", 0.0), ("shifted", 1000.0)):
        options = TrainingOptions(
            output=str(tmp_path / f"{name}.pt"),
            forces_only_files=[_shifted_copy(extra, tmp_path / f"{name}.extxyz", shift)],
            **common,
        )
        train(options)
        runs[name] = read_checkpoint(options.output)
    # energies 1000 eV off change nothing: not the fitted reference energies, not a single weight
    for key, value in runs["true"]["state_dict"].items():
        assert torch.equal(value, runs["shifted"]["state_dict"][key]), key
    labelled_only = TrainingOptions(output=str(tmp_path / "plain.pt"), **common)
    train(labelled_only)
    plain = read_checkpoint(labelled_only.output)["state_dict"]
    assert torch.equal(plain["reference_energies"], runs["true"]["state_dict"]["reference_energies"])
    # but their forces do train: the weights differ from a run without them
    assert not torch.equal(
        plain["blocks.0.attention.qkv.weight"], runs["true"]["state_dict"]["blocks.0.attention.qkv.weight"]
    )


def test_forces_only_weight_scales_their_force_term(tmp_path, toy_data):
    extra = str(write_toy_data(tmp_path / "extra.extxyz", frames=40, seed=5, noise=0.15))
    weights = {}
    for weight in (0.0, 1.0):
        options = TrainingOptions(
            train_files=[str(toy_data)], forces_only_files=[extra], forces_only_weight=weight,
            output=str(tmp_path / f"w{weight}.pt"), epochs=1, **TINY,
        )  # fmt: skip
        train(options)
        weights[weight] = read_checkpoint(options.output)["state_dict"]["blocks.0.attention.qkv.weight"]
    assert not torch.equal(weights[0.0], weights[1.0])


def test_forces_only_frames_stay_out_of_validation_and_domain(tmp_path, toy_data):
    # the forces-only copy pulls atoms 0 and 1 to a third of their distance: a contact no labelled frame has
    squeezed = _shifted_copy(toy_data, tmp_path / "squeezed.extxyz", 0.0, squeeze=0.3)
    options = TrainingOptions(
        train_files=[str(toy_data)], forces_only_files=[squeezed], output=str(tmp_path / "model.pt"), epochs=1, **TINY
    )
    train(options)
    checkpoint = read_checkpoint(options.output)
    plain = TrainingOptions(train_files=[str(toy_data)], output=str(tmp_path / "plain.pt"), epochs=1, **TINY)
    train(plain)
    assert checkpoint["domain"] == read_checkpoint(plain.output)["domain"]
    record = checkpoint["training"]
    assert record["validation_structures"] == read_checkpoint(plain.output)["training"]["validation_structures"]
    assert record["training_structures"] == 240 - record["validation_structures"] + 240
    structures = read_structures(toy_data) + read_forces_only(squeezed)
    training_set, validation_set = split(structures, 0.1, 0)
    assert not any(s.forces_only for s in validation_set) and sum(s.forces_only for s in training_set) == 240


def test_forces_only_frames_lose_their_stress_label(tmp_path):
    atoms = ase.Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]], cell=4 * np.eye(3), pbc=True)
    atoms.calc = ase.calculators.singlepoint.SinglePointCalculator(
        atoms, energy=-1.0, forces=np.zeros((3, 3)), stress=np.ones(6)
    )
    ase.io.write(tmp_path / "cell.extxyz", atoms, format="extxyz")
    (labelled,) = read_structures(tmp_path / "cell.extxyz")
    (forces_only,) = read_forces_only(tmp_path / "cell.extxyz")
    assert labelled.virial is not None and not labelled.forces_only
    assert forces_only.virial is None and forces_only.forces_only


def test_training_on_forces_only_frames_alone_is_refused(tmp_path, toy_data):
    options = TrainingOptions(train_files=[], forces_only_files=[str(toy_data)], output=str(tmp_path / "m.pt"), **TINY)
    with pytest.raises(ValueError, match="fully labelled"):
        train(options)


def test_cli_train_takes_forces_only_files(tmp_path, toy_data):
    extra = str(write_toy_data(tmp_path / "extra.extxyz", frames=20, seed=5, noise=0.15))
    result = CliRunner().invoke(
        main,
        ["train", str(toy_data), "--forces-only", extra, "--forces-only-weight", "0.2", "--epochs", "1",
         "--width", "32", "--depth", "1", "--heads", "4", "--quiet", "-o", str(tmp_path / "m.pt")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    options = read_checkpoint(tmp_path / "m.pt")["training"]["options"]
    assert options["forces_only_files"] == [extra] and options["forces_only_weight"] == 0.2


def test_resuming_with_more_frames_still_anneals_to_the_end(tmp_path, toy_data):
    """The cosine ends at 1 % of the peak in the last epoch asked for, even when the resumed run has
    more frames per epoch than the one it continues (active learning adds frames)."""
    extra = str(write_toy_data(tmp_path / "extra.extxyz", frames=120, seed=5))
    options = TrainingOptions(train_files=[str(toy_data)], output=str(tmp_path / "m.pt"), epochs=2, **TINY)
    train(options)
    options.epochs, options.forces_only_files = 4, [extra]
    train(options, resume=True)
    history = read_checkpoint(options.output)["training"]["history"]
    assert history[-1]["step"] - history[1]["step"] == 2 * math.ceil((216 + 120) / TINY["batch_size"])
    assert history[-1]["learning_rate"] == pytest.approx(0.01 * TINY["learning_rate"], rel=0.1)


def test_cli_train_refuses_a_bad_forces_only_file_or_weight(tmp_path, toy_data):
    frames = ase.io.read(toy_data, index=":3")
    frames[1].calc.results["forces"][2, 0] = np.nan
    ase.io.write(tmp_path / "nan.extxyz", frames, format="extxyz")
    (tmp_path / "empty.extxyz").write_text("")
    common = ["train", str(toy_data), "--epochs", "1", "--quiet", "-o", str(tmp_path / "m.pt")]
    cases = {
        ("--forces-only", str(tmp_path / "nan.extxyz")): "nan.extxyz, frame 1: the forces of atom 2 are not finite",
        ("--forces-only", str(tmp_path / "empty.extxyz")): "empty.extxyz",
        ("--forces-only-weight", "nan"): "forces-only weight must be a number >= 0, got nan",
        ("--forces-only-weight", "-1"): "-1",
    }
    for arguments, message in cases.items():
        result = CliRunner().invoke(main, [*common, *arguments])
        assert result.exit_code != 0 and message in result.output, (arguments, result.output)
        assert not (tmp_path / "m.pt").exists()
