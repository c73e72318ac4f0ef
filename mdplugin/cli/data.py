"""`mdplugin data`: make reference data: GFN2-xTB energies and forces of molecules (Langevin MD with tblite),
periodic boxes of water, pure or around one solute molecule (energy, forces and stress), and the frames of a
model's own MD labelled with the reference (relabel)."""

from __future__ import annotations

import math

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


class FiniteRange(click.FloatRange):
    """click.FloatRange that also refuses nan and inf (which compare false with every bound, so pass it)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def _temperatures(ctx, param, value: str) -> list[float]:
    from mdplugin.data.molecules import TEMPERATURE_RANGE_K

    try:
        temperatures = [float(t) for t in value.split(",") if t.strip()]
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a comma-separated list of temperatures in K, e.g. 300,500,800"
        ) from None
    low, high = TEMPERATURE_RANGE_K
    if not temperatures or not all(math.isfinite(t) and low <= t <= high for t in temperatures):
        raise click.BadParameter(
            f"{value!r}: give temperatures in K between {low:g} and {high:g} (the range of MD temperatures the "
            "samplers are meant for), e.g. 300,500,800"
        )
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
                "--timestep-fs", default=0.5, type=FiniteRange(min=0, min_open=True), help="MD timestep in fs."
            ),
            click.option(
                "--friction-per-fs",
                default=0.01,
                type=FiniteRange(min=0, min_open=True),
                help="Langevin friction in 1/fs.",
            ),
            click.option(
                "--equilibration-steps", default=1000, type=click.IntRange(0), help="MD steps before the first frame."
            ),
            click.option(
                "--relax-fmax",
                default=0.05,
                type=FiniteRange(min=0, min_open=True),
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


def spcfw_cutoff_options(cutoff_help: str, switch_help: str):
    """--cutoff-angstrom and --switch-angstrom of the SPC/Fw model, with a command's own help texts."""

    def decorate(command):
        command = click.option(
            "--switch-angstrom", default=4.5, type=FiniteRange(min=0, min_open=True), help=switch_help
        )(command)
        return click.option("--cutoff-angstrom", default=5.5, type=FiniteRange(min=0, min_open=True), help=cutoff_help)(
            command
        )

    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
def data() -> None:
    """Make reference data as extxyz: GFN2-xTB (tblite) energies and forces of molecules on Langevin MD frames
    (generate, md17), periodic boxes of liquid water, pure or with one solute molecule, labelled with
    GFN1-xTB energy, forces and stress (water), and frames of a model's own MD labelled the same way (relabel)."""


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
    from mdplugin.data.molecules import molecule_from_input

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
    from mdplugin.data.molecules import md17_molecules

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

    from mdplugin.data import molecules as rd

    settings = rd.MDSettings(
        timestep_fs=timestep_fs,
        friction_per_fs=friction_per_fs,
        stride=stride,
        equilibration_steps=equilibration_steps,
        relax_fmax=relax_fmax,
    )
    try:
        trajectories = rd.plan(molecules, temperatures, out_dir, frames, test_frames, seed, settings)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    description = f"{len(molecules)} molecule(s) x {len(temperatures)} temperature(s)"
    _generate(trajectories, description, out_dir, temperatures, jobs, resume, overwrite, quiet)


