"""`mdplugin learn`: a full round on a cheap reference in seconds, resume, the report, clear errors."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import ase
import ase.io
import numpy as np
import pytest
from click.testing import CliRunner

import mdplugin
from mdplugin.cli.main import main
from mdplugin.learn import loop
from mdplugin.learn.options import LearnOptions
from mdplugin.learn.reference import OpenMMReference, ReferenceError, finite_difference_stress, label
from mdplugin.model.config import ModelConfig

sys.path.insert(0, str(Path(__file__).parent))  # learn_references, the users' own calculators of these tests

TOY = np.array([[0, 0, 0], [1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.2], [1.1, 1.1, 0.2], [-0.9, 0.3, 0.4]]) * 1.4


@pytest.fixture
def toy(tmp_path) -> str:
    path = tmp_path / "toy.xyz"
    ase.io.write(path, ase.Atoms("CHHOHN", positions=TOY))
    return str(path)


def tiny(structure: str, output: Path, **changes) -> LearnOptions:
    """Seconds per round: two members of width 16, 20 reference frames, 40 MD steps per trajectory."""
    settings = dict(structures=[structure], reference="emt", output=str(output), committee=2, max_rounds=1,
                    initial_frames=20, test_frames=4, rattled_frames=5, md_steps=40, trajectories=1, check_every=10, training_steps=8,
                    steps_per_round=4, jobs=1,
                    model=ModelConfig(width=16, depth=1, heads=2), progress=False)  # fmt: skip
    return LearnOptions(**{**settings, **changes})


def test_a_round_trains_a_committee_samples_labels_and_reports(toy, tmp_path):
    state = loop.learn(tiny(toy, tmp_path / "run"), say=lambda _: None)
    folder = tmp_path / "run"
    (record,) = state["rounds"]
    assert len(record["members"]) == 2 and all(Path(m).is_file() for m in record["members"])
    assert len(record["trajectories"]) == 2  # 300 K and the overheated 450 K
    assert record["checks"] == sum(t["checks"] for t in record["trajectories"]) > 0
    assert sum(record["deviation_histogram"]["counts"]) == record["checks"]
    added = record["frames_added"]
    if added:  # the frames a round adds are labelled by the reference and read back as training data
        assert len(ase.io.read(folder / "data" / "round-001.extxyz", index=":")) == added
    assert (folder / "report.md").read_text().count("\n| 1 |") == 1
    model = mdplugin.load(state["export"])
    assert np.isfinite(model(TOY, list("CHHOHN")).energy) and model.info.committee == 2
    assert model.deviation(TOY, list("CHHOHN"))[0] >= 0


def test_the_report_draws_the_rounds_and_counts_the_time(toy, tmp_path):
    state = loop.learn(tiny(toy, tmp_path / "run", trajectories=2), say=lambda _: None)
    (record,) = state["rounds"]
    assert len(record["trajectories"]) == 4  # two seeds at each of 300 and 450 K
    assert len({t["max_deviation"] for t in record["trajectories"]}) > 1  # different seeds, different paths
    assert 0 < record["seconds"]["wall"] <= state["seconds"]["wall"]
    assert state["seconds"]["cpu"] >= state["round_0_seconds"]["cpu"] > 0
    report = (tmp_path / "run" / "report.md").read_text()
    assert (tmp_path / "run" / "report.png").stat().st_size > 10_000 and "min CPU in all" in report
    # the test set: separate reference trajectories (4 frames at each of 300 and 450 K), what every round reports
    assert len(ase.io.read(state["data"]["test"], index=":")) == 8 and "| round | test force MAE" in report
    assert 0 < record["test_deviation"]["median"] <= record["test_deviation"]["p99"]  # the committee on known frames
    # trust levels not given: from that deviation, decided once and recorded
    levels = state["trust_levels"]
    assert levels["lower"] == pytest.approx(max(loop.AUTO_LOWER_FLOOR, record["test_deviation"]["p99"]))
    assert levels["upper"] == pytest.approx(loop.AUTO_UPPER * levels["lower"]) and "99th percentile" in report
    from mdplugin.model.checkpoint import read_checkpoint

    assert read_checkpoint(record["members"][0])["training"]["options"]["validation_files"] == [state["data"]["test"]]


def test_a_single_model_is_checked_by_closest_contacts_and_exported_alone(toy, tmp_path):
    state = loop.learn(tiny(toy, tmp_path / "run", committee=1), say=lambda _: None)
    (record,) = state["rounds"]
    assert len(record["members"]) == 1
    assert record["deviation_histogram"]["of"].startswith("closest contact")
    assert sum(record["deviation_histogram"]["counts"]) == record["checks"] > 0
    model = mdplugin.load(state["export"])
    assert model.info.committee in (None, 0, 1) and np.isfinite(model(TOY, list("CHHOHN")).energy)
    assert "a single model, checked by closest contacts" in (tmp_path / "run" / "report.md").read_text()


def test_members_train_side_by_side_in_worker_processes(toy, tmp_path):
    state = loop.learn(tiny(toy, tmp_path / "run", jobs=2), say=lambda _: None)
    from mdplugin.model.checkpoint import read_checkpoint

    members = [read_checkpoint(path) for path in state["rounds"][0]["members"]]
    assert [m["training"]["options"]["seed"] for m in members] == [0, 1]
    assert members[0]["training"]["history"] != members[1]["training"]["history"]


def test_the_learned_model_runs_in_openmm_against_the_reference(toy, tmp_path):
    """benchmarks.learned_md end to end on a tiny committee: `mdplugin run` (OpenMM, deviation column), the
    reference's own MD, bond excursions, h(r) and the report."""
    from benchmarks import learned_md

    state = loop.learn(tiny(toy, tmp_path / "run"), say=lambda _: None)
    results = learned_md.main([state["export"], toy, "--reference", "emt", "--temperature-k", "300", "--ps", "0.05",
                               "--reference-ps", "0.05", "--report-interval", "10", "--output", str(tmp_path / "md"),
                               "--runs", str(tmp_path / "runs")])  # fmt: skip
    assert results["model_frames"] == 10 and len(results["bond_excursions_angstrom"]) > 0
    assert 0 <= results["h_difference"] <= 2 and 0 <= results["fraction_below_threshold"] <= 1
    assert results["deviation_max"] >= results["deviation_median"] >= 0
    assert (tmp_path / "md" / "h_of_r.png").is_file() and "Largest bond departure" in (
        tmp_path / "md" / "learned_md.md"
    ).read_text()


