"""The local model in periodic OpenMM systems: TorchForce with the box, openmm-ml, and the golden fixture."""

from __future__ import annotations

import json
from pathlib import Path

import ase.io
import numpy as np
import openmm
import openmm.app as app
import pytest
from openmm import unit

from mdplugin.engines.openmm_force import FORCE_UNIT, create_system, create_torch_force
from mdplugin.md.structure_input import topology_from_symbols
from mdplugin.units import KJ_PER_MOL_PER_EV

FIXTURES = Path(__file__).resolve().parents[1] / "export" / "fixtures"
LOCAL64 = FIXTURES / "tiny-local-float64.pt"
LOCAL32 = FIXTURES / "tiny-local-float32.pt"


@pytest.fixture(scope="module")
def water_box() -> dict:
    return json.loads((FIXTURES / "expected-local.json").read_text())["water-box"]


def periodic_topology(case: dict) -> app.Topology:
    topology = topology_from_symbols(case["symbols"])
    topology.setPeriodicBoxVectors(np.array(case["cell"]) * 0.1)  # Å -> nm
    return topology


def energy_and_forces(system: openmm.System, positions_nm: np.ndarray, platform: str = "Reference"):
    integrator = openmm.VerletIntegrator(0.001)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform))
    context.setPositions(positions_nm)
    state = context.getState(getEnergy=True, getForces=True)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    return energy, np.asarray(forces)


@pytest.mark.parametrize("platform", ["Reference", "CPU"])
def test_periodic_torch_force_matches_the_golden_fixture(water_box, platform):
    system = create_system(LOCAL64, periodic_topology(water_box))
    assert system.usesPeriodicBoundaryConditions()
    energy, forces = energy_and_forces(system, np.array(water_box["positions"]) * 0.1, platform)
    # float64 model; the CPU platform passes positions in double too, so agreement is to round-off
    assert energy == pytest.approx(water_box["energy"] * KJ_PER_MOL_PER_EV, rel=1e-10)
    np.testing.assert_allclose(forces, np.array(water_box["forces"]) * FORCE_UNIT, atol=1e-7)


def test_unwrapped_positions_give_the_same_energy(water_box):
    """OpenMM hands over unwrapped positions: atoms moved by whole box vectors change nothing."""
    system = create_system(LOCAL64, periodic_topology(water_box))
    positions = np.array(water_box["positions"]) * 0.1
    cell = np.array(water_box["cell"]) * 0.1
    moved = positions.copy()
    moved[0] += 3 * cell[0] - cell[2]
    moved[10:13] -= 2 * cell[1]  # a whole molecule several boxes away
    reference, reference_forces = energy_and_forces(system, positions)
    energy, forces = energy_and_forces(system, moved)
    assert energy == pytest.approx(reference, rel=1e-12)
    np.testing.assert_allclose(forces, reference_forces, atol=1e-8)


def test_box_changes_reach_the_model(water_box):
    """The box is an input of the force: scaling it (as a barostat does) changes the energy, exactly as
    the Python client computes it."""
    import mdplugin

    system = create_system(LOCAL64, periodic_topology(water_box))
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    scale = 1.05
    cell = np.array(water_box["cell"]) * scale
    positions = np.array(water_box["positions"]) * scale
    context.setPeriodicBoxVectors(*(cell * 0.1))
    context.setPositions(positions * 0.1)
    energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    expected = mdplugin.load(LOCAL64)(positions, water_box["symbols"], cell=cell, pbc=[True] * 3).energy
    assert energy == pytest.approx(expected * KJ_PER_MOL_PER_EV, rel=1e-10)
    assert abs(expected - water_box["energy"]) > 1e-3  # the scaled box really is a different state


def test_float32_export_on_the_cpu_platform(water_box):
    system = create_system(LOCAL32, periodic_topology(water_box))
    energy, forces = energy_and_forces(system, np.array(water_box["positions"]) * 0.1, "CPU")
    assert energy == pytest.approx(water_box["energy"] * KJ_PER_MOL_PER_EV, rel=1e-6)
    np.testing.assert_allclose(forces, np.array(water_box["forces"]) * FORCE_UNIT, atol=0.05)  # float32 round-off


def test_openmm_ml_creates_periodic_systems(water_box):
    from openmmml import MLPotential

    topology = periodic_topology(water_box)
    potential = MLPotential("transformer", modelPath=str(LOCAL64))
    system = potential.createSystem(topology)
    energy, _ = energy_and_forces(system, np.array(water_box["positions"]) * 0.1)
    assert energy == pytest.approx(water_box["energy"] * KJ_PER_MOL_PER_EV, rel=1e-10)


def test_local_model_in_a_non_periodic_system_sees_no_images(water_box):
    """Without box vectors the local model treats the atoms as an isolated cluster."""
    import mdplugin

    topology = topology_from_symbols(water_box["symbols"])
    system = create_system(LOCAL64, topology)
    assert not system.usesPeriodicBoundaryConditions()
    positions = np.array(water_box["positions"])
    energy, _ = energy_and_forces(system, positions * 0.1)
    cluster = mdplugin.load(LOCAL64)(positions, water_box["symbols"]).energy
    assert energy == pytest.approx(cluster * KJ_PER_MOL_PER_EV, rel=1e-10)
    assert abs(cluster - water_box["energy"]) > 1e-3  # the images really contribute in the periodic box


def test_repeated_or_fractional_atom_indices_are_refused(water_box):
    topology = topology_from_symbols(water_box["symbols"])
    with pytest.raises(ValueError, match="more than once"):
        create_torch_force(LOCAL64, topology, atoms=[0, 0, 1])
    with pytest.raises(ValueError, match="whole number"):
        create_torch_force(LOCAL64, topology, atoms=[0, 1.7, 2])
    with pytest.raises(ValueError, match="outside the system"):
        create_torch_force(LOCAL64, topology, atoms=[0, 1, 99])


def test_extxyz_water_box_is_read_as_periodic():
    atoms = ase.io.read(FIXTURES / "water-box.extxyz")
    assert atoms.pbc.all() and abs(atoms.get_volume()) > 300
