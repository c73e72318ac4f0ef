"""The reference an active-learning run learns from, as an ASE calculator: `reference_calculator(spec, atoms)`.

Specs (what `mdplugin learn --reference` takes):
- `gfn2-xtb`: GFN2-xTB (tblite) for molecules, charge and multiplicity from atoms.info;
- `gfn1-xtb`: periodic GFN1-xTB with stress, for boxes;
- `spcfw`: the classical SPC/Fw water model (PME), with stress; a box of whole waters (O, H, H);
- `openmm:SYSTEM.xml`: any OpenMM System serialized to XML (a force field as teacher: its energy and forces
  for the atoms in the order of the structure; periodic Systems take the box from the structure's cell);
- `emt`: ASE's EMT (metals, and cheap tests);
- `python:MODULE:FUNCTION`: your own: FUNCTION(atoms) returns an ASE calculator for that structure.

`label(atoms, calculator)` gives the labelled frame (energy, forces and, for a cell periodic in all three
directions, the stress: from the calculator, or by central differences of the energy under strain when it
has none). A non-finite label is an error naming the frame, never training data.
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import numpy as np
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from mdplugin.units import KJ_PER_MOL_PER_EV

REFERENCES = ("gfn2-xtb", "gfn1-xtb", "spcfw", "emt", "openmm:SYSTEM.xml", "python:MODULE:FUNCTION")
STRAIN = 1e-5  # finite-difference strain of the stress


class ReferenceError(ValueError):
    """The reference cannot label a structure, or is not one mdplugin knows."""


class OpenMMReference(Calculator):
    """Energy (eV) and forces (eV/Å) of an OpenMM System on the Reference platform (double precision)."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, system_xml: str | Path, **kwargs):
        import openmm

        super().__init__(**kwargs)
        path = Path(system_xml)
        if not path.is_file():
            raise ReferenceError(f"the OpenMM System file {path} does not exist; write one with XmlSerializer")
        try:
            self.system = openmm.XmlSerializer.deserialize(path.read_text())
        except Exception as error:
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ReferenceError(f"{path} is not a serialized OpenMM System ({first})") from None
        if not isinstance(self.system, openmm.System):
            raise ReferenceError(f"{path} holds a serialized {type(self.system).__name__}, not a System")
        self.context = openmm.Context(
            self.system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference")
        )

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        from openmm import Vec3, unit

        super().calculate(atoms, properties, system_changes)
        if len(self.atoms) != self.system.getNumParticles():
            raise ReferenceError(
                f"the structure has {len(self.atoms)} atoms and the OpenMM System {self.system.getNumParticles()} "
                "particles; give the structure the System was made for, in the same atom order"
            )
        if self.system.usesPeriodicBoundaryConditions():
            if not self.atoms.pbc.all():
                raise ReferenceError("the OpenMM System is periodic, but the structure has no cell periodic in x, y, z")
            self.context.setPeriodicBoxVectors(*[Vec3(*row) * 0.1 for row in self.atoms.cell.array])
        self.context.setPositions(self.atoms.positions * 0.1)
        state = self.context.getState(getEnergy=True, getForces=True)
        self.results = {
            "energy": state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / KJ_PER_MOL_PER_EV,
            "forces": state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.angstrom)
            / KJ_PER_MOL_PER_EV,
        }


class CellLabellerCalculator(Calculator):
    """A periodic labeller of mdplugin.data.labellers (positions, cell -> energy, forces, stress) as a calculator."""

    implemented_properties = ["energy", "forces", "stress"]

    def __init__(self, labeller, needs_numbers: bool, **kwargs):
        super().__init__(**kwargs)
        self.labeller, self.needs_numbers = labeller, needs_numbers

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        if not self.atoms.pbc.all():
            raise ReferenceError("this reference labels periodic boxes: give a structure with a cell and pbc T T T")
        arguments = (self.atoms.positions, self.atoms.cell.array)
        if "stress" not in properties and hasattr(self.labeller, "energy_and_forces"):  # MD: no stress needed
            energy, forces = self.labeller.energy_and_forces(*arguments)
            self.results = {"energy": energy, "forces": forces}
            return
        if self.needs_numbers:
            arguments += (self.atoms.numbers,)
        energy, forces, stress = self.labeller(*arguments)
        self.results = {"energy": energy, "forces": forces, "stress": np.asarray(stress)}