def test_the_deviation_reuses_the_driving_members_forces(toy, tmp_path):
    from mdplugin.engines.ase_calculator import TransformerCalculator
    from mdplugin.learn.committee import Committee

    state = loop.learn(tiny(toy, tmp_path / "run"), say=lambda _: None)
    committee = Committee.load(state["rounds"][0]["members"])
    atoms = ase.io.read(toy)
    atoms.calc = TransformerCalculator(committee.members[0])
    atoms.get_forces()
    lead = loop.driven(atoms)
    with_lead, without = committee.deviation(atoms, lead=lead), committee.deviation(atoms)
    assert with_lead.max_force == pytest.approx(without.max_force, rel=1e-6) and with_lead.max_force > 0


def test_a_broken_bond_is_named():
    molecule = ase.Atoms("CHHOHN", positions=TOY)
    bonds = loop.covalent_bonds(molecule)
    assert bonds and loop.stretched_bond(molecule, bonds) is None
    i, j, length = bonds[0]
    molecule.positions[j] += (molecule.positions[j] - molecule.positions[i]) / length * 0.6 * length
    assert loop.stretched_bond(molecule, bonds) == f"{molecule[i].symbol}{i}-{molecule[j].symbol}{j}"


def test_the_same_call_continues_and_never_repeats_a_round(toy, tmp_path):
    options = tiny(toy, tmp_path / "run", lower=1e-4)  # a trust level no tiny model meets: never converged
    first = loop.learn(options, say=lambda _: None)
    member = Path(first["rounds"][0]["members"][0])
    written = member.stat().st_mtime_ns
    assert not first["converged"] and first["rounds"][0]["frames_added"] > 0
    options.max_rounds = 2
    second = loop.learn(options, say=lambda _: None)
    assert len(second["rounds"]) == 2 and member.stat().st_mtime_ns == written
    assert second["rounds"][0] == first["rounds"][0]
    # round 2's members continue round 1's: their histories are longer
    from mdplugin.model.checkpoint import read_checkpoint

    epochs = [len(read_checkpoint(r["members"][0])["training"]["history"]) for r in second["rounds"]]
    assert epochs[1] > epochs[0]  # round 2 continued round 1's training


