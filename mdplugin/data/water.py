"""Periodic reference data: boxes of liquid water, pure or with one solute molecule, sampled by classical
flexible-water MD, as extxyz.

Configurations come cheaply from OpenMM Langevin MD of SPC/Fw water (Wu, Tepper and Voth 2006, a
flexible three-site model) at a fixed temperature and density; each frame is then labelled either
with periodic GFN1-xTB (tblite's ASE calculator: energy, forces, stress) or with the classical model
itself (energy and forces from OpenMM, stress by central finite differences of the energy under
strain). The classical labels define a potential whose own MD is cheap, so a model trained on them
can be compared with the MD of its reference.

The classical potential (`WaterModel`) is SPC/Fw with PME electrostatics and Lennard-Jones switched
off between `switch_angstrom` and `cutoff_angstrom`, without a long-range dispersion correction (a
term of the volume alone that no local model can represent). The cutoff must stay below half the
box width, which is why it is short: the comparison is between a model and this exact potential.

A box may hold one solute molecule (an MD17 molecule by name, or a structure file) in its centre, so that
a model sees a molecule in water. The waters that come within `SOLUTE_CLEARANCE_ANGSTROM` of it are not
placed, and the box is larger than the waters' own volume by the solute's volume (the union of its atoms'
Bondi spheres grown by 0.4 Å, which matches the partial molar volumes of ethanol, benzene and toluene in
water within 3%), so the water keeps about the requested density. There are no classical parameters for
the molecule itself, so it is sampled separately and cheaply: its geometry follows a GFN2-xTB Langevin
trajectory of the isolated molecule (exactly as `reference_data` makes molecular data: relaxed start,
equilibration, the box's timestep, stride and temperature), and each frame's geometry is placed with its
centre of mass in the box centre, rotated onto the previous frame's (so only its internal geometry changes
between frames). During each stretch of water MD the solute is held fixed (massless particles in OpenMM)
and meets the water through UFF Lennard-Jones alone, without charges: the waters equilibrate around each
new solute geometry for `stride` steps. The hydration shell is therefore that of a neutral cavity of the
molecule's shape (no hydrogen bonds to the solute are favoured), but the labels, periodic GFN1-xTB of the
whole box, are exact for whatever geometry is written. Classical labels have no solute energy and are refused.

As in `reference_data`, every stretch of MD between two frames starts from the frame as written
(positions and momenta as the extxyz text holds them) in a fresh OpenMM context seeded by
(trajectory seed, frame index), so a resumed run writes what an uninterrupted one would; the solute's
momenta, those of its own MD, are written with the frame for the same reason.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mdplugin.data import molecules as rd
from mdplugin.data.labellers import (
    ClassicalLabeller,
    GFN2xTB,
    WaterModel,
    XTBLabeller,
    _context,
    classical_system,
    water_topology,
)
from mdplugin.data.trajectories import extxyz_text, parse_extxyz

LABELS = ("gfn1-xtb", "classical")
METHOD = {"gfn1-xtb": "GFN1-xTB", "classical": "SPC/Fw"}
WATER_MASS_G_PER_MOL = 15.99943 + 2 * 1.007947
AVOGADRO = 6.02214076e23
SOLUTE_CLEARANCE_ANGSTROM = 2.0  # no water atom is placed nearer than this to a solute atom

# UFF (Rappe et al., J. Am. Chem. Soc. 114, 10024 (1992)) Lennard-Jones of the solute atoms: the distance of
# the minimum x (Å) and the well depth D (kcal/mol), by atomic number
UFF_LENNARD_JONES = {
    1: (2.886, 0.044),
    6: (3.851, 0.105),
    7: (3.660, 0.069),
    8: (3.500, 0.060),
    9: (3.364, 0.050),
    15: (4.147, 0.305),
    16: (4.035, 0.274),
    17: (3.947, 0.227),
    35: (4.189, 0.251),
    53: (4.500, 0.339),
}
# Bondi van der Waals radii (Å); the solute's volume is that of the union of these spheres grown by 0.4 Å
BONDI_RADII = {1: 1.20, 6: 1.70, 7: 1.55, 8: 1.52, 9: 1.47, 15: 1.80, 16: 1.80, 17: 1.75, 35: 1.85, 53: 1.98}
SOLUTE_VOLUME_PROBE_ANGSTROM = 0.4


@dataclass(frozen=True)
class BoxSettings:
    """How a box is built, equilibrated and sampled (Langevin MD of the classical model)."""

    waters: int = 32
    timestep_fs: float = 0.5  # flexible O-H bonds vibrate with a ~9 fs period
    friction_per_ps: float = 1.0
    stride: int = 200  # MD steps between frames
    # 20 ps: a new box (lattice, random orientations, minimised) starts polarised, and its dipole relaxes over
    # ~10 ps at 300 K; frames after 2 ps sampled a box dipole 2.4x the equilibrium one (water.md)
    equilibration_steps: int = 40000
    water_model: WaterModel = WaterModel()


@dataclass(frozen=True)
class BoxTrajectory:
    """One job: `frames` frames of one box at one temperature and density (of the water), labelled with
    `labels`; with a solute molecule in its centre when `solute` is given."""

    labels: str
    temperature_K: float
    density_g_cm3: float
    split: str
    seed: int
    frames: int
    path: Path
    settings: BoxSettings = field(default_factory=BoxSettings)
    base_seed: int = 0
    solute: rd.Molecule | None = field(default=None, compare=False)

    @property
    def identity_keys(self) -> tuple[str, ...]:
        """What a continued file must agree on (see trajectories.continue_from)."""
        return _IDENTITY_KEYS + (_SOLUTE_IDENTITY_KEYS if self.solute is not None else ())

    @property
    def numbers(self) -> np.ndarray:
        return frame_numbers(self)

    @property
    def cost(self) -> float:
        return self.frames

    def provenance(self, created: str) -> dict:
        return provenance(self, created)

    def sampler(self):
        """(index, last frame, info) -> (extxyz text, frame): Langevin MD of the classical model, labelled
        with GFN1-xTB or the classical model itself."""
        s = self.settings
        label = ClassicalLabeller(s.waters, s.water_model) if self.labels == "classical" else XTBLabeller()
        numbers = frame_numbers(self)

        def sample(index: int, last, info: dict):
            positions, momenta, cell = _next_frame(self, index, last)
            return _labelled(positions, momenta, cell, numbers, label, info)

        return sample


# ---------------------------------------------------------------------------- the classical model


def box_length_angstrom(waters: int, density_g_cm3: float, solute: rd.Molecule | None = None) -> float:
    """Edge of the cubic box holding `waters` molecules at this density, and the solute's volume if given."""
    volume_cm3 = waters * WATER_MASS_G_PER_MOL / AVOGADRO / density_g_cm3
    extra = 0.0 if solute is None else solute_volume_angstrom3(solute)
    return (volume_cm3 * 1e24 + extra) ** (1 / 3)