def reference_calculator(spec: str, atoms) -> Calculator:
    """The ASE calculator named by `spec` (see the module docstring) for structures like `atoms`."""
    name = spec.strip()
    if name == "emt":
        from ase.calculators.emt import EMT

        return EMT()
    if name == "gfn2-xtb":
        from mdplugin.data.labellers import GFN2xTB
        from mdplugin.data.molecules import Molecule

        molecule = Molecule("reference", atoms.numbers, atoms.positions, int(atoms.info.get("charge", 0)),
                            int(atoms.info.get("multiplicity", 1)))  # fmt: skip
        return GFN2xTB(molecule)
    if name == "gfn1-xtb":
        from mdplugin.data.labellers import XTBLabeller

        return CellLabellerCalculator(XTBLabeller(), needs_numbers=True)
    if name == "spcfw":
        from mdplugin.data.labellers import ClassicalLabeller

        if len(atoms) % 3 or list(atoms.numbers) != [8, 1, 1] * (len(atoms) // 3):
            raise ReferenceError("the spcfw reference labels boxes of whole waters, atoms in the order O, H, H")
        return CellLabellerCalculator(ClassicalLabeller(len(atoms) // 3), needs_numbers=False)
    if name.startswith("openmm:"):
        return OpenMMReference(name.split(":", 1)[1])
    if name.startswith("python:"):
        parts = name.split(":")
        if len(parts) != 3:
            raise ReferenceError(f"{spec!r}: write python:MODULE:FUNCTION, e.g. python:mycalcs:make_calculator")
        try:
            factory = getattr(importlib.import_module(parts[1]), parts[2])
        except (ImportError, AttributeError) as error:
            raise ReferenceError(f"{spec!r}: cannot import {parts[2]} from {parts[1]} ({error})") from None
        calculator = factory(atoms)
        if not isinstance(calculator, Calculator) and not hasattr(calculator, "get_potential_energy"):
            raise ReferenceError(
                f"{spec!r}: {parts[2]}(atoms) returned {type(calculator).__name__}, not an ASE calculator"
            )
        return calculator
    raise ReferenceError(f"unknown reference {spec!r}; use one of {', '.join(REFERENCES)}")


def label(atoms, calculator: Calculator, where: str = "a frame"):
    """A copy of `atoms` with the reference's energy, forces and (cell periodic in x, y, z) stress attached
    as a single-point result; an error naming `where` when the reference fails or gives non-finite labels."""
    from ase.calculators.singlepoint import SinglePointCalculator

    if not np.isfinite(atoms.positions).all():
        raise ReferenceError(f"{where} has non-finite positions (the MD that made it blew up); it is not labelled")
    frame = atoms.copy()
    frame.calc = calculator
    try:
        energy, forces = frame.get_potential_energy(), frame.get_forces()
        stress = None
        if frame.pbc.all():
            try:
                stress = frame.get_stress(voigt=True)
            except PropertyNotImplementedError:
                stress = finite_difference_stress(frame, calculator)
    except ReferenceError:
        raise
    except Exception as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ReferenceError(f"the reference failed on {where}: {type(error).__name__}: {first}") from None
    if not (math.isfinite(energy) and np.isfinite(forces).all() and (stress is None or np.isfinite(stress).all())):
        raise ReferenceError(f"the reference gave non-finite labels for {where}; it is left out of the training data")
    labelled = atoms.copy()
    labelled.calc = SinglePointCalculator(labelled, energy=energy, forces=forces, stress=stress)
    return labelled


def finite_difference_stress(atoms, calculator: Calculator) -> np.ndarray:
    """The stress (eV/Å^3, ASE's sign and Voigt order) by central differences of the energy under a small
    deformation of atoms and cell together. Only the lower triangle is strained, which keeps a cell in
    OpenMM's reduced form; the stress of a rotation-invariant energy is symmetric, so it gives all of it."""
    gradient = np.zeros((3, 3))
    for i, j in ((0, 0), (1, 1), (2, 2), (2, 1), (2, 0), (1, 0)):
        energies = []
        for sign in (1, -1):
            deformation = np.eye(3)
            deformation[i, j] += sign * STRAIN
            strained = atoms.copy()
            strained.set_cell(atoms.cell.array @ deformation)
            strained.positions = atoms.positions @ deformation
            strained.calc = calculator
            energies.append(strained.get_potential_energy())
        gradient[i, j] = gradient[j, i] = (energies[0] - energies[1]) / (2 * STRAIN)
    return (gradient / atoms.get_volume()).flat[[0, 4, 8, 5, 2, 1]]
