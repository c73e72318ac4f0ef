"""The Python client of the export contract: load a model file, evaluate structures."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mdplugin.elements import atomic_number


@dataclass
class Result:
    energy: float  # eV
    forces: np.ndarray  # [N, 3] eV/Å
    per_atom_energy: np.ndarray  # [N] eV


class Potential:
    """An exported model (or a checkpoint, scripted in memory) as a callable for structures."""

    def __init__(self, module: torch.jit.ScriptModule, metadata: dict, device: str = "cpu"):
        self.module = module
        self.metadata = metadata
        self.device = torch.device(device)
        self.dtype = getattr(torch, metadata["dtype"])

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> Potential:
        from mdplugin.export.exporter import ExportError, load_export, read_export_metadata

        try:
            read_export_metadata(path)
        except ExportError:
            return cls.from_checkpoint(path, device=device)
        module, metadata = load_export(path, device=device)
        return cls(module, metadata, device)

    @classmethod
    def from_checkpoint(cls, path: str | Path, dtype: str = "float64", device: str = "cpu") -> Potential:
        from mdplugin.export.exporter import export_metadata, file_sha256, script_model
        from mdplugin.model.checkpoint import model_from_checkpoint, read_checkpoint

        checkpoint = read_checkpoint(path)
        model = model_from_checkpoint(checkpoint)
        metadata = export_metadata(checkpoint, model, dtype, device, file_sha256(path))
        return cls(script_model(model, dtype, device), metadata, device)

    @property
    def elements(self) -> list[str]:
        return list(self.metadata["elements"])

    def __call__(self, positions, atomic_numbers, charge: int = 0, multiplicity: int = 1) -> Result:
        """Evaluate one structure: positions [N,3] in Å, atomic numbers or element symbols [N]."""
        numbers = [atomic_number(a) if isinstance(a, str) else int(a) for a in atomic_numbers]
        positions = torch.as_tensor(np.asarray(positions, dtype=np.float64), dtype=self.dtype, device=self.device)
        numbers = torch.tensor(numbers, dtype=torch.long, device=self.device)
        try:
            energy, forces, per_atom = self.module(positions, numbers, int(charge), int(multiplicity))
        except torch.jit.Error as error:
            raise ValueError(_script_error_message(error)) from None
        return Result(
            float(energy.detach()), forces.detach().cpu().double().numpy(), per_atom.detach().cpu().double().numpy()
        )

    def evaluate_atoms(self, atoms) -> Result:
        """Evaluate an ase.Atoms (charge and multiplicity from atoms.info when present)."""
        return self(atoms.positions, atoms.numbers, atoms.info.get("charge", 0), atoms.info.get("multiplicity", 1))


def _script_error_message(error: Exception) -> str:
    """The user's message from a TorchScript exception, without the interpreter's traceback."""
    text = str(error)
    for marker in ("builtins.ValueError: ", "ValueError: ", "RuntimeError: "):
        if marker in text:
            return text.rsplit(marker, 1)[1].strip()
    return text
