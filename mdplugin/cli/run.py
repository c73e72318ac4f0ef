"""`mdplugin run`: molecular dynamics of a structure with a model in OpenMM."""

from __future__ import annotations

import click

from mdplugin.md.options import DEFAULT_FORCEFIELD, DOMAIN_CHECKS, ENSEMBLES, PRECISIONS, TRAJECTORY_FORMATS, RunOptions


@click.command(context_settings={"show_default": True})
@click.argument("structure")
@click.option(
    "-m", "--model", required=True, type=click.Path(dir_okay=False), help="Export or checkpoint of the model."
)
@click.option(
    "-o",
    "--output",
    default="md",
    help="Prefix of the output files (PREFIX.csv, PREFIX.dcd, PREFIX.chk, ...); its folder is created. "
    "A folder (an existing one, or ending in /) gets the files md.csv, md.dcd, ... inside it.",
)
@click.option(
    "--ensemble",
    default="nvt",
    type=click.Choice(ENSEMBLES),
    help="nvt: LangevinMiddleIntegrator; nve: VerletIntegrator; npt: LangevinMiddleIntegrator and a "
    "MonteCarloBarostat (periodic structures: PDB with CRYST1, extxyz with a cell and pbc).",
)
@click.option(
    "--steps", default=1000, type=click.IntRange(min=1), help="MD steps to run (after a --restart: further steps)."
)
@click.option(
    "--timestep-fs",
    default=0.5,
    type=click.FloatRange(min=0, min_open=True),
    help="Integration time step in fs: at most 10 (bonds to hydrogen vibrate with ~10 fs periods); above 2 a warning.",
)
@click.option(
    "--temperature-k",
    default=300.0,
    type=click.FloatRange(min=0),
    help="Thermostat temperature and initial velocities, K (at most 10,000).",
)
@click.option(
    "--friction-per-ps", default=1.0, type=click.FloatRange(min=0), help="Langevin friction coefficient, 1/ps (NVT)."
)
@click.option(
    "--pressure-bar", default=1.0, type=click.FloatRange(min=0, min_open=True), help="Barostat pressure, bar (NPT)."
)
@click.option(
    "--barostat-interval",
    default=25,
    type=click.IntRange(min=1),
    help="Steps between Monte Carlo volume moves (NPT).",
)
@click.option(
    "--platform", default="CPU", help="OpenMM platform: Reference, CPU, CUDA or OpenCL (those available here)."
)
@click.option(
    "--precision",
    default=None,
    type=click.Choice(PRECISIONS),
    help="Platform precision (CUDA/OpenCL); default: the platform's.",
)
@click.option(
    "--seed",
    default=None,
    type=click.IntRange(min=1),
    help="Seed for velocities, Langevin noise and SMILES embedding [default: random].",
)
@click.option(
    "--charge", default=None, type=int, help="Total charge [default: a SMILES's formal charge, an extxyz's info, or 0]."
)
@click.option("--multiplicity", default=1, type=click.IntRange(min=1), help="Spin multiplicity.")
@click.option(
    "--report-interval",
    default=100,
    type=click.IntRange(min=1),
    help="Steps between state-data rows and trajectory frames.",
)
@click.option(
    "--checkpoint-interval",
    default=1000,
    type=click.IntRange(min=1),
    help="Steps between checkpoints (one is also written at the end).",
)
@click.option(
    "--trajectory-format", default="dcd", type=click.Choice(TRAJECTORY_FORMATS), help="Trajectory file format."
)
@click.option("--minimize/--no-minimize", default=True, help="Minimise the energy before drawing velocities.")
@click.option(
    "--restart",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="Continue from this checkpoint (same platform, structure, model and integrator options, checked "
    "against the PREFIX-run.json beside it): drops rows and frames written after the checkpoint's step, then "
    "appends to the CSV and DCD/XTC of --output and updates its checkpoint, summary and plots.",
)
@click.option(
    "--threads",
    default=None,
    type=click.IntRange(min=1),
    help="CPU threads for torch [default: OMP_NUM_THREADS if set, else 1 below 500 atoms, else "
    "min(physical cores, 4)].",
)
@click.option(
    "--domain-check",
    default="warn",
    type=click.Choice(DOMAIN_CHECKS),
    help="At each report, compare every element pair's shortest distance with the shortest one in the model's "
    "training data (models that record it): warn once, stop the run, or off.",
)
@click.option(
    "--domain-tolerance",
    default=0.9,
    type=click.FloatRange(min=0, min_open=True),
    help="A pair closer than this x its shortest training distance is out of domain.",
)
@click.option(
    "--deviation-threshold",
    default=RunOptions.deviation_threshold,
    type=click.FloatRange(min=0, min_open=True),
    help="A committee export (mdplugin export M1.pt M2.pt ...): its members' force deviation, eV/Å, is written at "
    "each report; above this the run warns or stops, as --domain-check says.",
)
@click.option(
    "--ml-residues",
    default=None,
    help="ML/MM: the residues the model computes, by name or PDB number (e.g. ACE,ALA,NME or 1-3); an OpenMM "
    "force field (--forcefield) computes the rest and the ML-MM interactions (mechanical embedding; PME in a "
    "periodic box, where each ML molecule must be whole and shorter than half the box).",
)
@click.option(
    "--ml-atoms", default=None, help="ML/MM: the atoms the model computes, 0-based indices and ranges (e.g. 0-21)."
)
@click.option(
    "--solvate",
    "solvate_nm",
    default=None,
    type=click.FloatRange(min=0, min_open=True),
    help="ML/MM: put the structure (a PDB the force field knows) in a box of water with this padding in nm "
    "(OpenMM's Modeller; ions neutralise it); without --ml-residues/--ml-atoms the structure is the ML region.",
)
@click.option(
    "--forcefield",
    multiple=True,
    default=DEFAULT_FORCEFIELD,
    help="ML/MM: OpenMM force field files for the MM atoms (repeat the option for several).",
)
@click.option(
    "--nonbonded-cutoff-nm",
    default=1.0,
    type=click.FloatRange(min=0, min_open=True),
    help="ML/MM in a periodic box: PME direct-space and Lennard-Jones cutoff, nm.",
)
@click.option(
    "--max-minutes",
    "max_wall_minutes",
    default=None,
    type=click.FloatRange(min=0, min_open=True),
    help="Wall-clock budget: stop cleanly after this many minutes (checkpoint and summary written; continue "
    "with --restart).",
)
@click.option(
    "--unwrapped",
    is_flag=True,
    help="Write unwrapped positions to the trajectory (for mean-square displacements) instead of molecules "
    "wrapped into the box.",
)
@click.option("--plot", is_flag=True, help="Also write PREFIX-energy.png and PREFIX-temperature.png.")
@click.option("--force", "overwrite", is_flag=True, help="Overwrite existing output files.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def run(structure, quiet, forcefield, unwrapped, **options) -> None:
    """Run molecular dynamics of STRUCTURE (a PDB or XYZ/extxyz file, or a SMILES string) with a model.

    ML/MM (--ml-residues, --ml-atoms or --solvate): the model computes a molecule, an OpenMM force field
    the solvent around it, e.g. `mdplugin run peptide.pdb -m model.pt --solvate 1.0 --ensemble npt`.

    The run stops with an error (and a summary marked failed) when it blows up: NaN or infinite
    energies or positions, a temperature above max(10 x --temperature-k, 1000 K), or in NVE a total
    energy that moves by more than 1 eV/atom.
    """
    import warnings

    from openmm import OpenMMException

    from mdplugin.export.loader import script_error_message
    from mdplugin.md.simulate import RunFailed, RunWarning, simulate

    def show(message, category, *_) -> None:
        click.echo(f"Warning: {message}", err=True)

    with warnings.catch_warnings():
        warnings.simplefilter("always", RunWarning)
        warnings.showwarning = show
        try:
            summary = simulate(
                RunOptions(
                    structure=structure,
                    progress=not quiet,
                    forcefield=tuple(forcefield),
                    wrap_trajectory=not unwrapped,
                    **options,
                )
            )
        except RunFailed as error:
            raise click.ClickException(str(error)) from None
        except OpenMMException as error:
            raise click.ClickException(script_error_message(error)) from None
        except (ValueError, FileNotFoundError, FileExistsError) as error:
            raise click.ClickException(str(error)) from None
    computed = f" ({summary.ml_atoms} by the model)" if summary.ml_atoms is not None else ""
    click.echo(
        f"{summary.steps} steps ({summary.simulated_ps:.3f} ps) of {summary.atoms} atoms{computed} on "
        f"{summary.platform}, ending at step {summary.final_step}"
    )
    if summary.stopped_by_wall_clock:
        click.echo(f"stopped by --max-minutes before its {options['steps']} steps; continue it with --restart")
    click.echo(f"speed: {summary.ns_per_day:.2f} ns/day ({summary.wall_seconds:.1f} s, {summary.threads} torch "
               f"thread{'s' if summary.threads > 1 else ''}: {summary.threads_reason})")  # fmt: skip
    if summary.mean_temperature_k is None:
        click.echo("mean temperature: no state-data rows (fewer steps than --report-interval)")
    else:
        click.echo(f"mean temperature: {summary.mean_temperature_k:.1f} K")
    if summary.mean_density_g_per_ml is not None:
        click.echo(f"mean density: {summary.mean_density_g_per_ml:.4f} g/mL")
    if summary.energy_drift_mev_per_atom_ps is not None:
        click.echo(f"NVE energy drift: {summary.energy_drift_mev_per_atom_ps:.4f} meV/atom/ps")
    click.echo(f"final potential energy: {summary.final_potential_energy_ev:.6f} eV")
    domain = summary.domain_check
    if summary.max_force_deviation is not None:
        domain += f"; largest committee force deviation {summary.max_force_deviation:.3f} eV/Å"
    if summary.closest_distance_ratio is not None:
        domain += (
            f"; closest approach {summary.closest_distance_ratio:.2f} x the training minimum ({summary.closest_pair})"
        )
    click.echo(f"domain check: {domain}")
    for note in summary.notes:
        click.echo(f"note: {note}")
    for name, path in summary.files.items():
        click.echo(f"{name}: {path}")
