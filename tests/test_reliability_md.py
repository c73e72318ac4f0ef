"""No silent wrong answers from `mdplugin run` and `mdplugin evaluate` (issue 25): structures made the
way users make them (ase.io.write PDBs and extxyz files) that OpenMM would read or simulate differently
from what the file says are refused with the fix, or read in full with a warning."""

from __future__ import annotations

import json
from pathlib import Path

import ase
import ase.io
import numpy as np
import openmm
import pytest
from click.testing import CliRunner
from openmm import unit

import mdplugin
from mdplugin.cli.main import main
from mdplugin.engines.openmm_force import create_system
from mdplugin.md.structure_input import read_structure

FIXTURES = Path(__file__).resolve().parents[1] / "export" / "fixtures"
MODEL = str(FIXTURES / "tiny-float64.pt")
LOCAL_MODEL = str(FIXTURES / "tiny-local-float64.pt")
WATER = np.array([[0, 0, 0.119], [0, 0.763, -0.477], [0, -0.763, -0.477]])


def invoke(*arguments: str):
    return CliRunner().invoke(main, list(arguments), catch_exceptions=False)


def short_run(structure: str, output: Path, *extra: str, model: str = MODEL):
    """A few steps on the Reference platform, one torch thread, no minimisation."""
    return invoke("run", structure, "--model", model, "-o", str(output), "--steps", "4", "--report-interval", "2",
                  "--platform", "Reference", "--no-minimize", "--seed", "5", "--threads", "1", "--quiet", *extra)  # fmt: skip


def waters(count_per_side: int = 2, spacing: float = 3.1) -> np.ndarray:
    grid = range(count_per_side)
    return np.vstack([WATER + np.array([i, j, k]) * spacing for i in grid for j in grid for k in grid])


def openmm_energy_ev(structure: str, model: str) -> float:
    """The model's energy of `structure` as `mdplugin run` reads it, from a Reference-platform Context."""
    topology, positions, _ = read_structure(structure)
    system = create_system(model, topology, dtype="float64", device="cpu")
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    if topology.getPeriodicBoxVectors() is not None:
        context.setPeriodicBoxVectors(*topology.getPeriodicBoxVectors())
    context.setPositions(positions)
    energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    return energy / 96.48533212


# ------------------------------------------------------------------------ 1: partly periodic extxyz


@pytest.mark.parametrize("pbc", [[True, True, False], [True, False, False]], ids=["slab", "wire"])
def test_run_refuses_a_partly_periodic_extxyz(tmp_path, pbc):
    """OpenMM boxes are periodic in all three directions: a slab or wire would become a 3-D crystal."""
    structure = tmp_path / "slab.extxyz"
    ase.io.write(structure, ase.Atoms("OH2" * 8, positions=waters(), cell=np.eye(3) * 6.2, pbc=pbc))
    result = short_run(str(structure), tmp_path / "out" / "slab", model=LOCAL_MODEL)
    assert result.exit_code != 0
    flags = " ".join("T" if flag else "F" for flag in pbc)
    assert f'pbc="{flags}"' in result.output and "boundary p p f" in result.output and "vacuum" in result.output
    assert not (tmp_path / "out").exists()  # refused before anything is written


# ------------------------------------------------------------------------ 2: ASE-written PDB


def test_run_reads_every_atom_of_an_ase_written_pdb(tmp_path):
    """ase.io.write names every atom of a water box O, H, H in residue MOL 1; OpenMM's PDBFile keys atoms
    by residue and name and kept 2 of 24. Every atom is read, with a warning, at the file's positions."""
    structure = tmp_path / "waters.pdb"
    positions = waters(spacing=3.4)
    ase.io.write(structure, ase.Atoms("OH2" * 8, positions=positions), format="proteindatabank")
    with pytest.warns(UserWarning, match="24 atoms"):
        topology, read_positions, _ = read_structure(str(structure))
    assert topology.getNumAtoms() == 24
    assert [a.element.symbol for a in topology.atoms()] == ["O", "H", "H"] * 8
    # PDB coordinates have 3 decimals
    assert np.allclose(np.array(read_positions.value_in_unit(unit.angstrom)), positions, atol=1e-3)
    result = short_run(str(structure), tmp_path / "waters")
    assert result.exit_code == 0, result.output
    assert "of 24 atoms" in result.output and "repeats names" in result.output
    assert json.loads((tmp_path / "waters-summary.json").read_text())["atoms"] == 24


