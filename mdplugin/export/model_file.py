"""A model file, opened once: `open_model(path)` reads the bytes, decides "checkpoint or export?" (here
and only here), checks the contents and gives one `ModelFile` that every client is handed: the CLI's
`run`, `info` and `evaluate`, the OpenMM, openmm-ml and ASE adapters, and the LAMMPS checks.

A `ModelFile` knows its kind, its typed metadata (`ModelInfo`: elements, global or local, ranges, the
training domain), the file's SHA-256 and how to give the scripted module: an export is loaded from the
bytes already read; a checkpoint is scripted in memory exactly as `mdplugin export` would script it.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
import vesin_torch  # noqa: F401 - registers the neighbour-list class that local exports call

from mdplugin.elements import symbols
from mdplugin.export.contract import COMPILED_EXPORT_VERSION, METADATA_JSON, ExportError, parse_export_metadata


class ModelFileError(ValueError):
    """A file that is neither an mdplugin checkpoint nor an mdplugin export."""


@dataclass(frozen=True)
class ModelInfo:
    """What a client needs to know about a model, from an export's metadata or a checkpoint's config.

    `kind` is the one field that says global or local; everything periodic follows from it."""

    kind: str  # "global": attention over every atom, molecules only; "local": attention within interaction_range
    elements: tuple[str, ...]
    atomic_numbers: tuple[int, ...]
    interaction_range: float | None  # Å; None for a global model
    receptive_field: float | None  # Å: the farthest atom that changes an atom's energy; None for a global model
    charge_range: tuple[int, int]
    multiplicity_range: tuple[int, int]
    domain: dict | None = None  # what the training data covered; None for models made before it was recorded
    dtype: str | None = None  # an export's precision; None for a checkpoint (chosen when it is scripted)
    committee: int = 0  # members of a committee export (its module has `deviation`); 0: a single model

    @property
    def is_local(self) -> bool:
        return self.kind == "local"

    @classmethod
    def from_export(cls, metadata: dict) -> ModelInfo:
        # version 1 exports were all global and wrote no model_kind; version 2 added it
        kind = metadata.get("model_kind") or ("local" if metadata["format_version"] >= 2 else "global")
        numbers = tuple(metadata["atomic_numbers"])
        return cls(
            kind=kind,
            elements=tuple(metadata["elements"]),
            atomic_numbers=numbers,
            interaction_range=metadata["interaction_range"],
            receptive_field=metadata.get("receptive_field"),
            charge_range=tuple(metadata.get("charge_range", (-1000, 1000))),
            multiplicity_range=tuple(metadata.get("multiplicity_range", (1, 1000))),
            domain=metadata.get("domain"),
            dtype=metadata["dtype"],
            committee=int((metadata.get("committee") or {}).get("members", 0)),
        )

    @classmethod
    def from_checkpoint(cls, checkpoint: dict) -> ModelInfo:
        from mdplugin.model.transformer import ModelConfig

        config = ModelConfig.from_dict(checkpoint["config"])
        return cls(
            kind="local" if config.is_local else "global",
            elements=tuple(symbols(config.elements)),
            atomic_numbers=tuple(config.elements),
            interaction_range=config.interaction_range,
            receptive_field=config.receptive_field,
            charge_range=(-config.max_charge, config.max_charge),
            multiplicity_range=(1, config.max_multiplicity),
            domain=checkpoint.get("domain"),
        )

    def check_periodic(self, periodic: bool, whole_system: bool = True) -> None:
        """A global model cannot see periodic images: it may compute only a part of a periodic system
        (whole molecules, ML/MM), never the whole of it. The one place this rule is enforced."""
        if periodic and whole_system and not self.is_local:
            raise ValueError(
                "the system is periodic, but the model uses global attention (interaction_range: none) and "
                "cannot see periodic images, so it cannot compute the whole periodic system; simulate the "
                "molecule without a periodic box (no CRYST1 line, no cell or pbc False), compute only the "
                "molecule with the model and its surroundings with a force field (ML/MM: createMixedSystem, "
                "or mdplugin run --ml-residues), or use a local model (mdplugin train --interaction-range)"
            )

    def state_messages(self, charge: int, multiplicity: int, options: str) -> list[str]:
        """Why the charge or multiplicity is outside what the model was trained on (the training domain's 'charges'
        and 'multiplicities'), one sentence each; `options` names where the user sets them. A model that
        records no domain cannot be checked: a charged or open-shell system gets a sentence saying so."""
        messages = []
        for name, value, key, usual in (("total charge", charge, "charges", 0),
                                        ("spin multiplicity", multiplicity, "multiplicities", 1)):  # fmt: skip
            seen = (self.domain or {}).get(key)
            if seen is not None and value not in seen:
                messages.append(
                    f"the model was trained on {name} {', '.join(str(v) for v in seen)} only, and this system has "
                    f"{name} {value}: its energies and forces are extrapolated; check {options}"
                )
            elif seen is None and value != usual:
                messages.append(
                    f"this system has {name} {value}, but the model records no training {key} (it was made before "
                    f"mdplugin recorded them), so nothing shows it was trained on {name} {value}; a model trained "
                    f"on neutral singlets only extrapolates here; check {options} and the model's training data"
                )
        return messages

    def check_state(self, charge: int, multiplicity: int) -> None:
        """Refuse a charge or multiplicity outside what the model's embeddings cover."""
        low, high = self.charge_range
        if not low <= charge <= high:
            raise ValueError(f"total charge {charge} is outside the model's range {low}..{high}")
        low, high = self.multiplicity_range
        if not low <= multiplicity <= high:
            raise ValueError(f"spin multiplicity {multiplicity} is outside the model's range {low}..{high}")


