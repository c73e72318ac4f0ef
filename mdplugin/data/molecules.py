"""Reference data: GFN2-xTB (tblite) energies and forces on frames of Langevin MD, written as extxyz.

A trajectory starts from a structure (SMILES through RDKit's ETKDG, or a structure file), relaxed with
xTB; it gets Maxwell-Boltzmann velocities, is equilibrated by Langevin MD at its temperature, and then
one frame is taken every `stride` steps. Each frame is labelled with the xTB energy (eV) and forces
(eV/Å) of exactly the geometry written, and carries its momenta and a provenance record in its info.

Every stretch of MD between two frames starts from the frame as written (positions and momenta as
the extxyz text holds them) with a random stream seeded by (trajectory seed, frame index), so a
run that was interrupted and continued with `resume=True` writes the same file as one that was not.
"""

from __future__ import annotations

import math
import os
import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mdplugin.data.labellers import GFN2xTB
from mdplugin.data.trajectories import (
    TrajectoryResult,
    extxyz_text,
    frame_spans,
    parse_extxyz,
    run_trajectories,
    run_trajectory,
)

MAX_ATOMIC_NUMBER = 86  # GFN2-xTB has parameters for H to Rn
SPLITS = ("train", "test")

#: The molecules of the MD17 set, by SMILES (malonaldehyde as its hydrogen-bonded enol form).
MD17_SMILES = {
    "aspirin": "CC(=O)Oc1ccccc1C(=O)O",
    "benzene": "c1ccccc1",
    "ethanol": "CCO",
    "malonaldehyde": "O=C/C=C\\O",
    "naphthalene": "c1ccc2ccccc2c1",
    "salicylic_acid": "OC(=O)c1ccccc1O",
    "toluene": "Cc1ccccc1",
    "uracil": "O=c1cc[nH]c(=O)[nH]1",
}


@dataclass
class Molecule:
    """A starting structure (Å) with its total charge and spin multiplicity."""

    name: str
    numbers: np.ndarray  # [N] atomic numbers
    positions: np.ndarray  # [N, 3] Å
    charge: int = 0
    multiplicity: int = 1
    source: str = ""


@dataclass(frozen=True)
class MDSettings:
    """How a trajectory is relaxed, equilibrated and sampled."""

    timestep_fs: float = 0.5
    friction_per_fs: float = 0.01
    stride: int = 20  # MD steps between frames
    equilibration_steps: int = 1000
    relax_fmax: float = 0.05  # eV/Å
    relax_steps: int = 500


@dataclass(frozen=True)
class Trajectory:
    """One job: `frames` frames of one molecule at one temperature, written to `path`."""

    molecule: Molecule = field(compare=False)
    temperature_K: float
    split: str
    seed: int
    frames: int
    path: Path
    settings: MDSettings = MDSettings()
    base_seed: int = 0

    identity_keys = (
        "molecule",
        "split",
        "temperature_K",
        "trajectory_seed",
        "charge",
        "multiplicity",
        "method",
        "timestep_fs",
        "friction_per_fs",
        "stride_steps",
        "equilibration_steps",
    )  # what a continued file must agree on (see trajectories.continue_from)

    @property
    def numbers(self) -> np.ndarray:
        return self.molecule.numbers

    @property
    def cost(self) -> float:
        s = self.settings
        return (s.equilibration_steps + self.frames * (s.stride + 1)) * len(self.molecule.numbers) ** 2

    def provenance(self, created: str) -> dict:
        return provenance(self, created)

    def sampler(self):
        """(index, last frame, info) -> (extxyz text, frame): GFN2-xTB Langevin MD, labelled by GFN2-xTB."""
        calc = GFN2xTB(self.molecule)

        def sample(index: int, last, info: dict):
            return _labelled(_next_frame(self, index, last, calc), calc, info)

        return sample


# ---------------------------------------------------------------------------- starting structures


