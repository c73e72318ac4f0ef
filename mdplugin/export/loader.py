"""The one loader every client calls: "checkpoint or export?" is decided here, and only here.

`load_model_file` gives a scripted module and its metadata from either kind of file (a checkpoint is
scripted in memory, exactly as the exporter would); `Potential` wraps that for Python callers.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import vesin_torch  # noqa: F401 - registers the neighbour-list class that local exports call

from mdplugin.elements import atomic_number
from mdplugin.export.contract import METADATA_JSON, ExportError, check_neighbour_count, read_export_metadata
from mdplugin.threads import choose_threads, torch_threads


class ModelFileError(ValueError):
    """A file that is neither an mdplugin checkpoint nor an mdplugin export."""


def model_file_kind(path: str | Path) -> str:
    """'export' or 'checkpoint', judged from the archive's contents without unpickling anything."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    if path.stat().st_size == 0:
        raise ModelFileError(f"model file {path} is empty (0 bytes); was it copied or written completely?")
    if not zipfile.is_zipfile(path):
        raise ModelFileError(
            f"{path} is neither an mdplugin checkpoint nor an export: it is not a torch archive at all"
        )
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    if any(name.endswith(f"extra/{METADATA_JSON}") for name in names):
        return "export"
    if any(name.endswith("constants.pkl") or "/code/" in name for name in names):
        raise ExportError(
            f"{path} is a TorchScript file without mdplugin metadata; export a checkpoint with `mdplugin export`"
        )
    return "checkpoint"


def load_model_file(
    path: str | Path, dtype: str | None = None, device: str = "cpu"
) -> tuple[torch.jit.ScriptModule, dict]:
    """The scripted model and its metadata, from an export or a checkpoint.

    `dtype` applies to checkpoints only (an export keeps the precision it was written in); its default
    is float64 on the CPU and float32 on a GPU.
    """
    if model_file_kind(path) == "export":
        metadata = read_export_metadata(path)
        try:
            # map_location moves the frozen constants too, which module.to() later would not
            module = torch.jit.load(str(path), map_location=device)
        except Exception as error:  # torch raises several kinds for a damaged archive
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ExportError(
                f"{path} has valid metadata but torch.jit.load cannot read its model ({first_line}); re-export it"
            ) from None
        return module.eval(), metadata
    from mdplugin.export.exporter import check_finite_weights, export_metadata, file_sha256, script_model
    from mdplugin.model.checkpoint import model_from_checkpoint, read_checkpoint

    checkpoint = read_checkpoint(path)
    model = model_from_checkpoint(checkpoint)
    check_finite_weights(model, path)
    dtype = dtype or ("float64" if device == "cpu" else "float32")
    metadata = export_metadata(checkpoint, model, dtype, device, file_sha256(path))
    return _reloaded(script_model(model, dtype, device), device), metadata


def _reloaded(module: torch.jit.ScriptModule, device: str) -> torch.jit.ScriptModule:
    """The module saved and loaded again, like an export file: scripting a wrapper around a module
    frozen in this process trips TorchScript's type sharing ("Could not cast attribute 'model'")."""
    buffer = io.BytesIO()
    torch.jit.save(module, buffer)
    buffer.seek(0)
    return torch.jit.load(buffer, map_location=device)


@dataclass
class Result:
    energy: float  # eV
    forces: np.ndarray  # [N, 3] eV/Å
    per_atom_energy: np.ndarray  # [N] eV
    virial: np.ndarray | None = None  # [3, 3] eV, -dE/dstrain; local models only


