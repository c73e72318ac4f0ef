"""What `mdplugin run` takes and gives: the run options with their defaults and checks, the summary, and
the run's exceptions. Free of OpenMM and torch imports, so that the CLI's --help and option parsing stay fast.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field


class RunFailed(RuntimeError):
    """The dynamics broke down (or left the model's domain with --domain-check stop)."""


class RunWarning(UserWarning):
    """Something about a run the user should know about, that does not stop it."""


TRAJECTORY_FORMATS = ("dcd", "xtc", "pdb")
PRECISIONS = ("single", "mixed", "double")
ENSEMBLES = ("nvt", "nve", "npt")
DOMAIN_CHECKS = ("warn", "stop", "off")
# what the platforms without a Precision property compute in (accepting --precision saying so)
FIXED_PRECISION = {"Reference": "double", "CPU": "mixed"}
# X-H bond vibrations have periods near 10 fs: flexible all-atom MD needs steps of 0.5-1 fs
MAX_TIMESTEP_FS = 10.0
SAFE_TIMESTEP_FS = 2.0
MAX_TEMPERATURE_K = 10_000.0  # above, molecules fall apart and no training set covers what follows
DEFAULT_PREFIX = "md"  # inside a folder given as --output
DEFAULT_FORCEFIELD = ("amber14-all.xml", "amber14/tip3p.xml")  # ML/MM: the rest of the system


@dataclass
class RunOptions:
    structure: str  # a PDB or XYZ/extxyz file, or a SMILES string
    model: str  # an export or a checkpoint
    output: str = DEFAULT_PREFIX  # prefix of the output files (a folder: DEFAULT_PREFIX inside it); created
    ensemble: str = "nvt"  # nvt: Langevin middle; nve: velocity Verlet; npt: Langevin middle + MC barostat
    steps: int = 1000
    timestep_fs: float = 0.5  # at most MAX_TIMESTEP_FS
    temperature_k: float = 300.0  # at most MAX_TEMPERATURE_K
    friction_per_ps: float = 1.0
    pressure_bar: float = 1.0  # npt
    barostat_interval: int = 25  # npt: steps between Monte Carlo volume moves
    platform: str = "CPU"
    precision: str | None = None  # single, mixed or double where the platform has a choice
    seed: int | None = None  # velocities, Langevin noise, barostat and SMILES embedding; None: random
    charge: int | None = None  # None: the SMILES formal charge, extxyz info['charge'], or 0
    multiplicity: int = 1
    report_interval: int = 100
    checkpoint_interval: int = 1000
    trajectory_format: str = "dcd"
    minimize: bool = True
    restart: str | None = None  # a checkpoint of an earlier run to continue from
    threads: int | None = None  # CPU threads for torch; None: mdplugin.threads.choose_threads
    domain_check: str = "warn"  # warn, stop or off: pairs closer than in the model's training data
    domain_tolerance: float = 0.9  # out of domain: closer than this x the shortest training distance
    deviation_threshold: float = 0.3  # eV/Å; a committee export whose force deviation exceeds it is out of domain
    ml_residues: str | None = None  # ML/MM: residues the model computes ("ACE,ALA,NME", "1-3"); the rest: forcefield
    ml_atoms: str | None = None  # ML/MM: 0-based atom indices the model computes ("0-21")
    solvate_nm: float | None = None  # ML/MM: add water (Modeller) this far around the structure; the structure is ML
    forcefield: tuple[str, ...] = DEFAULT_FORCEFIELD  # ML/MM: OpenMM force field files for the MM atoms
    nonbonded_cutoff_nm: float = 1.0  # ML/MM in a periodic box: PME direct-space and Lennard-Jones cutoff
    plot: bool = False
    overwrite: bool = False
    progress: bool = True
    max_wall_minutes: float | None = None  # stop (cleanly, checkpoint and summary written) after this long
    wrap_trajectory: bool = True  # False: unwrapped positions in the trajectory (mean-square displacements)


@dataclass
class Summary:
    atoms: int
    ensemble: str
    platform: str
    steps: int  # run by this call
    final_step: int
    simulated_ps: float  # by this call
    wall_seconds: float
    ns_per_day: float
    mean_temperature_k: float | None  # over all state-data rows of the run, restarts included; None: no rows
    # NVE with 2+ rows of a run that did not fail: slope of a linear fit of the total energy
    energy_drift_mev_per_atom_ps: float | None
    final_potential_energy_ev: float | None  # None: the run failed with a non-finite energy
    status: str = "completed"  # completed, failed or interrupted
    failure: str | None = None  # why the run failed
    threads: int = 1
    threads_reason: str = ""  # requested, OMP_NUM_THREADS, small system or physical cores
    mean_density_g_per_ml: float | None = None  # periodic systems
    domain_check: str = ""  # what the out-of-domain check did
    closest_distance_ratio: float | None = None  # smallest (pair distance / training minimum) seen
    closest_pair: str | None = None
    max_force_deviation: float | None = None  # eV/Å: a committee export's largest deviation over the reports
    ml_atoms: int | None = None  # ML/MM: atoms the model computes (None: all of them)
    notes: list[str] = field(default_factory=list)
    stopped_by_wall_clock: bool = False  # max_wall_minutes ended the run before its steps were done
    files: dict[str, str] = field(default_factory=dict)  # the files that exist


# -------------------------------------------------------------------------------------------- options


def check_options(options: RunOptions) -> None:
    """Refuse values no run should start with (a sentence naming the fix); warn about risky ones."""
    if options.max_wall_minutes is not None and not options.max_wall_minutes > 0:
        raise ValueError(f"--max-minutes must be a positive number of minutes, got {options.max_wall_minutes:g}")
    if options.steps < 1 or options.report_interval < 1 or options.checkpoint_interval < 1:
        raise ValueError("--steps, --report-interval and --checkpoint-interval must be positive")
    if options.ensemble not in ENSEMBLES:
        raise ValueError(f"unknown ensemble {options.ensemble!r}; use one of {', '.join(ENSEMBLES)}")
    if not 0 < options.timestep_fs <= MAX_TIMESTEP_FS:
        raise ValueError(
            f"--timestep-fs {options.timestep_fs:g} is outside 0-{MAX_TIMESTEP_FS:g} fs: bonds to hydrogen vibrate "
            "with periods near 10 fs, which a flexible all-atom model must resolve; use 0.5-1 fs"
        )
    if options.timestep_fs > SAFE_TIMESTEP_FS:
        warnings.warn(
            f"--timestep-fs {options.timestep_fs:g} is above {SAFE_TIMESTEP_FS:g} fs; flexible bonds to hydrogen "
            "usually need 0.5-1 fs, and the run will stop if it blows up",
            RunWarning,
            2,
        )
    if not 0 <= options.temperature_k <= MAX_TEMPERATURE_K:
        raise ValueError(
            f"--temperature-k {options.temperature_k:g} is outside 0-{MAX_TEMPERATURE_K:,.0f} K: molecules fall "
            "apart long before, and no model was trained there; give a temperature in kelvin such as 300"
        )
    if options.friction_per_ps < 0:
        raise ValueError(f"--friction-per-ps must not be negative, got {options.friction_per_ps:g}")
    if options.ensemble == "npt" and (options.pressure_bar <= 0 or options.barostat_interval < 1):
        raise ValueError("--pressure-bar and --barostat-interval must be positive for --ensemble npt")
    if options.domain_check not in DOMAIN_CHECKS:
        raise ValueError(f"unknown --domain-check {options.domain_check!r}; use one of {', '.join(DOMAIN_CHECKS)}")
    if not options.deviation_threshold > 0:
        raise ValueError(
            f"--deviation-threshold must be positive (eV/Å, e.g. 0.3), got {options.deviation_threshold:g}"
        )
    if options.domain_tolerance <= 0:
        raise ValueError(f"--domain-tolerance must be positive (e.g. 0.9), got {options.domain_tolerance:g}")
    if options.trajectory_format not in TRAJECTORY_FORMATS:
        raise ValueError(
            f"unknown trajectory format {options.trajectory_format!r}; use {', '.join(TRAJECTORY_FORMATS)}"
        )
    if options.ml_residues is not None and options.ml_atoms is not None:
        raise ValueError("--ml-residues and --ml-atoms both select the ML region; give one of them")
    if options.solvate_nm is not None and options.solvate_nm <= 0:
        raise ValueError(f"--solvate takes a padding in nm such as 1.0, got {options.solvate_nm:g}")
    if options.nonbonded_cutoff_nm <= 0:
        raise ValueError(f"--nonbonded-cutoff-nm must be positive (e.g. 1.0), got {options.nonbonded_cutoff_nm:g}")
    if not options.forcefield:
        raise ValueError("--forcefield names no file; give OpenMM force field files such as amber14-all.xml")