def test_a_pdb_with_unique_names_is_read_without_a_warning(tmp_path):
    import warnings

    structure = tmp_path / "water.pdb"
    ase.io.write(structure, ase.Atoms("OH2", positions=WATER), format="proteindatabank")
    text = structure.read_text().replace(" H MOL", "H1 MOL", 1).replace(" H MOL", "H2 MOL", 1)
    structure.write_text(text)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        topology, _, _ = read_structure(str(structure))
    assert [a.name for a in topology.atoms()] == ["O", "H1", "H2"]


# ------------------------------------------------------------------------ 3: the ML region


DIPEPTIDE = str(Path(__file__).resolve().parents[1] / "examples" / "mlmm" / "alanine-dipeptide.pdb")


@pytest.mark.parametrize(
    "selection, message",
    [
        (
            ("--ml-atoms", "0-21,30-25"),
            "--ml-atoms: the range '30-25' runs backwards; write it from low to high (25-30)",
        ),
        (("--ml-atoms", "0-21,20-23"), "atoms 20-21 are selected more than once"),
        (("--ml-atoms", "0-21,900"), "--ml-atoms: atom 900 is outside the structure's 721 atoms"),
        (
            ("--ml-atoms", "0-5"),
            "cuts 1 covalent bond(s), e.g. atom 4 (C of ACE 1) in the region to atom 6 (N of ALA 2)",
        ),
        (("--ml-residues", "ALA"), "cuts 2 covalent bond(s)"),
    ],
    ids=["reversed", "repeated", "outside", "cut-bond", "cut-residue"],
)
def test_run_refuses_an_ml_region_it_cannot_compute_as_given(tmp_path, selection, message):
    """Before: the reversed range was dropped silently (22 atoms computed, the summary naming 0-21,30-25),
    and a cut bond ended in OpenMM's "wrong number of positions"."""
    result = short_run(DIPEPTIDE, tmp_path / "out" / "mlmm", "--solvate", "1.0", "--nonbonded-cutoff-nm", "0.9",
                       *selection)  # fmt: skip
    assert result.exit_code != 0
    assert message in result.output, result.output
    assert "wrong number of positions" not in result.output
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------ 4: several ML molecules, global model


def water_topology(molecules: int, box_nm: float) -> openmm.app.Topology:
    topology = openmm.app.Topology()
    chain = topology.addChain()
    for index in range(molecules):
        residue = topology.addResidue("HOH", chain, id=str(index + 1))
        oxygen = topology.addAtom("O", openmm.app.Element.getBySymbol("O"), residue)
        for name in ("H1", "H2"):
            topology.addBond(oxygen, topology.addAtom(name, openmm.app.Element.getBySymbol("H"), residue))
    topology.setPeriodicBoxVectors(np.eye(3) * box_nm)
    return topology


def test_a_global_model_refuses_several_ml_molecules_in_a_periodic_box():
    """Two waters of three computed by a global model in a 1 nm box: which image of one the other sees
    flips at half the box, so the energy would jump; refused, naming the molecules and the fix."""
    from mdplugin.engines.openmm_force import create_torch_force

    topology = water_topology(3, 1.0)
    system = openmm.System()
    system.setDefaultPeriodicBoxVectors(*topology.getPeriodicBoxVectors())
    for atom in topology.atoms():
        system.addParticle(atom.element.mass)
    with pytest.raises(ValueError, match=r"holds 2 molecules \(HOH 1 \(atoms 0-2\), HOH 2 \(atoms 3-5\)\)") as error:
        create_torch_force(MODEL, topology, range(6), system=system, dtype="float64", device="cpu")
    assert "select one molecule" in str(error.value) and "local model" in str(error.value)
    create_torch_force(MODEL, topology, range(3), system=system, dtype="float64", device="cpu")  # one is fine


