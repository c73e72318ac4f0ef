"""`mdplugin run`: files written, a summary printed, nothing overwritten, restarts, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import mdtraj
import numpy as np
import pytest
from click.testing import CliRunner

from mdplugin.cli.main import main
from mdplugin.md.simulate import read_state_data

FIXTURES = Path(__file__).resolve().parents[1] / "export" / "fixtures"
MODEL = str(FIXTURES / "tiny-float64.pt")
WATER = str(FIXTURES / "water.xyz")


def run(*arguments: str):
    return CliRunner().invoke(main, ["run", *arguments], catch_exceptions=False)


def short_run(output: Path, *extra: str):
    """20 steps of water on the Reference platform, a state row and a frame every 5 steps (one torch
    thread: for three atoms more threads only wait on each other, badly so on a busy machine)."""
    return run(WATER, "--model", MODEL, "-o", str(output), "--steps", "20", "--report-interval", "5",
               "--checkpoint-interval", "10", "--platform", "Reference", "--seed", "5", "--threads", "1", "--quiet", *extra)  # fmt: skip


def test_run_writes_the_files_and_a_summary(tmp_path):
    result = short_run(tmp_path / "out" / "water", "--ensemble", "nve", "--plot")
    assert result.exit_code == 0, result.output
    prefix = tmp_path / "out" / "water"
    for suffix in (".csv", ".dcd", ".chk", "-topology.pdb", "-summary.json", "-energy.png", "-temperature.png"):
        assert Path(f"{prefix}{suffix}").stat().st_size > 0, suffix
    assert "ns/day" in result.output and "NVE energy drift" in result.output and "mean temperature" in result.output
    summary = json.loads(Path(f"{prefix}-summary.json").read_text())
    assert summary["final_step"] == 20 and summary["atoms"] == 3 and summary["ensemble"] == "nve"
    assert summary["ns_per_day"] > 0 and summary["mean_temperature_k"] > 0
    assert abs(summary["energy_drift_mev_per_atom_ps"]) < 1.0  # 10 fs of NVE: conserved to round-off
    assert list(read_state_data(Path(f"{prefix}.csv"))["Step"]) == [5, 10, 15, 20]
    assert mdtraj.load(f"{prefix}.dcd", top=f"{prefix}-topology.pdb").n_frames == 4


def test_run_refuses_to_overwrite_without_force(tmp_path):
    prefix = tmp_path / "water"
    assert short_run(prefix, "--no-minimize").exit_code == 0
    before = Path(f"{prefix}.csv").read_bytes()
    result = short_run(prefix, "--no-minimize")
    assert result.exit_code != 0
    assert "exist" in result.output and "--force" in result.output
    assert Path(f"{prefix}.csv").read_bytes() == before
    assert short_run(prefix, "--no-minimize", "--force").exit_code == 0


def test_restart_continues_the_run_and_appends(tmp_path):
    prefix = tmp_path / "water"
    assert short_run(prefix).exit_code == 0
    result = short_run(prefix, "--restart", f"{prefix}.chk")
    assert result.exit_code == 0, result.output
    assert "ending at step 40" in result.output
    assert list(read_state_data(Path(f"{prefix}.csv"))["Step"]) == [5, 10, 15, 20, 25, 30, 35, 40]
    assert mdtraj.load(f"{prefix}.dcd", top=f"{prefix}-topology.pdb").n_frames == 8


def test_smiles_and_pdb_inputs_and_xtc_output(tmp_path):
    result = run("CO", "--model", MODEL, "-o", str(tmp_path / "methanol"), "--steps", "10", "--report-interval", "5",
                 "--platform", "Reference", "--trajectory-format", "xtc", "--no-minimize", "--seed", "2", "--threads", "1", "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output
    trajectory = mdtraj.load(str(tmp_path / "methanol.xtc"), top=str(tmp_path / "methanol-topology.pdb"))
    assert trajectory.n_atoms == 6 and trajectory.n_frames == 2
    result = run(str(tmp_path / "methanol-topology.pdb"), "--model", MODEL, "-o", str(tmp_path / "from-pdb"),
                 "--steps", "5", "--platform", "Reference", "--no-minimize", "--threads", "1", "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "of 6 atoms" in result.output


@pytest.mark.parametrize(
    "structure, extra, message",
    [
        ("CS", (), "knows the elements H, C, N, O"),  # methanethiol: sulfur
        ("not-a-molecule((", (), "neither an existing structure file nor a valid SMILES"),
        ("missing.xyz", (), "does not exist"),
        (WATER, ("--platform", "NoSuchPlatform"), "not available here; available: Reference"),
    ],
    ids=["unknown-element", "bad-smiles", "missing-file", "unknown-platform"],
)
def test_bad_input_is_a_clear_error(tmp_path, structure, extra, message):
    result = run(structure, "--model", MODEL, "-o", str(tmp_path / "out"), "--steps", "5", "--quiet", *extra)
    assert result.exit_code != 0
    assert message in result.output
    assert not list(tmp_path.glob("out*"))  # nothing written


PERIODIC_WATER = "3\nLattice=\"10 0 0 0 10 0 0 0 10\" Properties=species:S:1:pos:R:3 pbc=\"T T T\"\nO 0 0 0.119\nH 0 0.763 -0.477\nH 0 -0.763 -0.477\n"  # fmt: skip


@pytest.mark.parametrize(
    "name, text, extra, message",
    [
        ("atom.xyz", "1\n\nO 0 0 0\n", (), "is a single atom"),
        ("empty.pdb", "END\n", (), "holds no atoms (no ATOM or HETATM records)"),
        ("broken.xyz", "2\n\nO 0 0 0\nH inf 0 0\n", (), "atom 2 (H) of"),
        ("water.xyz", None, ("-o", ""), "--output is empty"),
        ("water.xyz", None, ("--ensemble", "npt"), "--ensemble npt needs a periodic box"),
        ("box.xyz", PERIODIC_WATER, ("--ensemble", "npt", "--pressure-bar", "1"), "uses global attention"),
    ],
    ids=["one-atom", "pdb-only-END", "infinite-coordinate", "empty-output", "npt-without-box", "global-model-in-box"],
)
def test_unusable_structures_and_options_are_clear_errors_before_anything_is_written(
    tmp_path, monkeypatch, name, text, extra, message
):
    monkeypatch.chdir(tmp_path)
    structure = tmp_path / name
    structure.write_text(text if text is not None else Path(WATER).read_text())
    result = run(str(structure), "--model", MODEL, "-o", "out", "--steps", "5", "--platform", "Reference",
                 "--threads", "1", "--quiet", *extra)  # fmt: skip
    assert result.exit_code != 0
    assert message in result.output, result.output
    assert "Traceback" not in result.output and len(result.output.splitlines()) == 1  # one sentence
    assert [path.name for path in tmp_path.iterdir()] == [name]  # nothing written


def test_npt_options_are_parsed_and_checked():
    assert "--pressure-bar" in run("--help").output and "npt" in run("--help").output
    result = run(WATER, "--model", MODEL, "--ensemble", "npt", "--pressure-bar", "0")
    assert result.exit_code == 2 and "--pressure-bar" in result.output


def water_box(path: Path) -> str:
    """Eight waters on a 2 x 2 x 2 grid in a periodic 6.2 Å cube (about 1.0 g/mL)."""
    import ase
    import ase.io
    import numpy as np

    water = np.array([[0, 0, 0.119], [0, 0.763, -0.477], [0, -0.763, -0.477]])
    positions = np.vstack([water + np.array([i, j, k]) * 3.1 for i in range(2) for j in range(2) for k in range(2)])
    ase.io.write(path, ase.Atoms("OH2" * 8, positions=positions, cell=np.eye(3) * 6.2, pbc=True))
    return str(path)


def test_npt_of_a_periodic_box_with_a_local_model(tmp_path):
    """A random-weight local model (2.5 Å range) in NPT at 1000 bar: the barostat changes the box, the
    state data has volume and density, and density is mass / volume."""
    import numpy as np
    import torch

    from mdplugin.model.checkpoint import build_checkpoint, provenance, save_checkpoint
    from mdplugin.model.transformer import ModelConfig, TransformerPotential

    torch.manual_seed(3)
    config = ModelConfig(elements=[1, 6, 7, 8], width=16, depth=1, heads=2, interaction_range=2.5)
    model = tmp_path / "local.pt"
    save_checkpoint(build_checkpoint(TransformerPotential(config), provenance({}), {}), model)
    prefix = tmp_path / "npt"
    result = run(water_box(tmp_path / "box.extxyz"), "--model", str(model), "-o", str(prefix), "--ensemble", "npt",
                 "--pressure-bar", "1000", "--barostat-interval", "5", "--steps", "40", "--report-interval", "10",
                 "--platform", "Reference", "--no-minimize", "--seed", "2", "--threads", "1", "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "mean density" in result.output
    data = read_state_data(Path(f"{prefix}.csv"))
    volume, density = data["Box Volume (nm^3)"], data["Density (g/mL)"]
    assert len(set(volume)) > 1 and abs(volume[0] - 0.2383) < 0.01  # moves accepted, starting from 6.2 Å cubed
    water_grams_per_mole = 18.015
    assert np.allclose(density, 8 * water_grams_per_mole * 1.66054e-3 / volume, rtol=1e-4)
    trajectory = mdtraj.load(f"{prefix}.dcd", top=f"{prefix}-topology.pdb")
    assert np.allclose(trajectory.unitcell_volumes, volume, rtol=1e-5)  # the DCD carries each frame's box


DIPEPTIDE = str(Path(__file__).resolve().parents[1] / "examples" / "mlmm" / "alanine-dipeptide.pdb")


def mlmm_run(structure: str, output: Path, *extra: str):
    """A few steps of ML/MM with the random-weight fixture model: no minimisation (its random forces would
    crumple the dipeptide), a 0.9 nm cutoff for the 2 nm box of 1 nm padding."""
    return run(structure, "--model", MODEL, "-o", str(output), "--nonbonded-cutoff-nm", "0.9", "--steps", "10",
               "--report-interval", "5", "--no-minimize", "--seed", "3", "--threads", "1", "--quiet", *extra)  # fmt: skip


def test_mlmm_run_of_a_solvated_dipeptide(tmp_path):
    """--solvate puts the PDB in TIP3P (amber14) and the model computes the dipeptide; NPT moves the box.
    The solvated structure written beside the run is a periodic PDB from which --ml-residues and
    --ml-atoms select the same 22 atoms."""
    prefix = tmp_path / "solvated"
    result = mlmm_run(DIPEPTIDE, prefix, "--solvate", "1.0", "--ensemble", "npt", "--barostat-interval", "2")
    assert result.exit_code == 0, result.output
    assert "of 721 atoms (22 by the model)" in result.output and "mean density" in result.output
    assert "ML/MM: the model computes 22 atoms (the solute), amber14-all.xml, amber14/tip3p.xml the other 699" in (
        result.output
    )
    summary = json.loads(Path(f"{prefix}-summary.json").read_text())
    assert summary["atoms"] == 721 and summary["ml_atoms"] == 22
    assert 0.85 < summary["mean_density_g_per_ml"] < 1.05  # the Modeller box of water with the dipeptide
    trajectory = mdtraj.load(f"{prefix}.dcd", top=f"{prefix}-topology.pdb")
    assert trajectory.n_atoms == 721 and trajectory.unitcell_lengths is not None
    result = mlmm_run(DIPEPTIDE, prefix, "--solvate", "1.0", "--ensemble", "npt", "--barostat-interval", "2",
                      "--restart", f"{prefix}.chk")  # fmt: skip
    assert result.exit_code == 0 and "ending at step 20" in result.output, result.output
    result = mlmm_run(DIPEPTIDE, prefix, "--solvate", "1.0", "--ensemble", "npt", "--barostat-interval", "2",
                      "--ml-atoms", "0-24", "--restart", f"{prefix}.chk")  # fmt: skip
    assert result.exit_code != 0 and "the ML region (--ml-residues, --ml-atoms) was 0-21, now 0-24" in result.output

    for selection in (("--ml-residues", "ACE,ALA,NME"), ("--ml-atoms", "0-21"), ("--ml-residues", "A:1-3")):
        output = tmp_path / selection[1].replace(":", "")
        result = mlmm_run(f"{prefix}-topology.pdb", output, *selection)
        assert result.exit_code == 0, result.output
        assert "of 721 atoms (22 by the model)" in result.output
        assert json.loads(Path(f"{output}-run.json").read_text())["ml_atoms"] == "0-21"


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            ("--ml-residues", "LIG"),
            "--ml-residues: no residue is named or numbered 'LIG' in the structure (its residues: ACE, ALA, NME, HOH)",
        ),
        (("--ml-residues", "1-3"), "residue numbers 1-3 occur in chains A, B; name the chain, e.g. A:1-3"),
        (("--ml-residues", "ALA", "--ml-atoms", "0-3"), "give one of them"),
        (("--ml-atoms", "0-900"), "--ml-atoms: atom 721 is outside the structure's 721 atoms"),
        (
            ("--nonbonded-cutoff-nm", "1.2", "--ml-residues", "ACE,ALA,NME"),
            "more than half the periodic box width (2.00 nm)",
        ),
        (("--forcefield", "nonexistent.xml", "--ml-atoms", "0-21"), "cannot load the force field nonexistent.xml"),
        ((), "cannot compute the whole periodic system"),
    ],
    ids=[
        "unknown-residue",
        "ambiguous-number",
        "two-selections",
        "atom-outside",
        "cutoff-too-long",
        "missing-forcefield",
        "no-selection",
    ],
)
def test_mlmm_mistakes_are_clear_errors_before_anything_is_written(tmp_path, extra, message):
    solvated = tmp_path / "box.pdb"
    prefix = tmp_path / "first"
    assert mlmm_run(DIPEPTIDE, prefix, "--solvate", "1.0", "--steps", "1").exit_code == 0
    Path(f"{prefix}-topology.pdb").rename(solvated)
    result = run(str(solvated), "--model", MODEL, "-o", str(tmp_path / "out"), "--steps", "5", "--threads", "1",
                 "--quiet", *(extra if "--nonbonded-cutoff-nm" in extra else ("--nonbonded-cutoff-nm", "0.9", *extra)))  # fmt: skip
    assert result.exit_code != 0
    assert message in result.output, result.output
    assert not list(tmp_path.glob("out*"))


def test_solvate_needs_residues_the_force_field_knows(tmp_path):
    result = run(WATER.replace("water.xyz", "methanol.xyz"), "--model", MODEL, "-o", str(tmp_path / "out"),
                 "--solvate", "1.0", "--quiet")  # fmt: skip
    assert result.exit_code != 0
    assert "cannot solvate" in result.output and "residues the force field knows" in result.output
    assert not list(tmp_path.glob("out*"))


def test_max_minutes_stops_cleanly_and_the_run_continues_with_restart(tmp_path):
    """A wall-clock budget ends the run between reports with its checkpoint and summary written (a budget of
    0.5 s against 10 million steps, which would take hours here)."""
    prefix = tmp_path / "water"
    result = run(WATER, "--model", MODEL, "-o", str(prefix), "--steps", "10000000", "--report-interval", "5",
                 "--platform", "Reference", "--seed", "5", "--threads", "1", "--quiet", "--max-minutes", "0.008")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "stopped by --max-minutes" in result.output
    summary = json.loads(Path(f"{prefix}-summary.json").read_text())
    assert summary["stopped_by_wall_clock"] and summary["status"] == "completed"
    assert 0 < summary["final_step"] < 10_000_000 and Path(f"{prefix}.chk").stat().st_size > 0
    again = run(WATER, "--model", MODEL, "-o", str(prefix), "--steps", "10", "--report-interval", "5",
                "--platform", "Reference", "--seed", "5", "--threads", "1", "--quiet", "--restart", f"{prefix}.chk")  # fmt: skip
    assert again.exit_code == 0, again.output
    assert json.loads(Path(f"{prefix}-summary.json").read_text())["final_step"] == summary["final_step"] + 10


def test_unwrapped_trajectory_keeps_atoms_where_they_are(tmp_path):
    """A periodic box whose atoms all sit one cell vector outside it: the default trajectory wraps them into
    the box, --unwrapped keeps them where the dynamics has them (a few fs: they barely move)."""
    import ase.io

    box = ase.io.read(FIXTURES / "water-box.extxyz")
    box.positions += box.cell[0]
    shifted = tmp_path / "shifted.extxyz"
    ase.io.write(shifted, box)
    model = str(FIXTURES / "tiny-local-float64.pt")
    frames = {}
    for name, extra in (("wrapped", ()), ("unwrapped", ("--unwrapped",))):
        prefix = tmp_path / name
        result = run(str(shifted), "--model", model, "-o", str(prefix), "--steps", "4", "--report-interval", "2",
                     "--platform", "Reference", "--seed", "1", "--threads", "1", "--quiet", "--no-minimize", *extra)  # fmt: skip
        assert result.exit_code == 0, result.output
        frames[name] = 10 * mdtraj.load(f"{prefix}.dcd", top=f"{prefix}-topology.pdb").xyz[-1]  # Å
    start = box.positions
    assert np.abs(frames["unwrapped"] - start).max() < 0.2  # 2 fs of motion
    assert np.abs(frames["wrapped"] - start).max() > 5.0  # moved back by a cell vector
