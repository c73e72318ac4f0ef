"""The `mdplugin` command line: one command per verb; each parses options and calls the library."""

from __future__ import annotations

import json
from pathlib import Path

import click

from mdplugin import __version__
from mdplugin.cli.bench import analyze, bench
from mdplugin.cli.data import data
from mdplugin.cli.lammps import lammps
from mdplugin.cli.learn import learn
from mdplugin.cli.run import run
from mdplugin.cli.train import output_file, train
from mdplugin.units import GPA_PER_EV_PER_CUBIC_ANGSTROM


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="mdplugin")
def main() -> None:
    """A graph-free Transformer interatomic potential for OpenMM and LAMMPS."""


@main.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.argument("more_checkpoints", nargs=-1, type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    default=None,
    type=click.Path(dir_okay=False),
    callback=output_file,
    help="Export to write [default: CHECKPOINT-export.pt]; its folder must exist.",
)
@click.option(
    "--dtype", default="float32", type=click.Choice(["float32", "float64"]), help="Precision of the exported model."
)
@click.option("--device", default="cpu", type=click.Choice(["cpu", "cuda"]), help="Device the export is prepared for.")
@click.option("--force", "overwrite", is_flag=True, help="Overwrite an existing output file.")
@click.option(
    "--repulsion",
    type=click.Choice(["none", "zbl"]),
    default=None,
    help="zbl: add a ZBL repulsive core below each element pair's shortest training distance (zero on all "
    "training data; a wall where the data has none) [default: the checkpoint's, none].",
)
@click.option(
    "--compile",
    "compiled",
    is_flag=True,
    help="Write a compiled export instead (AOT-Inductor package, CHECKPOINT-export.pt2; contract version 4): "
    "several times faster per call, for mdplugin run, mdplugin.load, ASE and OpenMM (through PythonForce), "
    "runs only under the torch version and on the device type it was compiled for; compiling takes about a minute.",
)
@click.option(
    "--neighbour-capacity",
    default=None,
    type=click.IntRange(min=2),
    help="Compiled local models: neighbour slots per atom, the atom itself included [default: from the training "
    "domain, or a dense liquid's count within the interaction range, with 25% headroom]. A denser structure is "
    "refused with a message, never truncated.",
)
@click.option(
    "--threads",
    default=None,
    type=click.IntRange(min=1),
    help="Compiled CPU exports: threads each compiled kernel uses, fixed when compiling [default: 1, the fastest "
    "per core, and what mdplugin runs systems under 500 atoms with].",
)
def export(
    checkpoint, more_checkpoints, output, dtype, device, overwrite, repulsion, compiled, neighbour_capacity, threads
) -> None:
    """Write a TorchScript export of CHECKPOINT for OpenMM, LAMMPS, ASE and libtorch.

    With MORE_CHECKPOINTS (the same architecture, other seeds): one committee export. Engines run its first
    member as a single model; its `deviation` method gives the members' force deviation (mdplugin run's
    state data, the ASE calculator's results, Potential.deviation).
    """
    from mdplugin.export.committee import export_committee
    from mdplugin.export.exporter import default_output_path
    from mdplugin.export.exporter import export as write_export

    if compiled and more_checkpoints:
        raise click.ClickException("--compile writes single models; export a committee without --compile")
    for name, value in (("--neighbour-capacity", neighbour_capacity), ("--threads", threads)):
        if value is not None and not compiled:
            raise click.ClickException(f"{name} applies to compiled exports; add --compile")
    try:
        if compiled:
            from mdplugin.export.compiled import compile_export
            from mdplugin.export.model_file import open_model

            path = compile_export(
                checkpoint, output, dtype, device, overwrite, neighbour_capacity, threads or 1, repulsion
            )
            details = open_model(path).metadata["compiled"]
            capacity = details["neighbour_capacity"]
            capacity = f", {capacity} neighbour slots per atom" if capacity else ""
            click.echo(f"wrote {path} ({dtype}, {device}, compiled in {details['compile_seconds']:.0f} s{capacity})")
            return
        options = {"dtype": dtype, "device": device, "overwrite": overwrite, "repulsion": repulsion}
        if more_checkpoints:
            output = output or default_output_path(checkpoint).with_name(f"{Path(checkpoint).stem}-committee.pt")
            path = export_committee([checkpoint, *more_checkpoints], output, **options)
        else:
            path = write_export(checkpoint, output, **options)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        raise click.ClickException(str(error)) from None
    kind = f", a committee of {len(more_checkpoints) + 1}" if more_checkpoints else ""
    click.echo(f"wrote {path} ({dtype}, {device}{kind})")