def check_name(name: str) -> str:
    """A molecule name usable as a file name."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", name):
        raise ValueError(f"molecule name {name!r} is not usable as a file name; use letters, digits, '_', '-', '.'")
    return name


def molecule_from_smiles(smiles: str, name: str | None = None, seed: int = 0) -> Molecule:
    """A 3D structure from SMILES: RDKit adds hydrogens and embeds it with ETKDG (seeded)."""
    from rdkit import Chem, RDLogger
    from rdkit.Chem import AllChem

    RDLogger.DisableLog("rdApp.*")
    try:
        mol = Chem.MolFromSmiles(smiles)
    finally:
        RDLogger.EnableLog("rdApp.*")
    if mol is None:
        raise ValueError(
            f"cannot parse the SMILES {smiles!r}; check the string (e.g. 'CCO' for ethanol) or give a structure file"
        )
    mol = Chem.AddHs(mol)
    parameters = AllChem.ETKDGv3()
    parameters.randomSeed = seed
    if AllChem.EmbedMolecule(mol, parameters) != 0:
        raise ValueError(f"RDKit could not embed {smiles!r} in 3D; give a structure file instead")
    numbers = np.array([atom.GetAtomicNum() for atom in mol.GetAtoms()], dtype=np.int64)
    radicals = sum(atom.GetNumRadicalElectrons() for atom in mol.GetAtoms())
    molecule = Molecule(
        name=check_name(name or _formula(numbers)),
        numbers=numbers,
        positions=np.asarray(mol.GetConformer().GetPositions(), dtype=np.float64),
        charge=Chem.GetFormalCharge(mol),
        multiplicity=radicals + 1,
        source=f"smiles:{smiles}",
    )
    return check_supported(molecule)


def molecule_from_file(path: str | Path, name: str | None = None, charge: int = 0, multiplicity: int = 1) -> Molecule:
    """The first structure of an ASE-readable file (XYZ, PDB, SDF, ...)."""
    import ase.io

    path = Path(path)
    try:
        atoms = ase.io.read(path, index=0)
    except Exception as error:
        from mdplugin.errors import reason  # a bare StopIteration has no text

        raise ValueError(
            f"cannot read {path} with ASE ({reason(error)}); give an XYZ, PDB or another ASE-readable file"
        ) from None
    if len(atoms) == 0:
        raise ValueError(f"{path} holds no atoms")
    if atoms.pbc.any():
        raise ValueError(
            f"{path} is periodic (a cell, pbc {''.join('T' if p else 'F' for p in atoms.pbc)}), and this runs one "
            "isolated molecule in vacuum, which would drop the cell: for water boxes use `mdplugin data water` "
            "(--solute FILE for a molecule in water); to label frames of your own periodic MD use `mdplugin data "
            "relabel`; for one molecule, write the file without its Lattice (plain XYZ)"
        )
    molecule = Molecule(
        name=check_name(name or path.stem),
        numbers=np.asarray(atoms.numbers, dtype=np.int64),
        positions=np.asarray(atoms.positions, dtype=np.float64),
        charge=charge,
        multiplicity=multiplicity,
        source=f"file:{path.name}",
    )
    return check_supported(molecule)


def molecule_from_input(
    text: str, name: str | None = None, seed: int = 0, charge: int = 0, multiplicity: int = 1
) -> Molecule:
    """A structure file if `text` names an existing file, otherwise a SMILES string."""
    if Path(text).is_file():
        return molecule_from_file(text, name, charge, multiplicity)
    return molecule_from_smiles(text, name, seed)


def md17_molecules(names: Sequence[str] | None = None, seed: int = 0) -> list[Molecule]:
    """The MD17 molecules (all, or those named) built from their SMILES."""
    names = list(MD17_SMILES) if names is None else list(names)
    unknown = [n for n in names if n not in MD17_SMILES]
    if unknown:
        raise ValueError(f"unknown MD17 molecule(s) {', '.join(unknown)}; choose from {', '.join(MD17_SMILES)}")
    return [molecule_from_smiles(MD17_SMILES[n], n, seed) for n in names]


def check_supported(molecule: Molecule) -> Molecule:
    """Refuse elements GFN2-xTB has no parameters for, and an impossible charge/multiplicity pair."""
    from mdplugin.elements import symbols

    unsupported = sorted({int(z) for z in molecule.numbers if not 1 <= z <= MAX_ATOMIC_NUMBER})
    if unsupported:
        raise ValueError(
            f"{molecule.name} contains {', '.join(symbols(unsupported))}; GFN2-xTB covers only H to Rn "
            f"(Z = 1-{MAX_ATOMIC_NUMBER}): remove those atoms or use another reference method"
        )
    electrons = int(molecule.numbers.sum()) - molecule.charge
    if molecule.multiplicity < 1 or (electrons - molecule.multiplicity + 1) % 2:
        raise ValueError(
            f"{molecule.name}: {electrons} electrons cannot have spin multiplicity {molecule.multiplicity}; "
            "set the right --charge or --multiplicity"
        )
    return molecule


def _formula(numbers: np.ndarray) -> str:
    from ase import Atoms

    return Atoms(numbers=numbers).get_chemical_formula(mode="hill")


# ---------------------------------------------------------------------------- planning


def trajectory_seed(seed: int, name: str, temperature_K: float, split: str) -> int:
    """A seed of its own for each (molecule, temperature, split), derived from the base seed."""
    key = [seed, zlib.crc32(name.encode()), int(round(temperature_K * 1000)), SPLITS.index(split)]
    return int(np.random.SeedSequence(key).generate_state(1)[0])


def trajectory_path(out_dir: str | Path, name: str, temperature_K: float, split: str) -> Path:
    return Path(out_dir) / name / f"{name}_{temperature_K:g}K_{split}.extxyz"


TEMPERATURE_RANGE_K = (1.0, 3000.0)  # MD temperatures the samplers are meant for; beyond, frames are not chemistry


def check_temperatures(temperatures_K: Sequence[float]) -> None:
    """Refuse an MD temperature outside TEMPERATURE_RANGE_K (1e9 K frames hold atoms 0.4 Å apart and energies of
    1e9 eV, which would ruin any training set they join), or one that is not a finite number."""
    low, high = TEMPERATURE_RANGE_K
    bad = [t for t in temperatures_K if not (math.isfinite(t) and low <= t <= high)]
    if bad:
        raise ValueError(
            f"temperature(s) {', '.join(f'{t:g}' for t in bad)} K outside {low:g}-{high:g} K, the range of MD "
            "temperatures the samplers are meant for; give temperatures in K such as 300,500,800"
        )


def plan(
    molecules: Sequence[Molecule],
    temperatures_K: Sequence[float],
    out_dir: str | Path,
    frames: int,
    test_frames: int,
    seed: int = 0,
    settings: MDSettings = MDSettings(),
) -> list[Trajectory]:
    """One train and one test trajectory (different seeds) per molecule and temperature."""
    if frames < 1 or test_frames < 0:
        raise ValueError(f"need at least 1 training frame and no negative test frames (got {frames}, {test_frames})")
    check_temperatures(temperatures_K)
    if len({m.name for m in molecules}) != len(molecules):
        raise ValueError("two molecules share a name; give each a distinct --name")
    jobs = []
    for molecule in molecules:
        for temperature in temperatures_K:
            for split, count in zip(SPLITS, (frames, test_frames)):
                if count:
                    jobs.append(
                        Trajectory(
                            molecule=molecule,
                            temperature_K=float(temperature),
                            split=split,
                            seed=trajectory_seed(seed, molecule.name, temperature, split),
                            frames=count,
                            path=trajectory_path(out_dir, molecule.name, temperature, split),
                            settings=settings,
                            base_seed=seed,
                        )
                    )
    return jobs


def combined_paths(out_dir: str | Path, temperatures_K: Sequence[float]) -> dict[Path, tuple[str, float | None]]:
    """The convenience files: all training frames, all test frames, and test frames per temperature."""
    out_dir = Path(out_dir)
    paths: dict[Path, tuple[str, float | None]] = {
        out_dir / "train.extxyz": ("train", None),
        out_dir / "test.extxyz": ("test", None),
    }
    for temperature in temperatures_K:
        paths[out_dir / f"test_{float(temperature):g}K.extxyz"] = ("test", float(temperature))
    return paths


def check_outputs(paths: Sequence[Path], resume: bool, force: bool) -> None:
    """Refuse to touch an existing file unless asked to continue it or to overwrite it."""
    existing = [p for p in paths if p.exists()]
    if existing and not (resume or force):
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise FileExistsError(
            f"{existing[0]}{more} exists; pass --resume to continue unfinished trajectories or --force to overwrite"
        )


# ---------------------------------------------------------------------------- one trajectory


def provenance(trajectory: Trajectory, created: str) -> dict:
    """Per-frame info: what the frame is and how it was made."""
    from importlib.metadata import version

    import ase

    from mdplugin import __version__

    s = trajectory.settings
    return {
        "molecule": trajectory.molecule.name,
        "split": trajectory.split,
        "temperature_K": trajectory.temperature_K,
        "trajectory_seed": trajectory.seed,
        "seed": trajectory.base_seed,
        "charge": trajectory.molecule.charge,
        "multiplicity": trajectory.molecule.multiplicity,
        "method": "GFN2-xTB",
        "code": "tblite",
        "tblite_version": version("tblite"),
        "ase_version": ase.__version__,
        "mdplugin_version": __version__,
        "thermostat": "Langevin",
        "timestep_fs": s.timestep_fs,
        "friction_per_fs": s.friction_per_fs,
        "stride_steps": s.stride,
        "equilibration_steps": s.equilibration_steps,
        # ASE's extxyz reader unescapes backslashes that its writer leaves alone (SMILES stereo bonds)
        "source": trajectory.molecule.source.replace("\\", "\\\\"),
        "created": created,
    }


def _next_frame(trajectory: Trajectory, index: int, last, calc):
    """Frame `index`: the equilibrated start for index 0, else `stride` steps on from the last frame."""
    from ase.md import velocitydistribution

    # thermalize_momenta is the name from ASE 3.28 on; MaxwellBoltzmannDistribution before
    thermalize = getattr(velocitydistribution, "thermalize_momenta", None) or (
        velocitydistribution.MaxwellBoltzmannDistribution
    )

    settings = trajectory.settings
    rng = np.random.default_rng([trajectory.seed, index])
    if index == 0:
        atoms = _relaxed(trajectory.molecule, calc, settings)
        thermalize(atoms, temperature_K=trajectory.temperature_K, rng=rng)
        velocitydistribution.Stationary(atoms)
        steps = settings.equilibration_steps
    else:
        atoms, steps = _with_calculator(last, calc), settings.stride
    _langevin(atoms, steps, trajectory.temperature_K, settings, rng)
    return atoms


def _relaxed(molecule: Molecule, calc, settings: MDSettings):
    from ase import Atoms
    from ase.optimize import BFGS

    atoms = Atoms(numbers=molecule.numbers, positions=molecule.positions)
    atoms.calc = calc
    BFGS(atoms, logfile=None).run(fmax=settings.relax_fmax, steps=settings.relax_steps)
    return atoms


def _langevin(atoms, steps: int, temperature_K: float, settings: MDSettings, rng) -> None:
    from ase import units
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin

    atoms.set_constraint(FixCom())
    dynamics = Langevin(
        atoms,
        timestep=settings.timestep_fs * units.fs,
        temperature_K=temperature_K,
        friction=settings.friction_per_fs / units.fs,
        fixcm=False,
        rng=rng,
    )
    dynamics.run(steps)


def _with_calculator(frame, calc):
    """A copy of a written frame (positions, momenta, info) with the xTB calculator attached."""
    from ase import Atoms

    atoms = Atoms(numbers=frame.numbers, positions=frame.positions, momenta=frame.get_momenta())
    atoms.info.update(frame.info)
    atoms.calc = calc
    return atoms


def _labelled(atoms, calc, info: dict):
    """The extxyz text of a frame and the frame as parsed back from it.

    Positions and momenta are first rounded to what the text holds, so the energy and forces are
    those of the written geometry and the next stretch of MD starts from exactly the written state.
    """
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    state = parse_extxyz(
        extxyz_text(Atoms(numbers=atoms.numbers, positions=atoms.positions, momenta=atoms.get_momenta()))
    )
    state.calc = calc
    energy, forces = state.get_potential_energy(), state.get_forces()
    state.calc = SinglePointCalculator(state, energy=energy, forces=forces)
    state.info.update(info)
    text = extxyz_text(state)
    return text, _with_calculator(parse_extxyz(text), calc)


def _combined_parts(trajectories: Sequence[Trajectory], split: str, temperature: float | None) -> list[Trajectory]:
    """The trajectories whose frames one combined file concatenates, in order."""
    return [
        t
        for t in trajectories
        if t.split == split and (temperature is None or t.temperature_K == temperature) and t.path.exists()
    ]


def is_combined_file(path: Path, parts: Sequence[Trajectory]) -> bool:
    """Whether `path` is a combined file this command wrote from `parts` (planned trajectories, not necessarily
    on disk): every frame in it is whole and names the seed of one of them (`trajectory_seed`, in the comment
    line this command writes), and nothing else is in the file."""
    seeds = {str(t.seed).encode() for t in parts}
    data, spans = path.read_bytes(), frame_spans(path)
    if (spans[-1][1] if spans else 0) != len(data):
        return False
    for start, end in spans:
        comment = data[start:end].split(b"\n", 2)[1]
        found = re.search(rb"(?:^|\s)trajectory_seed=(\d+)(?:\s|$)", comment)
        if found is None or found.group(1) not in seeds:
            return False
    return True


def check_combined(
    trajectories: Sequence[Trajectory], out_dir: str | Path, temperatures_K: Sequence[float], force: bool
) -> None:
    """Refuse (unless `force`) to replace an existing combined file that is not one this command wrote from these
    trajectories: --resume continues trajectories; it never replaces a user's own OUT/train.extxyz."""
    if force:
        return
    for path, (split, temperature) in combined_paths(out_dir, temperatures_K).items():
        parts = [t for t in trajectories if t.split == split and temperature in (None, t.temperature_K)]
        if path.exists() and not is_combined_file(path, parts):
            raise FileExistsError(
                f"{path} is not the combined file of this run's trajectories (a file of your own, or one another "
                f"run wrote), and --resume does not replace it; move it away, choose another output directory, or "
                f"pass --force to overwrite it"
            )