WATER_LAYOUT = """
\b
Output layout (OUT is -o; SYSTEM is water, or <solute>_in_water with --solute):
  OUT/SYSTEM/SYSTEM_<T>K_<rho>gcm3_train.extxyz   training frames at T kelvin and density rho
  OUT/SYSTEM/SYSTEM_<T>K_<rho>gcm3_test.extxyz    test frames: a separate trajectory, another seed
  OUT/train.extxyz, OUT/test.extxyz, OUT/test_<T>K.extxyz   this run's frames, combined
Each frame holds the cell and pbc, positions (Å, whole molecules wrapped into the box; the waters first,
then the solute), momenta, energy (eV), forces (eV/Å) and stress (eV/Å^3, ASE's sign and Voigt order),
and info keys system, waters, split, temperature_K, density_g_cm3 (of the water), trajectory_seed, charge,
multiplicity, frame, time_fs and the provenance (method, sampler, cutoffs, versions, timestep, stride,
friction, date; with a solute also solute, solute_atoms, solute_source, solute_sampler,
solute_water_interaction, solute_clearance_angstrom, solute_volume_angstrom3).

\b
With --solute, the molecule sits in the box centre: waters with an atom within 2 Å of it are not placed,
and the box grows by the molecule's volume so the water keeps about the requested density. Its geometry
follows its own GFN2-xTB Langevin MD in vacuum at the box temperature (the MD of `mdplugin data md17`,
same timestep and stride), placed each frame with its centre of mass in the box centre and rotated onto
the last frame; while the waters move it is held fixed and meets them through UFF Lennard-Jones alone (no
charges, so no hydrogen bonds to it are favoured in the sampling; the GFN1-xTB labels of the whole box
are exact for every geometry written). Classical labels are refused with a solute.
"""


@data.command(epilog=WATER_LAYOUT)
@click.option(
    "--labels",
    type=click.Choice(["gfn1-xtb", "classical"]),
    default="gfn1-xtb",
    help="gfn1-xtb: periodic GFN1-xTB (tblite); classical: the SPC/Fw model that samples the frames "
    "(its own MD is the reference for MD observables).",
)
@click.option("--waters", default=32, type=click.IntRange(1), help="Water molecules per box.")
@click.option(
    "--solute",
    metavar="NAME_OR_FILE",
    default=None,
    help="One molecule in the box centre: an MD17 name (aspirin, benzene, ethanol, malonaldehyde, naphthalene, "
    "salicylic_acid, toluene, uracil) or an .xyz file (its first structure; neutral, closed-shell). "
    "Needs --labels gfn1-xtb.",
)
@click.option(
    "--densities",
    default="0.9,1.0,1.1",
    callback=lambda c, p, v: _positive_list(v, "densities in g/cm^3, e.g. 0.9,1.0,1.1"),
    help="Comma-separated box densities in g/cm^3 (fixed per trajectory, NVT).",
)
@spcfw_cutoff_options(
    "SPC/Fw real-space cutoff (PME, Lennard-Jones switched to zero there); at most half the box width.",
    "Distance where the Lennard-Jones switching starts.",
)
@click.option(
    "-o",
    "--output",
    "out_dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Output directory.  [default: data/water, or data/<solute>_in_water]",
)
@click.option(
    "--temperatures",
    default="280,300,340,400",
    callback=_temperatures,
    help="Comma-separated MD temperatures in K.",
)
@click.option("--frames", default=40, type=click.IntRange(1), help="Training frames per temperature and density.")
@click.option("--test-frames", default=8, type=click.IntRange(0), help="Test frames per temperature and density.")
@click.option("--stride", default=200, type=click.IntRange(1), help="MD steps between frames.")
@click.option("--timestep-fs", default=0.5, type=FiniteRange(min=0, min_open=True), help="Classical MD timestep in fs.")
@click.option(
    "--friction-per-ps", default=1.0, type=FiniteRange(min=0, min_open=True), help="Langevin friction in 1/ps."
)
@click.option(
    "--equilibration-steps",
    default=40000,
    type=click.IntRange(0),
    help="MD steps before the first frame (20 ps at 0.5 fs: a new box starts polarised and needs ~10 ps to relax).",
)
@click.option("--seed", default=0, help="Base seed; each trajectory derives its own.")
@click.option("--jobs", default=2, type=click.IntRange(1), help="Trajectories run at once, one process each.")
@click.option("--resume", is_flag=True, help="Continue unfinished trajectory files; finished ones are skipped.")
@click.option("--force", "overwrite", is_flag=True, help="Overwrite existing output files instead of refusing.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def water(
    labels,
    waters,
    solute,
    densities,
    cutoff_angstrom,
    switch_angstrom,
    out_dir,
    temperatures,
    frames,
    test_frames,
    stride,
    timestep_fs,
    friction_per_ps,
    equilibration_steps,
    seed,
    jobs,
    resume,
    overwrite,
    quiet,
) -> None:
    """Periodic boxes of liquid water, pure or around one solute molecule (--solute ethanol): frames of
    classical flexible-water (SPC/Fw) MD in OpenMM, labelled with periodic GFN1-xTB or, for pure water, with
    the classical model itself (energy, forces, stress)."""

    from mdplugin.data import water as pd
    from mdplugin.data.labellers import WaterModel

    try:
        molecule = None if solute is None else pd.solute_from_input(solute, seed)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    out_dir = out_dir or f"data/{pd.system_name(molecule)}"

    settings = pd.BoxSettings(
        waters=waters,
        timestep_fs=timestep_fs,
        friction_per_ps=friction_per_ps,
        stride=stride,
        equilibration_steps=equilibration_steps,
        water_model=WaterModel(cutoff_angstrom, switch_angstrom),
    )
    try:
        trajectories = pd.plan(labels, temperatures, densities, out_dir, frames, test_frames, seed, settings, molecule)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    around = "" if molecule is None else f" around {molecule.name}"
    description = (
        f"{len(temperatures)} temperature(s) x {len(densities)} density(ies), {waters} waters{around}, {labels} labels"
    )
    _generate(trajectories, description, out_dir, temperatures, jobs, resume, overwrite, quiet)