@main.command()
@click.argument("model_file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the metadata as JSON.")
def info(model_file, as_json) -> None:
    """Print the metadata of a checkpoint or an export."""
    from mdplugin.export.info import describe

    try:
        metadata = describe(model_file)
    except (ValueError, FileNotFoundError) as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        click.echo(json.dumps(metadata, indent=2))
        return
    for key, value in metadata.items():
        if isinstance(value, dict):
            click.echo(f"{key}:")
            for inner, item in value.items():
                click.echo(f"  {inner}: {item if not isinstance(item, dict) else json.dumps(item)}")
        else:
            click.echo(f"{key}: {value}")


@main.command()
@click.argument("model_file", type=click.Path(dir_okay=False))
@click.argument("structure", type=click.Path(exists=True, dir_okay=False))
@click.option("--charge", default=None, type=int, help="Total charge [default: the file's info, or 0].")
@click.option("--multiplicity", default=None, type=int, help="Spin multiplicity [default: the file's info, or 1].")
@click.option(
    "--frame",
    default=None,
    type=int,
    help="Evaluate only this frame of a trajectory file (0-based; -1: the last) [default: every frame].",
)
def evaluate(model_file, structure, charge, multiplicity, frame) -> None:
    """Print the energy (eV), forces (eV/Å) and, for a periodic cell, the stress of a STRUCTURE file, for
    every frame of a file with several (or the one --frame names).

    A PDB with a CRYST1 line or an extxyz with a cell is periodic: a local model treats it, a global
    model refuses it. A cell of zero lengths (CRYST1 0 0 0) means no cell, as in `mdplugin run`.
    """
    import ase.io

    import mdplugin
    from mdplugin.errors import reason
    from mdplugin.limits import check_neighbour_count
    from mdplugin.md.structure_input import check_overlaps, no_cell_message, no_cell_placeholder

    try:
        potential = mdplugin.load(model_file)
        try:
            frames = ase.io.read(structure, index=":")
        except Exception as error:  # ase raises many kinds for a file it cannot parse
            raise ValueError(
                f"cannot read {structure} as a structure ({reason(error)}); use PDB or XYZ/extxyz"
            ) from None
        if not frames or len(frames[0]) == 0:
            raise ValueError(f"{structure} holds no atoms")
        if frame is not None:
            if not -len(frames) <= frame < len(frames):
                raise ValueError(f"--frame {frame}: {structure} has {len(frames)} frame(s), 0..{len(frames) - 1}")
            chosen = [(frame % len(frames), frames[frame])]
        else:
            chosen = list(enumerate(frames))
        results = []
        for index, atoms in chosen:
            name = structure if len(frames) == 1 else f"{structure} frame {index}"
            if no_cell_placeholder(name, atoms):
                click.echo(f"Warning: {no_cell_message(name)}", err=True)
            if atoms.pbc.all() and potential.is_local:  # the model's pairs first: they name the memory at stake
                check_neighbour_count(len(atoms), atoms.cell.array, atoms.pbc, potential.info.interaction_range, name)
            check_overlaps(name, atoms)
            if charge is not None:
                atoms.info["charge"] = charge
            if multiplicity is not None:
                atoms.info["multiplicity"] = multiplicity
            results.append((index, atoms, potential.evaluate_atoms(atoms)))
        states = {(atoms.info.get("charge", 0), atoms.info.get("multiplicity", 1)) for _, atoms, _ in results}
        for state in sorted(states):
            for message in potential.info.state_messages(*state, "--charge and --multiplicity"):
                click.echo(f"Warning: {message}", err=True)
    except (ValueError, FileNotFoundError) as error:
        raise click.ClickException(str(error)) from None
    for index, atoms, result in results:
        if len(frames) > 1:
            click.echo(f"frame {index} of {len(frames)}:")
        periodic = "periodic cell" if atoms.pbc.any() else "no cell"
        click.echo(f"energy: {result.energy:.6f} eV ({len(atoms)} atoms, {periodic})")
        if result.virial is not None and atoms.pbc.all():
            stress = -0.5 * (result.virial + result.virial.T) / atoms.get_volume() * GPA_PER_EV_PER_CUBIC_ANGSTROM
            click.echo(f"pressure (virial part): {-stress.trace() / 3:.6f} GPa")
            click.echo("stress (GPa): " + " ".join(f"{value:.6f}" for value in stress.flatten()))
        click.echo("forces (eV/Å):")
        for symbol, force in zip(atoms.get_chemical_symbols(), result.forces):
            click.echo(f"  {symbol:2s} {force[0]:12.6f} {force[1]:12.6f} {force[2]:12.6f}")


for command in (train, run, data, learn, lammps, bench, analyze):  # the verbs that live in their own modules
    main.add_command(command)