def test_an_interrupted_round_is_continued(toy, tmp_path, monkeypatch):
    options = tiny(toy, tmp_path / "run")

    def interrupted(*arguments, **keywords):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "sample", interrupted)
    with pytest.raises(KeyboardInterrupt):
        loop.learn(options, say=lambda _: None)
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["rounds"] == [] and "round-000" in state["data"]  # round 0's data survived
    monkeypatch.undo()
    assert len(loop.learn(options, say=lambda _: None)["rounds"]) == 1


def test_other_options_on_an_existing_run_are_refused(toy, tmp_path):
    loop.learn(tiny(toy, tmp_path / "run"), say=lambda _: None)
    with pytest.raises(ValueError, match="other options.*committee"):
        loop.learn(tiny(toy, tmp_path / "run", committee=3), say=lambda _: None)


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("banana", "unknown reference 'banana'"),
        ("python:learn_references:failing", "failed at frame 0 .*SCF did not converge"),
        ("python:learn_references:nan_forces", "non-finite (labels|positions)"),
        ("python:learn_references:not_a_calculator", "returned int, not an ASE calculator"),
        ("python:no_such_module:f", "cannot import f from no_such_module"),
        ("spcfw", "boxes of whole waters"),
        ("openmm:missing.xml", "missing.xml does not exist"),
    ],
)
def test_bad_references_get_a_clear_error_and_write_nothing_they_cannot(toy, tmp_path, reference, message):
    output = tmp_path / "run"
    result = CliRunner().invoke(main, ["learn", toy, "--reference", reference, "-o", str(output), "--committee", "2",
                                       "--initial-frames", "3", "--width", "16", "--depth", "1", "--heads", "2"])  # fmt: skip
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    import re

    assert re.search(message, result.output), result.output
    assert not (output / "data" / "round-000.extxyz").exists()  # no round with a broken label is recorded


def test_an_openmm_system_teaches_what_the_force_field_computes(tmp_path):
    """The serialized System of the SPC/Fw box labels it as the classical labeller does; the stress of a
    reference without one comes from finite differences and agrees with the labeller's own."""
    import openmm

    from mdplugin.data.labellers import ClassicalLabeller, WaterModel, classical_system, water_topology
    from mdplugin.data.water import box_length_angstrom, water_lattice

    waters = 8
    length = box_length_angstrom(waters, 1.0)
    positions = water_lattice(waters, length, seed=1)
    cell = np.diag([length] * 3)
    model = WaterModel(3.0, 2.5)  # a cutoff below half of the 8-water box
    system = classical_system(water_topology(waters, cell), model)
    xml = tmp_path / "system.xml"
    xml.write_text(openmm.XmlSerializer.serialize(system))
    atoms = ase.Atoms("OH2" * waters, positions=positions, cell=cell, pbc=True)
    labelled = label(atoms, OpenMMReference.from_xml(xml))
    energy, forces, stress = ClassicalLabeller(waters, model)(positions, cell)
    assert labelled.get_potential_energy() == pytest.approx(energy, abs=1e-6)  # eV: the same PME sums
    np.testing.assert_allclose(labelled.get_forces(), forces, atol=1e-5)
    # central differences with a 1e-5 strain on both sides: agreement to the labeller's own differences
    np.testing.assert_allclose(labelled.get_stress(), stress, atol=2e-6)
    np.testing.assert_allclose(finite_difference_stress(atoms, OpenMMReference.from_xml(xml)), stress, atol=2e-6)
    with pytest.raises(ReferenceError, match="21 atoms and the OpenMM System 24 particles"):
        label(atoms[:-3].copy(), OpenMMReference.from_xml(xml))