def test_run_refuses_a_solvated_ml_region_of_two_molecules(tmp_path):
    result = short_run(DIPEPTIDE, tmp_path / "out" / "mlmm", "--solvate", "1.0", "--nonbonded-cutoff-nm", "0.9",
                       "--ml-atoms", "0-24")  # fmt: skip
    assert result.exit_code != 0 and "the ML region holds 2 molecules" in result.output, result.output


# ------------------------------------------------------------------------ 5: charges outside the training domain

SHIPPED = Path(__file__).resolve().parents[1] / "examples" / "models"


def test_run_warns_about_a_charged_smiles_on_a_model_without_a_recorded_domain(tmp_path):
    """The MD17 model (neutral molecules) records no training charges: the acetate anion ran with no word."""
    # (the unminimised ETKDG geometry may blow up in 4 steps: only the warning up front matters here)
    result = short_run("CC(=O)[O-]", tmp_path / "acetate", model=str(SHIPPED / "md17-export.pt"))
    assert "total charge -1, but the model records no training charges" in result.output


def test_evaluate_and_ase_warn_about_a_charge_outside_the_training_domain(tmp_path):
    """The water model was trained on neutral water only; charge 2 shifts its energy by eV with no word."""
    from mdplugin.engines.ase_calculator import TransformerCalculator

    structure = tmp_path / "water.xyz"
    ase.io.write(structure, ase.Atoms("OH2", positions=WATER))
    model = str(SHIPPED / "water-xtb-export.pt")
    result = invoke("evaluate", model, str(structure), "--charge", "2")
    assert result.exit_code == 0, result.output
    assert "trained on total charge 0 only, and this system has total charge 2" in result.output
    assert "Warning" not in invoke("evaluate", model, str(structure)).output  # neutral: in the domain
    atoms = ase.Atoms("OH2", positions=WATER, info={"charge": 2})
    atoms.calc = TransformerCalculator(model)
    with pytest.warns(UserWarning, match="trained on total charge 0 only, and this system has total charge 2"):
        atoms.get_potential_energy()


# ------------------------------------------------------------------------ 6: CRYST1 0 0 0


def test_run_and_evaluate_agree_that_cryst1_0_0_0_means_no_box(tmp_path):
    """OpenMM's PDBFile reads CRYST1 0 0 0 as no box (run: a droplet), ASE as a periodic cell of zero
    volume (evaluate refused it). Both now treat it as no box, with the same warning."""
    plain = tmp_path / "water.pdb"
    ase.io.write(plain, ase.Atoms("OH2", positions=WATER), format="proteindatabank")
    plain.write_text(plain.read_text().replace(" H MOL", "H1 MOL", 1).replace(" H MOL", "H2 MOL", 1))
    placeholder = tmp_path / "placeholder.pdb"
    placeholder.write_text("CRYST1    0.000    0.000    0.000  90.00  90.00  90.00 P 1\n" + plain.read_text())
    evaluated = invoke("evaluate", MODEL, str(placeholder))
    assert evaluated.exit_code == 0, evaluated.output
    assert "zero lengths (such as CRYST1 0 0 0)" in evaluated.output and "no cell" in evaluated.output
    energy = [line for line in evaluated.output.splitlines() if line.startswith("energy:")]
    assert energy == [line for line in invoke("evaluate", MODEL, str(plain)).output.splitlines() if "energy:" in line]
    result = short_run(str(placeholder), tmp_path / "run")
    assert result.exit_code == 0 and "zero lengths (such as CRYST1 0 0 0)" in result.output, result.output
    assert "mean density" not in result.output
    with pytest.warns(UserWarning, match="zero lengths"):
        assert abs(openmm_energy_ev(str(placeholder), MODEL) - float(energy[0].split()[1])) < 1e-6


# ------------------------------------------------------------------------ 7: cells OpenMM cannot take as given


