"""The Python adapter: a model file as a callable for structures (`mdplugin.load`, the ASE calculator,
`mdplugin evaluate`). Which kind of file it is, and what it holds, `open_model` decides."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from mdplugin.allocation import retain_freed_memory
from mdplugin.elements import atomic_number
from mdplugin.export.model_file import ModelFile, ModelInfo, default_dtype, open_model
from mdplugin.limits import check_neighbour_count
from mdplugin.threads import choose_threads, torch_threads


@dataclass
class Result:
    energy: float  # eV
    forces: np.ndarray  # [N, 3] eV/Å
    per_atom_energy: np.ndarray  # [N] eV
    virial: np.ndarray | None = None  # [3, 3] eV, -dE/dstrain; local models only


class Potential:
    """An exported model (or a checkpoint, scripted in memory) as a callable for structures."""

    def __init__(self, module: torch.nn.Module, info: ModelInfo, device: str = "cpu", threads: int | None = None):
        self.module = module
        self.info = info
        self.device = torch.device(device)
        self.dtype = getattr(torch, info.dtype)
        self.threads = threads  # None: chosen per call from the system size (mdplugin.threads)
        retain_freed_memory()  # no page faults for every call's activations (mdplugin.allocation)

    @classmethod
    def load(
        cls, path: str | Path | ModelFile, device: str = "cpu", dtype: str | None = None, threads: int | None = None
    ) -> Potential:
        """`dtype` applies to checkpoints only (scripted in memory); an export keeps its own."""
        model = path if isinstance(path, ModelFile) else open_model(path)
        dtype = model.info.dtype or dtype or default_dtype(device)
        return cls(model.module(dtype, device), replace(model.info, dtype=dtype), device, threads)

    @property
    def elements(self) -> list[str]:
        return list(self.info.elements)

    @property
    def is_local(self) -> bool:
        return self.info.is_local

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
            check_neighbour_count(len(numbers), cell, pbc, self.info.interaction_range)
        with torch_threads(choose_threads(len(numbers), self.threads).count):
            return self._evaluate(positions, numbers, charge, multiplicity, cell, pbc, periodic)

    def _evaluate(self, positions, numbers, charge, multiplicity, cell, pbc, periodic: bool) -> Result:
        try:
            if self.is_local:
                box, flags = _cell_and_pbc(cell, pbc, self.device)
                energy, forces, per_atom, virial = self.module(positions, numbers, charge, multiplicity, box, flags)
                virial = virial.detach().cpu().double().numpy()
            else:
                self.info.check_periodic(periodic)
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

    def deviation(
        self, positions, atomic_numbers, charge: int = 0, multiplicity: int = 1, cell=None, pbc=None, lead=None
    ):
        """A committee export's model deviation of one structure: (max per-atom force deviation eV/Å,
        per-atom force deviations [N] eV/Å, energy deviation per atom eV). Arguments as for a call; `lead`:
        member 0's (energy eV, forces [N, 3] eV/Å) when the caller has them (K-1 evaluations, not K)."""
        if not self.info.committee:
            raise ValueError("this model is a single model, not a committee: export several checkpoints together")
        numbers = [atomic_number(a) if isinstance(a, str) else int(a) for a in atomic_numbers]
        positions = torch.as_tensor(np.asarray(positions, dtype=np.float64), device=self.device)
        numbers = torch.tensor(numbers, dtype=torch.long, device=self.device)
        charge, multiplicity = integer_state(charge, "charge"), integer_state(multiplicity, "multiplicity")
        with torch_threads(choose_threads(len(numbers), self.threads).count):
            try:
                arguments = (positions, numbers, charge, multiplicity)
                if self.is_local:
                    arguments += _cell_and_pbc(cell, pbc, self.device)
                else:
                    self.info.check_periodic(pbc is not None and bool(np.any(pbc)))
                if lead is None:
                    largest, per_atom, energy = self.module.deviation(*arguments)
                else:
                    from mdplugin.export.committee import force_deviation

                    energies, forces = self.module.others(*arguments)
                    lead_forces = torch.as_tensor(np.asarray(lead[1], dtype=np.float64))
                    largest, per_atom, energy = force_deviation(
                        torch.cat([lead_forces.unsqueeze(0), forces.double().cpu()]),
                        torch.cat([torch.tensor([float(lead[0])], dtype=torch.float64), energies.double().cpu()]),
                        len(numbers),
                    )
            except torch.jit.Error as error:
                raise ValueError(script_error_message(error)) from None
        return float(largest.detach()), per_atom.detach().cpu().double().numpy(), float(energy.detach())

    def deviation_atoms(self, atoms):
        """`deviation` of an ase.Atoms (charge and multiplicity from atoms.info; cell and pbc)."""
        periodic = atoms.pbc.any()
        return self.deviation(atoms.positions, atoms.numbers, atoms.info.get("charge", 0),
                              atoms.info.get("multiplicity", 1), atoms.cell.array if periodic else None,
                              atoms.pbc if periodic else None)  # fmt: skip

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


def _cell_and_pbc(cell, pbc, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A local model's cell [3, 3] (zeros: none) and pbc [3] (all False: none) as tensors."""
    box = torch.as_tensor(np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64))
    flags = torch.as_tensor(np.zeros(3, bool) if pbc is None else np.array(np.broadcast_to(np.asarray(pbc, bool), 3)))
    return box.to(device), flags.to(device)


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
