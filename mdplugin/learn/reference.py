"""The reference an active-learning run learns from, as an ASE calculator: `reference_calculator(spec, atoms)`.

Specs (what `mdplugin learn --reference` takes):
- `gfn2-xtb`: GFN2-xTB (tblite) for molecules, charge and multiplicity from atoms.info;
- `gfn1-xtb`: periodic GFN1-xTB with stress, for boxes;
- `spcfw`: the classical SPC/Fw water model (PME), with stress; a box of whole waters (O, H, H);
- `openmm:SYSTEM.xml`: any OpenMM System serialized to XML (a force field as teacher: its energy and forces
  for the atoms in the order of the structure; periodic Systems take the box from the structure's cell);
- `forcefield:FILE[,FILE]`: an OpenMM force field (e.g. `forcefield:amber14-all.xml`) as teacher of the
  molecule of a PDB start structure, in vacuum and flexible: the internal energy that ML/MM (openmm-ml's
  createMixedSystem) takes out of the ML region and the model puts back;
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

REFERENCES = ("gfn2-xtb", "gfn1-xtb", "spcfw", "emt", "openmm:SYSTEM.xml", "forcefield:FILE[,FILE]",
              "python:MODULE:FUNCTION")  # fmt: skip
SOURCE = "mdplugin_source"  # atoms.info key: the start structure's file, which a force field teacher reads
STRAIN = 1e-5  # finite-difference strain of the stress


class ReferenceError(ValueError):
    """The reference cannot label a structure, or is not one mdplugin knows."""


class OpenMMReference(Calculator):
    """Energy (eV) and forces (eV/Å) of an OpenMM System on the Reference platform (double precision)."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, system, source: str, **kwargs):
        import openmm

        super().__init__(**kwargs)
        if system.getNumConstraints():
            raise ReferenceError(
                f"{source} constrains {system.getNumConstraints()} distances (rigid bonds or water): the System "
                "has no energy for their stretch, so a model cannot learn it. Create the teacher with "
                "constraints=None, rigidWater=False"
            )
        self.system = system
        self.context = openmm.Context(
            system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference")
        )

    @classmethod
    def from_xml(cls, system_xml: str | Path) -> OpenMMReference:
        """A System serialized with XmlSerializer, for the structure's atoms in its order."""
        import openmm

        path = Path(system_xml)
        if not path.is_file():
            raise ReferenceError(f"the OpenMM System file {path} does not exist; write one with XmlSerializer")
        try:
            system = openmm.XmlSerializer.deserialize(path.read_text())
        except Exception as error:
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ReferenceError(f"{path} is not a serialized OpenMM System ({first})") from None
        if not isinstance(system, openmm.System):
            raise ReferenceError(f"{path} holds a serialized {type(system).__name__}, not a System")
        return cls(system, str(path))

    @classmethod
    def from_forcefield(cls, files: list[str], structure: str | Path) -> OpenMMReference:
        """A force field as teacher: the molecule of the PDB `structure` in vacuum, flexible (no constraints,
        no cutoff), i.e. the internal energy that openmm-ml's createMixedSystem takes out of the ML region."""
        from openmm import app

        path = Path(structure)
        if path.suffix.lower() not in (".pdb", ".pdbx", ".cif"):
            raise ReferenceError(
                f"a force field teacher needs the molecule's residues: give the start structure as a PDB (or "
                f"PDBx/mmCIF) with residue names such as ACE ALA NME, not {path.name}"
            )
        pdb = app.PDBxFile(str(path)) if path.suffix.lower() in (".pdbx", ".cif") else app.PDBFile(str(path))
        try:
            forcefield = app.ForceField(*files)
        except Exception as error:
            raise ReferenceError(f"cannot load the force field {', '.join(files)}: {first_line(error)}") from None
        try:
            system = forcefield.createSystem(pdb.topology, nonbondedMethod=app.NoCutoff, constraints=None,
                                             rigidWater=False, removeCMMotion=False)  # fmt: skip
        except Exception as error:
            raise ReferenceError(
                f"{', '.join(files)} cannot parametrise {path.name}: {first_line(error)}. Check the residue and atom "
                "names (and hydrogens) against the force field's templates, or add a force field file that has them"
            ) from None
        if pdb.topology.getNumAtoms() > 1 and not bonded_terms(system):
            raise ReferenceError(
                f"{', '.join(files)} gives {path.name} no bonded terms (bonds, angles, torsions): its internal energy "
                "is nonbonded only, and ML/MM would remove nothing from it; choose the molecule's own force field"
            )
        reference = cls(system, f"the {', '.join(files)} teacher")
        reference.numbers = [atom.element.atomic_number for atom in pdb.topology.atoms()]
        return reference

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        from openmm import Vec3, unit

        super().calculate(atoms, properties, system_changes)
        numbers = getattr(self, "numbers", None)
        if numbers is not None and list(self.atoms.numbers) != numbers:
            raise ReferenceError("the structure's elements differ from the force field teacher's PDB, atom by atom; "
                                 "give the structure in the PDB's atom order")  # fmt: skip
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


def first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def bonded_terms(system) -> int:
    """The bond, angle and torsion terms of a System's standard bonded forces."""
    counts = {"HarmonicBondForce": "getNumBonds", "HarmonicAngleForce": "getNumAngles",
              "PeriodicTorsionForce": "getNumTorsions", "RBTorsionForce": "getNumTorsions",
              "CMAPTorsionForce": "getNumTorsions", "CustomBondForce": "getNumBonds",
              "CustomAngleForce": "getNumAngles", "CustomTorsionForce": "getNumTorsions"}  # fmt: skip
    return sum(getattr(force, counts[type(force).__name__])() for force in system.getForces()
               if type(force).__name__ in counts)  # fmt: skip


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
        return OpenMMReference.from_xml(name.split(":", 1)[1])
    if name.startswith("forcefield:"):
        if atoms.pbc.any():
            raise ReferenceError(
                f"{spec!r} teaches a molecule in vacuum, and the structure has a periodic cell; give the molecule "
                "alone without a cell (no CRYST1), or serialize a periodic System and use openmm:SYSTEM.xml"
            )
        source = atoms.info.get(SOURCE)
        if source is None:
            raise ReferenceError(f"{spec!r} needs the structure's file (a PDB) to read its residues from")
        return OpenMMReference.from_forcefield(name.split(":", 1)[1].split(","), source)
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
