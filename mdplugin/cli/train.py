"""`mdplugin train`: parse the options, then call mdplugin.training.train.train."""

from __future__ import annotations

import warnings
from pathlib import Path

import click
from click.core import ParameterSource

from mdplugin.training.options import default


def output_file(context: click.Context, parameter: click.Parameter, value: str | None) -> str | None:
    """Click callback for -o: refuse an empty path, a directory or a missing folder before any work."""
    from mdplugin.model.checkpoint import check_output_file

    if value is None:
        return None
    try:
        check_output_file(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    return value


POSITIVE = click.FloatRange(min=0, min_open=True)
NON_NEGATIVE = click.FloatRange(min=0)


@click.command(context_settings={"show_default": True})
@click.argument("train_files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "-o",
    "--output",
    default="model.pt",
    type=click.Path(dir_okay=False),
    callback=output_file,
    help="Checkpoint file to write (a CSV log and a loss-curve PNG go next to it); its folder must exist.",
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
    default=default("validation_fraction"),
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="Fraction of the training structures held out when no --validation file is given.",
)
@click.option(
    "--seed", default=default("seed"), type=int, help="Seed for the split, initial weights, batch order and rotations."
)
@click.option(
    "--epochs", default=default("epochs"), type=click.IntRange(min=1), help="Number of passes over the training set."
)
@click.option(
    "--validate-every",
    default=default("validate_every"),
    type=click.IntRange(min=1),
    help="Epochs between validations and checkpoints (the last epoch always has both); raise it for small "
    "training sets, whose epochs are a few steps each.",
)
@click.option(
    "--batch-size", default=default("batch_size"), type=click.IntRange(min=1), help="Structures per optimizer step."
)
@click.option(
    "--learning-rate",
    default=default("learning_rate"),
    type=POSITIVE,
    help="Peak AdamW learning rate (linear warm-up, then cosine decay).",
)
@click.option(
    "--weight-decay",
    default=default("weight_decay"),
    type=NON_NEGATIVE,
    help="AdamW weight decay on the weight matrices.",
)
@click.option(
    "--warmup-fraction",
    default=default("warmup_fraction"),
    type=click.FloatRange(0, 1),
    help="Fraction of all steps spent warming up the learning rate.",
)
@click.option(
    "--restart-schedule",
    is_flag=True,
    help="With --resume: warm up and decay the learning rate again over the added epochs (fine-tuning on grown "
    "data) instead of continuing the schedule near its end.",
)
@click.option(
    "--energy-weight",
    default=default("energy_weight"),
    type=NON_NEGATIVE,
    help="Weight of the per-atom energy term of the loss.",
)
@click.option(
    "--force-weight", default=default("force_weight"), type=NON_NEGATIVE, help="Weight of the force term of the loss."
)
@click.option(
    "--stress-weight",
    default=default("stress_weight"),
    type=click.FloatRange(min=0),
    help="Weight of the per-atom virial term, for periodic frames with a stress label (local models).",
)
@click.option(
    "--forces-only",
    "forces_only_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Training file whose frames train on their forces alone, their energy and stress labels unused "
    "(repeatable): rattled frames or frames of a failed run, far from the thermal ones. They never enter the "
    "validation split or the recorded training domain.",
)
@click.option(
    "--forces-only-weight",
    default=default("forces_only_weight"),
    type=NON_NEGATIVE,
    help="Weight of a forces-only frame's force term relative to a fully labelled frame's (their forces are "
    "often several times larger, and the loss is squared).",
)
@click.option(
    "--gradient-clip", default=default("gradient_clip"), type=POSITIVE, help="Largest gradient norm before clipping."
)
@click.option(
    "--ema-decay",
    default=default("ema_decay"),
    type=click.FloatRange(0, 1, max_open=True),
    help="Decay of an exponential moving average of the weights (0: off; 0.999 is typical).",
)
@click.option(
    "--augment/--no-augment",
    "augment_rotations",
    default=default("augment_rotations"),
    help="Random-rotation augmentation of positions and force labels.",
)
@click.option(
    "--elements",
    default=None,
    help="Comma-separated element symbols the model knows (default: those in the training data).",
)
@click.option(
    "--width", default=default("width"), type=click.IntRange(min=1), help="Transformer width (embedding dimension)."
)
@click.option("--depth", default=default("depth"), type=click.IntRange(min=1), help="Number of Transformer blocks.")
@click.option("--heads", default=default("heads"), type=click.IntRange(min=1), help="Attention heads per block.")
@click.option(
    "--ffn-multiplier",
    default=default("ffn_multiplier"),
    type=POSITIVE,
    help="SwiGLU hidden size as a multiple of the width.",
)
@click.option(
    "--coordinate-embedding",
    default=default("coordinate_embedding"),
    type=click.Choice(["quadratic", "gaussian", "fourier", "linear"]),
    help="Smooth embedding of the centred Cartesian coordinates (quadratic: x, y, z and |r|^2 / range).",
)
@click.option(
    "--attention-init",
    default=default("attention_init"),
    type=click.Choice(["distance", "random"]),
    help="Start every head as a Gaussian kernel of interatomic distance (needs the quadratic embedding), "
    "or random: a random start sits long on a plateau of zero forces.",
)
@click.option(
    "--coordinate-range",
    default=default("coordinate_range"),
    type=POSITIVE,
    help="Å; the Gaussian centres span [-range, range]; quadratic: |r|^2 / range.",
)
@click.option(
    "--coordinate-features",
    default=default("coordinate_features"),
    type=click.IntRange(min=2),
    help="Gaussian bins or Fourier frequencies per axis.",
)
@click.option(
    "--shortest-period",
    default=default("shortest_period"),
    type=POSITIVE,
    help="Å; the shortest period of the Fourier coordinate features.",
)
@click.option(
    "--interaction-range",
    default=default("interaction_range"),
    type=POSITIVE,
    help="Å. Train the local model: in every block, atoms attend only to atoms closer than this (periodic images "
    "included), so an atom's energy depends on atoms within depth x range. Needed for periodic data and large "
    "systems. Default: global attention (molecules only).",
)
@click.option(
    "--displacement-features",
    default=default("displacement_features"),
    type=click.IntRange(min=1),
    help="Local model: width of the learned encoding of r_j - r_i.",
)
@click.option(
    "--radial-features",
    default=default("radial_features"),
    type=click.IntRange(min=0),
    help="Local model: Gaussians of |r_j - r_i|, centred evenly on [0, range], in the displacement encoding's "
    "input (0: the displacement and its square only).",
)
@click.option(
    "--threads",
    default=default("threads"),
    type=click.IntRange(min=1),
    help="CPU threads for torch (default: torch's choice).",
)
@click.option(
    "--device",
    default=default("device"),
    help="Where to train: cpu, cuda or cuda:N. The checkpoint is the same either way (saved on the CPU).",
)
@click.option(
    "--drop-outliers",
    is_flag=True,
    help="Train without the frames far outside the rest of the data (energy per atom after the reference fit, "
    "largest force, atoms closer than 0.5 Å; robust statistics), which are otherwise refused by name.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the interrupted run whose checkpoint is --output, with the options it recorded; options given "
    "again must match its architecture (width, depth, heads, embedding, elements, ...).",
)
@click.option("--force", "overwrite", is_flag=True, help="Overwrite an existing --output instead of refusing.")
@click.option("--quiet", is_flag=True, help="No progress bar or per-epoch lines.")
@click.pass_context
def train(context, train_files, output, elements, resume, overwrite, quiet, validation_files, **options) -> None:
    """Train a model on energies and forces from TRAIN_FILES (extxyz or any ASE-readable file)."""
    from mdplugin.elements import atomic_number
    from mdplugin.model.config import ModelConfig
    from mdplugin.training.options import MODEL_OPTIONS, TrainingOptions
    from mdplugin.training.train import train as run_training

    if Path(output).exists() and not (resume or overwrite):
        raise click.UsageError(f"{output} exists; pass --resume to continue that run or --force to start over")
    if resume and not Path(output).exists():
        raise click.UsageError(f"--resume needs the checkpoint {output} of the interrupted run; it does not exist")
    # a resumed run takes the options it recorded unless they are given again (the trainer decides)
    given = {name for name in context.params if context.get_parameter_source(name) is not ParameterSource.DEFAULT}
    try:
        element_numbers = [atomic_number(e) for e in elements.split(",")] if elements else None
        model = ModelConfig(**{name: options.pop(name) for name in MODEL_OPTIONS if name in options})
        settings = TrainingOptions(
            train_files=list(train_files),
            validation_files=list(validation_files),
            output=output,
            model=model,
            elements=element_numbers,
            progress=not quiet,
            **{**options, "forces_only_files": list(options["forces_only_files"])},
        )
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = lambda message, *_: click.echo(f"Warning: {message}", err=True)
            path = run_training(settings, resume=resume, given=given)
    except (ValueError, FileNotFoundError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"wrote {path}")
