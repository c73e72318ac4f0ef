"""The `mdplugin` command line: one command per verb; each parses options and calls the library."""

from __future__ import annotations

import json
from pathlib import Path

import click

from mdplugin import __version__
from mdplugin.cli.bench import analyze, bench
from mdplugin.cli.data import data
from mdplugin.cli.lammps import lammps
from mdplugin.cli.run import run


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="mdplugin")
def main() -> None:
    """A graph-free Transformer interatomic potential for OpenMM and LAMMPS."""


@main.command()
@click.argument("train_files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "-o",
    "--output",
    default="model.pt",
    type=click.Path(dir_okay=False),
    help="Checkpoint to write (a CSV log and a loss-curve PNG go next to it).",
)
@click.option(
    "--validation",
    "validation_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Validation file (repeatable). Without it, a seeded split of the training files.",
)
@click.option(
    "--validation-fraction",
    default=0.1,
    help="Fraction of the training structures held out when no --validation file is given.",
)
@click.option("--seed", default=0, help="Seed for the split, initial weights, batch order and rotations.")
@click.option("--epochs", default=100, help="Number of passes over the training set.")
@click.option("--batch-size", default=32, help="Structures per optimizer step.")
@click.option("--learning-rate", default=1e-3, help="Peak AdamW learning rate (linear warm-up, then cosine decay).")
@click.option("--weight-decay", default=0.01, help="AdamW weight decay on the weight matrices.")
@click.option("--warmup-fraction", default=0.05, help="Fraction of all steps spent warming up the learning rate.")
@click.option("--energy-weight", default=1.0, help="Weight of the per-atom energy term of the loss.")
@click.option("--force-weight", default=10.0, help="Weight of the force term of the loss.")
@click.option("--gradient-clip", default=1.0, help="Largest gradient norm before clipping.")
@click.option(
    "--ema-decay", default=0.0, help="Decay of an exponential moving average of the weights (0: off; 0.999 is typical)."
)
@click.option(
    "--augment/--no-augment",
    "augment_rotations",
    default=True,
    help="Random-rotation augmentation of positions and force labels.",
)
@click.option(
    "--elements",
    default=None,
    help="Comma-separated element symbols the model knows (default: those in the training data).",
)
@click.option("--width", default=128, help="Transformer width (embedding dimension).")
@click.option("--depth", default=4, help="Number of Transformer blocks.")
@click.option("--heads", default=8, help="Attention heads per block.")
@click.option("--ffn-multiplier", default=8 / 3, help="SwiGLU hidden size as a multiple of the width.")
@click.option(
    "--coordinate-embedding",
    default="quadratic",
    type=click.Choice(["quadratic", "gaussian", "fourier", "linear"]),
    help="Smooth embedding of the centred Cartesian coordinates (quadratic: x, y, z and |r|^2 / range).",
)
@click.option(
    "--attention-init",
    default="distance",
    type=click.Choice(["distance", "random"]),
    help="Start every head as a Gaussian kernel of interatomic distance (needs the quadratic embedding), "
    "or random: a random start sits long on a plateau of zero forces.",
)
@click.option(
    "--coordinate-range", default=8.0, help="Å; the Gaussian centres span [-range, range]; quadratic: |r|^2 / range."
)
@click.option("--coordinate-features", default=48, help="Gaussian bins or Fourier frequencies per axis.")
@click.option("--shortest-period", default=2.0, help="Å; the shortest period of the Fourier coordinate features.")
@click.option("--threads", default=None, type=int, help="CPU threads for torch (default: torch's choice).")
@click.option("--resume", is_flag=True, help="Continue the interrupted run whose checkpoint is --output.")
@click.option("--force", "overwrite", is_flag=True, help="Overwrite an existing --output instead of refusing.")
@click.option("--quiet", is_flag=True, help="No progress bar or per-epoch lines.")
def train(train_files, output, elements, resume, overwrite, quiet, validation_files, **options) -> None:
    """Train a model on energies and forces from TRAIN_FILES (extxyz or any ASE-readable file)."""
    from mdplugin.elements import atomic_number
    from mdplugin.training.train import TrainingOptions
    from mdplugin.training.train import train as run_training

    if Path(output).exists() and not (resume or overwrite):
        raise click.UsageError(f"{output} exists; pass --resume to continue that run or --force to start over")
    if resume and not Path(output).exists():
        raise click.UsageError(f"--resume needs the checkpoint {output} of the interrupted run; it does not exist")
    settings = TrainingOptions(
        train_files=list(train_files),
        validation_files=list(validation_files),
        output=output,
        elements=[atomic_number(e) for e in elements.split(",")] if elements else None,
        progress=not quiet,
        **options,
    )
    try:
        path = run_training(settings, resume=resume)
    except (ValueError, FileNotFoundError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"wrote {path}")


@main.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    default=None,
    type=click.Path(dir_okay=False),
    help="Export to write [default: CHECKPOINT-export.pt].",
)
@click.option(
    "--dtype", default="float32", type=click.Choice(["float32", "float64"]), help="Precision of the exported model."
)
@click.option("--device", default="cpu", type=click.Choice(["cpu", "cuda"]), help="Device the export is prepared for.")
@click.option("--force", "overwrite", is_flag=True, help="Overwrite an existing output file.")
def export(checkpoint, output, dtype, device, overwrite) -> None:
    """Write a TorchScript export of CHECKPOINT for OpenMM, LAMMPS, ASE and libtorch."""
    from mdplugin.export.exporter import export as write_export

    try:
        path = write_export(checkpoint, output, dtype=dtype, device=device, overwrite=overwrite)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"wrote {path} ({dtype}, {device})")


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
@click.option("--charge", default=0, help="Total charge of the structure.")
@click.option("--multiplicity", default=1, help="Spin multiplicity of the structure.")
def evaluate(model_file, structure, charge, multiplicity) -> None:
    """Print the energy (eV) and forces (eV/Å) of a STRUCTURE file (XYZ, PDB, ...) under a model."""
    import ase.io

    import mdplugin

    try:
        potential = mdplugin.load(model_file)
        atoms = ase.io.read(structure)
        result = potential(atoms.positions, atoms.numbers, charge, multiplicity)
    except (ValueError, FileNotFoundError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"energy: {result.energy:.6f} eV ({len(atoms)} atoms)")
    click.echo("forces (eV/Å):")
    for symbol, force in zip(atoms.get_chemical_symbols(), result.forces):
        click.echo(f"  {symbol:2s} {force[0]:12.6f} {force[1]:12.6f} {force[2]:12.6f}")


for command in (run, data, lammps, bench, analyze):  # the verbs that live in their own modules
    main.add_command(command)