@pytest.mark.parametrize(
    "lattice, message",
    [
        ("nan 0 0 0 6.2 0 0 0 6.2", "NaN or infinite"),
        ("6.2 0 0 0 6.2 0 0 0 -6.2", "left-handed (negative volume)"),
        ("6.2 0 0 6.2 0 0 0 0 6.2", "zero volume"),
    ],
    ids=["nan", "left-handed", "flat"],
)
def test_run_refuses_a_cell_that_is_no_box(tmp_path, lattice, message):
    structure = tmp_path / "box.extxyz"
    ase.io.write(structure, ase.Atoms("OH2" * 8, positions=waters(), cell=np.eye(3) * 6.2, pbc=True))
    lines = structure.read_text().splitlines()
    lines[1] = lines[1].replace('Lattice="6.2 0.0 0.0 0.0 6.2 0.0 0.0 0.0 6.2"', f'Lattice="{lattice}"')
    structure.write_text("\n".join(lines) + "\n")
    result = short_run(str(structure), tmp_path / "out" / "box", model=LOCAL_MODEL)
    assert result.exit_code != 0 and message in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_an_unreduced_cell_is_reduced_to_the_same_lattice(tmp_path):
    """b = (4.0, 6.2, 0) is longer than OpenMM's reduced form allows (|bx| <= ax / 2): OpenMM refused it
    ("Triclinic box vectors must be in reduced form"). The run reduces it to the same lattice: the
    OpenMM energy equals the model's energy of the cell as written (a local model; round-off)."""
    cell = np.array([[6.2, 0, 0], [4.0, 6.2, 0], [0.5, 3.5, 6.2]])
    atoms = ase.Atoms("OH2" * 8, positions=waters(), cell=cell, pbc=True)
    structure = tmp_path / "unreduced.extxyz"
    ase.io.write(structure, atoms)
    topology, _, _ = read_structure(str(structure))
    box = np.array(topology.getPeriodicBoxVectors().value_in_unit(unit.angstrom))
    assert abs(box[1, 0]) <= box[0, 0] / 2 and abs(box[2, 0]) <= box[0, 0] / 2 and abs(box[2, 1]) <= box[1, 1] / 2
    assert np.isclose(np.linalg.det(box), np.linalg.det(cell))
    written = mdplugin.load(LOCAL_MODEL).evaluate_atoms(atoms).energy
    assert abs(openmm_energy_ev(str(structure), LOCAL_MODEL) - written) < 1e-6


# ------------------------------------------------------------------------ 8: reasons never empty


@pytest.mark.parametrize("name, text", [("blank.xyz", "\n\n"), ("broken.cif", "x\ny\n")], ids=["blank-xyz", "cif"])
def test_a_file_ase_cannot_read_is_refused_with_a_reason(tmp_path, name, text):
    """ASE raises a bare StopIteration (blank XYZ) or AssertionError (broken CIF): the message read
    "cannot read x ()". The reason names the exception at least."""
    structure = tmp_path / name
    structure.write_text(text)
    result = short_run(str(structure), tmp_path / "out")
    assert result.exit_code != 0 and "cannot read" in result.output and "with no message" in result.output
    result = invoke("evaluate", MODEL, str(structure))  # reads every frame: a blank file holds none
    assert result.exit_code != 0 and "()" not in result.output
    assert "with no message" in result.output or "holds no atoms" in result.output, result.output


# ------------------------------------------------------------------------ 10: evaluate: frames and overlaps


def test_evaluate_prints_every_frame_or_the_one_asked_for(tmp_path):
    """An 8-frame file printed only its last frame, unlabelled."""
    structure = tmp_path / "frames.extxyz"
    rng = np.random.default_rng(0)
    frames = [ase.Atoms("OH2", positions=WATER + rng.normal(0, 0.05, (3, 3))) for _ in range(8)]
    ase.io.write(structure, frames)
    potential = mdplugin.load(MODEL)
    expected = [potential.evaluate_atoms(atoms).energy for atoms in frames]
    result = invoke("evaluate", MODEL, str(structure))
    assert result.exit_code == 0, result.output
    energies = [float(line.split()[1]) for line in result.output.splitlines() if line.startswith("energy:")]
    assert np.allclose(energies, expected, atol=1e-6)  # printed to 6 decimals
    assert "frame 0 of 8:" in result.output and "frame 7 of 8:" in result.output
    one = invoke("evaluate", MODEL, str(structure), "--frame", "2")
    assert "frame 2 of 8:" in one.output and one.output.count("energy:") == 1
    assert f"energy: {expected[2]:.6f} eV" in one.output
    assert "8 frame(s), 0..7" in invoke("evaluate", MODEL, str(structure), "--frame", "8").output


