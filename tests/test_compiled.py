"""Capture-safe energy and forces (no host synchronisation, a fixed-capacity neighbour table) and the compiled
export (contract version 4: an AOT-Inductor package), against the TorchScript export's numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch._dynamo
from click.testing import CliRunner
from export_files import with_metadata

import mdplugin
from mdplugin.cli.main import main
from mdplugin.export.compiled import GlobalEnergyForces, LocalEnergyForces, compile_export, default_capacity
from mdplugin.export.contract import ExportError
from mdplugin.export.exporter import ExportedLocalPotential, ExportedPotential, export
from mdplugin.export.model_file import open_model
from mdplugin.model.checkpoint import build_checkpoint, save_checkpoint
from mdplugin.model.transformer import ModelConfig, TransformerPotential, pair_slots, pair_table, pairs_within

RANGE = 2.5  # Å
CELL = np.diag([6.0, 6.5, 7.0])
PERIODIC = torch.ones(3, dtype=torch.bool)
EXACT = 1e-10  # float64 throughout: only the order of summation differs


def tiny_model(local: bool, seed: int = 0) -> TransformerPotential:
    torch.manual_seed(seed)
    config = ModelConfig(
        elements=[1, 8], width=16, depth=2, heads=2, interaction_range=RANGE if local else None, radial_features=4
    )
    model = TransformerPotential(config)
    model.energy_scale.fill_(2.0)
    return model.double().eval()


def water_like(atoms: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions [N, 3] Å spread through CELL and atomic numbers O, H, H, ..."""
    generator = torch.Generator().manual_seed(seed)
    positions = torch.rand(atoms, 3, generator=generator, dtype=torch.float64) * torch.tensor(np.diag(CELL))
    return positions, torch.tensor([8, 1, 1] * (atoms // 3) + [8] * (atoms % 3))


def pairs(positions: torch.Tensor, cutoff: float = RANGE):
    return pairs_within(positions, torch.tensor(CELL), PERIODIC, cutoff)


SYSTEM = torch.tensor([0, 1])


# ------------------------------------------------------------------------------- the neighbour table


def test_fixed_capacity_table_equals_the_exact_one_and_reports_the_width_needed():
    positions, _ = water_like(30, seed=1)
    centers, neighbors, shifts = pairs(positions)
    displacement = positions[neighbors] - positions[centers] + shifts
    index, table, bias = pair_slots(centers, neighbors, displacement, 30, RANGE)
    width = index.size(1)
    wide = pair_table(centers, neighbors, displacement, 30, RANGE, width + 5)
    assert int(wide[3]) == width  # what the pairs need, whatever the capacity
    assert torch.equal(wide[0][:, :width], index) and torch.equal(wide[1][:, :width], table)
    assert torch.equal(wide[2][:, :width], bias) and bool((wide[2][:, width:] == float("-inf")).all())
    # too narrow: the width needed says so (the caller must refuse), no error inside the graph
    assert int(pair_table(centers, neighbors, displacement, 30, RANGE, width - 2)[3]) == width


def test_padding_pairs_are_dropped():
    """A pair whose centre is N (padding of a fixed-size pair list) changes nothing."""
    positions, _ = water_like(12, seed=2)
    centers, neighbors, shifts = pairs(positions)
    displacement = positions[neighbors] - positions[centers] + shifts
    exact = pair_table(centers, neighbors, displacement, 12, RANGE, 20)
    spare = torch.full((3,), 12)
    padded = pair_table(
        torch.cat([centers, spare]), torch.cat([neighbors, spare * 0]), torch.cat([displacement, torch.ones(3, 3)]),
        12, RANGE, 20,
    )  # fmt: skip
    for a, b in zip(exact, padded, strict=True):
        assert torch.equal(a, b)


def test_default_capacity_has_headroom_over_liquid_water():
    # liquid water: 0.1 atoms/Å^3, ~52 neighbours within 5 Å (60 in the benchmark's jittered boxes)
    assert default_capacity(5.0, None) >= 1.5 * 52
    assert default_capacity(5.0, {"max_neighbours": 60}) == 1 + 75


# --------------------------------------------------------------------- capture safety: torch.compile


def test_global_energy_and_forces_compile_as_one_graph():
    model = tiny_model(local=False)
    positions, numbers = water_like(9, seed=3)
    expected = ExportedPotential(model)(positions, numbers, 0, 1)
    module = GlobalEnergyForces(model, functional=True)
    assert torch._dynamo.explain(module)(positions, numbers, SYSTEM).graph_break_count == 0
    torch._dynamo.reset()
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")  # fullgraph: a break is an error
    for got, want in zip(compiled(positions, numbers, SYSTEM), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=EXACT, atol=EXACT)


def test_local_energy_forces_and_virial_compile_as_one_graph():
    model = tiny_model(local=True)
    positions, numbers = water_like(24, seed=4)
    expected = ExportedLocalPotential(model)(positions, numbers, 0, 1, torch.tensor(CELL), PERIODIC)
    module = LocalEnergyForces(model, capacity=40, functional=True)
    inputs = (positions, numbers, SYSTEM, *pairs(positions))
    assert torch._dynamo.explain(module)(*inputs).graph_break_count == 0
    torch._dynamo.reset()
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    *results, needed = compiled(*inputs)
    assert int(needed) <= 40
    for got, want in zip(results, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=EXACT, atol=EXACT)


# ------------------------------------------------------------------------------- the compiled export


@pytest.fixture(scope="module")
def compiled_files(tmp_path_factory) -> dict:
    """Tiny global and local checkpoints, their TorchScript exports and their compiled exports (float64)."""
    directory = tmp_path_factory.mktemp("compiled")
    files = {}
    for kind in ("global", "local"):
        checkpoint = directory / f"{kind}.pt"
        save_checkpoint(build_checkpoint(tiny_model(kind == "local"), {"date": "today", "data_sha256": {}}, {}),
                        checkpoint)  # fmt: skip
        files[kind] = {
            "checkpoint": checkpoint,
            "script": export(checkpoint, dtype="float64"),
            # capacity 24: room for the test boxes (at most 16 neighbours within 2.5 Å), not for a crowded one
            "compiled": compile_export(checkpoint, dtype="float64", capacity=24 if kind == "local" else None),
        }
    return files


def test_compiled_global_export_equals_the_torchscript_export(compiled_files):
    files = compiled_files["global"]
    model_file = open_model(files["compiled"])
    assert model_file.kind == "compiled" and model_file.metadata["format_version"] == 4
    assert model_file.metadata["compiled"]["compile_seconds"] > 0
    script, compiled = mdplugin.load(files["script"]), mdplugin.load(model_file)
    for atoms, seed in ((5, 0), (21, 1)):  # one package, any number of atoms
        positions, numbers = water_like(atoms, seed)
        want, got = script(positions.numpy(), numbers.numpy()), compiled(positions.numpy(), numbers.numpy())
        assert abs(got.energy - want.energy) <= EXACT * abs(want.energy)
        np.testing.assert_allclose(got.forces, want.forces, rtol=0, atol=EXACT * np.abs(want.forces).max())
        np.testing.assert_allclose(got.per_atom_energy, want.per_atom_energy, rtol=EXACT)


def test_compiled_local_export_equals_the_torchscript_export(compiled_files):
    files = compiled_files["local"]
    assert open_model(files["compiled"]).metadata["compiled"]["neighbour_capacity"] == 24
    script, compiled = mdplugin.load(files["script"]), mdplugin.load(files["compiled"])
    for atoms, seed in ((30, 5), (45, 6)):
        positions, numbers = water_like(atoms, seed)
        want = script(positions.numpy(), numbers.numpy(), cell=CELL, pbc=[True] * 3)
        got = compiled(positions.numpy(), numbers.numpy(), cell=CELL, pbc=[True] * 3)
        assert abs(got.energy - want.energy) <= EXACT * abs(want.energy)
        np.testing.assert_allclose(got.forces, want.forces, rtol=0, atol=EXACT * np.abs(want.forces).max())
        np.testing.assert_allclose(got.virial, want.virial, rtol=0, atol=EXACT * np.abs(want.virial).max())
    # an isolated pair of atoms: fewer pairs than the package was traced with, padded by the client
    two = compiled(np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.97]]), [8, 1])
    assert two.energy == pytest.approx(script(np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.97]]), [8, 1]).energy)


