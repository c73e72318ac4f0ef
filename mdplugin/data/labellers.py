"""The reference labellers of `mdplugin data`, in one place: what gives a frame its energy, forces and stress.

- `GFN2xTB`: GFN2-xTB (tblite) for molecules, an ASE calculator, each SCF from a fresh guess;
- `XTBLabeller`: periodic GFN1-xTB (tblite's ASE calculator) with stress, for boxes;
- `ClassicalLabeller`: the classical SPC/Fw water model (`WaterModel`, an OpenMM System on the Reference
  platform), with stress by central finite differences of the energy under strain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase.calculators.calculator import Calculator, all_changes
from ase.units import Bohr, Hartree

KJ_PER_MOL_IN_EV = 1 / 96.48533212


# SPC/Fw (J. Chem. Phys. 124, 024503 (2006)): r0 1.012 Å, k_b 1059.162 kcal/mol/Å^2, theta0 113.24 deg,
# k_theta 75.90 kcal/mol/rad^2 (both with a factor 1/2 in the energy, as OpenMM's), q_O -0.82 e,
# sigma 3.165492 Å, epsilon 0.1554253 kcal/mol; converted to nm and kJ/mol.
SPCFW_XML = """<ForceField>
 <AtomTypes>
  <Type name="spcfw-O" class="spcfw-O" element="O" mass="15.99943"/>
  <Type name="spcfw-H" class="spcfw-H" element="H" mass="1.007947"/>
 </AtomTypes>
 <Residues>
  <Residue name="HOH">
   <Atom name="O" type="spcfw-O"/>
   <Atom name="H1" type="spcfw-H"/>
   <Atom name="H2" type="spcfw-H"/>
   <Bond atomName1="O" atomName2="H1"/>
   <Bond atomName1="O" atomName2="H2"/>
  </Residue>
 </Residues>
 <HarmonicBondForce>
  <Bond class1="spcfw-O" class2="spcfw-H" length="0.1012" k="443153.38"/>
 </HarmonicBondForce>
 <HarmonicAngleForce>
  <Angle class1="spcfw-H" class2="spcfw-O" class3="spcfw-H" angle="1.976410" k="317.5656"/>
 </HarmonicAngleForce>
 <NonbondedForce coulomb14scale="0.5" lj14scale="0.5">
  <Atom type="spcfw-O" charge="-0.82" sigma="0.3165492" epsilon="0.6503"/>
  <Atom type="spcfw-H" charge="0.41" sigma="1" epsilon="0"/>
 </NonbondedForce>
