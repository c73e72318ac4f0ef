"""ML/MM in periodic solvent: a global model computes a molecule, amber14/TIP3P the water around it.

Real OpenMM contexts (Reference for exact comparisons, CPU for dynamics); the alanine dipeptide of
examples/mlmm in a box of TIP3P water made by OpenMM's Modeller.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import pytest
import torch  # before openmmtorch
from openmm import unit

from mdplugin.engines.openmm_force import create_torch_force
from mdplugin.export.loader import Potential
from mdplugin.units import KJ_PER_MOL_PER_EV

ROOT = Path(__file__).resolve().parents[1]
FLOAT64 = ROOT / "export" / "fixtures" / "tiny-float64.pt"
DIPEPTIDE = ROOT / "examples" / "mlmm" / "alanine-dipeptide.pdb"
TRAINED = ROOT / "examples" / "models" / "dipeptide-export.pt"
FORCE_UNIT = KJ_PER_MOL_PER_EV * 10.0  # eV/Å -> kJ/mol/nm
ML_ATOMS = list(range(22))  # ACE-ALA-NME comes first in the solvated topology
NPT_STEPS = 5_000  # 5 ps of 1 fs steps: about 35 s here; the 100 ps run is benchmarks/mlmm.py


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def solvated():
    """The dipeptide in a 2 nm cube of TIP3P (1 nm padding: 721 atoms), and amber14's PME System of it
    (0.9 nm cutoff, flexible so that every MM term stays visible)."""
    forcefield = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
    pdb = app.PDBFile(str(DIPEPTIDE))
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.addSolvent(forcefield, model="tip3p", padding=1.0 * unit.nanometer)
    topology = modeller.topology
    mm_system = forcefield.createSystem(
        topology, nonbondedMethod=app.PME, nonbondedCutoff=0.9 * unit.nanometer, constraints=None, rigidWater=False
    )
    positions = np.array(modeller.positions.value_in_unit(unit.nanometer))
    return forcefield, pdb.topology, topology, positions, mm_system


def mixed_system(topology: app.Topology, mm_system: openmm.System, model: Path = FLOAT64) -> openmm.System:
    from openmmml import MLPotential

    return MLPotential("transformer", modelPath=str(model)).createMixedSystem(
        topology, mm_system, ML_ATOMS, forceGroup=1
    )


def evaluate(system: openmm.System, positions: np.ndarray, box: np.ndarray, groups=-1):
    """Energy (kJ/mol) and forces (kJ/mol/nm) on the Reference platform."""
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPeriodicBoxVectors(*box)
    context.setPositions(positions)
    state = context.getState(getEnergy=True, getForces=True, groups=groups)
    return (
        state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
        state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer),
    )


def box_of(topology: app.Topology) -> np.ndarray:
    return np.array(topology.getPeriodicBoxVectors().value_in_unit(unit.nanometer))


def test_mixed_energy_is_mm_minus_the_ml_internal_mm_plus_the_model(solvated):
    """Mechanical embedding with PME: the mixed System removes exactly the dipeptide's internal MM energy
    (bonded terms and the same-image nonbonded pairs, whose PME reciprocal part cancels against the
    exclusion correction) and adds the model's. Same forces too. Only round-off separates the sides
    (1e-6 relative asked; ~1e-15 seen)."""
    forcefield, dipeptide, topology, positions, mm_system = solvated
    box = box_of(topology)
    mixed = mixed_system(topology, mm_system)
    mixed_energy, mixed_forces = evaluate(mixed, positions, box)
    mm_energy, mm_forces = evaluate(mm_system, positions, box)
    alone = forcefield.createSystem(dipeptide, nonbondedMethod=app.NoCutoff, constraints=None)
    internal_energy, internal_forces = evaluate(alone, positions[ML_ATOMS], box)
    symbols = [atom.element.symbol for atom in dipeptide.atoms()]
    model = Potential.load(FLOAT64)(positions[ML_ATOMS] * 10.0, symbols)

    expected = mm_energy - internal_energy + model.energy * KJ_PER_MOL_PER_EV
    assert abs(internal_energy) > 1.0  # the removed terms are really there
    assert abs(mixed_energy - expected) <= 1e-6 * abs(expected)
    expected_forces = mm_forces.copy()
    expected_forces[ML_ATOMS] += model.forces * FORCE_UNIT - internal_forces
    assert np.abs(mixed_forces - expected_forces).max() <= 1e-6 * np.abs(expected_forces).max()
    model_energy, _ = evaluate(mixed, positions, box, groups={1})
    assert model_energy == pytest.approx(model.energy * KJ_PER_MOL_PER_EV, rel=1e-12)


def test_a_molecule_split_across_the_boundary_gives_the_same_energy_and_forces(solvated):
    """OpenMM hands over unwrapped positions: a dipeptide whose atoms were wrapped one by one into the
    box straddles its corner, and the adapter must rebuild it whole (minimum image) before the model sees
    it. Energy to round-off (1e-10 relative), forces to 1e-6 kJ/mol/nm."""
    _, _, topology, positions, mm_system = solvated
    box = box_of(topology)
    mixed = mixed_system(topology, mm_system)
    whole = positions.copy()
    whole[ML_ATOMS] -= positions[ML_ATOMS].mean(axis=0)  # centred on the box corner
    split = whole.copy()
    lengths = np.diag(box)
    split[ML_ATOMS] -= np.floor(split[ML_ATOMS] / lengths) * lengths
    assert np.ptp(split[ML_ATOMS], axis=0).min() > 0.5 * lengths.min()  # really split: pieces at both ends

    whole_energy, whole_forces = evaluate(mixed, whole, box)
    split_energy, split_forces = evaluate(mixed, split, box)
    assert split_energy == pytest.approx(whole_energy, rel=1e-10)
    assert np.abs(split_forces - whole_forces).max() < 1e-6
    whole_model, _ = evaluate(mixed, whole, box, groups={1})
    split_model, _ = evaluate(mixed, split, box, groups={1})
    assert split_model == pytest.approx(whole_model, rel=1e-12)


def test_the_molecule_is_rebuilt_whole_in_a_triclinic_box(solvated):
    """Each atom shifted by its own combination of triclinic box vectors (OpenMM's reduced form): the
    wrapper's answer is the model's energy of the intact molecule."""
    _, dipeptide, _, positions, _ = solvated
    box = np.array([[2.4, 0.0, 0.0], [0.8, 2.3, 0.0], [-0.7, 0.9, 2.2]])  # nm, rows are vectors
    topology = copy.deepcopy(dipeptide)
    topology.setPeriodicBoxVectors(box * unit.nanometer)
    system = openmm.System()
    for atom in topology.atoms():
        system.addParticle(atom.element.mass)
    system.addParticle(0.0)  # one more particle: the model computes a part, as in ML/MM
    force = create_torch_force(FLOAT64, topology, ML_ATOMS, system=system)
    module = force.getModule()
    intact = positions[ML_ATOMS]
    shifts = np.random.default_rng(3).integers(-2, 3, size=(len(intact), 3)) @ box
    scattered = np.vstack([intact + shifts, [[0.0, 0.0, 0.0]]])
    energy, forces = module(torch.tensor(scattered), torch.tensor(box))
    symbols = [atom.element.symbol for atom in dipeptide.atoms()]
    direct = Potential.load(FLOAT64)(intact * 10.0, symbols)
    assert float(energy) == pytest.approx(direct.energy * KJ_PER_MOL_PER_EV, rel=1e-12)
    assert np.abs(forces.numpy()[:22] / FORCE_UNIT - direct.forces).max() < 1e-10
    assert not forces.numpy()[22].any()


def test_the_barostat_moves_the_ml_molecule_as_one(solvated):
    """Mechanical embedding removes the dipeptide's bonds; a zero-energy bond force keeps it one molecule
    in OpenMM's eyes, so a MonteCarloBarostat scales its centre, not each atom."""
    _, _, topology, positions, mm_system = solvated
    mixed = mixed_system(topology, mm_system)
    context = openmm.Context(mixed, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    molecules = [sorted(molecule) for molecule in context.getMolecules()]
    assert ML_ATOMS in molecules
    assert len(molecules) == 1 + (topology.getNumAtoms() - 22) // 3  # the dipeptide and the waters


# ------------------------------------------------------------------------------------------- errors


def test_a_molecule_longer_than_half_the_box_is_refused(solvated):
    """The dipeptide (7.3 Å across) in a 1.2 nm box: half the box is 6 Å, so the minimum image is
    ambiguous and OpenMM reports the model's sentence."""
    _, dipeptide, _, positions, _ = solvated
    topology = copy.deepcopy(dipeptide)
    topology.setPeriodicBoxVectors(np.eye(3) * 1.2 * unit.nanometer)
    system = openmm.System()
    for atom in topology.atoms():
        system.addParticle(atom.element.mass)
    system.addParticle(1.0)
    system.setDefaultPeriodicBoxVectors(*topology.getPeriodicBoxVectors())
    system.addForce(create_torch_force(FLOAT64, topology, ML_ATOMS, system=system))
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(np.vstack([positions[ML_ATOMS], [[0.6, 0.6, 0.6]]]))
    with pytest.raises(openmm.OpenMMException, match=r"spans 7\.\d Å, more than half the shortest periodic box"):
        context.getState(getEnergy=True)


def test_an_ml_region_without_bonds_is_refused(solvated):
    """Without bonds the adapter cannot know which atoms form a molecule, and would wrap each on its own."""
    _, _, topology, _, _ = solvated
    bare = app.Topology()
    bare.setPeriodicBoxVectors(topology.getPeriodicBoxVectors())
    for chain in topology.chains():
        new_chain = bare.addChain()
        for residue in chain.residues():
            new_residue = bare.addResidue(residue.name, new_chain, residue.id)
            for atom in residue.atoms():
                bare.addAtom(atom.name, atom.element, new_residue)
    with pytest.raises(ValueError, match="ML atoms of residue ACE 1 are not bonded into one molecule.*CONECT"):
        create_torch_force(FLOAT64, bare, ML_ATOMS)


def test_a_global_model_for_the_whole_periodic_system_is_refused(solvated):
    from openmmml import MLPotential

    _, _, topology, _, _ = solvated
    with pytest.raises(ValueError, match="cannot compute the whole periodic system.*ML/MM"):
        MLPotential("transformer", modelPath=str(FLOAT64)).createSystem(topology)


# ------------------------------------------------------------------------------------------ dynamics


def test_npt_keeps_the_ml_molecule_intact(tmp_path):
    """NPT of the solvated dipeptide with the shipped dipeptide model (`mdplugin run --solvate`): the
    barostat changes the box, the density stays near water's, and every bond of the dipeptide stays
    within 20% of its starting length, with no bond split across the box in the trajectory (OpenMM
    wraps it as one molecule). 5 ps, to keep the suite short; the 100 ps run (the same check of every
    bond, and phi/psi) is benchmarks/results/mlmm."""
    import mdtraj

    from mdplugin.md.simulate import RunOptions, read_state_data, simulate

    prefix = tmp_path / "npt"
    summary = simulate(
        RunOptions(structure=str(DIPEPTIDE), model=str(TRAINED), output=str(prefix), ensemble="npt", steps=NPT_STEPS,
                   timestep_fs=1.0, solvate_nm=1.0, nonbonded_cutoff_nm=0.9, barostat_interval=10,
                   report_interval=100, checkpoint_interval=NPT_STEPS, seed=5, threads=1, progress=False)
    )  # fmt: skip
    assert summary.status == "completed" and summary.ml_atoms == 22
    data = read_state_data(Path(f"{prefix}.csv"))
    assert len(set(data["Box Volume (nm^3)"])) > 1  # volume moves were accepted
    assert 0.85 < summary.mean_density_g_per_ml < 1.05
    assert 250 < summary.mean_temperature_k < 350
    trajectory = mdtraj.load(f"{prefix}.dcd", top=f"{prefix}-topology.pdb")
    bonds = np.array([[b.atom1.index, b.atom2.index] for b in trajectory.topology.bonds if b.atom1.index < 22])
    lengths = mdtraj.compute_distances(trajectory, bonds, periodic=True)
    assert np.all((lengths > 0.8 * lengths[0]) & (lengths < 1.2 * lengths[0]))
    unwrapped = mdtraj.compute_distances(trajectory, bonds, periodic=False)
    assert np.allclose(unwrapped, lengths, atol=1e-4)  # whole in every frame
