"""`mdplugin learn`: parse the options, then call mdplugin.learn.loop.learn."""

from __future__ import annotations

from dataclasses import replace

import click

from mdplugin.learn.options import LearnOptions
from mdplugin.training.options import default

DEFAULTS = LearnOptions(structures=[], reference="")


def numbers(text: str, option: str) -> list[float]:
    """A comma-separated list of numbers, or an error naming the option."""
    try:
        return [float(item) for item in text.split(",")]
    except ValueError:
        raise ValueError(f"{option} takes comma-separated numbers, such as 300,500; got {text!r}") from None


@click.command(context_settings={"show_default": True})
@click.argument("structures", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--reference",
    required=True,
    help="What labels the frames: gfn2-xtb (molecules), gfn1-xtb (periodic boxes), spcfw (water boxes), emt, "
    "openmm:SYSTEM.xml (any serialized OpenMM System, e.g. a force field as teacher) or python:MODULE:FUNCTION "
    "(FUNCTION(atoms) returns an ASE calculator).",
)
@click.option("-o", "--output", default=DEFAULTS.output, help="The run's folder; the same call continues it.")
@click.option(
    "--temperatures-k", default="300", help="Comma-separated target temperatures, K (the loop also samples the "
    "top one x --overheat)."
)  # fmt: skip
@click.option(
    "--volume-scales",
    default=",".join(f"{v:g}" for v in DEFAULTS.volume_scales),
    help="Periodic boxes are also sampled at these volume factors (comma-separated), so that the model learns "
    "the virial away from one density.",
)
@click.option(
    "--overheat",
    default=DEFAULTS.overheat,
    type=click.FloatRange(min=1),
    help="Also sample at this x the top temperature.",
)
@click.option(
    "--committee",
    default=DEFAULTS.committee,
    type=click.IntRange(min=1),
    help="Models per committee (seeds 0..K-1); 1: a single model, checked by its closest contacts only.",
)
@click.option(
    "--max-rounds", default=DEFAULTS.max_rounds, type=click.IntRange(min=1), help="Stop after this many rounds."
)
@click.option(
    "--initial-frames",
    default=DEFAULTS.initial_frames,
    type=click.IntRange(min=1),
    help="Round 0: frames of the reference's own MD per structure and temperature.",
)
@click.option(
    "--initial-stride",
    default=DEFAULTS.initial_stride,
    type=click.IntRange(min=1),
    help="Round 0: MD steps between the reference's frames.",
)
@click.option(
    "--test-frames",
    default=DEFAULTS.test_frames,
    type=click.IntRange(min=0),
    help="Round 0: frames per structure and temperature from separate reference trajectories, the test set of "
    "every round (0: a random tenth of the training data instead).",
)
@click.option(
    "--rattled-frames",
    default=DEFAULTS.rattled_frames,
    type=click.IntRange(min=0),
    help="Round 0: randomly displaced frames per structure, trained on forces only.",
)
@click.option(
    "--md-steps", default=DEFAULTS.md_steps, type=click.IntRange(min=1), help="MD steps per trajectory and round."
)
@click.option("--timestep-fs", default=DEFAULTS.timestep_fs, type=click.FloatRange(min=0, min_open=True, max=5))
@click.option(
    "--trajectories",
    default=DEFAULTS.trajectories,
    type=click.IntRange(min=1),
    help="MD runs per start structure and temperature in each round, each with its own seed.",
)
@click.option(
    "--check-every",
    default=DEFAULTS.check_every,
    type=click.IntRange(min=1),
    help="Steps between evaluations of the committee's force deviation.",
)
@click.option(
    "--lower",
    default=DEFAULTS.lower,
    type=click.FloatRange(min=0, min_open=True),
    help="Trust level, eV/Å: frames whose force deviation is above it are labelled [default: after round 1, the "
    "99th percentile of the committee's deviation on the test set].",
)
@click.option(
    "--upper",
    default=DEFAULTS.upper,
    type=click.FloatRange(min=0, min_open=True),
    help="Trust level, eV/Å: above it a frame is unphysical and the trajectory failed there [default: 3x the "
    "lower one].",
)
@click.option(
    "--converged-fraction",
    default=DEFAULTS.converged_fraction,
    type=click.FloatRange(min=0, max=1, max_open=True),
    help="Converged when no trajectory fails and at most this fraction of the checks lie above --lower.",
)
@click.option(
    "--max-new-frames",
    default=DEFAULTS.max_new_frames,
    type=click.IntRange(min=1),
    help="Frames labelled per trajectory and round.",
)
@click.option(
    "--training-steps",
    default=DEFAULTS.training_steps,
    type=click.IntRange(min=1),
    help="Optimizer steps of round 1's training (epochs follow from the data's size).",
)
@click.option(
    "--steps-per-round",
    default=DEFAULTS.steps_per_round,
    type=click.IntRange(min=1),
    help="Optimizer steps of each later round's fine-tuning (warm start from the round before).",
)
@click.option("--width", default=DEFAULTS.model.width, type=click.IntRange(min=1))
@click.option("--depth", default=DEFAULTS.model.depth, type=click.IntRange(min=1))
@click.option("--heads", default=DEFAULTS.model.heads, type=click.IntRange(min=1))
@click.option(
    "--interaction-range",
    default=default("interaction_range"),
    type=click.FloatRange(min=0, min_open=True),
    help="Å: a local model (needed for periodic boxes); default: global attention.",
)
@click.option("--batch-size", default=DEFAULTS.batch_size, type=click.IntRange(min=1))
@click.option("--learning-rate", default=DEFAULTS.learning_rate, type=click.FloatRange(min=0, min_open=True))
@click.option("--seed", default=DEFAULTS.seed, type=int)
@click.option(
    "--threads", default=DEFAULTS.threads, type=click.IntRange(min=1), help="CPU threads for torch, per process."
)
@click.option(
    "--jobs",
    default=DEFAULTS.jobs,
    type=click.IntRange(min=0),
    help="Committee members trained at once, one process each (0: as many as the cores hold).",
)
@click.option(
    "--solvate",
    "solvate_nm",
    default=None,
    type=click.FloatRange(min=0, min_open=True),
    help="Sample every round in water, as the model will run: the start PDB solvated with this padding (nm), "
    "member 0 in ML/MM (as `mdplugin run --solvate`), the molecule's geometries checked and labelled in vacuum.",
)
@click.option(
    "--forcefield",
    multiple=True,
    default=DEFAULTS.forcefield,
    help="--solvate: OpenMM force field files for the water and the molecule-water terms (repeatable).",
)
@click.option("--quiet", is_flag=True)
def learn(structures, temperatures_k, volume_scales, width, depth, heads, interaction_range, quiet, **options) -> None:
    """Active learning: from STRUCTURES and a --reference to a model that survives its own MD.

    Round 0 labels the reference's own MD and rattled frames; each round trains a committee, runs MD with
    one member while the others check it, labels the frames where they disagree, and retrains, until every
    trajectory runs its length without failure. Interrupted? Run the same command again.
    """
    from mdplugin.learn.loop import learn as run_learning
    from mdplugin.learn.reference import ReferenceError

    try:
        temperatures = numbers(temperatures_k, "--temperatures-k")
        options["volume_scales"] = numbers(volume_scales, "--volume-scales")
        options["forcefield"] = list(options["forcefield"])
        model = replace(DEFAULTS.model, width=width, depth=depth, heads=heads, interaction_range=interaction_range)
        settings = LearnOptions(structures=list(structures), temperatures_k=temperatures, model=model,
                                progress=not quiet, **options)  # fmt: skip
        state = run_learning(settings, say=(lambda _: None) if quiet else click.echo)
    except (ValueError, FileNotFoundError, ReferenceError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"{'converged' if state.get('converged') else 'not converged'} after {len(state['rounds'])} rounds; "
               f"model: {state['export']}; report: {settings.output}/report.md")  # fmt: skip
