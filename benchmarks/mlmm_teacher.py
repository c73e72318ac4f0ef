"""The teacher test of ML/MM: a model learned from amber14 itself must sample what amber14 samples.

With GFN2-xTB labels there is no cheap reference MD, so a bad ML/MM run cannot be told from a bad model.
Here the reference is the force field: the model learns the dipeptide's internal amber14 energy (vacuum,
flexible: what openmm-ml's mixed system takes out of the ML region), and its ML/MM run in TIP3P must
reproduce the all-MM run with the same force field and the same flexibility.

1. all-MM: amber14/TIP3P, the dipeptide flexible, NPT 300 K (`benchmarks.mlmm --flexible-mm`);
2. start structures: one frame of that run per Ramachandran basin it visits, the dipeptide alone as PDB;
3. `mdplugin learn STARTS --reference forcefield:amber14-all.xml --solvate 1.4` (committee; each round samples
   the dipeptide in water with ML/MM, as it will run, and the teacher labels its geometries in vacuum);
4. ML/MM with the learned export, same box, seed and settings as 1;
5. the two side by side: basin populations with block errors, phi/psi histograms, density, closest
   non-bonded heavy atoms (`benchmarks.mlmm`'s report, written to --output).

    python -m benchmarks.mlmm_teacher --duration-ps 1000 --output benchmarks/results/mlmm-teacher
    python -m benchmarks.mlmm_teacher --duration-ps 50 --training-steps 6000 --max-rounds 2   # a short try
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repository root
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
from pathlib import Path

import numpy as np

from benchmarks import mlmm

TEACHER = "forcefield:amber14-all.xml"


def basin_starts(prefix: Path, folder: Path, seed: int = 0) -> list[str]:
    """One frame per visited basin of the all-MM run at `prefix`, the dipeptide alone (made whole, amber
    names, no box) as PDB files in `folder`."""
    import mdtraj
    from openmm import app, unit

    trajectory = mdtraj.load(f"{prefix}.dcd", top=f"{prefix}-topology.pdb")
    _, phi = mdtraj.compute_phi(trajectory)
    _, psi = mdtraj.compute_psi(trajectory)
    phi, psi = np.degrees(phi[:, 0]), np.degrees(psi[:, 0])
    topology = app.PDBFile(f"{prefix}-topology.pdb").topology
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    starts = []
    for number, (name, inside) in enumerate(mlmm.BASINS.items()):
        frames = np.flatnonzero(inside(phi, psi))
        if len(frames) == 0:
            continue
        frame = int(rng.choice(frames))
        modeller = app.Modeller(topology, trajectory.xyz[frame] * unit.nanometer)
        modeller.delete([r for r in modeller.topology.residues() if r.name not in ("ACE", "ALA", "NME")])
        lengths = np.array(trajectory.unitcell_lengths[frame])  # nm
        positions = whole(np.array(modeller.positions.value_in_unit(unit.nanometer)), modeller.topology, lengths)
        modeller.topology.setPeriodicBoxVectors(None)  # a molecule in vacuum: no CRYST1
        path = folder / f"start-{number}-{name.split(' ')[0].replace('/', '-')}.pdb"
        with open(path, "w") as handle:
            app.PDBFile.writeFile(modeller.topology, positions * unit.nanometer, handle)
        starts.append(str(path))
    return starts


def whole(positions: np.ndarray, topology, lengths: np.ndarray) -> np.ndarray:
    """A molecule made whole in an orthorhombic box: each atom at the image nearest to its bonded neighbour."""
    placed, bonds = {0}, [(a.index, b.index) for a, b in topology.bonds()]
    while len(placed) < len(positions):
        grown = False
        for i, j in bonds:
            if (i in placed) != (j in placed):
                new, old = (j, i) if i in placed else (i, j)
                positions[new] -= lengths * np.round((positions[new] - positions[old]) / lengths)
                placed.add(new)
                grown = True
        if not grown:
            raise ValueError("the dipeptide's atoms are not bonded into one molecule in the topology")
    return positions


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-ps", type=float, default=1000.0, help="each of the two MD runs")
    parser.add_argument("--timestep-fs", type=float, default=1.0)
    parser.add_argument("--runs", type=Path, default=Path("runs/mlmm-teacher"))
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/mlmm-teacher"))
    parser.add_argument("--committee", type=int, default=4)
    parser.add_argument("--training-steps", type=int, default=20000)
    parser.add_argument("--max-rounds", type=int, default=6)
    parser.add_argument("--solvate-nm", type=float, default=1.4, help="learn's ML/MM sampling (0: in vacuum)")
    arguments = parser.parse_args(argv)

    from mdplugin.learn.loop import learn
    from mdplugin.learn.options import LearnOptions

    common = ["--duration-ps", str(arguments.duration_ps), "--timestep-fs", str(arguments.timestep_fs),
              "--runs", str(arguments.runs), "--flexible-mm", "--reuse", "--openmm-threads", "1"]  # fmt: skip
    print("1. all-MM run (amber14, flexible dipeptide)", flush=True)
    mlmm.main([*common, "--only", "all-MM"])
    starts = basin_starts(arguments.runs / "all-mm", arguments.runs / "starts")
    print(f"2. start structures, one per visited basin: {', '.join(starts)}", flush=True)
    options = LearnOptions(structures=starts, reference=TEACHER, output=str(arguments.runs / "learn"),
                           temperatures_k=[300.0], committee=arguments.committee,
                           training_steps=arguments.training_steps, max_rounds=arguments.max_rounds,
                           solvate_nm=arguments.solvate_nm or None)  # fmt: skip
    state = learn(options)
    print(f"3. learned: {'converged' if state.get('converged') else 'not converged'} after {len(state['rounds'])} "
          f"rounds; {state['export']}", flush=True)  # fmt: skip
    mlmm.main([*common, "--model", state["export"], "-o", str(arguments.output)])
    print(f"4. report: {arguments.output / 'README.md'}")


if __name__ == "__main__":
    main()
