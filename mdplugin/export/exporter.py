"""The exporter: a trained checkpoint becomes one TorchScript file with forces and metadata inside.

The contract (export/SPEC.md): forward(positions [N,3] Å, atomic_numbers [N] int64, charge, multiplicity)
returns (energy [] eV, forces [N,3] eV/Å, per_atom_energy [N] eV). Metadata travels in the file as
`_extra_files`: `mdplugin.json` (everything) and `mdplugin.txt` (flat key=value lines for C++ clients).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import zipfile
from pathlib import Path
from typing import List, Tuple  # noqa: UP035 - TorchScript needs typing generics

import torch
from torch import Tensor, nn

from mdplugin.elements import symbols
from mdplugin.model.checkpoint import model_from_checkpoint, package_versions, read_checkpoint
from mdplugin.model.transformer import TransformerPotential, count_parameters

EXPORT_FORMAT = "mdplugin-export"
EXPORT_VERSION = 1
SUPPORTED_EXPORT_VERSIONS = (1,)
METADATA_JSON = "mdplugin.json"
METADATA_TEXT = "mdplugin.txt"
DTYPES = {"float32": torch.float32, "float64": torch.float64}


class ExportError(ValueError):
    """A file that is not a usable mdplugin export."""


class ExportedPotential(nn.Module):
    """Energy, forces and per-atom energies of one structure; the scripted inference path."""

    def __init__(self, model: TransformerPotential):
        super().__init__()
        self.model = model
        self.elements: List[int] = list(model.config.elements)  # noqa: UP006

    def forward(
        self, positions: Tensor, atomic_numbers: Tensor, charge: int = 0, multiplicity: int = 1
    ) -> Tuple[Tensor, Tensor, Tensor]:  # noqa: UP006
        if positions.dim() != 2 or positions.size(1) != 3:
            raise ValueError(f"positions must have shape [N, 3] (Å), got {list(positions.shape)}")
        if atomic_numbers.dim() != 1 or atomic_numbers.size(0) != positions.size(0):
            raise ValueError(
                f"atomic_numbers must have shape [N] matching positions, got {list(atomic_numbers.shape)} for {positions.size(0)} atoms"
            )
        if positions.size(0) == 0:
            raise ValueError("the structure has no atoms")
        if not bool(torch.isfinite(positions).all()):
            raise ValueError("positions contain NaN or infinite values; check the structure or the integrator")
        numbers = atomic_numbers.to(torch.long)
        largest = self.model.species_of_atomic_number.size(0) - 1
        if bool(((numbers < 1) | (numbers > largest)).any()):
            raise ValueError(f"atomic numbers must lie in 1..{largest}")
        species = self.model.species_of_atomic_number[numbers]
        if bool((species < 0).any()):
            unknown = int(numbers[species < 0][0])
            raise ValueError(
                f"atomic number {unknown} is not one of the model's elements {self.elements}; use a model trained on it"
            )
        if charge < -self.model.max_charge or charge > self.model.max_charge:
            raise ValueError(f"total charge {charge} is outside the model's range")
        if multiplicity < 1 or multiplicity > self.model.multiplicity_embedding.num_embeddings:
            raise ValueError(f"spin multiplicity {multiplicity} is outside the model's range")

        dtype = self.model.reference_energies.dtype
        x = positions.detach().to(dtype).unsqueeze(0).requires_grad_(True)
        mask = torch.ones_like(species, dtype=torch.bool).unsqueeze(0)
        system = torch.tensor([charge, multiplicity], dtype=torch.long, device=positions.device)
        per_atom = self.model(x, species.unsqueeze(0), mask, system[:1], system[1:])[0]
        energy = per_atom.sum()
        gradient = torch.autograd.grad([energy], [x])[0]
        if gradient is None:
            raise RuntimeError("no gradient of the energy with respect to the positions")
        forces = -gradient[0]
        return energy.detach().to(positions.dtype), forces.to(positions.dtype), per_atom.detach().to(positions.dtype)


def default_output_path(checkpoint_path: str | Path) -> Path:
    path = Path(checkpoint_path)
    return path.with_name(f"{path.stem}-export.pt")


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def script_model(model: TransformerPotential, dtype: str = "float32", device: str = "cpu") -> torch.jit.ScriptModule:
    """The scripted, frozen inference module for a model (no file written)."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use float32 or float64")
    module = ExportedPotential(model.to(device=device, dtype=DTYPES[dtype]).eval())
    scripted = torch.jit.script(module)
    # freezing inlines the weights as constants: identical numbers, less interpreter overhead
    return torch.jit.freeze(scripted.eval(), preserved_attrs=["elements"])