def write_combined(
    trajectories: Sequence[Trajectory], out_dir: str | Path, temperatures_K: Sequence[float]
) -> list[Path]:
    """Concatenate the first `frames` frames of each trajectory file into the files of `combined_paths`."""
    written = []
    for path, (split, temperature) in combined_paths(out_dir, temperatures_K).items():
        parts = _combined_parts(trajectories, split, temperature)
        if not parts:
            continue
        partial = path.with_name(path.name + ".partial")
        with open(partial, "wb") as handle:
            for t in parts:
                spans = frame_spans(t.path)[: t.frames]
                if spans:
                    handle.write(t.path.read_bytes()[: spans[-1][1]])
        os.replace(partial, path)
        written.append(path)
    return written


def generate(
    molecules: Sequence[Molecule],
    temperatures_K: Sequence[float],
    out_dir: str | Path,
    frames: int,
    test_frames: int,
    seed: int = 0,
    settings: MDSettings = MDSettings(),
    jobs: int = 2,
    resume: bool = False,
    force: bool = False,
    on_frame: Callable[[], None] | None = None,
) -> tuple[list[TrajectoryResult], list[Path]]:
    """Plan, check the outputs, run every trajectory and write the combined files."""
    trajectories = plan(molecules, temperatures_K, out_dir, frames, test_frames, seed, settings)
    check_outputs([t.path for t in trajectories] + list(combined_paths(out_dir, temperatures_K)), resume, force)
    check_combined(trajectories, out_dir, temperatures_K, force)
    results = run_trajectories(trajectories, jobs, resume, force, on_frame)
    return results, write_combined(trajectories, out_dir, temperatures_K)


__all__ = [
    "MD17_SMILES",
    "GFN2xTB",
    "MDSettings",
    "Molecule",
    "Trajectory",
    "TrajectoryResult",
    "check_combined",
    "check_temperatures",
    "check_outputs",
    "combined_paths",
    "generate",
    "md17_molecules",
    "molecule_from_file",
    "molecule_from_input",
    "molecule_from_smiles",
    "plan",
    "run_trajectories",
    "run_trajectory",
    "write_combined",
]
