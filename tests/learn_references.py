"""Users' own references for `mdplugin learn --reference python:learn_references:NAME` in tests."""

from __future__ import annotations

import numpy as np
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT


class Broken(Calculator):
    """EMT that fails (like an SCF that does not converge) or returns NaN forces once positions leave the start."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, mode: str):
        super().__init__()
        self.mode, self.emt, self.start = mode, EMT(), None

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        frame = self.atoms.copy()
        frame.calc = self.emt
        self.results = {"energy": frame.get_potential_energy(), "forces": frame.get_forces()}
        if self.start is None:
            self.start = self.atoms.positions.copy()
        elif np.abs(self.atoms.positions - self.start).max() > 0.05:
            if self.mode == "raise":
                raise RuntimeError("SCF did not converge in 250 iterations")
            self.results["forces"] = np.full_like(self.results["forces"], np.nan)


def failing(atoms):
    return Broken("raise")


def nan_forces(atoms):
    return Broken("nan")


def not_a_calculator(atoms):
    return 42