@pytest.mark.parametrize("kind", ["global", "local"])
def test_a_compiled_export_carries_the_repulsive_core(compiled_files, kind, tmp_path):
    """`--compile --repulsion zbl`: the core's wall at a close contact, equal to the TorchScript export's."""
    checkpoint = compiled_files[kind]["checkpoint"]
    script = mdplugin.load(export(checkpoint, tmp_path / "core.pt", dtype="float64", repulsion="zbl"))
    package = compile_export(checkpoint, tmp_path / "core.pt2", dtype="float64", repulsion="zbl",
                             capacity=24 if kind == "local" else None)  # fmt: skip
    assert open_model(package).metadata["repulsion"]["kind"] == "zbl"
    compiled, bare = mdplugin.load(package), mdplugin.load(compiled_files[kind]["compiled"])
    positions, numbers = water_like(9, seed=10)
    positions[1] = positions[0] + torch.tensor([0.0, 0.0, 0.4])  # an O-H contact well inside the core
    want, got = script(positions.numpy(), numbers.numpy()), compiled(positions.numpy(), numbers.numpy())
    assert abs(got.energy - want.energy) <= EXACT * abs(want.energy)
    np.testing.assert_allclose(got.forces, want.forces, rtol=0, atol=EXACT * np.abs(want.forces).max())
    assert got.energy - bare(positions.numpy(), numbers.numpy()).energy > 10  # eV: the wall is there