def test_evaluate_refuses_atoms_on_one_position(tmp_path):
    """Two atoms on one position (or one on the other's periodic image) gave an energy eV lower with no
    word; refused, naming the atoms."""
    duplicated = tmp_path / "duplicated.xyz"
    ase.io.write(duplicated, ase.Atoms("OH2H", positions=[*WATER, WATER[1]]))
    result = invoke("evaluate", MODEL, str(duplicated))
    assert result.exit_code != 0 and "atom 1 (H) and atom 3 (H) 0.00 Å apart" in result.output, result.output
    box = tmp_path / "image.extxyz"
    positions = waters()
    positions[3] = positions[0] + [6.2, 0, 0]  # the second oxygen on the first one's periodic image
    ase.io.write(box, ase.Atoms("OH2" * 8, positions=positions, cell=np.eye(3) * 6.2, pbc=True))
    result = invoke("evaluate", LOCAL_MODEL, str(box))
    assert result.exit_code != 0 and "atom 0 (O) and atom 3 (O) 0.00 Å apart (one on the other's periodic image)" in (
        result.output
    ), result.output


# ------------------------------------------------------------------------ 9: a minimiser that tears the ML region apart


def test_a_minimisation_that_tears_the_ml_region_apart_says_so(tmp_path):
    """The random-weight fixture model's energy falls as the dipeptide comes apart: the minimiser broke its
    bonds and the run stopped with "a molecule of the ML region spans 10.0 Å", about the box. Now the
    error names a broken bond, its lengths before and after, and the charge to check."""
    result = invoke("run", DIPEPTIDE, "--model", MODEL, "-o", str(tmp_path / "mlmm"), "--solvate", "1.0",
                    "--nonbonded-cutoff-nm", "0.9", "--steps", "2", "--platform", "Reference", "--threads", "1",
                    "--quiet")  # fmt: skip
    assert result.exit_code != 0
    assert "energy minimisation tore the structure apart" in result.output, result.output
    assert "bond(s) broke, e.g. atom" in result.output and "check the total charge (0)" in result.output
    assert "--no-minimize" in result.output and "spans" not in result.output


def test_run_refuses_a_cryst1_line_with_a_negative_length(tmp_path):
    structure = tmp_path / "negative.pdb"
    ase.io.write(structure, ase.Atoms("OH2", positions=WATER), format="proteindatabank")
    text = structure.read_text().replace(" H MOL", "H1 MOL", 1).replace(" H MOL", "H2 MOL", 1)
    structure.write_text("CRYST1   -6.200    6.200    6.200  90.00  90.00  90.00 P 1\n" + text)
    result = short_run(str(structure), tmp_path / "out" / "negative")
    assert result.exit_code != 0 and "cell lengths -6.2, 6.2, 6.2 Å" in result.output, result.output


def test_run_refuses_a_box_whose_neighbour_list_would_not_fit(tmp_path):
    """The water box of the local fixture squeezed into a 1 Å cell: every atom would have thousands of
    neighbours within the range; `mdplugin run` refuses before building anything, with the numbers."""
    import ase.io

    box = ase.io.read(FIXTURES / "water-box.extxyz")
    box.set_cell(box.cell.array / 7.0, scale_atoms=True)
    path = tmp_path / "squeezed.extxyz"
    ase.io.write(path, box)
    result = CliRunner().invoke(main, ["run", str(path), "-m", str(FIXTURES / "tiny-local-float64.pt"),
                                       "--steps", "2", "--platform", "Reference", "-o", str(tmp_path / "md")])  # fmt: skip
    assert result.exit_code != 0 and "neighbours within the interaction range" in result.output
    assert not (tmp_path / "md.csv").exists()