DIPEPTIDE = Path(__file__).parent.parent / "examples" / "mlmm" / "alanine-dipeptide.pdb"


def test_a_force_field_teaches_the_molecule_in_vacuum_flexible(tmp_path):
    """forcefield:amber14-all.xml labels the PDB's molecule with the energy openmm-ml's mixed system removes:
    no cutoff, no constraints; equal to OpenMM's own evaluation of that System."""
    import openmm
    from openmm import app, unit

    pdb = app.PDBFile(str(DIPEPTIDE))
    system = app.ForceField("amber14-all.xml").createSystem(pdb.topology, nonbondedMethod=app.NoCutoff,
                                                            constraints=None)  # fmt: skip
    context = openmm.Context(system, openmm.VerletIntegrator(1e-3), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(pdb.positions)
    expected = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / 96.485332
    start = loop.read_start(str(DIPEPTIDE))
    labelled = label(start, loop.reference_calculator("forcefield:amber14-all.xml", start))
    assert labelled.get_potential_energy() == pytest.approx(expected, rel=1e-6)
    # a round with the teacher: its own MD (round 0), the committee, the loop
    state = loop.learn(tiny(str(DIPEPTIDE), tmp_path / "run", reference="forcefield:amber14-all.xml",
                            initial_frames=4, rattled_frames=2, md_steps=20), say=lambda _: None)  # fmt: skip
    assert len(state["rounds"]) == 1 and Path(state["export"]).is_file()


def test_solvated_rounds_sample_the_molecule_in_water_with_ml_mm(tmp_path):
    """--solvate: member 0 drives an ML/MM run of the dipeptide in TIP3P (openmm-ml's mechanical embedding);
    the molecule's geometries are checked by the committee, and labelled by the teacher in vacuum."""
    import openmm
    from openmm import unit

    from mdplugin.learn.solvated import solvated_context, solvated_md

    options = tiny(str(DIPEPTIDE), tmp_path / "run", reference="forcefield:amber14-all.xml", initial_frames=4,
                   rattled_frames=2, md_steps=20, solvate_nm=1.4, lower=1e-6, upper=1e3,
                   training_steps=300, timestep_fs=0.25)  # fmt: skip
    state = loop.learn(options, say=lambda _: None)
    (record,) = state["rounds"]
    assert all(t["steps"] == 20 and t["failed"] is None for t in record["trajectories"])
    assert record["frames_added"] == 2 * len(record["trajectories"])  # every check is above lower = 1e-6
    added = ase.io.read(tmp_path / "run" / "data" / "round-001.extxyz", index=":")
    assert all(len(frame) == 22 and not frame.pbc.any() for frame in added)  # the molecule alone, in vacuum
    assert (tmp_path / "run" / "round-001" / "member-0-export.pt").is_file()
    # the run is ML/MM: the molecule in a box of water, whole (not wrapped into the box) at every check
    start = loop.read_start(str(DIPEPTIDE))
    export = state["rounds"][0]["members"][0].replace(".pt", "-export.pt")
    context = solvated_context(export, start, options, 300, 1)
    system = context.getSystem()
    relaxed = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.angstrom)
    np.testing.assert_allclose(relaxed[:22], start.positions, atol=1e-4)  # the water relaxed, the molecule kept
    assert (
        system.getNumParticles() > 300
        and system.getDefaultPeriodicBoxVectors()[0][0].value_in_unit(unit.nanometer) > 1.8
    )
    assert any(isinstance(force, openmm.NonbondedForce) for force in system.getForces())
    trajectory = solvated_md(export, start, options, 300, 1)
    molecule, lead = next(trajectory)
    assert lead is None and len(molecule) == 22
    assert all(
        np.linalg.norm(molecule.positions[i] - molecule.positions[j]) < 1.3 * r
        for i, j, r in loop.covalent_bonds(start)
    )
    xyz = tmp_path / "dipeptide.xyz"
    ase.io.write(xyz, ase.io.read(DIPEPTIDE))
    with pytest.raises(ValueError, match="--solvate .* needs a PDB with residue names"):
        loop.learn(replace(options, structures=[str(xyz)], output=str(tmp_path / "a")), say=lambda _: None)
    with pytest.raises(ValueError, match="--solvate 0.4 nm puts .* less than twice the 1 nm cutoff"):
        loop.learn(replace(options, solvate_nm=0.4, output=str(tmp_path / "c")), say=lambda _: None)
    with pytest.raises(ValueError, match="--solvate 1 nm puts .* the molecule spans 0.73 nm.* give more padding"):
        loop.learn(replace(options, solvate_nm=1.0, output=str(tmp_path / "d")), say=lambda _: None)
    with pytest.raises(ValueError, match="--solvate takes a padding in"):
        loop.learn(replace(options, solvate_nm=-1.0, output=str(tmp_path / "b")), say=lambda _: None)