def density_g_cm3(waters: int, volume_angstrom3: float) -> float:
    return waters * WATER_MASS_G_PER_MOL / AVOGADRO / (volume_angstrom3 * 1e-24)


def water_lattice(waters: int, box_length: float, seed: int) -> np.ndarray:
    """Start positions (Å): SPC/Fw molecules at their equilibrium geometry, randomly oriented, on the sites of a
    cubic lattice filling the box (a random subset of sites when `waters` is not a cube)."""
    if waters < 1:
        raise ValueError(f"need at least one water molecule, got {waters}")
    rng = np.random.default_rng(seed)
    per_edge = int(np.ceil(waters ** (1 / 3) - 1e-9))
    sites = _lattice_sites(per_edge)
    sites = sites[np.sort(rng.choice(len(sites), waters, replace=False))]
    return np.concatenate([_oriented_water((site + 0.5) * box_length / per_edge, rng) for site in sites])


def solvated_lattice(
    waters: int,
    box_length: float,
    solute_positions: np.ndarray,
    seed: int,
    clearance: float = SOLUTE_CLEARANCE_ANGSTROM,
) -> np.ndarray:
    """Start positions (Å) of the waters around a solute: randomly oriented waters on a cubic lattice, those
    with an atom nearer than `clearance` to a solute atom (minimum image) left out, `waters` of the rest chosen
    at random; the lattice is made finer until enough sites are free."""
    if waters < 1:
        raise ValueError(f"need at least one water molecule, got {waters}")
    rng = np.random.default_rng(seed)
    per_edge = int(np.ceil(waters ** (1 / 3) - 1e-9))
    while True:
        candidates = np.stack(
            [_oriented_water((site + 0.5) * box_length / per_edge, rng) for site in _lattice_sites(per_edge)]
        )
        separation = candidates[:, :, None, :] - solute_positions[None, None]
        separation -= box_length * np.round(separation / box_length)
        free = candidates[np.linalg.norm(separation, axis=-1).min(axis=(1, 2)) >= clearance]
        if len(free) >= waters:
            return np.concatenate(free[np.sort(rng.choice(len(free), waters, replace=False))])
        per_edge += 1
        if box_length / per_edge < 1.5:  # waters closer than this on the lattice would not separate
            raise ValueError(f"cannot place {waters} waters around the solute in a {box_length:.2f} Å box")