@dataclass
class ModelFile:
    """One model file, read once; see `open_model`."""

    path: Path
    kind: str  # "export" (TorchScript), "compiled" (AOT-Inductor package, version 4) or "checkpoint"
    sha256: str
    info: ModelInfo
    metadata: dict  # an export's metadata as written; for a checkpoint, its entries other than the weights
    checkpoint: dict | None = field(default=None, repr=False)  # the checkpoint dict (checkpoints only)
    data: bytes = field(default=b"", repr=False)  # the file's bytes (exports only: torch.jit.load reads them)

    @property
    def is_local(self) -> bool:
        return self.info.is_local

    @property
    def domain(self) -> dict | None:
        return self.info.domain

    def module(self, dtype: str | None = None, device: str = "cpu") -> torch.jit.ScriptModule:
        """The scripted model (for a compiled export, a `CompiledPotential` called the same way). `dtype` applies
        to checkpoints only (an export keeps the precision it was written in); its default is float64 on the
        CPU and float32 on a GPU."""
        if self.kind == "compiled":
            from mdplugin.export.compiled import CompiledPotential

            return CompiledPotential(self.path, self.metadata, device)
        if self.kind == "export":
            try:
                # map_location moves the frozen constants too, which module.to() later would not
                return torch.jit.load(io.BytesIO(self.data), map_location=device).eval()
            except Exception as error:  # torch raises several kinds for a damaged archive
                first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
                raise ExportError(
                    f"{self.path} has valid metadata but torch.jit.load cannot read its model ({first_line}); "
                    "re-export it"
                ) from None
        from mdplugin.export.exporter import script_model

        dtype = dtype or default_dtype(device)
        return _reloaded(script_model(self.model(), dtype, device), device)

    def model(self):
        """The trainable `TransformerPotential` of a checkpoint (weights checked finite)."""
        from mdplugin.export.exporter import check_finite_weights
        from mdplugin.model.checkpoint import model_from_checkpoint

        if self.checkpoint is None:
            raise ModelFileError(f"{self.path} is an export: it holds a scripted model, not trainable weights")
        model = model_from_checkpoint(self.checkpoint)
        check_finite_weights(model, self.path)
        return model

    def export_metadata(self, dtype: str | None = None, device: str = "cpu") -> dict:
        """The metadata an export of this model carries (for an export: its own)."""
        if self.kind in ("export", "compiled"):
            return self.metadata
        from mdplugin.export.exporter import export_metadata

        dtype = dtype or default_dtype(device)
        return export_metadata(self.checkpoint, self.model(), dtype, device, self.sha256)


def open_model(path: str | Path) -> ModelFile:
    """Read a checkpoint or an export once and check it; a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    data = path.read_bytes()  # the one read of the file
    if not data:
        raise ModelFileError(f"model file {path} is empty (0 bytes); was it copied or written completely?")
    sha256 = hashlib.sha256(data).hexdigest()
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise ModelFileError(
            f"{path} is neither an mdplugin checkpoint nor an export: it is not a torch archive at all"
        ) from None
    with archive:
        names = archive.namelist()
        if any(name.endswith(f"extra/{METADATA_JSON}") for name in names):
            metadata = parse_export_metadata(archive, path)
            kind = "compiled" if metadata["format_version"] == COMPILED_EXPORT_VERSION else "export"
            return ModelFile(path, kind, sha256, ModelInfo.from_export(metadata), metadata, data=data)
        if any(name.endswith("constants.pkl") or "/code/" in name for name in names):
            raise ExportError(
                f"{path} is a TorchScript file without mdplugin metadata; export a checkpoint with `mdplugin export`"
            )
    from mdplugin.model.checkpoint import read_checkpoint

    checkpoint = read_checkpoint(path, data)
    metadata = {key: value for key, value in checkpoint.items() if key not in ("state_dict", "resume")}
    return ModelFile(path, "checkpoint", sha256, ModelInfo.from_checkpoint(checkpoint), metadata, checkpoint)


def default_dtype(device: str) -> str:
    """What a checkpoint is scripted as when no precision is asked for: float64 on the CPU, float32 on a GPU."""
    return "float64" if str(device).startswith("cpu") else "float32"


def _reloaded(module: torch.jit.ScriptModule, device: str) -> torch.jit.ScriptModule:
    """The module saved and loaded again, like an export file: scripting a wrapper around a module
    frozen in this process trips TorchScript's type sharing ("Could not cast attribute 'model'")."""
    buffer = io.BytesIO()
    torch.jit.save(module, buffer)
    buffer.seek(0)
    return torch.jit.load(buffer, map_location=device)
