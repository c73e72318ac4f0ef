"""Accuracy of a trained model against reference data: per molecule and temperature, and under rotation."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from mdplugin.model.checkpoint import model_from_checkpoint, read_checkpoint
from mdplugin.model.transformer import TransformerPotential, count_parameters
from mdplugin.training.dataset import Structure, read_structures
from mdplugin.training.train import energy_and_forces, evaluate, random_rotations

NO_TEMPERATURE = float("nan")  # one object: NaN keys of a dict match only by identity


def frame_label(atoms, path: str | Path) -> tuple[str, float]:
    """(molecule, temperature in K) of a frame, from its info (the file name and NaN where absent)."""
    temperature = atoms.info.get("temperature_K")
    return str(atoms.info.get("molecule", Path(path).stem)), NO_TEMPERATURE if temperature is None else float(
        temperature
    )


def group_by_label(path: str | Path) -> dict[tuple[str, float], list[Structure]]:
    """Structures of a file keyed by (molecule, temperature in K) from each frame's info."""
    import ase.io

    frames = ase.io.read(path, index=":")
    structures = read_structures(path)
    groups: dict[tuple[str, float], list[Structure]] = defaultdict(list)
    for atoms, structure in zip(frames, structures):
        groups[frame_label(atoms, path)].append(structure)
    return groups


def frames_by_label(path: str | Path) -> dict[tuple[str, float], list]:
    """The ASE frames of a file keyed like `group_by_label` (for models that take ase.Atoms)."""
    import ase.io

    groups: dict[tuple[str, float], list] = defaultdict(list)
    for atoms in ase.io.read(path, index=":"):
        groups[frame_label(atoms, path)].append(atoms)
    return groups


def zero_force_mae(structures: list[Structure]) -> float:
    """meV/Å: the force MAE of a model that predicts no force at all, the scale a force MAE is read against."""
    return 1000 * float(np.mean(np.abs(np.concatenate([x.forces for x in structures]))))


def rotation_spread(
    model: TransformerPotential, structures: list[Structure], rotations: int = 50, seed: int = 0
) -> float:
    """Mean over structures of (max - min) energy under random rotations, in meV/atom."""
    from mdplugin.training.dataset import collate

    generator = torch.Generator().manual_seed(seed)
    spreads = []
    for structure in structures:
        batch = collate([structure] * rotations, model.species_of_atomic_number)
        batch["positions"] = batch["positions"] @ random_rotations(rotations, generator, batch["positions"].dtype)
        energy, _, _ = energy_and_forces(model, batch, training=False)
        spreads.append(1000 * float((energy.max() - energy.min()).detach()) / len(structure.atomic_numbers))
    return float(np.mean(spreads))


def accuracy_report(
    checkpoint_path: str | Path, test_files: list[str | Path], rotation_samples: int = 5, hardware: str = ""
) -> dict:
    """Energy and force MAEs per (molecule, temperature), the rotation spread, and the model's facts.

    `hardware` describes the machine the model was trained on, for the report.
    """
    checkpoint = read_checkpoint(checkpoint_path)
    model = model_from_checkpoint(checkpoint)
    rows = []
    for path in test_files:
        for (molecule, temperature), structures in sorted(group_by_label(path).items()):
            metrics = evaluate(model, structures)
            rows.append(
                {
                    "molecule": molecule,
                    "temperature_K": temperature,
                    "frames": len(structures),
                    **metrics,
                    "zero_force_mae_mev_per_a": zero_force_mae(structures),
                    "rotation_spread_mev_per_atom": rotation_spread(model, structures[:rotation_samples]),
                }
            )
    history = checkpoint["training"].get("history", [])
    return {
        "model": str(checkpoint_path),
        "parameters": count_parameters(model),
        "model_config": checkpoint["config"],
        "training_structures": checkpoint["training"].get("training_structures"),
        "epochs": len(history),
        "training_time_s": history[-1]["elapsed_s"] if history else None,
        "training_host": checkpoint["provenance"].get("host"),
        "hardware": hardware or f"torch {torch.__version__}",
        "rotation_frames": rotation_samples,
        "rows": rows,
    }


def write_accuracy_report(report: dict, directory: str | Path) -> tuple[Path, Path]:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    json_path, markdown_path = directory / "accuracy.json", directory / "accuracy.md"
    json_path.write_text(json.dumps(report, indent=2))
    lines = [
        "# Accuracy against GFN2-xTB",
        "",
        f"Model `{report['model']}`: {report['parameters']:,} parameters, trained for {report['epochs']} epochs "
        f"on {report['training_structures']} structures in {(report['training_time_s'] or 0) / 60:.0f} min "
        f"({report['hardware']}).",
        "",
        "Test frames come from MD trajectories separate from the training ones. The rotation spread is the mean, "
        f"over the first {report.get('rotation_frames', 5)} test frames of each set, of the largest minus the "
        "smallest energy under 50 random rotations. "
        "The zero-force MAE is the mean |reference force component|: what predicting no force at all would score.",
        "",
        "| molecule | T (K) | frames | energy MAE (meV/atom) | force MAE (meV/Å) | zero-force MAE (meV/Å) "
        "| rotation spread (meV/atom) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["rows"]:
        lines.append(
            f"| {row['molecule']} | {row['temperature_K']:.0f} | {row['frames']} | {row['energy_mae_mev_per_atom']:.2f} "
            f"| {row['force_mae_mev_per_a']:.1f} | {row['zero_force_mae_mev_per_a']:.1f} "
            f"| {row['rotation_spread_mev_per_atom']:.2f} |"
        )
    markdown_path.write_text("\n".join(lines) + "\n")
    return json_path, markdown_path