def _lattice_sites(per_edge: int) -> np.ndarray:
    return np.stack(np.meshgrid(*[np.arange(per_edge)] * 3, indexing="ij"), -1).reshape(-1, 3)


def _oriented_water(oxygen: np.ndarray, rng) -> np.ndarray:
    """An SPC/Fw molecule at its equilibrium geometry with its oxygen at `oxygen` (Å), randomly rotated."""
    half_angle = np.deg2rad(113.24) / 2
    molecule = 1.012 * np.array(
        [[0, 0, 0], [np.sin(half_angle), np.cos(half_angle), 0], [-np.sin(half_angle), np.cos(half_angle), 0]]
    )
    rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return oxygen + molecule @ rotation.T


def solvated_system(topology, solute_numbers: np.ndarray, model: WaterModel = WaterModel()):  # noqa: B008 - frozen
    """`classical_system` of the waters with the solute's atoms appended: massless, so OpenMM's integrators and
    minimizer leave them where they are put, and uncharged, meeting the water through UFF Lennard-Jones alone
    (combined with SPC/Fw's by OpenMM's Lorentz-Berthelot rule); their interactions with each other are
    excluded (a constant for a fixed molecule)."""
    from openmm import NonbondedForce

    system = classical_system(topology, model)
    nonbonded = next(f for f in system.getForces() if isinstance(f, NonbondedForce))
    first = system.getNumParticles()
    for number in solute_numbers:
        minimum_angstrom, depth_kcal = UFF_LENNARD_JONES[int(number)]
        system.addParticle(0.0)
        nonbonded.addParticle(0.0, 0.1 * minimum_angstrom / 2 ** (1 / 6), 4.184 * depth_kcal)
    for i in range(first, system.getNumParticles()):
        for j in range(i + 1, system.getNumParticles()):
            nonbonded.addException(i, j, 0.0, 1.0, 0.0)
    return system


# ---------------------------------------------------------------------------- the solute


def solute_from_input(text: str, seed: int = 0) -> rd.Molecule:
    """The solute molecule: an MD17 molecule by name (built from its SMILES as `mdplugin data md17` builds it)
    or the first structure of an XYZ (or other ASE-readable) file; neutral and closed-shell."""
    if Path(text).is_file():
        molecule = rd.molecule_from_file(text)
    elif text in rd.MD17_SMILES:
        molecule = rd.molecule_from_smiles(rd.MD17_SMILES[text], text, seed)
    elif Path(text).suffix or "/" in text:
        raise ValueError(f"solute file {text} does not exist")
    else:
        raise ValueError(
            f"unknown solute {text!r}: name an MD17 molecule ({', '.join(rd.MD17_SMILES)}) or give the path of an "
            ".xyz file"
        )
    missing = sorted({int(z) for z in molecule.numbers if int(z) not in UFF_LENNARD_JONES})
    if missing:
        from mdplugin.elements import symbols

        known = ", ".join(symbols(sorted(UFF_LENNARD_JONES)))
        raise ValueError(
            f"solute {molecule.name} contains {', '.join(symbols(missing))}, which has no Lennard-Jones parameters "
            f"here (only {known})"
        )
    return molecule


