"""Metadata of a model file, whether it is a training checkpoint or an export."""

from __future__ import annotations

from pathlib import Path

from mdplugin.elements import symbols


def describe(path: str | Path) -> dict:
    """A readable summary of a checkpoint or an export; a clear error for anything else."""
    from mdplugin.export.exporter import ExportError, read_export_metadata
    from mdplugin.model.checkpoint import CheckpointError, read_checkpoint

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    try:
        metadata = read_export_metadata(path)
        return {"kind": "export", "file": str(path), **metadata}
    except ExportError as export_error:
        try:
            checkpoint = read_checkpoint(path)
        except CheckpointError:
            raise ValueError(f"{path} is neither an mdplugin checkpoint nor an export ({export_error})") from None
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
    return summary
