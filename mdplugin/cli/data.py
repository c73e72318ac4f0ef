"""`mdplugin data`: make GFN2-xTB reference data (energies and forces) by Langevin MD with tblite."""

from __future__ import annotations

from pathlib import Path

import click

LAYOUT = """
\b
Output layout (OUT is -o):
  OUT/<name>/<name>_<T>K_train.extxyz   training frames of one molecule at T kelvin
  OUT/<name>/<name>_<T>K_test.extxyz    test frames: a separate trajectory, another seed
  OUT/train.extxyz                      this run's training trajectories (first --frames each)
  OUT/test.extxyz                       this run's test trajectories (first --test-frames each)
  OUT/test_<T>K.extxyz                  this run's test trajectories at T kelvin
Each frame holds positions (Å), momenta, GFN2-xTB forces (eV/Å) and energy (eV), and info keys
molecule, temperature_K, trajectory_seed, charge, multiplicity, frame, time_fs and the provenance
(method, tblite/ASE/mdplugin versions, timestep, stride, friction, date). Train on the training files
(`mdplugin train OUT/train.extxyz`; its seeded split gives the validation set) and test on the test files.
"""


def _temperatures(ctx, param, value: str) -> list[float]:
    try:
        temperatures = [float(t) for t in value.split(",") if t.strip()]
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a comma-separated list of temperatures in K, e.g. 300,500,800"
        ) from None
    if not temperatures or any(t <= 0 for t in temperatures):
        raise click.BadParameter(f"{value!r}: give positive temperatures in K, e.g. 300,500,800")
    return temperatures


def run_options(default_output: str):
    """The options `generate` and `md17` share."""

    def decorate(command):
        options = [
            click.option(
                "-o",
                "--output",
                "out_dir",
                default=default_output,
                type=click.Path(file_okay=False),
                help="Output directory (layout below).",
            ),
            click.option(
                "--temperatures",
                default="300,500,800",
                callback=_temperatures,
                help="Comma-separated MD temperatures in K.",
            ),
            click.option(
                "--frames", default=500, type=click.IntRange(1), help="Training frames per molecule and temperature."
            ),
            click.option(
                "--test-frames",
                default=100,
                type=click.IntRange(0),
                help="Test frames per molecule and temperature (separate trajectory; 0: none).",
            ),
            click.option("--stride", default=20, type=click.IntRange(1), help="MD steps between frames."),
            click.option(
                "--timestep-fs", default=0.5, type=click.FloatRange(min=0, min_open=True), help="MD timestep in fs."
            ),
            click.option(
                "--friction-per-fs",
                default=0.01,
                type=click.FloatRange(min=0, min_open=True),
                help="Langevin friction in 1/fs.",
            ),
            click.option(
                "--equilibration-steps", default=1000, type=click.IntRange(0), help="MD steps before the first frame."
            ),
            click.option(
                "--relax-fmax",
                default=0.05,
                type=click.FloatRange(min=0, min_open=True),
                help="eV/Å; xTB relaxation (BFGS) of the start structure stops below this force.",
            ),
            click.option(
                "--seed",
                default=0,
                help="Base seed (conformer embedding, velocities, thermostat); each trajectory derives its own.",
            ),
            click.option(
                "--jobs",
                default=2,
                type=click.IntRange(1),
                help="Trajectories run at once, one process (one OpenMP thread) each.",
            ),
            click.option(
                "--resume", is_flag=True, help="Continue unfinished trajectory files; finished ones are skipped."
            ),
            click.option(
                "--force", "overwrite", is_flag=True, help="Overwrite existing output files instead of refusing."
            ),
            click.option("--quiet", is_flag=True, help="No progress bar."),
        ]
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
def data() -> None:
    """Make reference data: GFN2-xTB (tblite) energies and forces on Langevin MD frames, as extxyz."""


@data.command(epilog=LAYOUT)
@click.argument("inputs", metavar="SMILES_OR_FILE...", nargs=-1, required=True)
@click.option(
    "--name",
    "names",
    multiple=True,
    help="Name of each input, in order (default: the file stem, or the formula of a SMILES).",
)
@click.option("--charge", default=0, help="Total charge of a structure file (a SMILES carries its own).")
@click.option("--multiplicity", default=1, help="Spin multiplicity of a structure file (a SMILES carries its own).")
@run_options("data/reference")
def generate(inputs, names, charge, multiplicity, seed, **options) -> None:
    """Reference data for molecules given as SMILES strings or structure files (XYZ, PDB, SDF, ...)."""
    from mdplugin.training.reference_data import molecule_from_input

    if names and len(names) != len(inputs):
        raise click.UsageError(f"give one --name per input ({len(inputs)} inputs, {len(names)} names), or none")
    try:
        molecules = [
            molecule_from_input(text, name, seed, charge, multiplicity)
            for text, name in zip(inputs, names or [None] * len(inputs))
        ]
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    _run(molecules, seed=seed, **options)


@data.command(epilog=LAYOUT)
@click.option("--molecules", default=None, help="Comma-separated subset of the MD17 molecules (default: all).")
@run_options("data/md17")
def md17(molecules, seed, **options) -> None:
    """Reference data for the MD17 molecules: aspirin, benzene, ethanol, malonaldehyde, naphthalene,
    salicylic_acid, toluene, uracil (built from SMILES)."""
    from mdplugin.training.reference_data import md17_molecules

    try:
        chosen = md17_molecules([m.strip() for m in molecules.split(",")] if molecules else None, seed)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    _run(chosen, seed=seed, **options)


def _run(
    molecules,
    out_dir,
    temperatures,
    frames,
    test_frames,
    stride,
    timestep_fs,
    friction_per_fs,
    equilibration_steps,
    relax_fmax,
    seed,
    jobs,
    resume,
    overwrite,
    quiet,
) -> None:
    from tqdm import tqdm

    from mdplugin.training import reference_data as rd

    settings = rd.MDSettings(
        timestep_fs=timestep_fs,
        friction_per_fs=friction_per_fs,
        stride=stride,
        equilibration_steps=equilibration_steps,
        relax_fmax=relax_fmax,
    )
    try:
        trajectories = rd.plan(molecules, temperatures, out_dir, frames, test_frames, seed, settings)
        outputs = [t.path for t in trajectories] + list(rd.combined_paths(out_dir, temperatures))
        rd.check_outputs(outputs, resume, overwrite)
        total = rd.frames_to_do(trajectories, resume, overwrite)
        click.echo(
            f"{len(trajectories)} trajectories ({len(molecules)} molecule(s) x {len(temperatures)} temperature(s)), "
            f"{total} frames to compute, {jobs} processes, into {out_dir}"
        )
        with tqdm(total=total, unit="frame", disable=quiet, dynamic_ncols=True) as bar:
            results = rd.run_trajectories(trajectories, jobs, resume, overwrite, on_frame=bar.update)
        combined = rd.write_combined(trajectories, out_dir, temperatures)
    except (ValueError, FileExistsError, RuntimeError) as error:
        raise click.ClickException(str(error)) from None
    for result in results:
        if result.message:
            click.echo(result.message)
    written = sum(r.written for r in results)
    click.echo(f"wrote {written} frames; combined files: {', '.join(str(Path(p)) for p in combined)}")