def solute_volume_angstrom3(solute: rd.Molecule, spacing: float = 0.15) -> float:
    """Volume (Å^3) of the union of the solute atoms' Bondi spheres grown by 0.4 Å, counted on a grid (a
    function of the geometry alone): about the molecule's partial molar volume in water."""
    radii = np.array([BONDI_RADII[int(z)] for z in solute.numbers]) + SOLUTE_VOLUME_PROBE_ANGSTROM
    low, high = (solute.positions - radii[:, None]).min(0), (solute.positions + radii[:, None]).max(0)
    axes = [np.arange(a, b, spacing) for a, b in zip(low, high)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    inside = np.zeros(len(grid), dtype=bool)
    for position, radius in zip(solute.positions, radii):
        inside |= ((grid - position) ** 2).sum(-1) < radius**2
    return float(inside.sum() * spacing**3)


def solute_extent_angstrom(solute: rd.Molecule) -> float:
    """The largest distance between two of its atoms."""
    return float(np.linalg.norm(solute.positions[:, None] - solute.positions[None], axis=-1).max())


def _solute_settings(settings: BoxSettings) -> rd.MDSettings:
    """The solute's own MD: `reference_data`'s defaults with the box's timestep, stride and equilibration."""
    return rd.MDSettings(
        timestep_fs=settings.timestep_fs, stride=settings.stride, equilibration_steps=settings.equilibration_steps
    )


def _solute_frame(trajectory: BoxTrajectory, index: int, last, cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions (Å, in the box) and momenta of the solute in frame `index`: `reference_data`'s GFN2-xTB
    Langevin MD of the isolated molecule, from its relaxed start (index 0) or from the last frame's solute as
    written; centre of mass in the box centre, rotated onto the last frame's solute."""
    from ase import Atoms

    molecule, n = trajectory.solute, len(trajectory.solute.numbers)
    own = rd.Trajectory(
        molecule,
        trajectory.temperature_K,
        trajectory.split,
        trajectory.seed,
        trajectory.frames,
        trajectory.path,
        _solute_settings(trajectory.settings),
    )
    previous = None
    if index > 0:
        previous = Atoms(numbers=molecule.numbers, positions=last.positions[-n:], momenta=last.get_momenta()[-n:])
    atoms = rd._next_frame(own, index, previous, GFN2xTB(molecule))
    masses = atoms.get_masses()
    positions = atoms.positions - masses @ atoms.positions / masses.sum()
    momenta = atoms.get_momenta()
    if previous is not None:
        target = previous.positions - masses @ previous.positions / masses.sum()
        rotation = _rotation_onto(positions, target, masses)
        positions, momenta = positions @ rotation.T, momenta @ rotation.T
    return positions + cell.sum(axis=0) / 2, momenta


def _rotation_onto(positions: np.ndarray, target: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The proper rotation R minimising sum_i w_i |R p_i - t_i|^2 (Kabsch), for centred p and t."""
    u, _, vt = np.linalg.svd((positions * weights[:, None]).T @ target)
    sign = np.sign(np.linalg.det(vt.T @ u.T))
    return vt.T @ np.diag([1.0, 1.0, sign]) @ u.T


# ---------------------------------------------------------------------------- planning


def trajectory_seed(
    seed: int, labels: str, temperature_K: float, density: float, split: str, solute: str | None = None
) -> int:
    key = [seed, zlib.crc32(labels.encode()), int(round(temperature_K * 1000)), int(round(density * 1e4))]
    if solute is not None:
        key.append(zlib.crc32(solute.encode()))
    return int(np.random.SeedSequence(key + [rd.SPLITS.index(split)]).generate_state(1)[0])


def system_name(solute: rd.Molecule | None = None) -> str:
    """`water`, or `<solute>_in_water`: the folder and file prefix of a trajectory."""
    return "water" if solute is None else f"{solute.name}_in_water"


def trajectory_path(
    out_dir: str | Path, temperature_K: float, density: float, split: str, solute: rd.Molecule | None = None
) -> Path:
    name = system_name(solute)
    return Path(out_dir) / name / f"{name}_{temperature_K:g}K_{density:g}gcm3_{split}.extxyz"


def plan(
    labels: str,
    temperatures_K: Sequence[float],
    densities_g_cm3: Sequence[float],
    out_dir: str | Path,
    frames: int,
    test_frames: int,
    seed: int = 0,
    settings: BoxSettings = BoxSettings(),
    solute: rd.Molecule | None = None,
) -> list[BoxTrajectory]:
    """One train and one test trajectory (different seeds) per temperature and density, of pure water or of
    water around `solute` (see `solute_from_input`)."""
    if labels not in LABELS:
        raise ValueError(f"unknown labels {labels!r}; choose from {', '.join(LABELS)}")
    if frames < 1 or test_frames < 0:
        raise ValueError(f"need at least 1 training frame and no negative test frames (got {frames}, {test_frames})")
    rd.check_temperatures(temperatures_K)
    if not all(math.isfinite(d) and d > 0 for d in densities_g_cm3):
        raise ValueError(f"densities must be positive numbers (g/cm^3), got {list(densities_g_cm3)}")
    if solute is not None:
        _check_solute_fits(labels, solute, settings.waters, max(densities_g_cm3))
    shortest = box_length_angstrom(settings.waters, max(densities_g_cm3), solute)
    if settings.water_model.cutoff_angstrom > shortest / 2:
        what = f"{settings.waters} waters" + ("" if solute is None else f" and {solute.name}")
        raise ValueError(
            f"{what} at {max(densities_g_cm3):g} g/cm^3 fill a box of {shortest:.2f} Å, less than twice "
            f"the cutoff {settings.water_model.cutoff_angstrom:g} Å; use more waters or a shorter --cutoff-angstrom"
        )
    jobs = []
    for temperature in temperatures_K:
        for density in densities_g_cm3:
            for split, count in zip(rd.SPLITS, (frames, test_frames)):
                if count:
                    jobs.append(
                        BoxTrajectory(
                            labels=labels,
                            temperature_K=float(temperature),
                            density_g_cm3=float(density),
                            split=split,
                            seed=trajectory_seed(
                                seed, labels, temperature, density, split, None if solute is None else solute.name
                            ),
                            frames=count,
                            path=trajectory_path(out_dir, temperature, density, split, solute),
                            settings=settings,
                            base_seed=seed,
                            solute=solute,
                        )
                    )
    return jobs


def _check_solute_fits(labels: str, solute: rd.Molecule, waters: int, density: float) -> None:
    """Refuse classical labels for a solute, and a box too small to keep water between it and its image."""
    if labels != "gfn1-xtb":
        raise ValueError(
            f"--labels {labels} has no energy for the solute {solute.name} (only the water is classical here); "
            "use --labels gfn1-xtb with a solute"
        )
    length = box_length_angstrom(waters, density, solute)
    needed_length = solute_extent_angstrom(solute) + 2 * SOLUTE_CLEARANCE_ANGSTROM
    if length < needed_length:
        waters_volume = needed_length**3 - solute_volume_angstrom3(solute)
        needed = int(np.ceil(waters_volume * 1e-24 * density * AVOGADRO / WATER_MASS_G_PER_MOL))
        raise ValueError(
            f"{waters} waters and {solute.name} at {density:g} g/cm^3 fill a box of {length:.2f} Å, but {solute.name} "
            f"spans {solute_extent_angstrom(solute):.2f} Å and needs a box of at least {needed_length:.2f} Å to keep "
            f"{SOLUTE_CLEARANCE_ANGSTROM:g} Å of water between it and its periodic image: use --waters {needed} or more"
        )


# ---------------------------------------------------------------------------- one trajectory


def provenance(trajectory: BoxTrajectory, created: str) -> dict:
    """Per-frame info: what the frame is and how it was made."""
    from importlib.metadata import version

    import ase
    import openmm

    from mdplugin import __version__

    s = trajectory.settings
    info = {
        "system": "water",
        "waters": s.waters,
        "split": trajectory.split,
        "temperature_K": trajectory.temperature_K,
        "density_g_cm3": trajectory.density_g_cm3,
        "trajectory_seed": trajectory.seed,
        "seed": trajectory.base_seed,
        "charge": 0,
        "multiplicity": 1,
        "method": METHOD[trajectory.labels],
        "code": "tblite" if trajectory.labels == "gfn1-xtb" else "openmm",
        "sampler": f"OpenMM Langevin MD (NVT) of {s.water_model.describe()}",
        "openmm_version": openmm.__version__,
        "ase_version": ase.__version__,
        "mdplugin_version": __version__,
        "timestep_fs": s.timestep_fs,
        "friction_per_ps": s.friction_per_ps,
        "stride_steps": s.stride,
        "equilibration_steps": s.equilibration_steps,
        "cutoff_angstrom": s.water_model.cutoff_angstrom,
        "switch_angstrom": s.water_model.switch_angstrom,
        "ewald_tolerance": s.water_model.ewald_tolerance,
        "created": created,
    }
    if trajectory.labels == "gfn1-xtb":
        info["tblite_version"] = version("tblite")
    else:
        info["stress_method"] = "central finite difference of the energy, strain 1e-5"
    if trajectory.solute is not None:
        solute, own = trajectory.solute, _solute_settings(s)
        info["system"] = system_name(solute)
        info["sampler"] += "; the solute held fixed (massless) in each stretch"
        info.update(
            solute=solute.name,
            solute_atoms=len(solute.numbers),
            # ASE's extxyz reader unescapes backslashes that its writer leaves alone (SMILES stereo bonds)
            solute_source=solute.source.replace("\\", "\\\\"),
            solute_sampler=(
                "GFN2-xTB (tblite) Langevin MD of the isolated molecule at the box temperature, timestep and stride "
                "from a relaxed start; placed with its centre of mass in the box centre, rotated onto the last frame"
            ),
            solute_friction_per_fs=own.friction_per_fs,
            solute_water_interaction="UFF Lennard-Jones with SPC/Fw oxygen (Lorentz-Berthelot), no charges",
            solute_clearance_angstrom=SOLUTE_CLEARANCE_ANGSTROM,
            solute_volume_angstrom3=round(solute_volume_angstrom3(solute), 2),
        )
    return info


_IDENTITY_KEYS = (
    "waters",
    "split",
    "temperature_K",
    "density_g_cm3",
    "trajectory_seed",
    "method",
    "timestep_fs",
    "friction_per_ps",
    "stride_steps",
    "equilibration_steps",
    "cutoff_angstrom",
    "switch_angstrom",
    "ewald_tolerance",
)
_SOLUTE_IDENTITY_KEYS = ("solute", "solute_atoms", "solute_friction_per_fs", "solute_clearance_angstrom")


def frame_numbers(trajectory: BoxTrajectory) -> np.ndarray:
    """Atomic numbers of a frame: O, H, H per water, then the solute's atoms."""
    numbers = np.tile([8, 1, 1], trajectory.settings.waters)
    if trajectory.solute is not None:
        numbers = np.concatenate([numbers, trajectory.solute.numbers])
    return numbers


def _next_frame(trajectory: BoxTrajectory, index: int, last) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions (Å), momenta (amu Å/fs, ASE units) and cell of frame `index`: the equilibrated box for index 0,
    else `stride` steps of Langevin MD on from the last frame as written. A solute first takes its own next
    geometry (`_solute_frame`) and is held there while the waters move."""
    import openmm
    from ase import units
    from openmm import unit

    s, solute = trajectory.settings, trajectory.solute
    length = box_length_angstrom(s.waters, trajectory.density_g_cm3, solute)
    cell = np.diag([length] * 3)
    topology = water_topology(s.waters, cell)
    if solute is None:
        system = classical_system(topology, s.water_model)
    else:
        system = solvated_system(topology, solute.numbers, s.water_model)
        solute_positions, solute_momenta = _solute_frame(trajectory, index, last, cell)
    rng_seed = int(np.random.SeedSequence([trajectory.seed, index]).generate_state(1)[0] % (2**31 - 1)) + 1
    integrator = openmm.LangevinMiddleIntegrator(
        trajectory.temperature_K * unit.kelvin, s.friction_per_ps / unit.picosecond, s.timestep_fs * unit.femtosecond
    )
    integrator.setRandomNumberSeed(rng_seed)
    context = _context(system, integrator)
    masses = np.array([system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(system.getNumParticles())])
    waters = 3 * s.waters  # atoms
    if index == 0:
        if solute is None:
            start = water_lattice(s.waters, length, trajectory.seed)
        else:
            start = np.concatenate(
                [solvated_lattice(s.waters, length, solute_positions, trajectory.seed), solute_positions]
            )
        context.setPositions(start * 0.1)
        openmm.LocalEnergyMinimizer.minimize(context, 1.0, 1000)
        context.setVelocitiesToTemperature(trajectory.temperature_K * unit.kelvin, rng_seed)
        steps = s.equilibration_steps
    else:
        positions, momenta = last.positions, last.get_momenta()
        if solute is not None:  # massless in OpenMM: the solute is at rest there
            positions = np.concatenate([positions[:waters], solute_positions])
            momenta = np.concatenate([momenta[:waters], np.zeros_like(solute_momenta)])
        context.setPositions(positions * 0.1)
        # ASE momenta (amu Å / ASE time) -> velocities in nm/ps
        context.setVelocities(momenta / np.maximum(masses, 1e-30)[:, None] * units.fs * 100)  # ASE momenta -> nm/ps
        steps = s.stride
    integrator.step(steps)
    state = context.getState(getPositions=True, getVelocities=True, enforcePeriodicBox=True)
    positions = state.getPositions(asNumpy=True).value_in_unit(unit.angstrom)
    velocities_nm_ps = state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
    momenta = masses[:, None] * velocities_nm_ps / (100 * units.fs)  # amu Å per ASE time unit
    if solute is not None:  # exactly where it was put, with the momenta of its own MD
        positions = np.concatenate([positions[:waters], solute_positions])
        momenta = np.concatenate([momenta[:waters], solute_momenta])
    return positions, momenta, cell


def _labelled(positions: np.ndarray, momenta: np.ndarray, cell: np.ndarray, numbers: np.ndarray, label, info: dict):
    """The extxyz text of a labelled frame and the frame parsed back from it; the labels are those of the
    geometry as the text holds it."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    state = parse_extxyz(extxyz_text(Atoms(numbers=numbers, positions=positions, momenta=momenta, cell=cell, pbc=True)))
    if isinstance(label, XTBLabeller):
        energy, forces, stress = label(state.positions, state.cell.array, state.numbers)
    else:
        energy, forces, stress = label(state.positions, state.cell.array)
    state.calc = SinglePointCalculator(state, energy=energy, forces=forces, stress=stress)
    state.info.update(info)
    text = extxyz_text(state)
    return text, parse_extxyz(text)


def write_pdb(
    path: str | Path,
    waters: int,
    density: float,
    temperature_K: float = 300.0,
    seed: int = 0,
    settings: BoxSettings = BoxSettings(),
) -> Path:
    """An equilibrated box of the classical model as a PDB with CRYST1 (a start structure for `mdplugin run`)."""
    from openmm import app

    trajectory = BoxTrajectory(
        "classical",
        temperature_K,
        density,
        "train",
        seed,
        1,
        Path(path),
        BoxSettings(
            waters,
            settings.timestep_fs,
            settings.friction_per_ps,
            settings.stride,
            settings.equilibration_steps,
            settings.water_model,
        ),
    )
    positions, _, cell = _next_frame(trajectory, 0, None)
    topology = water_topology(waters, cell)
    with open(path, "w") as handle:
        app.PDBFile.writeFile(topology, positions, handle, keepIds=True)  # plain numbers: Å
    return Path(path)
