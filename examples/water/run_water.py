"""Liquid water with the shipped local GFN1-xTB water model: NPT at 300 K and 1 bar in OpenMM.

    python examples/water/run_water.py [--model examples/models/water-xtb-export.pt] [--steps 2000] [-o runs/water]

The same run from the command line: `mdplugin run examples/water/water.pdb -m MODEL --ensemble npt
--pressure-bar 1 --temperature-k 300 --timestep-fs 0.5 --steps 2000 -o runs/water`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch  # before openmm-torch
from openmm import LangevinMiddleIntegrator, MonteCarloBarostat, Platform, unit
from openmm.app import DCDReporter, PDBFile, Simulation, StateDataReporter

from mdplugin.engines.openmm_force import create_system

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(HERE.parent / "models" / "water-xtb-export.pt"))
    parser.add_argument("--structure", default=str(HERE / "water.pdb"), help="periodic PDB (CRYST1) of water")
    parser.add_argument("--steps", type=int, default=2000, help="0.5 fs steps")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("-o", "--output", default="runs/water", help="prefix of the output files")
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)

    # 64 waters in a 12.4 Å cube; the model is local (interaction range x depth), so the System is periodic
    # and OpenMM hands it the box every step
    pdb = PDBFile(arguments.structure)
    system = create_system(arguments.model, pdb.topology, device="cpu")
    system.addForce(MonteCarloBarostat(1.0 * unit.bar, 300 * unit.kelvin, 25))

    # 0.5 fs: the O-H bonds are flexible (the model has no constraints)
    integrator = LangevinMiddleIntegrator(300 * unit.kelvin, 1.0 / unit.picosecond, 0.5 * unit.femtosecond)
    simulation = Simulation(pdb.topology, system, integrator, Platform.getPlatformByName("CPU"))
    simulation.context.setPositions(pdb.positions)
    simulation.minimizeEnergy(maxIterations=200)
    simulation.context.setVelocitiesToTemperature(300 * unit.kelvin, 1)

    Path(arguments.output).parent.mkdir(parents=True, exist_ok=True)
    simulation.reporters.append(DCDReporter(f"{arguments.output}.dcd", 100))
    simulation.reporters.append(
        StateDataReporter(
            f"{arguments.output}.csv",
            100,
            step=True,
            time=True,
            potentialEnergy=True,
            temperature=True,
            volume=True,
            density=True,
            speed=True,
        )
    )
    simulation.reporters.append(StateDataReporter(sys.stdout, 500, step=True, density=True, speed=True))
    simulation.step(arguments.steps)
    state = simulation.context.getState()
    print(
        f"final box volume {state.getPeriodicBoxVolume().value_in_unit(unit.angstrom**3):.0f} Å^3; "
        f"wrote {arguments.output}.dcd and {arguments.output}.csv"
    )


if __name__ == "__main__":
    main()
