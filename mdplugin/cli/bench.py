"""`mdplugin bench` (speed, stability, accuracy measurements) and `mdplugin analyze` (what the model learned).

The benchmarks are the `benchmarks` package of the source tree, installed with mdplugin (`pip install -e .`
installs both); these commands import it like any installed module.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import click

BENCHMARKS = ("speed", "stability", "accuracy")
EXTRA_BENCHMARKS = ("speed-local", "scaling")  # run only when named: not part of `all`


def benchmark_module(name: str):
    """The installed module benchmarks.<name>."""
    try:
        return importlib.import_module(f"benchmarks.{name}")
    except ModuleNotFoundError as error:
        if error.name not in ("benchmarks", f"benchmarks.{name}"):
            raise
        raise click.ClickException(
            "the benchmarks package is not installed; install mdplugin from its source tree (pip install -e .)"
        ) from None


def _numbers(text: str | None, kind: type, option: str, smallest: float, open_below: bool = False) -> list | None:
    """A comma-separated option as numbers, each at least `smallest` (above it with open_below)."""
    if not text:
        return None
    try:
        values = [kind(value) for value in text.split(",") if value.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of numbers", param_hint=option) from None
    if not values:
        raise click.BadParameter(f"{text!r} holds no numbers; give a comma-separated list", param_hint=option)
    low = [v for v in values if v < smallest or (open_below and v == smallest)]
    if low:
        bound = f"above {smallest:g}" if open_below else f"at least {smallest:g}"
        raise click.BadParameter(
            f"every value must be {bound}; {', '.join(f'{v:g}' for v in low)} {'is' if len(low) == 1 else 'are'} not",
            param_hint=option,
        )
    return values


@click.command(context_settings={"show_default": True})
@click.argument("which", type=click.Choice([*BENCHMARKS, *EXTRA_BENCHMARKS, "all"]), default="all")
@click.option(
    "-o",
    "--output",
    default="benchmarks/results",
    type=click.Path(file_okay=False),
    help="Directory for the JSON, Markdown and PNG results (its files of the same names are replaced).",
)
@click.option(
    "--model",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="Export to measure [default: examples/models/md17-export.pt, else the tiny fixture; "
    "speed-local: a random-weight local model of the shipped size].",
)
@click.option(
    "--checkpoint",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="Checkpoint for the accuracy benchmark [default: examples/models/md17.pt].",
)
@click.option(
    "--test-data",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Test file for the accuracy benchmark (repeatable) [default: data/md17/test.extxyz].",
)
@click.option(
    "--compare",
    multiple=True,
    metavar="LABEL=PATH",
    help="Accuracy: models side by side on the same --test-data (repeatable): Transformer checkpoints, a MACE "
    "from benchmarks/mace_train.py, or a recorded accuracy JSON. Writes REPORT-NAME.json/.md.",
)
@click.option(
    "--report-name", default="accuracy-local", help="Accuracy with --compare: file stem of the JSON and Markdown."
)
@click.option("--note", multiple=True, help="Accuracy with --compare: a line added under the table (repeatable).")
@click.option(
    "--global-model",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="speed-local: the global export run on the same atoms [default: examples/models/md17-export.pt].",
)
@click.option(
    "--edges",
    default=None,
    help="speed-local: water molecules per box edge, comma-separated (N = 3 x edge^3) "
    "[default: 4,5,6,8,10,13,16,19,22; quick: 3,4].",
)
@click.option(
    "--sizes",
    default=None,
    help="Speed: comma-separated atom counts [default: 10,20,50,100,200,500,1000,2000; quick: 10,50,200].",
)
@click.option(
    "--repeats",
    default=None,
    type=click.IntRange(1),
    help="Speed: timed samples per engine and size; the median is reported [default: 7; quick: 3].",
)
@click.option(
    "--engines",
    default=None,
    help="Speed: comma-separated subset of raw,openmm-reference,openmm-cpu,lammps-1,lammps-2,mace "
    "(speed-local: local,global,mace,openmm-cpu,local-retained).",
)
@click.option("--threads", default=None, type=click.IntRange(1), help="Speed: torch threads [default: torch's choice].")
@click.option("--memory/--no-memory", default=True, help="Speed: measure peak memory (a subprocess per size).")
@click.option(
    "--molecules",
    default=None,
    help="Stability: comma-separated molecule names or structure files [default: ethanol,aspirin].",
)
@click.option(
    "--duration-ps",
    default=None,
    type=click.FloatRange(min=0, min_open=True),
    help="Stability: NVE length of each run in ps [default: 10; quick: 0.2].",
)
@click.option("--timesteps-fs", default=None, help="Stability: comma-separated timesteps in fs [default: 0.25,0.5,1].")
@click.option(
    "--train-data",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Scaling: training file (repeatable); its frames are shuffled once (--seed) and the grid's data sizes "
    "are the first D of them.",
)
@click.option(
    "--model-sizes", default=None, help="Scaling: WIDTHxDEPTH list [default: 16x1,32x2,64x2,64x4,128x4,256x4]."
)
@click.option(
    "--data-sizes", default=None, help="Scaling: training-set sizes in frames [default: 64,128,256,512,1024]."
)
@click.option("--steps", default=3000, type=click.IntRange(1), help="Scaling: optimizer steps of every run.")
@click.option(
    "--interaction-range",
    default=None,
    type=click.FloatRange(min=0, min_open=True),
    help="Scaling: Å, the local model (periodic data needs one); default: global attention.",
)
@click.option("--seed", default=0, type=int, help="Scaling: the shuffle of the frames and every run's seed.")
@click.option(
    "--jobs",
    default=1,
    type=click.IntRange(1),
    help="Scaling: grid points trained at once (processes, --threads each).",
)
@click.option(
    "--mace-sizes",
    default=None,
    help="Scaling: MACE anchor runs on the same grid, comma-separated hidden channels (e.g. 8,16,32: Cx0e + Cx1o; "
    "needs mace-torch, `pip install -e .[bench]`) [default: none].",
)
@click.option(
    "--mace-data-sizes", default=None, help="Scaling: the MACE runs' training-set sizes [default: --data-sizes]."
)
@click.option(
    "--quick", is_flag=True, help="Small sizes and short runs: checks that everything runs; the numbers are not final."
)
def bench(
    which,
    output,
    model,
    checkpoint,
    test_data,
    compare,
    report_name,
    note,
    global_model,
    edges,
    sizes,
    repeats,
    engines,
    threads,
    memory,
    molecules,
    duration_ps,
    timesteps_fs,
    train_data,
    model_sizes,
    data_sizes,
    steps,
    jobs,
    mace_sizes,
    mace_data_sizes,
    interaction_range,
    seed,
    quick,
) -> None:
    """Measure speed and scaling, NVE stability and accuracy; write tables and plots to --output.

    speed-local: the local model on periodic water boxes (about 200 to 32,000 atoms) against the
    global model on the same atoms and MACE, one thread; its summary also goes into speed.md.

    scaling: test force error against model size and training-set size (a grid of training runs of equal
    optimizer steps, power-law and joint fits, the compute-optimal size); resumable, every run recorded."""
    chosen = BENCHMARKS if which == "all" else (which,)
    atom_counts = _numbers(sizes, int, "--sizes", 1)  # checked before any benchmark starts
    box_edges = _numbers(edges, int, "--edges", 2)
    timesteps = _numbers(timesteps_fs, float, "--timesteps-fs", 0, open_below=True)
    try:
        if "speed" in chosen:
            speed = benchmark_module("speed")
            engine_names = engines.split(",") if engines else None
            speed.run_speed(model, output, atom_counts, repeats, quick, engine_names, threads, memory)
            click.echo(f"wrote {Path(output) / 'speed.md'}")
        if "speed-local" in chosen:
            speed_local = benchmark_module("speed_local")
            engine_names = engines.split(",") if engines else None
            speed_local.run_speed_local(
                model, global_model, output, box_edges, repeats, quick, engine_names, memory=memory
            )
            click.echo(f"wrote {Path(output) / 'speed-local.md'} and its section of {Path(output) / 'speed.md'}")
        if "scaling" in chosen:
            import argparse

            scaling = benchmark_module("scaling")
            arguments = argparse.Namespace(
                output=output, train_data=list(train_data), test_data=list(test_data), model_sizes=model_sizes,
                data_sizes=_numbers(data_sizes, int, "--data-sizes", 1), steps=steps,
                interaction_range=interaction_range, seed=seed, threads=threads or 1, quick=quick, jobs=jobs,
                mace_sizes=_numbers(mace_sizes, int, "--mace-sizes", 1),
                mace_data_sizes=_numbers(mace_data_sizes, int, "--mace-data-sizes", 1),
            )  # fmt: skip
            scaling.run_scaling(arguments)
            click.echo(f"wrote {Path(output) / 'scaling.md'}")
        if "stability" in chosen:
            stability = benchmark_module("stability")
            names = molecules.split(",") if molecules else None
            stability.run_stability(model, output, names, duration_ps, timesteps, quick=quick)
            click.echo(f"wrote {Path(output) / 'stability.md'}")
        if "accuracy" in chosen and compare:
            accuracy = benchmark_module("accuracy")
            models = accuracy.parse_comparison(list(compare))
            accuracy.run_comparison(models, list(test_data), output, report_name, list(note))
            click.echo(f"wrote {Path(output) / (report_name + '.md')}")
        elif "accuracy" in chosen:
            _accuracy(checkpoint, list(test_data), output, quick, required=which == "accuracy")
    except (ValueError, FileNotFoundError) as error:
        raise click.ClickException(str(error)) from None
    except RuntimeError as error:
        if type(error).__name__ != "NothingToMeasure":
            raise
        raise click.ClickException(str(error)) from None


def _accuracy(checkpoint, test_data, output, quick: bool, required: bool) -> None:
    accuracy = benchmark_module("accuracy")
    try:
        accuracy.run_accuracy(checkpoint, test_data or None, output, quick)
    except accuracy.NothingToMeasure as reason:
        if required:
            raise click.ClickException(str(reason)) from None
        click.echo(f"accuracy skipped: {reason}")
        return
    click.echo(f"wrote {Path(output) / 'accuracy.md'}")


@click.group()
def analyze() -> None:
    """Analyses of a trained model."""


@analyze.command(context_settings={"show_default": True})
@click.argument("structures", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--model",
    "checkpoint",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Training checkpoint (the eager model; an export's weights are frozen).",
)
@click.option(
    "-o",
    "--output",
    default="attention-analysis",
    type=click.Path(file_okay=False),
    help="Directory for attention.json and attention.png.",
)
@click.option(
    "--max-structures", default=100, type=click.IntRange(1), help="Frames used from STRUCTURES (evenly spaced)."
)
@click.option(
    "--bin-width",
    default=0.25,
    type=click.FloatRange(min=0.01),
    help="Å; distance bins of the mean weights and the decay fit.",
)
@click.option("--force", "overwrite", is_flag=True, help="Overwrite attention.json and attention.png in --output.")
def attention(structures, checkpoint, output, max_structures, bin_width, overwrite) -> None:
    """Attention weight against interatomic distance, per layer and head, over the structures in STRUCTURES
    (one structure or a data set, any format ASE reads): exponential decay lengths and effective radii."""
    from mdplugin.analysis.attention import analyze_attention

    try:
        summary = analyze_attention(checkpoint, structures, output, max_structures, bin_width, overwrite)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(
        f"{summary['structures']} structures; per layer: decay length λ, attention-weighted mean distance, 90% radius (Å)"
    )
    for layer in summary["layers"]:
        decay = "none" if layer["decay_length"] is None else f"{layer['decay_length']:.2f}"
        click.echo(
            f"  layer {layer['layer']}: λ {decay}, mean distance {layer['weighted_mean_distance']:.2f} (uniform {layer['uniform_mean_distance']:.2f}), r90 {layer['radius_90']:.2f}"
        )
    click.echo(f"wrote {Path(output) / 'attention.json'} and {Path(output) / 'attention.png'}")
