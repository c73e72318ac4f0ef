"""Periodic reference data (mdplugin.data.water): tiny water boxes, both kinds of labels."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
from click.testing import CliRunner

from mdplugin.cli.main import main
from mdplugin.data import labellers, trajectories
from mdplugin.data import water as pd

# tiny boxes: 8 waters at 1 g/cm^3 fill a 6.2 Å cube, so the real-space cutoff must stay below 3.1 Å
TINY = pd.BoxSettings(waters=8, stride=10, equilibration_steps=20, water_model=labellers.WaterModel(3.0, 2.5))


def run(tmp_path, labels: str, frames: int, settings: pd.BoxSettings = TINY, resume: bool = False):
    trajectory = pd.plan(labels, [300], [1.0], tmp_path, frames, 0, seed=3, settings=settings)[0]
    result = trajectories.run_trajectory(trajectory, resume=resume)
    return trajectory, result, ase.io.read(trajectory.path, ":")


def test_classical_frames_are_periodic_and_labelled_with_consistent_forces_and_stress(tmp_path):
    trajectory, result, frames = run(tmp_path, "classical", 2)
    assert result.written == 2 and len(frames) == 2
    labeller = labellers.ClassicalLabeller(TINY.waters, TINY.water_model)
    for atoms in frames:
        assert atoms.pbc.all() and np.allclose(atoms.cell.array, np.diag([pd.box_length_angstrom(8, 1.0)] * 3))
        energy, forces, stress = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
        assert np.isfinite(energy) and forces.shape == (24, 3) and stress.shape == (6,)
        # the labels are those of the geometry as written (positions rounded to the text)
        again = labeller(atoms.positions, atoms.cell.array)
        assert again[0] == pytest.approx(energy, abs=1e-8)
    atoms = frames[1]
    positions, cell = atoms.positions.copy(), atoms.cell.array
    # forces = -dE/dx: central difference on one hydrogen; 1e-4 Å steps leave an O(h^2) error far below 1e-4 eV/Å
    step, atom = 1e-4, 4
    for axis in range(3):
        shifted = [positions.copy(), positions.copy()]
        shifted[0][atom, axis] += step
        shifted[1][atom, axis] -= step
        derivative = (labeller.energy(shifted[0], cell) - labeller.energy(shifted[1], cell)) / (2 * step)
        assert -derivative == pytest.approx(atoms.get_forces()[atom, axis], abs=1e-4)
    # the trace of the stress is the response to a uniform scaling of atoms and cell: (1/V) dE/d(ln s)
    scale = 1e-5
    up, down = (labeller.energy(positions * (1 + s), cell * (1 + s)) for s in (scale, -scale))
    trace = (up - down) / (2 * scale) / atoms.get_volume()
    assert atoms.get_stress()[:3].sum() == pytest.approx(trace, rel=1e-4, abs=1e-7)


def test_off_diagonal_stress_is_symmetric(tmp_path):
    """The xy stress from the lower-triangular shear equals the response to the transposed shear (rotated back
    into OpenMM's reduced cell): the stress of a rotation-invariant energy is symmetric."""
    _, _, frames = run(tmp_path, "classical", 1)
    atoms = frames[0]
    labeller = labellers.ClassicalLabeller(TINY.waters, TINY.water_model)

    def sheared(strain: float) -> float:
        deformation = np.eye(3)
        deformation[0, 1] += strain  # moves a out of the x axis
        positions, cell = atoms.positions @ deformation, atoms.cell.array @ deformation
        q, r = np.linalg.qr(cell.T)
        signs = np.sign(np.diag(r))
        return labeller.energy(positions @ (q * signs), (r.T * signs))

    xy = (sheared(1e-5) - sheared(-1e-5)) / 2e-5 / atoms.get_volume()
    # PME is rotation invariant to its error tolerance: 1e-5 relative
    assert atoms.get_stress()[5] == pytest.approx(xy, rel=1e-3, abs=1e-6)


def test_every_frame_carries_its_provenance(tmp_path):
    trajectory, _, frames = run(tmp_path, "classical", 2)
    for index, atoms in enumerate(frames):
        info = atoms.info
        assert info["frame"] == index and info["split"] == "train"
        assert info["method"] == "SPC/Fw" and "SPC/Fw" in info["sampler"] and "PME" in info["sampler"]
        assert info["temperature_K"] == 300 and info["density_g_cm3"] == 1.0 and info["waters"] == 8
        assert info["trajectory_seed"] == trajectory.seed and info["cutoff_angstrom"] == 3.0
        for key in ("openmm_version", "ase_version", "mdplugin_version", "created", "time_fs", "stride_steps"):
            assert key in info
    assert frames[1].info["time_fs"] - frames[0].info["time_fs"] == pytest.approx(TINY.stride * TINY.timestep_fs)


def test_resume_continues_without_duplicates_and_equals_an_uninterrupted_run(tmp_path):
    run(tmp_path / "split", "classical", 1)
    _, result, frames = run(tmp_path / "split", "classical", 3, resume=True)
    assert result.written == 2 and [a.info["frame"] for a in frames] == [0, 1, 2]
    _, result, again = run(tmp_path / "split", "classical", 3, resume=True)
    assert result.written == 0 and len(again) == 3
    _, _, whole = run(tmp_path / "whole", "classical", 3)
    # one CPU thread, seeded integrator, each stretch restarted from the written frame: the same trajectory
    for a, b in zip(frames, whole):
        np.testing.assert_array_equal(a.positions, b.positions)


def test_resume_refuses_a_file_of_another_trajectory(tmp_path):
    trajectory, _, _ = run(tmp_path, "classical", 1)
    other = pd.plan("classical", [300], [1.0], tmp_path, 2, 0, seed=4, settings=TINY)[0]
    assert other.path == trajectory.path
    with pytest.raises(ValueError, match="another trajectory"):
        trajectories.run_trajectory(other, resume=True)


def test_xtb_frames_carry_periodic_gfn1_energy_forces_and_stress(tmp_path):
    settings = pd.BoxSettings(waters=4, stride=10, equilibration_steps=20, water_model=labellers.WaterModel(2.4, 2.0))
    _, _, frames = run(tmp_path, "gfn1-xtb", 1, settings)
    atoms = frames[0]
    assert atoms.info["method"] == "GFN1-xTB" and "tblite_version" in atoms.info
    forces, stress = atoms.get_forces(), atoms.get_stress()
    assert forces.shape == (12, 3) and np.isfinite(stress).all()
    # periodic xTB: no net force on the box (SCF tolerance ~1e-5 eV/Å)
    assert np.abs(forces.sum(axis=0)).max() < 1e-3
    # its stress is the response to a uniform scaling of the cell (the SCF converges to ~1e-6 eV here)
    scale = 1e-3
    energies = []
    for s in (scale, -scale):
        energies.append(
            labellers.XTBLabeller()(atoms.positions * (1 + s), atoms.cell.array * (1 + s), atoms.numbers)[0]
        )
    trace = (energies[0] - energies[1]) / (2 * scale) / atoms.get_volume()
    assert stress[:3].sum() == pytest.approx(trace, rel=1e-2, abs=1e-4)


def test_a_cutoff_longer_than_half_the_box_is_refused(tmp_path):
    with pytest.raises(ValueError, match="cutoff"):
        pd.plan("classical", [300], [1.0], tmp_path, 1, 0, settings=pd.BoxSettings(waters=8))


def test_cli_writes_combined_files_and_refuses_to_overwrite(tmp_path):
    arguments = [
        "data",
        "water",
        "--labels",
        "classical",
        "--waters",
        "8",
        "--cutoff-angstrom",
        "3",
        "--switch-angstrom",
    ]
    arguments += ["2.5", "--temperatures", "300", "--densities", "1.0", "--frames", "1", "--test-frames", "1"]
    arguments += ["--stride", "5", "--equilibration-steps", "10", "--jobs", "1", "--quiet", "-o", str(tmp_path)]
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 0, result.output
    assert (
        len(ase.io.read(tmp_path / "train.extxyz", ":")) == 1 and len(ase.io.read(tmp_path / "test.extxyz", ":")) == 1
    )
    again = CliRunner().invoke(main, arguments)
    assert again.exit_code != 0 and "--resume" in again.output
    bad = CliRunner().invoke(main, arguments[:-2] + ["--densities", "1.0,-1", "-o", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "positive" in bad.output


# ---------------------------------------------------------------------------- a solute in water

# ethanol spans 3.6 Å, so 12 waters (a 7.7 Å box) are the fewest that keep 2 Å of water between it and its image
SOLVATED = pd.BoxSettings(waters=12, stride=10, equilibration_steps=20, water_model=labellers.WaterModel(3.0, 2.5))


@pytest.fixture(scope="module")
def ethanol():
    return pd.solute_from_input("ethanol")


@pytest.fixture(scope="module")
def solvated(tmp_path_factory, ethanol):
    """Two GFN1-xTB frames of ethanol in 12 waters (~1 s of xTB on one thread)."""
    path = tmp_path_factory.mktemp("solvated")
    trajectory = pd.plan("gfn1-xtb", [300], [1.0], path, 2, 0, seed=3, settings=SOLVATED, solute=ethanol)[0]
    trajectories.run_trajectory(trajectory)
    return trajectory, ase.io.read(trajectory.path, ":")


def test_a_solvated_frame_holds_the_whole_molecule_clear_of_the_water(solvated, ethanol):
    trajectory, frames = solvated
    waters = 3 * SOLVATED.waters
    input_distances = np.linalg.norm(ethanol.positions[:, None] - ethanol.positions[None], axis=-1)
    bonded = (input_distances < 1.6) & ~np.eye(len(ethanol.numbers), dtype=bool)
    length = pd.box_length_angstrom(SOLVATED.waters, 1.0, ethanol)
    for atoms in frames:
        assert atoms.pbc.all() and np.allclose(atoms.cell.array, np.diag([length] * 3))
        np.testing.assert_array_equal(atoms.numbers, np.concatenate([np.tile([8, 1, 1], 12), ethanol.numbers]))
        distances = atoms.get_all_distances(mic=True)
        solute = distances[waters:, waters:]
        # a 300 K molecule: bonds stretch by a few hundredths of an Å, no bond breaks or forms
        assert solute[bonded].max() < 1.7 and solute[~bonded & ~np.eye(len(solute), dtype=bool)].min() > 1.6
        # the Lennard-Jones wall keeps water out of the molecule (closest contacts are H...H or H...O, ~2 Å)
        assert distances[:waters, waters:].min() > 1.5
        masses = atoms.get_masses()[waters:]
        centre = masses @ atoms.positions[waters:] / masses.sum()
        np.testing.assert_allclose(centre, np.full(3, length / 2), atol=1e-5)  # the text holds 8 decimals
        info = atoms.info
        assert info["solute"] == "ethanol" and info["solute_atoms"] == 9 and info["system"] == "ethanol_in_water"
        assert info["method"] == "GFN1-xTB" and "GFN2-xTB" in info["solute_sampler"] and info["waters"] == 12
        assert "no charges" in info["solute_water_interaction"] and info["solute_source"] == "smiles:CCO"
    # the box holds the waters at 1 g/cm^3 plus about ethanol's partial molar volume in water (91 Å^3)
    assert frames[0].get_volume() - pd.box_length_angstrom(12, 1.0) ** 3 == pytest.approx(91, rel=0.1)
    # the molecule's internal geometry moves between frames (its own MD), not only the water
    first, second = (a.get_all_distances()[waters:, waters:] for a in frames)
    assert np.abs(first - second).max() > 0.01


def test_solvated_gfn1_labels_are_finite_and_forces_are_the_energy_gradient(solvated):
    _, frames = solvated
    atoms = frames[0]
    energy, forces, stress = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    assert np.isfinite(energy) and forces.shape == (45, 3) and np.isfinite(forces).all()
    assert stress.shape == (6,) and np.isfinite(stress).all() and np.abs(stress).max() > 0
    assert np.abs(forces.sum(axis=0)).max() < 1e-3  # periodic: no net force (SCF tolerance ~1e-5 eV/Å)
    # -dE/dx of the solute's oxygen (atom 36 + 2): the SCF converges the energy to ~1e-6 eV, so a 2e-3 Å central
    # difference is good to ~1e-3 eV/Å, and its O(h^2) error is smaller still
    step, atom, axis = 1e-3, 38, 0
    energies = []
    for sign in (1, -1):
        positions = atoms.positions.copy()
        positions[atom, axis] += sign * step
        energies.append(labellers.XTBLabeller()(positions, atoms.cell.array, atoms.numbers)[0])
    assert -(energies[0] - energies[1]) / (2 * step) == pytest.approx(forces[atom, axis], abs=5e-3)


def test_a_resumed_solvated_run_equals_an_uninterrupted_one(tmp_path, solvated, ethanol):
    """The solute's own MD continues from the momenta written with the frame."""
    _, whole = solvated
    trajectory = pd.plan("gfn1-xtb", [300], [1.0], tmp_path, 1, 0, seed=3, settings=SOLVATED, solute=ethanol)[0]
    trajectories.run_trajectory(trajectory)
    longer = pd.plan("gfn1-xtb", [300], [1.0], tmp_path, 2, 0, seed=3, settings=SOLVATED, solute=ethanol)[0]
    assert trajectories.run_trajectory(longer, resume=True).written == 1
    for a, b in zip(ase.io.read(longer.path, ":"), whole):
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_array_equal(a.get_momenta(), b.get_momenta())


def test_solute_errors_name_the_problem_and_the_fix(tmp_path, ethanol):
    with pytest.raises(ValueError, match="unknown solute 'ethnol'.*ethanol"):
        pd.solute_from_input("ethnol")
    with pytest.raises(ValueError, match="does not exist"):
        pd.solute_from_input(str(tmp_path / "missing.xyz"))
    broken = tmp_path / "broken.xyz"
    broken.write_text("three\nnot an xyz file\nC 0 0\n")
    with pytest.raises(ValueError, match="cannot read"):
        pd.solute_from_input(str(broken))
    with pytest.raises(ValueError, match="--labels gfn1-xtb"):
        pd.plan("classical", [300], [1.0], tmp_path, 1, 0, settings=SOLVATED, solute=ethanol)
    # too few waters: the message names the fewest that fit, and that many do fit
    small = pd.BoxSettings(waters=4, water_model=labellers.WaterModel(2.4, 2.0))
    with pytest.raises(ValueError, match=r"use --waters (\d+) or more") as error:
        pd.plan("gfn1-xtb", [300], [1.0], tmp_path, 1, 0, settings=small, solute=ethanol)
    needed = int(error.value.args[0].split("--waters ")[1].split()[0])
    settings = pd.BoxSettings(waters=needed, water_model=labellers.WaterModel(2.4, 2.0))
    assert pd.plan("gfn1-xtb", [300], [1.0], tmp_path, 1, 0, settings=settings, solute=ethanol)
    settings = pd.BoxSettings(waters=needed - 1, water_model=labellers.WaterModel(2.4, 2.0))
    with pytest.raises(ValueError, match="periodic image"):
        pd.plan("gfn1-xtb", [300], [1.0], tmp_path, 1, 0, settings=settings, solute=ethanol)


def test_cli_reports_a_bad_solute(tmp_path):
    arguments = ["data", "water", "--solute", "ethnol", "-o", str(tmp_path)]
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code != 0 and "unknown solute" in result.output
    result = CliRunner().invoke(
        main, ["data", "water", "--solute", "ethanol", "--labels", "classical", "-o", str(tmp_path)]
    )
    assert result.exit_code != 0 and "--labels gfn1-xtb" in result.output


def test_the_solute_is_held_fixed_and_repels_water(ethanol):
    """In the sampling MD the solute's atoms do not move, and a water oxygen meets a Lennard-Jones wall there."""
    import openmm
    from openmm import unit

    cell = np.diag([10.0] * 3)
    system = pd.solvated_system(labellers.water_topology(1, cell), ethanol.numbers, labellers.WaterModel(3.0, 2.5))
    context = labellers._context(system, openmm.LangevinMiddleIntegrator(300, 1, 0.0005), "Reference")
    solute = ethanol.positions - ethanol.positions.mean(axis=0) + 5.0
    carbon = solute[0]

    def energy(distance: float) -> float:
        water = pd.water_lattice(1, 10.0, 0) - pd.water_lattice(1, 10.0, 0)[0] + carbon + [0, 0, distance]
        context.setPositions(np.concatenate([water, solute]) * 0.1)
        return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)

    # UFF carbon with SPC/Fw oxygen: sigma 3.3 Å, so at 2 Å the repulsion is ~(3.3/2)^12 epsilon, hundreds of kJ/mol
    assert energy(2.0) - energy(5.0) > 100
    context.setVelocitiesToTemperature(300, 1)
    context.getIntegrator().step(50)
    moved = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.angstrom)[3:]
    np.testing.assert_allclose(moved, solute, rtol=0, atol=1e-12)  # only the nm <-> Å rounding


# ---------------------------------------------------------------------------- relabelling a model's own MD (relabel)

# labels of another cutoff than the frames were written with, so a relabelled frame cannot pass by keeping them
RELABEL_MODEL = labellers.WaterModel(2.8, 2.0)


@pytest.fixture(scope="module")
def water_md(tmp_path_factory):
    """Three frames of 8 classical waters, standing in for a model's MD."""
    path = tmp_path_factory.mktemp("model_md")
    trajectory = pd.plan("classical", [300], [1.0], path, 3, 0, seed=5, settings=TINY)[0]
    trajectories.run_trajectory(trajectory)
    return trajectory.path, ase.io.read(trajectory.path, ":")


def relabel_cli(*arguments):
    return CliRunner().invoke(main, ["data", "relabel", *map(str, arguments), "--quiet"])


CLASSICAL = ("--labels", "classical", "--cutoff-angstrom", "2.8", "--switch-angstrom", "2.0")


def test_relabelled_frames_are_the_labels_of_their_positions_with_provenance(tmp_path, water_md):
    import hashlib

    source, frames = water_md
    output = tmp_path / "relabelled.extxyz"
    result = relabel_cli(source, *CLASSICAL, "--every", "2", "-o", output)
    assert result.exit_code == 0, result.output
    assert "read 3 frames, selected 2" in result.output and "wrote 2" in result.output
    written = ase.io.read(output, ":")
    assert [a.info["source_frame"] for a in written] == [0, 2]  # --every 2
    labeller = labellers.ClassicalLabeller(8, RELABEL_MODEL)
    for atoms in written:
        original = frames[atoms.info["source_frame"]]
        np.testing.assert_array_equal(atoms.positions, original.positions)
        np.testing.assert_array_equal(atoms.cell.array, original.cell.array)
        energy, forces, stress = labeller(atoms.positions, atoms.cell.array)
        # the same double-precision Reference computation of the same geometry: equal to rounding
        assert atoms.get_potential_energy() == pytest.approx(energy, abs=1e-8)
        np.testing.assert_allclose(atoms.get_forces(), forces, atol=1e-8)  # the text holds 8+ digits
        np.testing.assert_allclose(atoms.get_stress(), stress, atol=1e-10)
        # another cutoff than the source frames' labels: these are new labels, not copies
        assert abs(atoms.get_potential_energy() - original.get_potential_energy()) > 1e-4
        info = atoms.info
        assert info["method"] == "SPC/Fw" and info["cutoff_angstrom"] == 2.8 and info["system"] == "water"
        assert info["source_trajectory"] == str(source.resolve())
        assert info["source_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
        for key in ("mdplugin_version", "openmm_version", "created", "labeller", "stress_method"):
            assert key in info


def test_rattled_frames_are_displaced_by_the_seeded_width_and_labelled_there(tmp_path, water_md):
    source, frames = water_md
    outputs = [tmp_path / f"rattled{i}.extxyz" for i in range(3)]
    for output, seed in zip(outputs, (3, 3, 4)):
        result = relabel_cli(source, *CLASSICAL, "--rattle", "0.05", "--seed", seed, "-o", output)
        assert result.exit_code == 0, result.output
    first, again, other = (ase.io.read(output, ":") for output in outputs)
    labeller = labellers.ClassicalLabeller(8, RELABEL_MODEL)
    displacements = []
    for atoms, same, different in zip(first, again, other):
        original = frames[atoms.info["source_frame"]]
        displacements.append(atoms.positions - original.positions)
        np.testing.assert_array_equal(atoms.positions, same.positions)  # the same seed: the same frames
        assert np.abs(atoms.positions - different.positions).max() > 1e-3  # another seed: other frames
        energy, forces, _ = labeller(atoms.positions, atoms.cell.array)
        assert atoms.get_potential_energy() == pytest.approx(energy, abs=1e-8)  # labels of the rattled geometry
        np.testing.assert_allclose(atoms.get_forces(), forces, atol=1e-8)
        assert atoms.info["rattle_angstrom"] == 0.05 and atoms.info["rattle_seed"] == 3
    # 3 frames x 24 atoms x 3 axes of N(0, 0.05 Å): the sample width within 15%
    assert np.std(displacements) == pytest.approx(0.05, rel=0.15)
    assert relabel_cli(source, *CLASSICAL, "--rattle", "2", "-o", tmp_path / "x.extxyz").exit_code != 0


def test_a_dcd_of_mdplugin_run_is_read_with_its_unit_cells_in_angstrom(tmp_path, water_md):
    """PREFIX.dcd and PREFIX-topology.pdb as `mdplugin run` writes them (OpenMM's DCDFile, box per frame)."""
    from openmm import Vec3, app, unit

    _, frames = water_md
    cells = [frames[0].cell.array, frames[1].cell.array * 1.02]  # the second box as after a barostat step
    topology = labellers.water_topology(8, cells[0])
    with open(tmp_path / "md-topology.pdb", "w") as handle:
        app.PDBFile.writeFile(topology, frames[0].positions * unit.angstrom, handle)
    with open(tmp_path / "md.dcd", "wb") as handle:
        dcd = app.DCDFile(handle, topology, 0.0005 * unit.picosecond, 0, 100)
        for atoms, cell in zip(frames[:2], cells):
            dcd.writeModel(
                atoms.positions * unit.angstrom, periodicBoxVectors=[Vec3(*row) for row in cell] * unit.angstrom
            )
    output = tmp_path / "relabelled.extxyz"
    result = relabel_cli(tmp_path / "md.dcd", *CLASSICAL, "-o", output)  # the topology found by its name
    assert result.exit_code == 0, result.output
    written = ase.io.read(output, ":")
    assert len(written) == 2
    labeller = labellers.ClassicalLabeller(8, RELABEL_MODEL)
    for atoms, original, cell in zip(written, frames, cells):
        # DCD stores float32 Å (~1e-6 relative); a unit slip would be a factor 10
        np.testing.assert_allclose(atoms.positions, original.positions, atol=1e-4)
        np.testing.assert_allclose(atoms.cell.array, cell, atol=1e-4)
        assert atoms.info["source_topology"] == str((tmp_path / "md-topology.pdb").resolve())
        energy = labeller(atoms.positions, atoms.cell.array)[0]
        assert atoms.get_potential_energy() == pytest.approx(energy, abs=1e-8)
    assert [a.info["source_step"] for a in written] == [0, 100]  # from the DCD header: a frame every 100 steps
    (tmp_path / "md-topology.pdb").unlink()
    result = relabel_cli(tmp_path / "md.dcd", *CLASSICAL, "-o", tmp_path / "other.extxyz")
    assert result.exit_code != 0 and "--topology" in result.output


def test_large_forces_are_skipped_and_counted(tmp_path, water_md):
    from mdplugin.data import relabel as rl

    source, frames = water_md
    labeller = labellers.ClassicalLabeller(8, RELABEL_MODEL)
    largest = [np.linalg.norm(labeller(a.positions, a.cell.array)[1], axis=1).max() for a in frames]
    limit = float(np.mean(sorted(largest)[1:]))  # between the two largest: one frame is above it
    options = rl.RelabelOptions(labels="classical", max_force=limit, water_model=RELABEL_MODEL)
    result = rl.relabel(source, tmp_path / "out.extxyz", options)
    above = [i for i, f in enumerate(largest) if f > limit]
    assert result.large_force == len(above) == 1 and result.labelled == 2 and result.skipped_frames == above
    assert f"1 with a force above {limit:g} eV/Å" in result.summary()
    kept = [a.info["source_frame"] for a in ase.io.read(tmp_path / "out.extxyz", ":")]
    assert kept == [i for i in range(3) if i not in above]


def test_an_existing_output_is_refused_without_force_and_resume_adds_only_new_frames(tmp_path, water_md):
    source, _ = water_md
    output = tmp_path / "out.extxyz"
    assert relabel_cli(source, *CLASSICAL, "--max-frames", "1", "-o", output).exit_code == 0
    before = output.read_bytes()
    again = relabel_cli(source, *CLASSICAL, "-o", output)
    assert again.exit_code != 0 and "--force" in again.output and output.read_bytes() == before
    resumed = relabel_cli(source, *CLASSICAL, "--resume", "-o", output)
    assert resumed.exit_code == 0 and "(1 already in" in resumed.output
    assert [a.info["source_frame"] for a in ase.io.read(output, ":")] == [0, 1, 2]
    forced = relabel_cli(source, *CLASSICAL, "--max-frames", "1", "--force", "-o", output)
    assert forced.exit_code == 0 and [a.info["source_frame"] for a in ase.io.read(output, ":")] == [0]
    # a resume with other labels would mix two references in one file
    other = relabel_cli(source, "--labels", "classical", "--cutoff-angstrom", "2.9", "--resume", "-o", output)
    assert other.exit_code != 0 and "cutoff_angstrom=2.8" in other.output


def test_a_frame_without_a_cell_and_classical_labels_of_other_molecules_are_refused(tmp_path, water_md):
    _, frames = water_md
    plain = tmp_path / "plain.xyz"
    ase.io.write(plain, frames[0], format="xyz")  # no lattice
    result = relabel_cli(plain, *CLASSICAL, "-o", tmp_path / "a.extxyz")
    assert result.exit_code != 0 and "frame 0" in result.output and "no periodic cell" in result.output
    assert not (tmp_path / "a.extxyz").exists()  # refused before the output is touched
    swapped = frames[0].copy()
    swapped.numbers[[0, 1]] = swapped.numbers[[1, 0]]  # H, O, H: not the SPC/Fw order
    ase.io.write(tmp_path / "swapped.extxyz", swapped)
    result = relabel_cli(tmp_path / "swapped.extxyz", *CLASSICAL, "-o", tmp_path / "b.extxyz")
    assert result.exit_code != 0 and "pure water" in result.output and "--labels gfn1-xtb" in result.output
    methane = ase.Atoms(
        "CH4",
        positions=[[0, 0, 0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63], [0.63, -0.63, -0.63], [-0.63, 0.63, -0.63]],
    )
    ase.io.write(tmp_path / "solution.extxyz", frames[0] + methane)
    result = relabel_cli(tmp_path / "solution.extxyz", *CLASSICAL, "-o", tmp_path / "c.extxyz")
    assert result.exit_code != 0 and "holds CH20O8" in result.output and "--labels gfn1-xtb" in result.output


def test_xtb_relabelling_skips_and_counts_a_frame_it_cannot_compute(tmp_path):
    """GFN1-xTB labels of any periodic frame; one with two atoms on top of each other (a blown-up run) is
    counted, not fatal."""
    from mdplugin.data import relabel as rl

    settings = pd.BoxSettings(waters=4, stride=10, equilibration_steps=20, water_model=labellers.WaterModel(2.4, 2.0))
    trajectory = pd.plan("classical", [300], [1.0], tmp_path, 2, 0, seed=3, settings=settings)[0]
    trajectories.run_trajectory(trajectory)
    frames = ase.io.read(trajectory.path, ":")
    frames[0].positions[1] = frames[0].positions[0]
    ase.io.write(tmp_path / "md.extxyz", frames)
    result = rl.relabel(tmp_path / "md.extxyz", tmp_path / "out.extxyz", rl.RelabelOptions(labels="gfn1-xtb"))
    assert result.failed == 1 and result.labelled == 1 and result.skipped_frames == [0]
    assert "1 that the labeller failed on (tblite: " in result.summary()
    atoms = ase.io.read(tmp_path / "out.extxyz")
    assert atoms.info["source_frame"] == 1 and atoms.info["method"] == "GFN1-xTB" and "tblite_version" in atoms.info
    energy = labellers.XTBLabeller()(atoms.positions, atoms.cell.array, atoms.numbers)[0]
    assert atoms.get_potential_energy() == pytest.approx(energy, abs=1e-8)  # a fresh SCF: a function of geometry
