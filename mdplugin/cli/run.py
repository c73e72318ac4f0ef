"""`mdplugin run`: molecular dynamics of a structure with a model in OpenMM."""

from __future__ import annotations

import click

# as in mdplugin.engines.simulate, repeated so that `mdplugin --help` does not import OpenMM and torch
TRAJECTORY_FORMATS = ("dcd", "xtc", "pdb")
PRECISIONS = ("single", "mixed", "double")


@click.command(context_settings={"show_default": True})
@click.argument("structure")
@click.option(
    "-m", "--model", required=True, type=click.Path(dir_okay=False), help="Export or checkpoint of the model."
)
@click.option(
    "-o",
    "--output",
    default="md",
    help="Prefix of the output files (PREFIX.csv, PREFIX.dcd, PREFIX.chk, ...); its folder is created.",
)
@click.option(
    "--ensemble",
    default="nvt",
    type=click.Choice(["nvt", "nve"]),
    help="nvt: LangevinMiddleIntegrator; nve: VerletIntegrator.",
)
@click.option(
    "--steps", default=1000, type=click.IntRange(min=1), help="MD steps to run (after a --restart: further steps)."
)
@click.option(
    "--timestep-fs", default=0.5, type=click.FloatRange(min=0, min_open=True), help="Integration time step in fs."
)
@click.option(
    "--temperature-k",
    default=300.0,
    type=click.FloatRange(min=0),
    help="Thermostat temperature and initial velocities, K.",
)
@click.option(
    "--friction-per-ps", default=1.0, type=click.FloatRange(min=0), help="Langevin friction coefficient, 1/ps (NVT)."
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
    help="Continue from this checkpoint (same platform, structure, model and integrator options): appends to the CSV and DCD/XTC of --output and updates its checkpoint, summary and plots.",
)
@click.option(
    "--threads",
    default=None,
    type=click.IntRange(min=1),
    help="CPU threads for torch [default: torch's choice]; 1 is often fastest for small molecules.",
)
@click.option("--plot", is_flag=True, help="Also write PREFIX-energy.png and PREFIX-temperature.png.")
@click.option("--force", "overwrite", is_flag=True, help="Overwrite existing output files.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def run(structure, quiet, **options) -> None:
    """Run molecular dynamics of STRUCTURE (a PDB or XYZ/extxyz file, or a SMILES string) with a model."""
    from openmm import OpenMMException

    from mdplugin.engines.simulate import RunOptions, simulate

    try:
        summary = simulate(RunOptions(structure=structure, progress=not quiet, **options))
    except (ValueError, FileNotFoundError, FileExistsError, OpenMMException) as error:
        raise click.ClickException(str(error)) from None
    click.echo(
        f"{summary.steps} steps ({summary.simulated_ps:.3f} ps) of {summary.atoms} atoms on {summary.platform}, ending at step {summary.final_step}"
    )
    click.echo(f"speed: {summary.ns_per_day:.2f} ns/day ({summary.wall_seconds:.1f} s)")
    if summary.mean_temperature_k is None:
        click.echo("mean temperature: no state-data rows (fewer steps than --report-interval)")
    else:
        click.echo(f"mean temperature: {summary.mean_temperature_k:.1f} K")
    if summary.energy_drift_mev_per_atom_ps is not None:
        click.echo(f"NVE energy drift: {summary.energy_drift_mev_per_atom_ps:.4f} meV/atom/ps")
    click.echo(f"final potential energy: {summary.final_potential_energy_ev:.6f} eV")
    for name, path in summary.files.items():
        click.echo(f"{name}: {path}")