</ForceField>
"""


@dataclass(frozen=True)
class WaterModel:
    """The classical flexible water potential: SPC/Fw, PME, Lennard-Jones switched to zero at the cutoff."""

    cutoff_angstrom: float = 5.5
    switch_angstrom: float = 4.5
    ewald_tolerance: float = 1e-5

    def describe(self) -> str:
        return (
            f"SPC/Fw flexible water, PME (tolerance {self.ewald_tolerance:g}), real-space cutoff "
            f"{self.cutoff_angstrom:g} Å, Lennard-Jones switched from {self.switch_angstrom:g} Å, no dispersion correction"
        )


def water_topology(waters: int, box_angstrom: np.ndarray | None = None):
    """An OpenMM topology of `waters` HOH residues (O, H1, H2, two bonds), periodic when a box is given."""
    from openmm import Vec3, app, unit

    topology = app.Topology()
    chain = topology.addChain()
    oxygen, hydrogen = app.Element.getBySymbol("O"), app.Element.getBySymbol("H")
    for _ in range(waters):
        residue = topology.addResidue("HOH", chain)
        o = topology.addAtom("O", oxygen, residue)
        topology.addBond(o, topology.addAtom("H1", hydrogen, residue))
        topology.addBond(o, topology.addAtom("H2", hydrogen, residue))
    if box_angstrom is not None:
        topology.setPeriodicBoxVectors([Vec3(*row) * 0.1 for row in np.asarray(box_angstrom)] * unit.nanometer)
    return topology


def classical_system(topology, model: WaterModel = WaterModel()):
    """The OpenMM System of the classical potential; bonds and angles use the periodic box, so molecules may
    be split across its faces (as wrapped extxyz frames are)."""
    import io

    from openmm import HarmonicAngleForce, HarmonicBondForce, NonbondedForce, app, unit

    box = topology.getPeriodicBoxVectors()
    if box is None:
        raise ValueError("the classical water model needs a periodic box")
    shortest = min(box[0][0], box[1][1], box[2][2]).value_in_unit(unit.angstrom)
    if model.cutoff_angstrom > shortest / 2:
        raise ValueError(
            f"the cutoff {model.cutoff_angstrom:g} Å is more than half the box width ({shortest:.2f} Å); "
            "use more water molecules or a shorter cutoff"
        )
    if not 0 < model.switch_angstrom < model.cutoff_angstrom:
        raise ValueError(f"the switching distance must lie between 0 and the cutoff ({model.cutoff_angstrom:g} Å)")
    forcefield = app.ForceField(io.StringIO(SPCFW_XML))
    system = forcefield.createSystem(
        topology,
        nonbondedMethod=app.PME,
        nonbondedCutoff=model.cutoff_angstrom * unit.angstrom,
        constraints=None,
        rigidWater=False,
        ewaldErrorTolerance=model.ewald_tolerance,
        switchDistance=model.switch_angstrom * unit.angstrom,
    )
    for force in system.getForces():
        if isinstance(force, (HarmonicBondForce, HarmonicAngleForce)):
            force.setUsesPeriodicBoundaryConditions(True)
        if isinstance(force, NonbondedForce):
            force.setUseDispersionCorrection(False)
    return system


def _context(system, integrator, platform: str = "CPU"):
    import openmm

    properties = {"Threads": "1"} if platform == "CPU" else {}
    return openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform), properties)


class ClassicalLabeller:
    """Energy (eV), forces (eV/Å) and stress (eV/Å^3, ASE's sign and Voigt order) of the classical model, in
    double precision (OpenMM's Reference platform); the stress by central differences of the energy under
    a strain of +/-`strain`, applied to atoms and cell alike."""

    def __init__(self, waters: int, model: WaterModel = WaterModel(), strain: float = 1e-5) -> None:
        self.waters, self.model, self.strain = waters, model, strain
        self._context = None
        self._box: np.ndarray | None = None

    def _prepare(self, cell: np.ndarray) -> None:
        import openmm

        if self._box is not None and np.array_equal(cell, self._box):
            return
        system = classical_system(water_topology(self.waters, cell), self.model)
        self._context = _context(system, openmm.VerletIntegrator(0.0005), "Reference")
        self._box = cell.copy()

    def _energy_forces(self, positions: np.ndarray, cell: np.ndarray, forces: bool = True):
        from openmm import Vec3, unit

        self._context.setPeriodicBoxVectors(*[Vec3(*row) * 0.1 for row in cell])
        self._context.setPositions(positions * 0.1)
        state = self._context.getState(getEnergy=True, getForces=forces)
        energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) * KJ_PER_MOL_IN_EV
        if not forces:
            return energy, None
        return energy, state.getForces(asNumpy=True).value_in_unit(
            unit.kilojoule_per_mole / unit.angstrom
        ) * KJ_PER_MOL_IN_EV

    def energy_and_forces(self, positions: np.ndarray, cell: np.ndarray) -> tuple[float, np.ndarray]:
        """Energy (eV) and forces (eV/Å) without the stress's twelve extra energies (for MD)."""
        cell = reduced_cell(cell)
        self._prepare(cell)
        return self._energy_forces(np.asarray(positions, dtype=np.float64), cell)

    def energy(self, positions: np.ndarray, cell: np.ndarray) -> float:
        """Energy (eV) of positions [N, 3] Å in the cell [3, 3] Å (rows are vectors, OpenMM's reduced form)."""
        cell = reduced_cell(cell)
        self._prepare(cell)
        return self._energy_forces(np.asarray(positions, dtype=np.float64), cell, forces=False)[0]

    def __call__(self, positions: np.ndarray, cell: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        cell = reduced_cell(cell)
        positions = np.asarray(positions, dtype=np.float64)
        if len(positions) != 3 * self.waters:
            raise ValueError(f"expected {3 * self.waters} atoms (O, H, H per water), got {len(positions)}")
        self._prepare(cell)
        energy, forces = self._energy_forces(positions, cell)
        # dE/d(strain) for the deformation r -> r (1 + e E_ij); only i >= j keeps OpenMM's reduced cell, and the
        # stress of a rotation-invariant energy is symmetric, so these six give all of it
        gradient = np.zeros((3, 3))
        for i, j in ((0, 0), (1, 1), (2, 2), (2, 1), (2, 0), (1, 0)):
            values = []
            for sign in (1, -1):
                deformation = np.eye(3)
                deformation[i, j] += sign * self.strain
                values.append(self._energy_forces(positions @ deformation, cell @ deformation, forces=False)[0])
            gradient[i, j] = gradient[j, i] = (values[0] - values[1]) / (2 * self.strain)
        self._energy_forces(positions, cell, forces=False)
        stress = gradient / abs(np.linalg.det(cell))
        return energy, forces, stress.flat[[0, 4, 8, 5, 2, 1]]


def reduced_cell(cell: np.ndarray) -> np.ndarray:
    cell = np.asarray(cell, dtype=np.float64)
    if abs(cell[0, 1]) + abs(cell[0, 2]) + abs(cell[1, 2]) > 1e-9 * abs(cell).max():
        raise ValueError("the classical labels need a cell in OpenMM's reduced form (a along x, b in the xy plane)")
    return cell


class XTBLabeller:
    """Periodic GFN1-xTB energy (eV), forces (eV/Å) and stress (eV/Å^3) from tblite's ASE calculator; a fresh
    calculator (SCF from the atomic guess) for every frame, so a label depends on the geometry alone."""

    def __call__(
        self, positions: np.ndarray, cell: np.ndarray, numbers: np.ndarray
    ) -> tuple[float, np.ndarray, np.ndarray]:
        from ase import Atoms
        from tblite.ase import TBLite

        atoms = Atoms(numbers=numbers, positions=positions, cell=cell, pbc=True)
        atoms.calc = TBLite(method="GFN1-xTB", verbosity=0)
        return atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress(voigt=True)


class GFN2xTB(Calculator):
    """GFN2-xTB energy (eV) and forces (eV/Å) from tblite, each SCF from a fresh guess.

    tblite's own ASE calculator restarts every SCF from the last wavefunction, which moves the
    forces by ~1e-5 eV/Å depending on the history; here every result is a function of the geometry
    alone, so a resumed run repeats an uninterrupted one exactly.
    """

    implemented_properties = ["energy", "forces"]

    def __init__(self, molecule) -> None:  # a molecules.Molecule: numbers, charge, multiplicity
        from tblite.interface import Calculator as TBLiteCalculator

        super().__init__()
        self.xtb = TBLiteCalculator(
            "GFN2-xTB", molecule.numbers, molecule.positions / Bohr, molecule.charge, molecule.multiplicity - 1
        )
        self.xtb.set("verbosity", 0)

    def calculate(self, atoms=None, properties=None, system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        self.xtb.update(positions=self.atoms.positions / Bohr)
        result = self.xtb.singlepoint()
        self.results = {
            "energy": float(result["energy"]) * Hartree,
            "forces": -np.asarray(result["gradient"]) * Hartree / Bohr,
        }