RELABEL_EPILOG = """
\b
TRAJECTORY: extxyz (or any ASE-readable file with a periodic cell), a LAMMPS dump (.lammpstrj, .dump) or
data file (.data, .lmp), or what `mdplugin run` writes: PREFIX.dcd or PREFIX.xtc (elements from --topology,
default PREFIX-topology.pdb beside it) or a multi-model PREFIX.pdb. Every frame needs a periodic cell. A last
frame cut off mid-write (the dump or DCD of a run killed or still running) is dropped, and the summary says so.

\b
Each frame written holds the cell and pbc, positions (Å), energy (eV), forces (eV/Å) and stress (eV/Å^3,
ASE's sign and Voigt order), as `mdplugin data water` frames do, and info keys system, source_frame (the
frame's index in TRAJECTORY), source_trajectory, source_sha256, method, the labeller's settings, versions
and the date. --resume appends the selected frames OUT does not hold yet (by source_frame; frames skipped
before are labelled again).
"""


@data.command(epilog=RELABEL_EPILOG)
@click.argument("trajectory", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--topology",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="PDB of a DCD or XTC's atoms.  [default: PREFIX-topology.pdb beside PREFIX.dcd, as `mdplugin run` writes]",
)
@click.option(
    "--labels",
    type=click.Choice(["gfn1-xtb", "classical"]),
    default="gfn1-xtb",
    help="gfn1-xtb: periodic GFN1-xTB (tblite), any composition; classical: the SPC/Fw model of `data water "
    "--labels classical`, pure water ordered O, H, H per molecule.",
)
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False), help="extxyz file of the labelled frames."
)
@click.option("--every", default=1, type=click.IntRange(1), help="Label every N-th frame (frames 0, N, 2N, ...).")
@click.option(
    "--max-frames", default=None, type=click.IntRange(1), help="Label at most this many frames (the first selected)."
)
@click.option(
    "--max-force",
    default=None,
    type=FiniteRange(min=0, min_open=True),
    help="eV/Å: skip (and count) frames whose largest per-atom label force exceeds this, such as those of a "
    "blown-up run.  [default: no limit]",
)
@spcfw_cutoff_options(
    "Classical labels: the SPC/Fw real-space cutoff; the same as the `data water` run of the training data.",
    "Classical labels: where the Lennard-Jones switching starts; the same as the training data's.",
)
@click.option(
    "--type-elements",
    default=None,
    help="A LAMMPS dump without an element column: the element of atom types 1, 2, ..., e.g. O,H.",
)
@click.option(
    "--rattle",
    default=0.0,
    type=FiniteRange(0, 1),
    help="Å: displace every atom of each labelled frame by a Gaussian of this width per axis first (seeded by "
    "--seed and the frame): stretched bonds and close contacts near the sampled ones, which teach a model the "
    "steep walls thermal frames never reach.  [default: 0, no rattle]",
)
@click.option("--seed", default=0, type=int, help="Seed of --rattle.")
@click.option("--resume", is_flag=True, help="Append to OUT the selected frames it does not hold yet.")
@click.option("--force", "overwrite", is_flag=True, help="Overwrite an existing output file instead of refusing.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def relabel(
    trajectory,
    topology,
    labels,
    output,
    every,
    max_frames,
    max_force,
    cutoff_angstrom,
    switch_angstrom,
    type_elements,
    rattle,
    seed,
    resume,
    overwrite,
    quiet,
) -> None:
    """Label frames of a model's own MD with the reference (active learning): where the model's MD goes where its
    training data never went (atoms too close, a box expanding), those frames, added to the training set, fix it.

    \b
      1. mdplugin run box.pdb -m water.pt -o runs/water    (writes runs/water.dcd, runs/water-topology.pdb)
      2. mdplugin data relabel runs/water.dcd --every 10 --max-force 20 -o data/round1.extxyz
      3. mdplugin train data/water/train.extxyz data/round1.extxyz -o water.pt --resume --epochs 200
         (continues the run on both files), or train from scratch on both
    """
    from tqdm import tqdm

    from mdplugin.data import relabel as rl
    from mdplugin.data.labellers import WaterModel

    options = rl.RelabelOptions(
        labels=labels,
        every=every,
        max_frames=max_frames,
        max_force=max_force,
        water_model=WaterModel(cutoff_angstrom, switch_angstrom),
        type_elements=tuple(e.strip() for e in type_elements.split(",")) if type_elements else None,
        rattle=rattle,
        seed=seed,
    )
    try:
        with tqdm(total=max_frames, unit="frame", disable=quiet, dynamic_ncols=True, delay=1) as bar:
            result = rl.relabel(trajectory, output, options, topology, resume, overwrite, on_frame=bar.update)
    except (ValueError, FileExistsError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(result.summary())


def _generate(trajectories, description, out_dir, temperatures, jobs, resume, overwrite, quiet) -> None:
    """Check the outputs, run the planned trajectories with a progress bar, write and report the combined files."""
    from tqdm import tqdm

    from mdplugin.data import molecules as rd
    from mdplugin.data.trajectories import frames_to_do, run_trajectories
    from mdplugin.model.checkpoint import check_writable

    try:
        check_writable(out_dir)
        rd.check_outputs(
            [t.path for t in trajectories] + list(rd.combined_paths(out_dir, temperatures)), resume, overwrite
        )
        rd.check_combined(trajectories, out_dir, temperatures, overwrite)
        total = frames_to_do(trajectories, resume, overwrite)
        click.echo(
            f"{len(trajectories)} trajectories ({description}), {total} frames to compute, {jobs} processes, into {out_dir}"
        )
        with tqdm(total=total, unit="frame", disable=quiet, dynamic_ncols=True) as bar:
            results = run_trajectories(trajectories, jobs, resume, overwrite, on_frame=bar.update)
        combined = rd.write_combined(trajectories, out_dir, temperatures)
    except (ValueError, FileExistsError, RuntimeError) as error:
        raise click.ClickException(str(error)) from None
    for result in results:
        if result.message:
            click.echo(result.message)
    click.echo(f"wrote {sum(r.written for r in results)} frames; combined files: {', '.join(str(p) for p in combined)}")


def _positive_list(value: str, what: str) -> list[float]:
    try:
        numbers = [float(t) for t in value.split(",") if t.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of {what}") from None
    if not numbers or not all(math.isfinite(n) and n > 0 for n in numbers):
        raise click.BadParameter(f"{value!r}: give positive (finite) {what}")
    return numbers