def test_force_field_teachers_that_cannot_teach_are_refused(tmp_path):
    import openmm
    from openmm import app

    xyz = tmp_path / "dipeptide.xyz"
    ase.io.write(xyz, ase.io.read(DIPEPTIDE))
    with pytest.raises(ValueError, match="needs the molecule's residues: give the start structure as a PDB"):
        loop.learn(tiny(str(xyz), tmp_path / "a", reference="forcefield:amber14-all.xml"), say=lambda _: None)
    unknown = tmp_path / "unknown.pdb"
    unknown.write_text(DIPEPTIDE.read_text().replace(" ALA ", " XAL "))
    with pytest.raises(ValueError, match="cannot parametrise unknown.pdb: No template found for residue 1 \\(XAL\\)"):
        loop.learn(tiny(str(unknown), tmp_path / "b", reference="forcefield:amber14-all.xml"), say=lambda _: None)
    ions = tmp_path / "ions.pdb"
    topology = app.Topology()
    chain = topology.addChain()
    for name, element in (("NA", "Na"), ("CL", "Cl")):
        residue = topology.addResidue(name, chain)
        topology.addAtom(name, app.Element.getBySymbol(element), residue)
    with open(ions, "w") as handle:
        app.PDBFile.writeFile(topology, [openmm.Vec3(0, 0, 0), openmm.Vec3(0.3, 0, 0)] * openmm.unit.nanometer, handle)
    with pytest.raises(ValueError, match="gives ions.pdb no bonded terms"):
        teacher = "forcefield:amber14-all.xml,amber14/tip3p.xml"  # with its ions
        loop.learn(tiny(str(ions), tmp_path / "c", reference=teacher), say=lambda _: None)
    pdb = app.PDBFile(str(DIPEPTIDE))
    rigid = app.ForceField("amber14-all.xml").createSystem(pdb.topology, nonbondedMethod=app.NoCutoff,
                                                           constraints=app.HBonds)  # fmt: skip
    xml = tmp_path / "rigid.xml"
    xml.write_text(openmm.XmlSerializer.serialize(rigid))
    with pytest.raises(ValueError, match="constrains 12 distances .* constraints=None"):
        loop.learn(tiny(str(DIPEPTIDE), tmp_path / "d", reference=f"openmm:{xml}"), say=lambda _: None)
    boxed = tmp_path / "boxed.pdb"  # a periodic cell: the vacuum energy would be a silent wrong answer
    boxed.write_text("CRYST1   30.000   30.000   30.000  90.00  90.00  90.00 P 1           1\n" + DIPEPTIDE.read_text())
    with pytest.raises(ValueError, match="teaches a molecule in vacuum, and the structure has a periodic cell"):
        model = ModelConfig(width=16, depth=1, heads=2, interaction_range=3.0)
        loop.learn(tiny(str(boxed), tmp_path / "e", reference="forcefield:amber14-all.xml", model=model),
                   say=lambda _: None)  # fmt: skip
    assert not any((tmp_path / name).exists() for name in "abcde")  # refused before anything was written