def export_metadata(
    checkpoint: dict, model: TransformerPotential, dtype: str, device: str, checkpoint_sha256: str
) -> dict:
    return {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_VERSION,
        "elements": symbols(model.config.elements),
        "atomic_numbers": list(model.config.elements),
        "units": {"positions": "angstrom", "energy": "eV", "forces": "eV/angstrom"},
        "dtype": dtype,
        "device": device,
        "interaction_range": None,  # global attention: every atom sees every other atom
        "periodic": False,
        "model_config": model.config.to_dict(),
        "parameters": count_parameters(model),
        "charge_range": [-model.max_charge, model.max_charge],
        "multiplicity_range": [1, model.multiplicity_embedding.num_embeddings],
        "provenance": {
            "checkpoint_sha256": checkpoint_sha256,
            "training_data_sha256": checkpoint["provenance"].get("data_sha256", {}),
            "trained": checkpoint["provenance"].get("date"),
            "exported": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "versions": package_versions(),
        },
    }


def metadata_text(metadata: dict) -> str:
    """Flat key=value lines, for clients without a JSON parser (the LAMMPS pair style, the C++ checker)."""
    lines = {
        "format": metadata["format"],
        "format_version": metadata["format_version"],
        "dtype": metadata["dtype"],
        "elements": " ".join(metadata["elements"]),
        "atomic_numbers": " ".join(str(z) for z in metadata["atomic_numbers"]),
        "interaction_range": "none" if metadata["interaction_range"] is None else metadata["interaction_range"],
        "energy_unit": metadata["units"]["energy"],
        "length_unit": metadata["units"]["positions"],
    }
    return "".join(f"{key}={value}\n" for key, value in lines.items())


def export(
    checkpoint_path: str | Path,
    output: str | Path | None = None,
    dtype: str = "float32",
    device: str = "cpu",
    overwrite: bool = False,
) -> Path:
    """Write the TorchScript export of a checkpoint; returns its path."""
    checkpoint_path = Path(checkpoint_path)
    output = Path(output) if output is not None else default_output_path(checkpoint_path)
    if output.resolve() == checkpoint_path.resolve():
        raise ExportError(f"the export would overwrite its own checkpoint {checkpoint_path}; choose another -o")
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} exists; pass --force to overwrite it or choose another -o")
    if device == "cuda" and not torch.cuda.is_available():
        raise ExportError("--device cuda asked for, but torch sees no CUDA device here; export for cpu instead")
    checkpoint = read_checkpoint(checkpoint_path)
    model = model_from_checkpoint(checkpoint)
    scripted = script_model(model, dtype, device)
    metadata = export_metadata(checkpoint, model, dtype, device, file_sha256(checkpoint_path))
    extra_files = {METADATA_JSON: json.dumps(metadata, indent=2), METADATA_TEXT: metadata_text(metadata)}
    temporary = output.with_name(output.name + ".partial")
    torch.jit.save(scripted, str(temporary), _extra_files=extra_files)
    temporary.replace(output)
    return output


def read_export_metadata(path: str | Path) -> dict:
    """Metadata of an export, checked against the formats this mdplugin reads."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    try:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.endswith(f"extra/{METADATA_JSON}")), None)
            if name is None:
                raise ExportError(
                    f"{path} is a torch file without mdplugin metadata; export a checkpoint with `mdplugin export`"
                )
            metadata = json.loads(archive.read(name))
    except zipfile.BadZipFile:
        raise ExportError(
            f"{path} is not a TorchScript export (not a zip archive); make one with `mdplugin export`"
        ) from None
    if metadata.get("format") != EXPORT_FORMAT:
        raise ExportError(f"{path} has format {metadata.get('format')!r}, not {EXPORT_FORMAT!r}")
    if metadata.get("format_version") not in SUPPORTED_EXPORT_VERSIONS:
        raise ExportError(
            f"{path} has export format version {metadata.get('format_version')}; this mdplugin reads "
            f"versions {list(SUPPORTED_EXPORT_VERSIONS)}. Re-export the checkpoint with this mdplugin."
        )
    return metadata


def load_export(path: str | Path, device: str = "cpu") -> tuple[torch.jit.ScriptModule, dict]:
    """The scripted module and its metadata."""
    metadata = read_export_metadata(path)
    module = torch.jit.load(str(path), map_location=device)
    return module.eval(), metadata
