"""A committee of models that differ only in their seed, and its model deviation.

The deviation is DeePMD's: for each atom the root-mean-square distance of the members' force vectors from
their mean, sqrt(<|F_i - <F_i>|^2>); a frame's deviation is the largest over its atoms. Members agree where
the training data pinned them down and drift apart where it did not, so the deviation rises before a model
extrapolates badly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mdplugin.export.loader import Potential


@dataclass
class Deviation:
    max_force: float  # eV/Å: the largest per-atom force deviation
    per_atom_force: np.ndarray  # [N] eV/Å
    energy_per_atom: float  # eV: standard deviation of the members' energies per atom
    mean_forces: np.ndarray  # [N, 3] eV/Å


class Committee:
    """K models evaluated on the same structure."""

    def __init__(self, members: list[Potential]):
        if not members:
            raise ValueError("a committee needs at least one model")
        self.members = members

    @property
    def size(self) -> int:
        return len(self.members)

    @classmethod
    def load(cls, paths: list[str | Path], threads: int | None = 1) -> Committee:
        return cls([Potential.load(path, threads=threads) for path in paths])

    def deviation(self, atoms, lead=None) -> Deviation:
        """`lead`: member 0's result (.energy, .forces) at these positions when the caller has it (the MD that
        member 0 drives does): K - 1 evaluations instead of K."""
        if self.size < 2:
            raise ValueError(f"the deviation needs at least 2 models to disagree, this committee has {self.size}")
        others = [member.evaluate_atoms(atoms) for member in self.members[1:]]
        results = [lead or self.members[0].evaluate_atoms(atoms), *others]
        forces = np.stack([result.forces for result in results])  # [K, N, 3]
        mean = forces.mean(0)
        per_atom = np.sqrt(((forces - mean) ** 2).sum(-1).mean(0))
        energies = np.array([result.energy for result in results]) / len(atoms)
        return Deviation(float(per_atom.max()), per_atom, float(energies.std()), mean)
