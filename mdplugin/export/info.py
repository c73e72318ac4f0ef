"""Metadata of a model file, whether it is a training checkpoint or an export."""

from __future__ import annotations

import math
from pathlib import Path

from mdplugin.elements import symbols

GLOBAL_ATTENTION_LIMITS = (
    "Global attention is not size-extensive: the forces on a molecule change when a second molecule is placed "
    "far away. Simulate one molecule per model evaluation (several molecules: use a local model trained with "
    "--interaction-range)."
)


def describe(path: str | Path) -> dict:
    """A readable summary of a checkpoint or an export; a clear error for anything else."""
    from mdplugin.export.contract import read_export_metadata
    from mdplugin.export.loader import model_file_kind
    from mdplugin.model.checkpoint import read_checkpoint

    path = Path(path)
    if model_file_kind(path) == "export":
        metadata = read_export_metadata(path)
        summary = {"kind": "export", "file": str(path), **metadata}
        summary["domain"] = _domain(metadata.get("domain"))
        if not _is_local(metadata.get("interaction_range", metadata.get("model_config", {}).get("interaction_range"))):
            summary["limits"] = GLOBAL_ATTENTION_LIMITS
        return summary
    checkpoint = read_checkpoint(path)
    training = checkpoint.get("training", {})
    history = training.get("history", [])
    summary = {
        "kind": "checkpoint",
        "file": str(path),
        "format_version": checkpoint["format_version"],
        "elements": symbols(checkpoint["elements"]),
        "reference_energies_ev": dict(zip(symbols(checkpoint["elements"]), checkpoint["reference_energies"])),
        "energy_scale_ev": checkpoint["energy_scale"],
        "model_config": checkpoint["config"],
        "parameters": training.get("parameters"),
        "epochs_trained": len(history),
        "resumable": "resume" in checkpoint,
        "provenance": checkpoint["provenance"],
    }
    if history:
        summary["final_validation"] = {
            "energy_mae_mev_per_atom": history[-1]["energy_mae_mev_per_atom"],
            "force_mae_mev_per_a": history[-1]["force_mae_mev_per_a"],
        }
    summary["domain"] = _domain(checkpoint.get("domain"))
    if not _is_local(checkpoint["config"].get("interaction_range")):
        summary["limits"] = GLOBAL_ATTENTION_LIMITS
    return summary


def _is_local(interaction_range) -> bool:
    """True for a finite, positive interaction range (Å); global attention has none."""
    return isinstance(interaction_range, (int, float)) and math.isfinite(interaction_range) and interaction_range > 0


def _domain(domain: dict | None) -> dict | str:
    """The training domain for display: shortest distances to 0.001 Å."""
    if not domain:
        return "not recorded (the model was trained by an mdplugin that did not record it)"
    shown = dict(domain)
    if "shortest_distance" in shown:
        shown["shortest_distance"] = {pair: round(d, 3) for pair, d in shown["shortest_distance"].items()}
    return shown