def test_a_crowded_structure_is_refused_not_truncated(compiled_files):
    compiled = mdplugin.load(compiled_files["local"]["compiled"])
    positions, numbers = water_like(300, seed=7)  # 300 atoms in 273 Å^3: ~70 neighbours within 2.5 Å
    with pytest.raises(
        ValueError, match=r"more than the 23 this compiled export's neighbour table holds.*--neighbour-capacity"
    ):
        compiled(positions.numpy(), numbers.numpy(), cell=CELL, pbc=[True] * 3)


def test_the_checks_still_run_outside_the_compiled_graph(compiled_files):
    compiled = mdplugin.load(compiled_files["global"]["compiled"])
    positions, _ = water_like(6, seed=8)
    with pytest.raises(ValueError, match="atomic number 6 is not one of the model's elements"):
        compiled(positions.numpy(), [8, 1, 1, 6, 1, 1])
    with pytest.raises(ValueError, match="NaN"):
        compiled(np.full((6, 3), np.nan), [8, 1, 1, 8, 1, 1])
    with pytest.raises(ValueError, match="total charge 9"):
        compiled(positions.numpy(), [8, 1, 1, 8, 1, 1], charge=9)
    # the atoms' checks are remembered between calls (an MD run); the positions are checked on every call
    compiled(positions.numpy(), [8, 1, 1, 8, 1, 1])
    with pytest.raises(ValueError, match="NaN"):
        compiled(np.full((6, 3), np.nan), [8, 1, 1, 8, 1, 1])
    with pytest.raises(ValueError, match="atomic number 6 is not one of the model's elements"):
        compiled(positions.numpy(), [8, 1, 1, 6, 1, 1])


def test_a_package_from_another_torch_or_device_is_refused(compiled_files, tmp_path):
    source = compiled_files["global"]["compiled"]

    def compiled_for(**changes):
        return lambda record: {**record, "compiled": {**record["compiled"], **changes}}

    other_torch = with_metadata(source, tmp_path / "old-torch.pt2", record=compiled_for(torch="2.6.0"))
    with pytest.raises(
        ExportError, match=r"compiled with torch 2\.6\.0.*re-export it with `mdplugin export --compile`"
    ):
        mdplugin.load(other_torch)
    other_device = with_metadata(source, tmp_path / "cuda.pt2", record=compiled_for(device="cuda"))
    with pytest.raises(ExportError, match=r"compiled for cuda, not cpu.*--device cpu"):
        mdplugin.load(other_device)


def test_cli_compiles_and_refuses_to_overwrite(compiled_files, tmp_path):
    runner = CliRunner()
    checkpoint = compiled_files["global"]["checkpoint"]
    existing = compiled_files["global"]["compiled"]
    result = runner.invoke(main, ["export", str(checkpoint), "--compile", "-o", str(existing)])
    assert result.exit_code != 0 and "pass --force" in result.output
    result = runner.invoke(main, ["export", str(checkpoint), "--neighbour-capacity", "20"])
    assert result.exit_code != 0 and "add --compile" in result.output
    result = runner.invoke(main, ["info", str(existing), "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["kind"] == "compiled"


def test_ase_calculator_runs_a_compiled_export(compiled_files):
    import ase

    from mdplugin.engines.ase_calculator import TransformerCalculator

    positions, numbers = water_like(30, seed=9)
    atoms = ase.Atoms(numbers=numbers.numpy(), positions=positions.numpy(), cell=CELL, pbc=True)
    atoms.calc = TransformerCalculator(compiled_files["local"]["compiled"])
    want = mdplugin.load(compiled_files["local"]["script"]).evaluate_atoms(atoms)
    assert atoms.get_potential_energy() == pytest.approx(want.energy, rel=EXACT)
    np.testing.assert_allclose(atoms.get_forces(), want.forces, atol=1e-9)


@pytest.mark.parametrize("kind", ["global", "local"])
def test_openmm_runs_a_compiled_export_through_python_force(compiled_files, kind):
    """openmm-torch loads TorchScript only: a compiled export becomes a PythonForce with the same numbers."""
    import openmm
    from openmm import unit

    from mdplugin.engines.openmm_force import create_system
    from mdplugin.md.structure_input import topology_from_symbols

    positions, numbers = water_like(30, seed=10)
    symbols = ["O" if z == 8 else "H" for z in numbers.tolist()]
    results = []
    for name in ("script", "compiled"):
        topology = topology_from_symbols(symbols)
        if kind == "local":
            topology.setPeriodicBoxVectors(CELL * 0.1)  # Å -> nm
        system = create_system(compiled_files[kind][name], topology)
        forces = [f for f in system.getForces() if not isinstance(f, openmm.CMMotionRemover)]
        assert isinstance(forces[0], openmm.PythonForce) == (name == "compiled")
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"))
        context.setPositions(positions.numpy() * 0.1)
        state = context.getState(getEnergy=True, getForces=True)
        results.append(
            (
                state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
                state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer),
            )
        )
    (energy, forces), (compiled_energy, compiled_forces) = results
    assert compiled_energy == pytest.approx(energy, rel=1e-9)
    np.testing.assert_allclose(compiled_forces, forces, atol=1e-7 * np.abs(forces).max())