def test_a_periodic_box_is_sampled_at_several_densities_with_stress_labels(tmp_path):
    """A box periodic in x, y and z is also sampled at 0.9x and 1.1x its volume, and every frame of the
    reference carries a stress, which the local model trains on."""
    from ase.build import bulk

    box = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    path = tmp_path / "copper.extxyz"
    ase.io.write(path, box)
    model = ModelConfig(width=16, depth=1, heads=2, interaction_range=3.0)
    state = loop.learn(tiny(str(path), tmp_path / "run", model=model, initial_frames=4), say=lambda _: None)
    frames = ase.io.read(tmp_path / "run" / "data" / "round-000.extxyz", index=":")
    volumes = sorted({round(frame.get_volume(), 3) for frame in frames})
    assert np.allclose(volumes, [0.9 * box.get_volume(), box.get_volume(), 1.1 * box.get_volume()])
    assert all(np.isfinite(frame.get_stress()).all() for frame in frames)
    names = {t["structure"] for t in state["rounds"][0]["trajectories"]}
    assert len(names) == 3 and any("x0.9 volume" in name for name in names)


def test_a_periodic_box_needs_a_local_model(tmp_path):
    from ase.build import bulk

    path = tmp_path / "copper.extxyz"
    ase.io.write(path, bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2)))
    with pytest.raises(ValueError, match="periodic: give the model an interaction range"):
        loop.learn(tiny(str(path), tmp_path / "run", initial_frames=2), say=lambda _: None)
    assert not (tmp_path / "run").exists()  # refused before the reference labelled anything


def test_a_committee_that_disagrees_from_the_start_still_adds_frames(toy, tmp_path):
    """Deviation above the upper trust level at the first check ends each trajectory; the frame is an ordinary
    geometry (no pair closer than 0.8 x its training minimum), so it is labelled and the loop moves on."""
    state = loop.learn(tiny(toy, tmp_path / "run", lower=1e-6, upper=2e-6), say=lambda _: None)
    (record,) = state["rounds"]
    assert record["failures"] == len(record["trajectories"]) == 2
    assert record["frames_added"] == 2  # one per trajectory: the frame it failed at


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--temperatures-k", "nan", "temperatures must lie in"),
        ("--temperatures-k", "300,hot", "comma-separated numbers"),
        ("--overheat", "nan", "--overheat must lie"),
        ("--volume-scales", "0", "--volume-scales must lie"),
        ("--timestep-fs", "nan", "--timestep-fs must lie"),
        ("--lower", "nan", "trust levels"),
    ],
)
def test_nan_and_absurd_options_are_refused_before_any_work(toy, tmp_path, option, value, message):
    result = CliRunner().invoke(main, ["learn", toy, "--reference", "emt", "-o", str(tmp_path / "run"), option, value])
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_a_start_structure_ase_cannot_read_is_refused_with_the_reason(tmp_path):
    broken = tmp_path / "broken.xyz"
    broken.write_text("3\nwater\nO 0 0\n")  # a line short of its coordinates, then nothing
    result = CliRunner().invoke(main, ["learn", str(broken), "--reference", "emt", "-o", str(tmp_path / "run")])
    assert result.exit_code != 0 and "cannot read" in result.output and "Traceback" not in result.output
