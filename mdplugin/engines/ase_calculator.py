"""An ASE calculator backed by an export (or a checkpoint), so ASE optimisers and MD can use a model."""

from __future__ import annotations

import warnings
from pathlib import Path

from ase.calculators.calculator import Calculator, all_changes

from mdplugin.export.loader import Potential
from mdplugin.export.model_file import ModelFile


class TransformerCalculator(Calculator):
    """Energy (eV), forces (eV/Å), per-atom energies and, for a local model in a periodic cell, stress (eV/Å³).

    Charge and multiplicity come from `atoms.info` ("charge", "multiplicity") when present, else from
    the constructor. A global-attention model refuses periodic cells; a local model treats any cell
    and pbc, and leaves out the stress of a structure without a periodic cell. A committee export adds its
    model deviation to the results: "max_force_deviation" (eV/Å), "force_deviations" [N] (eV/Å) and
    "energy_deviation_per_atom" (eV), computed by every member (K x one model's cost).
    """

    implemented_properties = ["energy", "free_energy", "forces", "energies", "stress"]

    def __init__(
        self,
        model: str | Path | ModelFile | Potential,
        charge: int = 0,
        multiplicity: int = 1,
        device: str = "cpu",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.potential = model if isinstance(model, Potential) else Potential.load(model, device=device)
        self.charge = charge
        self.multiplicity = multiplicity
        self._state: tuple = ()
        self._warned: set[tuple] = set()

    def check_state(self, atoms, tol: float = 1e-15) -> list[str]:
        # ASE compares positions, numbers, cell, pbc and its own fields, but not atoms.info: a changed
        # charge or multiplicity must not return the cached result of the old one
        changes = super().check_state(atoms, tol)
        if self._system_state(atoms) != self._state:
            changes.append("info")
        return changes

    def _system_state(self, atoms) -> tuple:
        return (atoms.info.get("charge", self.charge), atoms.info.get("multiplicity", self.multiplicity))

    def _warn_outside_training_states(self, charge, multiplicity) -> None:
        """Once per charge and multiplicity: a word where the model was not trained on them."""
        if (charge, multiplicity) in self._warned:
            return
        self._warned.add((charge, multiplicity))
        where = 'atoms.info["charge"] and atoms.info["multiplicity"] (or the calculator\'s charge and multiplicity)'
        for message in self.potential.info.state_messages(charge, multiplicity, where):
            warnings.warn(message, UserWarning, 2)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        periodic = bool(self.atoms.pbc.any())
        self.potential.info.check_periodic(periodic)  # before the cached state changes
        self._state = self._system_state(self.atoms)
        charge, multiplicity = self._state
        self._warn_outside_training_states(charge, multiplicity)
        result = self.potential(
            self.atoms.positions,
            self.atoms.numbers,
            charge,
            multiplicity,
            self.atoms.cell.array if periodic else None,
            self.atoms.pbc if periodic else None,
        )
        self.results = {
            "energy": result.energy,
            "free_energy": result.energy,
            "forces": result.forces,
            "energies": result.per_atom_energy,
        }
        if self.potential.info.committee:  # a committee export: its model deviation comes with every result
            largest, per_atom, energy_deviation = self.potential.deviation_atoms(self.atoms)
            self.results.update(
                max_force_deviation=largest, force_deviations=per_atom, energy_deviation_per_atom=energy_deviation
            )
        if periodic and result.virial is not None and self.atoms.pbc.all():
            # ASE's stress is (1/V) dE/dstrain = -virial / V, in Voigt order xx yy zz yz xz xy; the model is
            # rotation invariant only approximately, so its virial is symmetrised (a symmetric strain's response)
            stress = -0.5 * (result.virial + result.virial.T) / self.atoms.get_volume()
            self.results["stress"] = stress.flat[[0, 4, 8, 5, 2, 1]]
        elif "stress" in properties:
            raise ValueError("stress needs a local model and a cell periodic in all three directions")
