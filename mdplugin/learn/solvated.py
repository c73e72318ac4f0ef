"""`mdplugin learn --solvate`: sample the molecule where it will be simulated, in water (ML/MM).

A molecule in water visits geometries its vacuum MD does not (hydrogen-bonded conformers, the other
Ramachandran basins of a peptide), and an ML/MM run with a model that never saw them can collapse. Here
each trajectory of a round is the ML/MM run itself: the start PDB solvated with OpenMM's Modeller, member 0
of the committee for the molecule (openmm-ml's mechanical embedding, as `mdplugin run --solvate` builds it),
the force field for the water and the molecule-water interactions, Langevin NVT on OpenMM's CPU platform.
Every `check_every` steps the molecule's geometry is handed to the loop, which checks it as it checks a
vacuum trajectory (committee deviation, bonds, contacts) and has the reference label it in vacuum: the
model learns the molecule's internal energy, which is what the mixed system takes from it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mdplugin.learn.options import LearnOptions
from mdplugin.learn.reference import SOURCE

MINIMIZE_ITERATIONS = 200  # the water around the (vacuum) start geometry relaxes before the run
SPAN_MARGIN_NM = 0.3  # a start molecule's longest distance may grow by this much in its run


def check_solvated_starts(options: LearnOptions, starts: list) -> None:
    """--solvate takes molecules as PDB files whose residues the force field knows, in a box wide enough for
    the cutoff; refuse anything else before round 0 starts."""
    for path, start in zip(options.structures, starts):
        if Path(path).suffix.lower() != ".pdb":
            raise ValueError(
                f"--solvate places the start molecule in water with OpenMM's Modeller, which needs a PDB with "
                f"residue names; {path} is not one (write it as PDB with standard residue names)"
            )
        if start.pbc.any():
            raise ValueError(f"--solvate adds the box itself; {path} already has a periodic cell (a CRYST1 record)")
        solvated_system(start, options)


def solvated_system(start, options: LearnOptions):
    """(topology, positions, ML region, the force field's System, run settings) of `start` in water."""
    from openmm import app, unit

    from mdplugin.md.mlmm import MLRegion, create_mm_system, load_forcefield
    from mdplugin.md.mlmm import solvate as add_water
    from mdplugin.md.options import RunOptions

    source = start.info[SOURCE]
    settings = RunOptions(structure=source, model="", solvate_nm=options.solvate_nm,
                          forcefield=tuple(options.forcefield))  # fmt: skip
    pdb = app.PDBFile(source)
    forcefield = load_forcefield(settings.forcefield)
    topology, positions = add_water(pdb.topology, pdb.positions, forcefield, settings)
    width = min(topology.getPeriodicBoxVectors()[i][i].value_in_unit(unit.nanometer) for i in range(3))
    if width < 2 * settings.nonbonded_cutoff_nm:
        raise ValueError(
            f"--solvate {options.solvate_nm:g} nm puts {source} in a box {width:.2f} nm wide, less than twice the "
            f"{settings.nonbonded_cutoff_nm:g} nm cutoff of the water's PME; give more padding (1 nm is usual)"
        )
    span = float(np.max(np.linalg.norm(start.positions[:, None] - start.positions[None], axis=-1))) / 10  # nm
    if span + SPAN_MARGIN_NM > width / 2:
        raise ValueError(
            f"--solvate {options.solvate_nm:g} nm puts {source} in a box {width:.2f} nm wide, and the molecule spans "
            f"{span:.2f} nm: openmm-ml rebuilds it whole with the minimum image, which needs it shorter than half the "
            f"box with room to stretch ({SPAN_MARGIN_NM:g} nm); give more padding"
        )
    region = MLRegion(list(range(len(start))), forcefield, "the start molecule")
    return topology, positions, region, create_mm_system(region, topology, settings), settings


def solvated_md(export: str | Path, start, options: LearnOptions, temperature_k: float, seed: int) -> Iterator:
    """Member 0's ML/MM run of `start` in water: the Context is built here (a setup error is raised, not taken
    for the trajectory's failure), then the run yields (the molecule as ase.Atoms, None) every `check_every`
    steps (None: no model result for the molecule alone; the committee evaluates all K members). OpenMM's
    errors during the run come out as RuntimeError, which the loop records as the trajectory's failure."""
    context = solvated_context(export, start, options, temperature_k, seed)
    return _run(context, start, options.check_every)


def solvated_context(export: str | Path, start, options: LearnOptions, temperature_k: float, seed: int):
    """The ML/MM Context of `start` in water with member 0's `export` (openmm-ml's mechanical embedding): the
    water relaxed, velocities drawn; the molecule is atoms 0..len(start)-1."""
    import openmm
    from openmm import unit

    from mdplugin.export.model_file import open_model
    from mdplugin.md.mlmm import create_mixed_system, ml_region_charge

    topology, positions, region, mm_system, settings = solvated_system(start, options)
    charge = ml_region_charge(mm_system, region.atoms)
    system = create_mixed_system(region, open_model(export), mm_system, topology, charge, settings, "float32", "cpu")
    integrator = openmm.LangevinMiddleIntegrator(
        temperature_k * unit.kelvin,
        options.friction_per_fs * 1000 / unit.picosecond,
        options.timestep_fs * unit.femtosecond,
    )
    integrator.setRandomNumberSeed(seed)
    platform = openmm.Platform.getPlatformByName("CPU")
    # the water relaxes around the start geometry, which stays as it is (massless particles do not move): the run
    # samples the model's MD from the start, not the minimum of a model that may not know it yet
    masses = [system.getParticleMass(i) for i in region.atoms]
    for i in region.atoms:
        system.setParticleMass(i, 0.0)
    context = openmm.Context(system, integrator, platform, {"Threads": str(options.threads)})
    context.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(context, maxIterations=MINIMIZE_ITERATIONS)
    for i, mass in zip(region.atoms, masses):
        system.setParticleMass(i, mass)
    context.reinitialize(preserveState=True)
    context.setVelocitiesToTemperature(temperature_k * unit.kelvin, seed)
    return context


def _run(context, start, check_every: int) -> Iterator:
    import openmm
    from openmm import unit

    while True:
        try:
            context.getIntegrator().step(check_every)
            state = context.getState(getPositions=True)  # not wrapped into the box: the molecule stays whole
        except openmm.OpenMMException as error:
            raise RuntimeError(f"OpenMM: {error}") from None
        molecule = start.copy()
        molecule.positions = np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.angstrom))[: len(start)]
        yield molecule, None
