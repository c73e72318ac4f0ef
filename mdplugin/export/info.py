"""`mdplugin info`: a readable summary of a model file, checkpoint or export."""

from __future__ import annotations

from pathlib import Path

from mdplugin.export.model_file import ModelFile, open_model

GLOBAL_ATTENTION_LIMITS = (
    "Global attention is not size-extensive: the forces on a molecule change when a second molecule is placed "
    "far away. Simulate one molecule per model evaluation (several molecules: use a local model trained with "
    "--interaction-range)."
)


def describe(model: ModelFile | str | Path) -> dict:
    """A readable summary of a checkpoint or an export; a clear error for anything else."""
    if not isinstance(model, ModelFile):
        model = open_model(model)
    if model.kind in ("export", "compiled"):
        summary = {"kind": model.kind, "file": str(model.path), **model.metadata}
    else:
        checkpoint = model.checkpoint
        training = checkpoint.get("training", {})
        history = training.get("history", [])
        summary = {
            "kind": "checkpoint",
            "file": str(model.path),
            "format_version": checkpoint["format_version"],
            "elements": list(model.info.elements),
            "reference_energies_ev": dict(zip(model.info.elements, checkpoint["reference_energies"])),
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
    summary["sha256"] = model.sha256
    summary["domain"] = _shown_domain(model.info.domain)
    if not model.is_local:
        summary["limits"] = GLOBAL_ATTENTION_LIMITS
    return summary


def _shown_domain(domain: dict | None) -> dict | str:
    """The training domain for display: shortest distances to 0.001 Å."""
    if not domain:
        return "not recorded (the model was trained by an mdplugin that did not record it)"
    shown = dict(domain)
    if "shortest_distance" in shown:
        shown["shortest_distance"] = {pair: round(d, 3) for pair, d in shown["shortest_distance"].items()}
    return shown
