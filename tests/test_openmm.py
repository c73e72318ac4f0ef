"""The OpenMM adapter: TorchForce parity with the export, conservation, ML/MM, restarts, clear errors.

Real OpenMM contexts on the Reference and CPU platforms; the golden fixtures of export/fixtures.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import pytest
import torch  # before openmmtorch
from openmm import unit

from mdplugin.engines.openmm_force import create_system, create_torch_force
from mdplugin.export.loader import Potential
from mdplugin.md.simulate import RunOptions, get_platform, read_state_data, simulate
from mdplugin.units import KJ_PER_MOL_PER_EV

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "export" / "fixtures"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
FLOAT64 = FIXTURES / "tiny-float64.pt"
FLOAT32 = FIXTURES / "tiny-float32.pt"
CHECKPOINT = FIXTURES / "tiny.pt"


def model_atomic_numbers(path: Path) -> list[int]:
    from mdplugin.export.contract import ExportError, read_export_metadata
    from mdplugin.model.checkpoint import read_checkpoint

    try:
        return read_export_metadata(path)["atomic_numbers"]
    except ExportError:
        return read_checkpoint(path)["elements"]


# the shipped models that can compute methanol (H, C, O): the NVE test runs each on it
SHIPPED_MODELS = [
    path for path in sorted((ROOT / "examples" / "models").glob("*.pt")) if {1, 6, 8} <= set(model_atomic_numbers(path))
]
FORCE_UNIT = KJ_PER_MOL_PER_EV * 10.0  # eV/Å -> kJ/mol/nm


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Molecules of a few atoms gain nothing from intra-op threads, and on a busy machine the threads
    waiting on each other make MD an order of magnitude slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def molecule_topology(symbols: list[str]) -> app.Topology:
    topology = app.Topology()
    residue = topology.addResidue("MOL", topology.addChain())
    for symbol in symbols:
        topology.addAtom(symbol, app.Element.getBySymbol(symbol), residue)
    return topology


def energy_and_forces(system: openmm.System, positions_nm, platform: str = "Reference", groups=-1):
    """Energy (eV) and forces (eV/Å) of one configuration in a fresh context."""
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform))
    context.setPositions(np.asarray(positions_nm))
    context.computeVirtualSites()
    state = context.getState(getEnergy=True, getForces=True, getPositions=True, groups=groups)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / KJ_PER_MOL_PER_EV
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer) / FORCE_UNIT
    return energy, forces, state.getPositions(asNumpy=True).value_in_unit(unit.angstrom)


def fixture_case(name: str):
    case = EXPECTED[name]
    return molecule_topology(case["symbols"]), np.array(case["positions"]) / 10.0, case


# ------------------------------------------------------------------------------------------- parity


@pytest.mark.parametrize("platform", ["Reference", "CPU"])
@pytest.mark.parametrize("model", [FLOAT64, CHECKPOINT], ids=["float64-export", "checkpoint"])
@pytest.mark.parametrize("name", list(EXPECTED))
def test_float64_torch_force_matches_the_golden_fixtures(name, model, platform):
    """Same numbers as the Python model: only nm<->Å and eV<->kJ/mol round-off separate them (1e-16)."""
    topology, positions, case = fixture_case(name)
    energy, forces, _ = energy_and_forces(create_system(model, topology), positions, platform)
    expected_forces = np.array(case["forces"])
    assert abs(energy - case["energy"]) <= 1e-8 * abs(case["energy"])
    assert np.abs(forces - expected_forces).max() <= 1e-8 * np.abs(expected_forces).max()


@pytest.mark.parametrize("platform", ["Reference", "CPU"])
@pytest.mark.parametrize("name", list(EXPECTED))
def test_float32_torch_force_matches_the_export_and_the_fixtures(name, platform):
    """The float32 export through OpenMM gives what the float32 export gives when called directly
    (same arithmetic; only the nm->Å conversion is done in float64 first), and stays close to the
    float64 reference: its weights and arithmetic are rounded to float32 (unit round-off 6e-8), so
    an energy summed from ~100 eV per-atom terms is good to ~1e-7 relative (we allow 1e-6) and forces
    of ~0.2 eV/Å to ~1e-7 eV/Å (we allow 1e-5 eV/Å)."""
    topology, positions, case = fixture_case(name)
    energy, forces, _ = energy_and_forces(create_system(FLOAT32, topology), positions, platform)
    direct = Potential.load(FLOAT32)(np.array(case["positions"]), case["symbols"])
    assert abs(energy - direct.energy) <= 1e-6 * abs(direct.energy)
    assert np.abs(forces - direct.forces).max() <= 1e-5
    assert abs(energy - case["energy"]) <= 1e-6 * abs(case["energy"])
    assert np.abs(forces - np.array(case["forces"])).max() <= 1e-5


def test_openmm_ml_potential_and_a_saved_module_give_the_same_numbers(tmp_path):
    """`MLPotential('transformer')` comes from the entry point; the wrapper saved to a file is what
    `TorchForce(path)` loads. (Not tested: XmlSerializer.deserialize of any TorchForce segfaults with
    openmmtorch 1.5 + torch 2.9.1, so a System holding one cannot be deep-copied or read back from XML.)"""
    from openmmml import MLPotential

    topology, positions, case = fixture_case("methylamine-water")
    system = MLPotential("transformer", modelPath=str(FLOAT64)).createSystem(topology)
    energy, forces, _ = energy_and_forces(system, positions)
    assert abs(energy - case["energy"]) <= 1e-8 * abs(case["energy"])

    module_path = tmp_path / "force.pt"
    saved = openmm.System()
    for atom in topology.atoms():
        saved.addParticle(atom.element.mass)
    saved.addForce(create_torch_force(FLOAT64, topology, module_path=module_path))
    assert module_path.is_file()
    energy_saved, forces_saved, _ = energy_and_forces(saved, positions)
    assert energy_saved == energy
    assert np.array_equal(forces_saved, forces)


def test_the_wrapper_answers_in_the_dtype_of_the_positions_it_is_given():
    """CUDA in single or mixed precision hands the module float32 positions: the answer must come
    back in float32 (and on the positions' device), equal to the float64 answer to float32 round-off."""
    topology, positions, case = fixture_case("methanol")
    module = create_torch_force(FLOAT64, topology, device="cpu").getModule()
    for dtype, tolerance in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        energy, forces = module(torch.tensor(positions, dtype=dtype))
        assert energy.dtype == forces.dtype == dtype and forces.shape == (6, 3)
        assert float(energy) / KJ_PER_MOL_PER_EV == pytest.approx(case["energy"], rel=tolerance)
        assert np.abs(forces.double().numpy() / FORCE_UNIT - np.array(case["forces"])).max() <= 10 * tolerance


# ------------------------------------------------------------------------------------- conservation


def nve_drift(model: Path, structure: str, steps: int = 2000, timestep_fs: float = 0.5) -> tuple[float, float]:
    """Drift (meV/atom/ps, slope of a linear fit of the total energy) and the largest excursion of the
    total energy (meV/atom) of an NVE run from 300 K velocities."""
    topology, positions, _ = fixture_case(structure)
    system = create_system(model, topology)
    integrator = openmm.VerletIntegrator(timestep_fs * unit.femtosecond)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(context)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 7)
    times, totals = [], []
    for _ in range(steps // 10):
        integrator.step(10)
        state = context.getState(getEnergy=True)
        times.append(state.getTime().value_in_unit(unit.picosecond))
        totals.append((state.getPotentialEnergy() + state.getKineticEnergy()).value_in_unit(unit.kilojoule_per_mole))
    atoms = topology.getNumAtoms()
    totals_mev = np.array(totals) / KJ_PER_MOL_PER_EV * 1000.0 / atoms
    return float(np.polyfit(times, totals_mev, 1)[0]), float(np.ptp(totals_mev))


@pytest.mark.parametrize("model", [FLOAT64, FLOAT32, *SHIPPED_MODELS], ids=lambda p: p.name)
def test_nve_energy_is_conserved(model):
    """Velocity Verlet with conservative (autograd) forces of a smooth energy has no systematic drift,
    only a bounded O(dt²) oscillation; what drifts comes from round-off or a non-smooth energy.
    A drift of ε meV/atom/ps heats a molecule by ε / (1.5 k_B) ≈ 7.7 ε K/ps; the bound of
    0.05 meV/atom/ps (< 0.4 K/ps) is two orders below the 1-5 meV/atom/ps at which NVE runs are
    judged unusable, and about 100x the drift measured with the fixture model (4e-4 in float64,
    2e-4 in float32: float32 round-off in the forces adds no measurable drift over 1 ps)."""
    drift, excursion = nve_drift(model, "methanol")
    assert abs(drift) < 0.05
    assert excursion < 1.0  # meV/atom: the shadow-Hamiltonian oscillation at 0.5 fs is far smaller


# ---------------------------------------------------------------------------------------------- ML/MM

# alanine dipeptide (ACE-ALA-NME) as a SMILES whose atom-map numbers name the heavy atoms
DIPEPTIDE = "[CH3:1][C:2](=[O:3])[NH:4][C@@H:5]([CH3:6])[C:7](=[O:8])[NH:9][CH3:10]"
HEAVY_ATOMS = {  # map number: residue, atom name, hydrogen name stem
    1: ("ACE", "CH3", "HH3"), 2: ("ACE", "C", ""), 3: ("ACE", "O", ""),
    4: ("ALA", "N", "H"), 5: ("ALA", "CA", "HA"), 6: ("ALA", "CB", "HB"), 7: ("ALA", "C", ""), 8: ("ALA", "O", ""),
    9: ("NME", "N", "H"), 10: ("NME", "CH3", "HH3"),
}  # fmt: skip


def dipeptide_with_water() -> tuple[app.Topology, np.ndarray]:
    """ACE-ALA-NME (RDKit ETKDG geometry) with a TIP3P water hydrogen-bonded to the ALA carbonyl."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    molecule = Chem.AddHs(Chem.MolFromSmiles(DIPEPTIDE))
    parameters = AllChem.ETKDGv3()
    parameters.randomSeed = 7
    assert AllChem.EmbedMolecule(molecule, parameters) == 0
    coordinates = molecule.GetConformer().GetPositions()  # Å
    topology = app.Topology()
    chain = topology.addChain()
    residues = {name: topology.addResidue(name, chain) for name in ("ACE", "ALA", "NME")}
    atoms, order = {}, []
    for rd_atom in sorted((a for a in molecule.GetAtoms() if a.GetAtomMapNum()), key=lambda a: a.GetAtomMapNum()):
        residue, name, stem = HEAVY_ATOMS[rd_atom.GetAtomMapNum()]
        atoms[rd_atom.GetIdx()] = topology.addAtom(
            name, app.Element.getBySymbol(rd_atom.GetSymbol()), residues[residue]
        )
        order.append(rd_atom.GetIdx())
        hydrogens = [n for n in rd_atom.GetNeighbors() if n.GetSymbol() == "H"]
        for count, hydrogen in enumerate(hydrogens, start=1):
            label = stem if len(hydrogens) == 1 else f"{stem}{count}"
            atoms[hydrogen.GetIdx()] = topology.addAtom(label, app.element.hydrogen, residues[residue])
            order.append(hydrogen.GetIdx())
    for bond in molecule.GetBonds():
        topology.addBond(atoms[bond.GetBeginAtomIdx()], atoms[bond.GetEndAtomIdx()])
    positions = coordinates[order]
    carbon, oxygen = (
        positions[next(a.index for a in topology.atoms() if a.residue.name == "ALA" and a.name == n)]
        for n in ("C", "O")
    )
    outward = (oxygen - carbon) / np.linalg.norm(oxygen - carbon)
    side = np.cross(outward, [0.0, 0.0, 1.0])
    side /= np.linalg.norm(side)
    water_oxygen = oxygen + 2.9 * outward
    water = [water_oxygen, water_oxygen + 0.9572 * outward, water_oxygen - 0.24 * outward + 0.93 * side]  # 104.5°
    residue = topology.addResidue("HOH", topology.addChain())
    o = topology.addAtom("O", app.element.oxygen, residue)
    topology.addBond(o, topology.addAtom("H1", app.element.hydrogen, residue))
    topology.addBond(o, topology.addAtom("H2", app.element.hydrogen, residue))
    return topology, np.vstack([positions, water]) / 10.0


@pytest.fixture(scope="module")
def mixed_setup():
    forcefield = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
    topology, positions = dipeptide_with_water()
    mm_system = forcefield.createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False)
    return forcefield, topology, positions, mm_system


def test_mixed_system_is_mm_for_the_rest_plus_the_model_for_the_ml_atoms(mixed_setup):
    """Mechanical embedding with the water as ML: E_mixed = E_MM(all) − E_MM(water alone) + E_model(water),
    exactly, and the model's force group is the export's energy of the water with zero force elsewhere."""
    from openmmml import MLPotential

    forcefield, topology, positions, mm_system = mixed_setup
    water = [atom.index for atom in topology.atoms() if atom.residue.name == "HOH"]
    mixed = MLPotential("transformer", modelPath=str(FLOAT64)).createMixedSystem(
        topology, mm_system, water, forceGroup=1
    )
    for force in mixed.getForces():
        if not force.getName().startswith("TorchForce"):
            assert force.getForceGroup() == 0

    ml_energy, ml_forces, _ = energy_and_forces(mixed, positions, groups={1})
    direct = Potential.load(FLOAT64)(positions[water] * 10.0, ["O", "H", "H"])
    assert abs(ml_energy - direct.energy) <= 1e-8 * abs(direct.energy)
    assert np.abs(ml_forces[water] - direct.forces).max() <= 1e-8 * np.abs(direct.forces).max()
    assert not np.any(ml_forces[np.setdiff1d(np.arange(len(positions)), water)])

    mm_rest, _, _ = energy_and_forces(mixed, positions, groups={0})
    mm_all, _, _ = energy_and_forces(mm_system, positions)
    water_topology = app.Topology()
    residue = water_topology.addResidue("HOH", water_topology.addChain())
    o = water_topology.addAtom("O", app.element.oxygen, residue)
    for name in ("H1", "H2"):
        water_topology.addBond(o, water_topology.addAtom(name, app.element.hydrogen, residue))
    water_system = forcefield.createSystem(
        water_topology, nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False
    )
    mm_water, _, _ = energy_and_forces(water_system, positions[water])
    assert mm_water > 0  # the flexible water's bond and angle terms are really there to remove
    assert mm_rest == pytest.approx(mm_all - mm_water, abs=1e-9)


def test_mixed_system_with_a_covalent_boundary_caps_the_ml_region(mixed_setup):
    """The ALA residue as ML: its two peptide bonds to ACE and NME are cut, openmm-ml caps them with
    link hydrogens (virtual sites appended to the System), and the model's group is exactly the
    export's energy of the residue plus its caps."""
    from openmmml import MLPotential

    _, topology, positions, mm_system = mixed_setup
    alanine = [atom.index for atom in topology.atoms() if atom.residue.name == "ALA"]
    mixed = MLPotential("transformer", modelPath=str(FLOAT64)).createMixedSystem(
        topology, mm_system, alanine, forceGroup=1
    )
    caps = list(range(topology.getNumAtoms(), mixed.getNumParticles()))
    assert len(caps) == 2
    all_positions = np.vstack([positions, np.zeros((len(caps), 3))])  # the virtual sites are computed
    ml_energy, _, placed = energy_and_forces(mixed, all_positions, groups={1})
    symbols = [atom.element.symbol for atom in topology.atoms() if atom.index in alanine] + ["H", "H"]
    direct = Potential.load(FLOAT64)(placed[alanine + caps], symbols)
    assert abs(ml_energy - direct.energy) <= 1e-8 * abs(direct.energy)


# -------------------------------------------------------------------------------------------- restart


def test_restart_continues_exactly_like_an_uninterrupted_run(tmp_path):
    """On Reference a checkpoint holds positions, velocities, step count and the Langevin random
    state: 20 steps + restart + 20 steps equals 40 steps bit for bit."""
    common = dict(structure=str(FIXTURES / "methanol.xyz"), model=str(FLOAT64), platform="Reference", seed=11,
                  report_interval=5, checkpoint_interval=10, threads=1, progress=False)  # fmt: skip
    whole = simulate(RunOptions(output=str(tmp_path / "whole"), steps=40, **common))
    simulate(RunOptions(output=str(tmp_path / "split"), steps=20, **common))
    resumed = simulate(
        RunOptions(output=str(tmp_path / "split"), steps=20, restart=str(tmp_path / "split.chk"), **common)
    )
    assert resumed.final_step == whole.final_step == 40
    uninterrupted = read_state_data(tmp_path / "whole.csv")
    continued = read_state_data(tmp_path / "split.csv")
    for column in ("Step", "Potential Energy (kJ/mole)", "Kinetic Energy (kJ/mole)"):
        assert np.array_equal(continued[column], uninterrupted[column]), column


# --------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("symbols", [["S", "H", "H"], ["C", "Cl", "H", "H", "H"]], ids=["H2S", "CH3Cl"])
def test_an_element_the_model_lacks_is_a_clear_error(symbols):
    from openmmml import MLPotential

    topology = molecule_topology(symbols)
    missing = next(s for s in symbols if s not in ("H", "C", "N", "O"))
    with pytest.raises(ValueError, match=rf"knows the elements H, C, N, O.*contains {missing}"):
        create_system(FLOAT64, topology)
    with pytest.raises(ValueError, match=missing):
        MLPotential("transformer", modelPath=str(FLOAT64)).createSystem(topology)


def test_a_missing_model_file_is_a_clear_error(tmp_path):
    from openmmml import MLPotential

    with pytest.raises(FileNotFoundError, match="missing.pt"):
        create_system(tmp_path / "missing.pt", molecule_topology(["O", "H", "H"]))
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        MLPotential("transformer", modelPath=str(tmp_path / "missing.pt"))


def test_a_global_attention_model_for_a_whole_periodic_system_is_refused(mixed_setup):
    """Global attention has no notion of periodic images: computing a whole periodic box (all atoms, or
    createMixedSystem given every atom) must be an error, not a wrong answer. A part of it (ML/MM) is
    allowed: tests/test_mlmm.py."""
    from openmmml import MLPotential

    topology = molecule_topology(["O", "H", "H"])
    topology.setPeriodicBoxVectors(np.eye(3) * 2.0 * unit.nanometer)
    with pytest.raises(ValueError, match="periodic.*global attention"):
        create_system(FLOAT64, topology)

    forcefield, mixed_topology, _, _ = mixed_setup
    mixed_topology = copy.deepcopy(mixed_topology)
    mixed_topology.setPeriodicBoxVectors(np.eye(3) * 3.0 * unit.nanometer)
    box_system = forcefield.createSystem(mixed_topology, nonbondedMethod=app.PME, nonbondedCutoff=1.0 * unit.nanometer)
    every_atom = range(mixed_topology.getNumAtoms())
    with pytest.raises(ValueError, match="periodic.*global attention.*cannot compute the whole periodic system"):
        MLPotential("transformer", modelPath=str(FLOAT64)).createMixedSystem(mixed_topology, box_system, every_atom)
    water = [atom.index for atom in mixed_topology.atoms() if atom.residue.name == "HOH"]
    mixed = MLPotential("transformer", modelPath=str(FLOAT64)).createMixedSystem(mixed_topology, box_system, water)
    assert mixed.usesPeriodicBoundaryConditions()


def test_an_unknown_platform_is_a_clear_error():
    with pytest.raises(ValueError, match=r"'NoSuchPlatform' is not available here; available: .*Reference"):
        get_platform("NoSuchPlatform", None)
    with pytest.raises(ValueError, match="leave out --precision"):
        get_platform("Reference", "single")
