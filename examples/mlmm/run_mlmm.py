"""ML/MM with openmm-ml: alanine dipeptide computed by the model, TIP3P water by amber14, NPT.

    python examples/mlmm/run_mlmm.py [--model examples/models/dipeptide-export.pt] [--steps 10000] [-o runs/mlmm]

The same run from the command line: `mdplugin run examples/mlmm/alanine-dipeptide.pdb -m MODEL
--solvate 1.0 --nonbonded-cutoff-nm 0.9 --ensemble npt --timestep-fs 1 --steps 10000 -o runs/mlmm`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch  # before openmm-torch (openmm-ml imports it)
from openmm import LangevinMiddleIntegrator, MonteCarloBarostat, Platform, unit
from openmm.app import PME, DCDReporter, ForceField, HBonds, Modeller, PDBFile, Simulation, StateDataReporter
from openmmml import MLPotential

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(HERE.parent / "models" / "dipeptide-export.pt"))
    parser.add_argument("--steps", type=int, default=10_000, help="1 fs steps")
    parser.add_argument("-o", "--output", default="runs/mlmm", help="prefix of the output files")
    arguments = parser.parse_args()
    torch.set_num_threads(1)  # 22 atoms: more threads only wait on each other

    # the solute, in a box of water with 1 nm padding (2 nm cube, 721 atoms)
    pdb = PDBFile(str(HERE / "alanine-dipeptide.pdb"))
    forcefield = ForceField("amber14-all.xml", "amber14/tip3p.xml")
    modeller = Modeller(pdb.topology, pdb.positions)
    modeller.addSolvent(forcefield, model="tip3p", padding=1.0 * unit.nanometer)

    # amber14 for everything, then the model for the dipeptide: mechanical embedding removes the
    # dipeptide's internal MM terms and keeps its PME and Lennard-Jones interactions with the water
    mm_system = forcefield.createSystem(
        modeller.topology, nonbondedMethod=PME, nonbondedCutoff=0.9 * unit.nanometer, constraints=HBonds
    )
    ml_atoms = [atom.index for atom in modeller.topology.atoms() if atom.residue.name in ("ACE", "ALA", "NME")]
    potential = MLPotential("transformer", modelPath=arguments.model)
    system = potential.createMixedSystem(modeller.topology, mm_system, ml_atoms)  # charge=0, multiplicity=1
    system.addForce(MonteCarloBarostat(1.0 * unit.bar, 300 * unit.kelvin, 25))

    # 1 fs: the dipeptide's bonds to hydrogen are flexible (openmm-ml frees the ML region's constraints)
    integrator = LangevinMiddleIntegrator(300 * unit.kelvin, 1.0 / unit.picosecond, 1.0 * unit.femtosecond)
    simulation = Simulation(modeller.topology, system, integrator, Platform.getPlatformByName("CPU"))
    simulation.context.setPositions(modeller.positions)
    simulation.minimizeEnergy()
    simulation.context.setVelocitiesToTemperature(300 * unit.kelvin, 1)

    Path(arguments.output).parent.mkdir(parents=True, exist_ok=True)
    with open(f"{arguments.output}-topology.pdb", "w") as handle:
        PDBFile.writeFile(simulation.topology, modeller.positions, handle)
    simulation.reporters.append(DCDReporter(f"{arguments.output}.dcd", 100))
    simulation.reporters.append(
        StateDataReporter(
            f"{arguments.output}.csv", 100, step=True, potentialEnergy=True, temperature=True, density=True, speed=True
        )  # fmt: skip
    )
    simulation.step(arguments.steps)
    print(f"wrote {arguments.output}.csv and {arguments.output}.dcd (read it with {arguments.output}-topology.pdb)")


if __name__ == "__main__":
    main()