class Potential:
    """An exported model (or a checkpoint, scripted in memory) as a callable for structures."""

    def __init__(self, module: torch.jit.ScriptModule, metadata: dict, device: str = "cpu", threads: int | None = None):
        self.module = module
        self.metadata = metadata
        self.device = torch.device(device)
        self.dtype = getattr(torch, metadata["dtype"])
        self.threads = threads  # None: chosen per call from the system size (mdplugin.threads)

    @classmethod
    def load(
        cls, path: str | Path, device: str = "cpu", dtype: str | None = None, threads: int | None = None
    ) -> Potential:
        module, metadata = load_model_file(path, dtype=dtype, device=device)
        return cls(module, metadata, device, threads)

    @property
    def elements(self) -> list[str]:
        return list(self.metadata["elements"])

    @property
    def is_local(self) -> bool:
        return self.metadata.get("model_kind") == "local"

    def __call__(
        self, positions, atomic_numbers, charge: int = 0, multiplicity: int = 1, cell=None, pbc=None
    ) -> Result:
        """Evaluate one structure: positions [N,3] in Å, atomic numbers or element symbols [N]; for a
        local model optionally a cell [3,3] (Å, rows are lattice vectors) and pbc [3] flags."""
        numbers = [atomic_number(a) if isinstance(a, str) else int(a) for a in atomic_numbers]
        # float64 in: a float32 model takes the digits it needs after its own centring or differencing
        positions = torch.as_tensor(np.asarray(positions, dtype=np.float64), device=self.device)
        numbers = torch.tensor(numbers, dtype=torch.long, device=self.device)
        charge, multiplicity = integer_state(charge, "charge"), integer_state(multiplicity, "multiplicity")
        periodic = pbc is not None and bool(np.any(pbc))
        if cell is not None and pbc is None:
            raise ValueError("a cell was given without pbc: pass pbc=[True, True, True] for a periodic box, or no cell")
        if periodic and self.is_local:
            check_neighbour_count(len(numbers), cell, pbc, self.metadata.get("interaction_range"))
        with torch_threads(choose_threads(len(numbers), self.threads).count):
            return self._evaluate(positions, numbers, charge, multiplicity, cell, pbc, periodic)

    def _evaluate(self, positions, numbers, charge, multiplicity, cell, pbc, periodic: bool) -> Result:
        try:
            if self.is_local:
                box = torch.as_tensor(np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64))
                flags = torch.as_tensor(
                    np.zeros(3, bool) if pbc is None else np.array(np.broadcast_to(np.asarray(pbc, bool), 3))
                )
                energy, forces, per_atom, virial = self.module(
                    positions, numbers, charge, multiplicity, box.to(self.device), flags.to(self.device)
                )
                virial = virial.detach().cpu().double().numpy()
            else:
                if periodic:
                    raise ValueError(
                        "the structure is periodic, but this model uses global attention and cannot see periodic "
                        "images; give a molecule without a cell (pbc False) or use a local model"
                    )
                energy, forces, per_atom = self.module(positions, numbers, charge, multiplicity)
                virial = None
        except torch.jit.Error as error:
            raise ValueError(script_error_message(error)) from None
        return Result(
            float(energy.detach()),
            forces.detach().cpu().double().numpy(),
            per_atom.detach().cpu().double().numpy(),
            virial,
        )

    def evaluate_atoms(self, atoms) -> Result:
        """Evaluate an ase.Atoms (charge and multiplicity from atoms.info when present; cell and pbc)."""
        return self(
            atoms.positions,
            atoms.numbers,
            atoms.info.get("charge", 0),
            atoms.info.get("multiplicity", 1),
            atoms.cell.array if atoms.pbc.any() else None,
            atoms.pbc if atoms.pbc.any() else None,
        )


def integer_state(value, name: str) -> int:
    """A total charge or spin multiplicity as an int; a fractional or huge value is an error, not truncated."""
    number = float(value)
    if not number.is_integer():
        raise ValueError(f"{name} must be a whole number, not {value}")
    if abs(number) > 1000:
        raise ValueError(f"{name} {value} is far outside any model's range")
    return int(number)


def script_error_message(error: Exception) -> str:
    """The user's message from a TorchScript exception, without the interpreter's traceback."""
    text = str(error)
    for marker in ("builtins.ValueError: ", "ValueError: ", "RuntimeError: "):
        if marker in text:
            return text.rsplit(marker, 1)[1].strip()
    return (text.strip().splitlines() or ["the model failed without a message"])[-1]
