"""An ASE calculator backed by an export (or a checkpoint), so ASE optimisers and MD can use a model."""

from __future__ import annotations

from pathlib import Path

from ase.calculators.calculator import Calculator, all_changes

from mdplugin.export.loader import Potential


class TransformerCalculator(Calculator):
    """Energy (eV), forces (eV/Å) and per-atom energies from an mdplugin model.

    Charge and multiplicity come from `atoms.info` ("charge", "multiplicity") when present, else from
    the constructor. Periodic cells are refused: the model has global attention and no cutoff.
    """

    implemented_properties = ["energy", "free_energy", "forces", "energies"]

    def __init__(
        self, model: str | Path | Potential, charge: int = 0, multiplicity: int = 1, device: str = "cpu", **kwargs
    ):
        super().__init__(**kwargs)
        self.potential = model if isinstance(model, Potential) else Potential.load(model, device=device)
        self.charge = charge
        self.multiplicity = multiplicity

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        if self.atoms.pbc.any():
            raise ValueError(
                "this model has global attention and no interaction range, so it cannot treat a periodic cell; "
                "set atoms.pbc = False for a molecule or cluster"
            )
        result = self.potential(
            self.atoms.positions,
            self.atoms.numbers,
            self.atoms.info.get("charge", self.charge),
            self.atoms.info.get("multiplicity", self.multiplicity),
        )
        self.results = {
            "energy": result.energy,
            "free_energy": result.energy,
            "forces": result.forces,
            "energies": result.per_atom_energy,
        }
