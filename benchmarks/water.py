"""Liquid water: a local model's MD against the MD of its reference potential, and its test errors.

The reference is the classical SPC/Fw model of `mdplugin data water --labels classical` (PME, cutoff
5.5 Å), whose own MD is cheap; the model was trained on frames labelled by it. Both run the same
protocol in OpenMM (CPU platform, one thread) from the same 64-water box, each segment through the MD loop
of `mdplugin run` (`mdplugin.md.simulate.run_simulation`: its reporters, blow-up watch and wall-clock budget):

1. NPT at 300 K and 1 bar (LangevinMiddleIntegrator, friction 1/ps, 1 fs; MonteCarloBarostat every 25
   steps): the density. With `--no-barostat` the same segment is NVT in the box of `--structure` (the
   report's structure and diffusion comparison uses NVT at the reference's mean NPT density, so that
   a model's pressure error does not hide its structure and dynamics).
   g_OO(r) and intermolecular g_OH(r) come from this segment's frames, and a self-diffusion coefficient
   from the unwrapped oxygen MSD (Langevin friction 1/ps slows diffusion a little; both runs have it).
2. NVE from the last state of segment 1 (VerletIntegrator, 0.5 fs): the total-energy drift in
   meV/atom/ps (linear fit) and a second diffusion coefficient.

Every run is bounded by wall-clock time as well as by length; run.json says exactly what ran.
Uncertainties: the density's standard error from block averages (4 blocks after the first fifth),
the diffusion coefficient's from the spread of the slopes of two blocks' MSDs, and the g(r) noise
floor from the integrated difference between the two halves of the reference run. A model run that
blows up (temperature above 1000 K) is analysed up to that point and marked failed.

    python benchmarks/water.py md classical --name classical --npt-ps 100 --nve-ps 50
    python benchmarks/water.py md classical --name classical-nvt --structure runs/water/reference-density.pdb \
        --no-barostat --npt-ps 40 --nve-ps 10
    python benchmarks/water.py md examples/models/water-classical-export.pt --name model-nvt \
        --structure runs/water/reference-density.pdb --no-barostat --npt-ps 20 --minutes 13 --nve-ps 10 --nve-minutes 6
    python benchmarks/water.py md examples/models/water-xtb-export.pt --name xtb-round1-long \
        --structure examples/water/water32.pdb --npt-ps 100 --minutes 21 --nve-ps 5 --nve-minutes 4 --seed 2
    python benchmarks/water.py lammps examples/models/water-classical-export.pt --name lammps-model-round1 --npt-ps 1
    python benchmarks/water.py evaluate examples/models/water-xtb.pt data/water-xtb/test.extxyz --name water-xtb-round1
    python benchmarks/water.py report --reference classical-nvt --model model-nvt --npt-reference classical \
        --npt-models model --xtb xtb-round1-long --lammps lammps-model-round1 --stopped ...

`runs/water/reference-density.pdb` (a copy: `benchmarks/results/water/reference-density.pdb`) is the
frame of the reference's NPT run whose density is closest to its mean (0.9745 g/cm³).
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repository root
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import csv
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from benchmarks import report
from mdplugin.md.options import RunOptions
from mdplugin.units import GPA_PER_EV_PER_CUBIC_ANGSTROM, KJ_PER_MOL_PER_EV

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "runs" / "water"
RESULTS = ROOT / "benchmarks" / "results" / "water"
START = ROOT / "examples" / "water" / "water.pdb"
KJ_PER_MOL_IN_EV = 1 / KJ_PER_MOL_PER_EV


# ---------------------------------------------------------------------------- MD


def water_system(potential: str, topology, platform):
    """The classical reference's System, or the model's (an export or checkpoint) through mdplugin's OpenMM
    adapter: the CPU runs the model file's own dtype, CUDA float32 on the GPU."""
    from mdplugin.data.labellers import classical_system
    from mdplugin.engines.openmm_force import create_system
    from mdplugin.md.simulate import model_dtype_and_device

    if potential == "classical":
        return classical_system(topology)
    dtype, device = model_dtype_and_device(platform, "mixed") if platform.getName() != "CPU" else (None, "cpu")
    return create_system(potential, topology, dtype=dtype, device=device)


def segment_options(args: argparse.Namespace, kind: str) -> RunOptions:
    """mdplugin run's options for one segment: NPT (or NVT with --no-barostat) or NVE, unwrapped DCD frames
    (the diffusion coefficient needs them), bounded by its wall-clock budget."""
    first = kind == "npt"
    length_ps, timestep_fs = (args.npt_ps, args.npt_timestep_fs) if first else (args.nve_ps, args.nve_timestep_fs)
    return RunOptions(
        structure=str(args.structure),
        model=args.potential,
        output=str(RUNS / args.name / kind),
        ensemble=("nvt" if args.no_barostat else "npt") if first else "nve",
        steps=max(1, int(round(1000 * length_ps / timestep_fs))),
        timestep_fs=timestep_fs,
        temperature_k=300.0,
        friction_per_ps=1.0,
        pressure_bar=1.0,
        barostat_interval=25,
        platform=args.platform,
        precision="mixed" if args.platform.upper() in ("CUDA", "OPENCL") else None,
        seed=args.seed,
        report_interval=args.npt_report_steps if first else args.nve_report_steps,
        checkpoint_interval=10**9,  # one at the end
        threads=args.threads,
        max_wall_minutes=args.minutes if first else args.nve_minutes,
        wrap_trajectory=False,
        progress=False,
        overwrite=True,
    )


def run_segment(simulation, options: RunOptions) -> dict:
    """One segment through mdplugin's own MD loop (reporters, blow-up watch, wall-clock budget, summary);
    the record the report reads."""
    from mdplugin.md.simulate import RunFailed, output_paths, run_simulation

    paths = output_paths(options)
    try:
        summary = asdict(run_simulation(simulation, options, paths))
    except RunFailed:
        summary = json.loads(paths["summary"].read_text())
    return {
        "kind": Path(options.output).name,
        "requested_ps": options.steps * options.timestep_fs / 1000,
        "ran_ps": summary["simulated_ps"],
        "steps": summary["steps"],
        "timestep_fs": options.timestep_fs,
        "report_steps": options.report_interval,
        "wall_s": summary["wall_seconds"],
        "ms_per_step": 1000 * summary["wall_seconds"] / max(summary["steps"], 1),
        "stopped_by_wall_clock": summary["stopped_by_wall_clock"],
        "failed": summary["status"] == "failed",
        "failure": summary["failure"],
    }


def run_md(args: argparse.Namespace) -> None:
    """NPT (or NVT) then NVE from its last state, each `mdplugin run`'s MD loop on a System of the classical
    reference or of the model; each segment stops at its length or its wall-clock budget."""
    import torch
    from openmm import app

    from mdplugin.md.simulate import create_barostat, create_integrator, get_platform

    first = segment_options(args, "npt")
    platform, properties = get_platform(args.platform, first.precision)
    if platform.getName() == "CPU":
        properties["Threads"] = str(args.threads)
    torch.set_num_threads(args.threads)
    pdb = app.PDBFile(str(args.structure))
    system = water_system(args.potential, pdb.topology, platform)
    if first.ensemble == "npt":
        system.addForce(create_barostat(first))
    simulation = app.Simulation(pdb.topology, system, create_integrator(first), platform, properties)
    simulation.context.setPositions(pdb.positions)
    simulation.context.setVelocitiesToTemperature(first.temperature_k, first.seed)
    machine = report.machine_info()
    record = {
        "potential": args.potential,
        "potential_sha256": model_sha256(args.potential),
        "structure": str(args.structure),
        "atoms": system.getNumParticles(),
        "seed": args.seed,
        "barostat": not args.no_barostat,
        "platform": platform.getName(),
        "md": "mdplugin.md.simulate.run_simulation (the MD loop of mdplugin run)",
    }
    record["npt"] = run_segment(simulation, first)
    record["nve"] = {"kind": "nve", "requested_ps": args.nve_ps, "ran_ps": 0.0, "steps": 0, "failed": False,
                     "timestep_fs": args.nve_timestep_fs, "report_steps": args.nve_report_steps}  # fmt: skip
    if not record["npt"]["failed"] and args.nve_ps > 0:
        # NVE from the last state of the first segment: same box, positions and velocities
        state = simulation.context.getState(getPositions=True, getVelocities=True)
        second = segment_options(args, "nve")
        nve_system = water_system(args.potential, pdb.topology, platform)
        nve_system.setDefaultPeriodicBoxVectors(*state.getPeriodicBoxVectors())
        nve = app.Simulation(pdb.topology, nve_system, create_integrator(second), platform, properties)
        nve.context.setState(state)
        nve.context.setTime(0.0)  # the NVE segment's own clock, as its drift and plots read it
        record["nve"] = run_segment(nve, second)
    record["machine"] = report.finish(machine)
    (RUNS / args.name / "run.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "machine"}, indent=2, default=str))


def read_segment(path: Path) -> dict[str, np.ndarray]:
    """A segment's state data in the report's units (time_ps, potential/kinetic/total_eV, temperature_K,
    density_g_cm3), from mdplugin run's CSV or from the CSV of runs made before water.py used it."""
    from mdplugin.md.simulate import read_state_data

    with open(path) as handle:
        if handle.readline().startswith("time_ps"):
            return read_csv(path)
    data = read_state_data(path)
    if not data:
        return {}
    return {
        "time_ps": data["Time (ps)"],
        "potential_eV": data["Potential Energy (kJ/mole)"] * KJ_PER_MOL_IN_EV,
        "kinetic_eV": data["Kinetic Energy (kJ/mole)"] * KJ_PER_MOL_IN_EV,
        "total_eV": data["Total Energy (kJ/mole)"] * KJ_PER_MOL_IN_EV,
        "temperature_K": data["Temperature (K)"],
        "density_g_cm3": data["Density (g/mL)"],
    }


LAMMPS_INPUT = """# water with pair_style transformer (written by benchmarks/water.py)
units           metal
boundary        p p p
atom_style      atomic
read_data       {data}
mass            1 1.008
mass            2 15.999
pair_style      transformer threads 1
pair_coeff      * * {model} H O
velocity        all create 300.0 {seed} mom yes rot no dist gaussian
timestep        {timestep_ps}
fix             integrate all {ensemble}
thermo_style    custom step time temp pe ke etotal vol density press
thermo_modify   format float %.10g flush yes
thermo          {report_steps}
dump            trajectory all custom {report_steps} {dump} id type xu yu zu
dump_modify     trajectory sort id
run             {steps}
"""
LAMMPS_NPT = "npt temp 300.0 300.0 0.1 iso 1.0 1.0 1.0"
LAMMPS_NVT = "nvt temp 300.0 300.0 0.1"
# NVE from the last state of the first segment: its own thermo table and dump
LAMMPS_NVE = """undump          trajectory
unfix           integrate
reset_timestep  0
timestep        {timestep_ps}
thermo          {report_steps}
fix             integrate all nve
dump            trajectory all custom {report_steps} {dump} id type xu yu zu
dump_modify     trajectory sort id
run             {steps}
"""


def run_lammps(args: argparse.Namespace) -> None:
    """NPT (Nose-Hoover, 300 K, 1 bar), or NVT in the structure's box, of the box in LAMMPS with a model
    export, then optionally NVE; thermo and unwrapped dumps. One rank: the pair style's periodic path."""
    import subprocess

    import ase.io

    out = RUNS / args.name
    out.mkdir(parents=True, exist_ok=True)
    machine = report.machine_info()
    atoms = ase.io.read(args.structure)
    ase.io.write(out / "water.data", atoms, format="lammps-data", specorder=["H", "O"], atom_style="atomic")
    steps = int(round(1000 * args.npt_ps / args.npt_timestep_fs))
    nve_steps = int(round(1000 * args.nve_ps / args.nve_timestep_fs))
    text = LAMMPS_INPUT.format(
        data=(out / "water.data").resolve(), model=Path(args.model).resolve(), seed=args.seed,
        timestep_ps=args.npt_timestep_fs / 1000, report_steps=args.npt_report_steps, dump=(out / "npt.lammpstrj").resolve(),
        steps=steps, ensemble=LAMMPS_NVT if args.no_barostat else LAMMPS_NPT,
    )  # fmt: skip
    if nve_steps:
        text += LAMMPS_NVE.format(
            timestep_ps=args.nve_timestep_fs / 1000, report_steps=args.nve_report_steps,
            dump=(out / "nve.lammpstrj").resolve(), steps=nve_steps,
        )  # fmt: skip
    (out / "in.water").write_text(text)
    started = time.time()
    mdplugin, log = str(ROOT / ".venv" / "bin" / "mdplugin"), str(out / "log.lammps")
    command = [mdplugin, "lammps", "run", str(out / "in.water"), "--", "-log", log]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=60 * args.minutes, cwd=out)
        returncode, stdout, stderr, stopped = completed.returncode, completed.stdout, completed.stderr, False
    except subprocess.TimeoutExpired as expired:  # stopped by the clock: keep what it wrote
        returncode, stdout, stderr, stopped = None, _text(expired.stdout), _text(expired.stderr), True
    seconds = time.time() - started
    ok = returncode == 0
    # simulated time from the log (thermo is flushed at every report), for a finished or a stopped run
    tables = lammps_thermo(out / "log.lammps") if (out / "log.lammps").is_file() else []
    ran = [float(table["Time"][-1]) if len(table["Time"]) else 0.0 for table in tables] + [0.0, 0.0]
    npt_ran, nve_ran = ran[0], ran[1] if nve_steps else 0.0
    total_ps = max(npt_ran + nve_ran, 1e-9)
    segment = {
        "kind": "nvt" if args.no_barostat else "npt",
        "thermostat": "Nose-Hoover " + ("nvt, Tdamp 0.1 ps" if args.no_barostat else "npt, Tdamp 0.1 ps, Pdamp 1 ps"),
        "requested_ps": args.npt_ps, "timestep_fs": args.npt_timestep_fs, "report_steps": args.npt_report_steps,
        "failed": not (ok or stopped), "stopped_by_clock": stopped, "ran_ps": npt_ran,
        "steps": int(round(1000 * npt_ran / args.npt_timestep_fs)),
        # wall time shared by the segments in proportion to their simulated time (one process runs both)
        "ms_per_step": 1000 * seconds * npt_ran / total_ps / max(1, round(1000 * npt_ran / args.npt_timestep_fs)),
        "wall_s": seconds * npt_ran / total_ps,
    }  # fmt: skip
    record = {
        "engine": "lammps",
        "potential": args.model,
        "potential_sha256": model_sha256(args.model),
        "structure": str(args.structure),
        "atoms": len(atoms),
        "seed": args.seed,
        "barostat": not args.no_barostat,
        "npt": segment,
        "nve": {
            "kind": "nve",
            "requested_ps": args.nve_ps,
            "timestep_fs": args.nve_timestep_fs,
            "report_steps": args.nve_report_steps,
            "failed": not (ok or stopped),
            "stopped_by_clock": stopped,
            "ran_ps": nve_ran,
            "steps": int(round(1000 * nve_ran / args.nve_timestep_fs)),
        },  # fmt: skip
        "wall_s": seconds,
        "returncode": returncode,
        "stderr_tail": stderr[-2000:],
        "machine": report.finish(machine),
    }
    (out / "run.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(stdout[-3000:], stderr[-2000:])


def _text(output: bytes | str | None) -> str:
    """A TimeoutExpired's output, which is bytes even when the run asked for text."""
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def lammps_thermo(path: Path) -> list[dict[str, np.ndarray]]:
    """The thermo tables of a LAMMPS log, one per `run`."""
    lines = path.read_text().splitlines()
    tables = []
    for start in (i for i, line in enumerate(lines) if line.split()[:2] == ["Step", "Time"]):
        header = lines[start].split()
        rows = []
        for line in lines[start + 1 :]:
            parts = line.split()
            if len(parts) != len(header):
                break
            try:
                rows.append([float(p) for p in parts])
            except ValueError:
                break
        table = np.array(rows).reshape(-1, len(header))
        tables.append({name: table[:, i] for i, name in enumerate(header)})
    return tables


def lammps_trajectory(name: str, kind: str, structure: str):
    """A LAMMPS dump (unwrapped positions, sorted by id) as an mdtraj trajectory on the PDB's topology."""
    import ase.io
    import mdtraj

    frames = ase.io.read(RUNS / name / f"{kind}.lammpstrj", ":", format="lammps-dump-text")
    pdb = mdtraj.load(structure)
    # LAMMPS sorts types H=1, O=2 and the dump by id: ids follow the data file, which follows the PDB order
    xyz = np.array([f.positions for f in frames]) / 10
    cells = np.array([f.cell.lengths() for f in frames]) / 10
    return mdtraj.Trajectory(xyz, pdb.topology, unitcell_lengths=cells, unitcell_angles=np.full_like(cells, 90.0))


def analyze_lammps(name: str) -> dict:
    record = json.loads((RUNS / name / "run.json").read_text())
    tables = lammps_thermo(RUNS / name / "log.lammps")
    thermo = tables[0]
    time_ps = thermo["Time"]
    keep = time_ps > 0.2 * time_ps[-1]
    frames = lammps_trajectory(name, "npt", record["structure"])
    first = int(0.2 * len(frames))
    g = rdfs(frames[first:])
    for segment, table in zip(("npt", "nve"), tables):
        if float(table["Temp"].max()) > 1000:  # LAMMPS carries on through a blow-up; call it what it is
            record[segment]["failed"] = True
            record[segment]["failure"] = f"temperature reached {table['Temp'].max():.0f} K"
    frame_ps = record["npt"]["report_steps"] * record["npt"]["timestep_fs"] / 1000
    result = {
        "name": name,
        "engine": "lammps",
        "potential": record["potential"],
        "atoms": record["atoms"],
        "run": record,
        "density_g_cm3": float(thermo["Density"][keep].mean()),
        "density_standard_error": block_error(thermo["Density"][keep]),
        "density_first_last_fifth_g_cm3": [
            float(thermo["Density"][: max(1, len(time_ps) // 5)].mean()),
            float(thermo["Density"][-max(1, len(time_ps) // 5) :].mean()),
        ],
        "temperature_K": float(thermo["Temp"][keep].mean()),
        "rdf": {key: value.tolist() for key, value in g.items()},
        "time_ps": time_ps.tolist(),
        "density_trace": thermo["Density"].tolist(),
        "closest_hydrogens": closest_hydrogens(frames, frame_ps),
        "diffusion_npt": diffusion(frames, frame_ps),
    }
    if len(tables) > 1 and record.get("nve", {}).get("steps"):
        nve = tables[1]
        slope = np.polyfit(nve["Time"], nve["TotEng"], 1)[0]
        result["nve_drift_meV_per_atom_per_ps"] = float(1000 * slope / record["atoms"])
        result["nve_total_energy_std_meV_per_atom"] = float(1000 * nve["TotEng"].std() / record["atoms"])
        result["nve_temperature_K"] = float(nve["Temp"].mean())
        result["nve_time_ps"] = nve["Time"].tolist()
        result["nve_total_eV"] = nve["TotEng"].tolist()
        nve_frames = lammps_trajectory(name, "nve", record["structure"])
        nve_frame_ps = record["nve"]["report_steps"] * record["nve"]["timestep_fs"] / 1000
        result["diffusion_nve"] = diffusion(nve_frames, nve_frame_ps, skip_fraction=0.0)
        result["closest_hydrogens_nve"] = closest_hydrogens(nve_frames, nve_frame_ps)
    return result


# ---------------------------------------------------------------------------- test errors


def evaluate_model(args: argparse.Namespace) -> None:
    """Energy (meV/atom), force (meV/Å) and stress (meV/Å^3) MAEs of a model on a periodic test file."""
    import ase.io
    import torch

    from mdplugin.engines.ase_calculator import TransformerCalculator

    torch.set_num_threads(args.threads)
    frames = ase.io.read(args.test_file, ":")
    calculator = TransformerCalculator(args.model)
    energy, forces, stress, label_forces, label_stress, pressure = [], [], [], [], [], []
    molecular = []
    for atoms in frames:
        reference = (atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress())
        label_forces.append(np.abs(reference[1]).ravel())
        label_stress.append(np.abs(reference[2]))
        atoms.calc = calculator
        energy.append(abs(atoms.get_potential_energy() - reference[0]) / len(atoms))
        forces.append(np.abs(atoms.get_forces() - reference[1]).ravel())
        stress.append(np.abs(atoms.get_stress() - reference[2]))
        pressure.append(abs(atoms.get_stress()[:3].mean() - reference[2][:3].mean()))  # P = -trace/3
        molecular.append(molecular_errors(atoms, atoms.get_forces(), reference[1]))
    forces_all, stress_all = np.concatenate(forces), np.concatenate(stress)
    result = {
        "model": str(args.model),
        "test_file": str(args.test_file),
        "frames": len(frames),
        "atoms_per_frame": len(frames[0]),
        "energy_mae_meV_per_atom": 1000 * float(np.mean(energy)),
        "force_mae_meV_per_A": 1000 * float(forces_all.mean()),
        "stress_mae_meV_per_A3": 1000 * float(stress_all.mean()),
        "stress_mae_GPa": GPA_PER_EV_PER_CUBIC_ANGSTROM * float(stress_all.mean()),
        "pressure_mae_GPa": GPA_PER_EV_PER_CUBIC_ANGSTROM * float(np.mean(pressure)),
        # the errors of predicting zero: what the MAEs compare with
        "force_labels_mean_abs_meV_per_A": 1000 * float(np.concatenate(label_forces).mean()),
        "stress_labels_mean_abs_meV_per_A3": 1000 * float(np.concatenate(label_stress).mean()),
        # what moves whole molecules (diffusion, structure): the force on each water's centre of mass
        # and the torque about it, against the labels' own mean magnitudes
        **{key: float(np.mean([m[key] for m in molecular])) for key in molecular[0]},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"evaluate-{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def molecular_errors(atoms, forces: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Centre-of-mass force (meV/Å) and torque (meV) MAEs per water, with the labels' mean magnitudes.

    Waters are consecutive O, H, H triples (as `mdplugin data water` writes them), made whole by the
    minimum image (`water_dipole.whole_waters`)."""
    from benchmarks.water_dipole import whole_waters

    offsets = whole_waters(atoms)
    masses = atoms.get_masses().reshape(-1, 3, 1)
    arms = offsets - (masses * offsets).sum(1, keepdims=True) / masses.sum(1, keepdims=True)

    def split(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        values = values.reshape(-1, 3, 3)
        return values.sum(1), np.cross(arms, values).sum(1)

    (force, torque), (force_label, torque_label) = split(forces), split(reference)
    return {
        "molecule_force_mae_meV_per_A": 1000 * float(np.abs(force - force_label).mean()),
        "molecule_force_labels_mean_abs_meV_per_A": 1000 * float(np.abs(force_label).mean()),
        "molecule_torque_mae_meV": 1000 * float(np.abs(torque - torque_label).mean()),
        "molecule_torque_labels_mean_abs_meV": 1000 * float(np.abs(torque_label).mean()),
    }


# ---------------------------------------------------------------------------- analysis


def read_csv(path: Path) -> dict[str, np.ndarray]:
    with open(path) as handle:
        rows = list(csv.DictReader(handle))
    return {key: np.array([float(row[key]) for row in rows]) for key in rows[0]} if rows else {}


def block_error(values: np.ndarray, blocks: int = 4) -> float:
    """Standard error of the mean from `blocks` block averages."""
    if len(values) < blocks:
        return float("nan")
    means = [part.mean() for part in np.array_split(values, blocks)]
    return float(np.std(means, ddof=1) / np.sqrt(blocks))


def load_trajectory(name: str, kind: str):
    import mdtraj

    structure = json.loads((RUNS / name / "run.json").read_text())["structure"]
    return mdtraj.load_dcd(str(RUNS / name / f"{kind}.dcd"), top=structure)


def rdfs(trajectory, r_max_nm: float = 0.6, bins: int = 120) -> dict[str, np.ndarray]:
    """g_OO(r) and intermolecular g_OH(r) (r in Å)."""
    import mdtraj

    topology = trajectory.topology
    oxygens = topology.select("element O")
    hydrogens = topology.select("element H")
    residue = np.array([atom.residue.index for atom in topology.atoms])
    oo = np.array([(a, b) for i, a in enumerate(oxygens) for b in oxygens[i + 1 :]])
    oh = np.array([(a, b) for a in oxygens for b in hydrogens if residue[a] != residue[b]])
    r, g_oo = mdtraj.compute_rdf(trajectory, oo, r_range=(0, r_max_nm), n_bins=bins)
    _, g_oh = mdtraj.compute_rdf(trajectory, oh, r_range=(0, r_max_nm), n_bins=bins)
    return {"r_A": 10 * r, "g_OO": g_oo, "g_OH": g_oh}


def integrated_difference(r: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """∫ |a - b| dr over the grid (Å)."""
    return float(np.sum(np.abs(a - b)) * (r[1] - r[0]))


def diffusion(
    trajectory, frame_ps: float, skip_fraction: float = 0.2, blocks: int = 2, longest_lag_ps: float = 10.0
) -> dict:
    """Self-diffusion coefficient of oxygen (1e-5 cm^2/s) from the slope of the MSD between 1 ps (or a fifth
    of the longest lag) and the longest lag, averaged over time origins; the error from `blocks` blocks.

    The longest lag is half the window, at most `longest_lag_ps`: the same lags for every window of 20 ps
    or more, so that a 100 ps reference and a 25 ps model run are measured alike (lags near half of a
    long window have few independent origins and pulled the estimate down)."""
    oxygens = trajectory.topology.select("element O")
    positions = 10 * trajectory.xyz[:, oxygens]  # Å, unwrapped (the DCD holds unwrapped positions)
    positions = positions[int(skip_fraction * len(positions)) :]
    # remove the drift of the oxygens' centre (the whole box's centre of mass is fixed; this is the solvent frame)
    positions = positions - positions.mean(axis=1, keepdims=True)

    def slope(window: np.ndarray) -> float:
        frames = len(window)
        lags = np.arange(1, min(frames // 2, int(round(longest_lag_ps / frame_ps)) + 1))
        msd = np.array([np.mean(np.sum((window[lag:] - window[:-lag]) ** 2, axis=-1)) for lag in lags])
        times = lags * frame_ps
        fit = times >= min(1.0, times[-1] / 5)
        return float(np.polyfit(times[fit], msd[fit], 1)[0])  # Å^2/ps

    to_units = 1e-4 / 6 / 1e-5  # Å^2/ps -> cm^2/s is 1e-4; /6 in 3D; in units of 1e-5 cm^2/s
    whole = slope(positions) * to_units
    parts = (
        [slope(part) * to_units for part in np.array_split(positions, blocks)] if len(positions) >= 40 * blocks else []
    )
    error = float(np.std(parts, ddof=1) / np.sqrt(len(parts))) if len(parts) > 1 else float("nan")
    return {
        "D_1e-5_cm2_s": whole,
        "standard_error": error,
        "block_values": parts,
        "window_ps": len(positions) * frame_ps,
    }


def closest_hydrogens(trajectory, frame_ps: float) -> dict:
    """The closest approach of two hydrogens (Å) per frame, within a molecule (the H-O-H angle) or between
    two: in the training data it stays above ~1.3 Å; a model without short-range repulsion can let it
    collapse (the angle closes, H2 forms)."""
    import mdtraj

    topology = trajectory.topology
    hydrogens = topology.select("element H")
    pairs = np.array([(a, b) for i, a in enumerate(hydrogens) for b in hydrogens[i + 1 :]])
    closest = 10 * mdtraj.compute_distances(trajectory, pairs, periodic=True).min(axis=1)
    below = np.nonzero(closest < 1.0)[0]
    return {
        "closest_A_first_last": [float(closest[0]), float(closest[-1])],
        "closest_A_min": float(closest.min()),
        "first_time_below_1A_ps": float((below[0] + 1) * frame_ps) if len(below) else None,
    }


def analyze_run(name: str) -> dict:
    record = json.loads((RUNS / name / "run.json").read_text())
    npt = read_segment(RUNS / name / "npt.csv")
    result: dict = {"name": name, "potential": record["potential"], "atoms": record["atoms"], "run": record}
    frame_ps = record["npt"]["report_steps"] * record["npt"]["timestep_fs"] / 1000
    if record["npt"]["failed"]:
        # analyse the stretch before the blow-up only (temperature below 1000 K); not an equilibrium average
        sane = npt["temperature_K"] < 1000
        end = int(np.argmin(sane)) if not sane.all() else len(sane)
        npt = {key: value[:end] for key, value in npt.items()}
        result["analysed_before_failure_ps"] = float(npt["time_ps"][-1]) if end else 0.0
        record = {**record, "npt": {**record["npt"], "ran_ps": result["analysed_before_failure_ps"]}}
    ran = record["npt"]["ran_ps"]
    skip = npt["time_ps"] > 0.2 * ran  # the first fifth equilibrates
    result["density_g_cm3"] = float(npt["density_g_cm3"][skip].mean())
    result["density_standard_error"] = block_error(npt["density_g_cm3"][skip])
    result["temperature_K"] = float(npt["temperature_K"][skip].mean())
    fifth = max(1, len(npt["density_g_cm3"]) // 5)  # a drifting density shows in its first and last fifths
    result["density_first_last_fifth_g_cm3"] = [
        float(npt["density_g_cm3"][:fifth].mean()),
        float(npt["density_g_cm3"][-fifth:].mean()),
    ]
    trajectory = load_trajectory(name, "npt")[: len(npt["time_ps"])]
    result["closest_hydrogens"] = closest_hydrogens(trajectory, frame_ps)
    first = int(0.2 * len(trajectory))
    g = rdfs(trajectory[first:])
    half = first + (len(trajectory) - first) // 2
    g1, g2 = rdfs(trajectory[first:half]), rdfs(trajectory[half:])
    result["rdf"] = {key: value.tolist() for key, value in g.items()}
    result["rdf_halves_difference"] = {
        key: integrated_difference(g["r_A"], g1[key], g2[key]) for key in ("g_OO", "g_OH")
    }
    result["diffusion_npt"] = diffusion(trajectory, frame_ps)
    if record.get("nve", {}).get("steps"):
        nve = read_segment(RUNS / name / "nve.csv")
        time_ps, total = nve["time_ps"], nve["total_eV"]
        slope = np.polyfit(time_ps, total, 1)[0] if len(time_ps) > 2 else float("nan")
        result["nve_drift_meV_per_atom_per_ps"] = float(1000 * slope / record["atoms"])
        result["nve_total_energy_std_meV_per_atom"] = float(1000 * total.std() / record["atoms"])
        result["nve_temperature_K"] = float(nve["temperature_K"].mean())
        nve_trajectory = load_trajectory(name, "nve")
        if len(nve_trajectory) >= 40:
            nve_frame = record["nve"]["report_steps"] * record["nve"]["timestep_fs"] / 1000
            result["diffusion_nve"] = diffusion(nve_trajectory, nve_frame, skip_fraction=0.0)
    return result


def analyze(name: str) -> dict:
    """analyze_run or analyze_lammps, by the engine its run.json records."""
    record = json.loads((RUNS / name / "run.json").read_text())
    return analyze_lammps(name) if record.get("engine") == "lammps" else analyze_run(name)


def density_trace(run: dict) -> tuple[np.ndarray, np.ndarray]:
    """Time (ps) and density (g/cm³) of a run's first segment, either engine."""
    if run.get("engine") == "lammps":
        return np.array(run["time_ps"]), np.array(run["density_trace"])
    npt = read_segment(RUNS / run["name"] / "npt.csv")
    return npt["time_ps"], npt["density_g_cm3"]


def nve_trace(run: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """Time (ps) and total energy (eV) of a run's NVE segment, either engine; None without one."""
    if run.get("engine") == "lammps":
        return (np.array(run["nve_time_ps"]), np.array(run["nve_total_eV"])) if "nve_time_ps" in run else None
    if not run["run"]["nve"]["steps"] or not (RUNS / run["name"] / "nve.csv").exists():
        return None
    nve = read_segment(RUNS / run["name"] / "nve.csv")
    return nve["time_ps"], nve["total_eV"]


def _atoms_in_dcd(name: str) -> int:
    import mdtraj

    with mdtraj.formats.DCDTrajectoryFile(str(RUNS / name / "npt.dcd")) as handle:
        return handle.read(n_frames=1)[0].shape[1]


def write_report(args: argparse.Namespace) -> None:
    """Compare the model run with the reference run; add the xTB model's NPT run and the test errors."""
    machine = report.machine_info()
    reference, model = analyze_run(args.reference), analyze_run(args.model)
    npt_reference = analyze_run(args.npt_reference) if args.npt_reference else None
    npt_models = [analyze(name) for name in args.npt_models]
    comparison = {
        "density_relative_difference": model["density_g_cm3"] / reference["density_g_cm3"] - 1,
        "density_target": 0.02,
        "diffusion_npt_relative_difference": model["diffusion_npt"]["D_1e-5_cm2_s"]
        / reference["diffusion_npt"]["D_1e-5_cm2_s"]
        - 1,
        "diffusion_target": 0.20,
        "g_OO_integrated_abs_difference_A": integrated_difference(
            np.array(reference["rdf"]["r_A"]), np.array(reference["rdf"]["g_OO"]), np.array(model["rdf"]["g_OO"])
        ),
        "g_OH_integrated_abs_difference_A": integrated_difference(
            np.array(reference["rdf"]["r_A"]), np.array(reference["rdf"]["g_OH"]), np.array(model["rdf"]["g_OH"])
        ),
    }
    xtb = analyze(args.xtb) if args.xtb and (RUNS / args.xtb / "run.json").exists() else None
    nve_reference = analyze_run(args.nve_reference) if args.nve_reference else reference
    # a D from a few picoseconds of NVE says little: shorter model segments are listed, not compared
    if "diffusion_nve" in model and "diffusion_nve" in nve_reference and model["run"]["nve"]["ran_ps"] >= 10:
        comparison["diffusion_nve_relative_difference"] = (
            model["diffusion_nve"]["D_1e-5_cm2_s"] / nve_reference["diffusion_nve"]["D_1e-5_cm2_s"] - 1
        )
    lammps_runs = [analyze_lammps(name) for name in args.lammps]
    for run in lammps_runs:
        if run["run"].get("barostat", True):
            density_reference = npt_reference or reference
            run["density_relative_difference"] = run["density_g_cm3"] / density_reference["density_g_cm3"] - 1
        for key in ("g_OO", "g_OH"):
            run[key + "_integrated_abs_difference_A"] = integrated_difference(
                np.array(reference["rdf"]["r_A"]), np.array(reference["rdf"][key]), np.array(run["rdf"][key])
            )
        if "diffusion_nve" in run and "diffusion_nve" in nve_reference:
            run["diffusion_nve_relative_difference"] = (
                run["diffusion_nve"]["D_1e-5_cm2_s"] / nve_reference["diffusion_nve"]["D_1e-5_cm2_s"] - 1
            )
    stopped = {}
    for name in args.stopped:  # runs stopped by hand (no run.json): what their state data show
        npt = read_segment(RUNS / name / "npt.csv")
        stopped[name] = {
            "ran_ps": float(npt["time_ps"][-1]),
            "density_first_last_g_cm3": [float(npt["density_g_cm3"][0]), float(npt["density_g_cm3"][-1])],
            "temperature_K": float(npt["temperature_K"].mean()),
        }
        import mdtraj

        for structure in (START, START.with_name("water32.pdb")):
            topology = mdtraj.load(str(structure)).topology
            trajectory = (
                mdtraj.load_dcd(str(RUNS / name / "npt.dcd"), top=topology)
                if _atoms_in_dcd(name) == topology.n_atoms
                else None
            )
            if trajectory is not None:
                frame_ps = float(npt["time_ps"][0])
                stopped[name]["closest_hydrogens"] = closest_hydrogens(trajectory, frame_ps)
                stopped[name]["structure"] = str(structure)
                break
    nve_models = [analyze_run(name) for name in args.nve_models]
    for run in nve_models:
        if "diffusion_nve" in run and "diffusion_nve" in nve_reference:
            run["diffusion_nve_relative_difference"] = (
                run["diffusion_nve"]["D_1e-5_cm2_s"] / nve_reference["diffusion_nve"]["D_1e-5_cm2_s"] - 1
            )
    pooled = pooled_densities(npt_models + [run for run in lammps_runs if run["run"].get("barostat", True)])
    evaluations = {
        path.stem.removeprefix("evaluate-"): json.loads(path.read_text())
        for path in sorted(RESULTS.glob("evaluate-*.json"))
    }
    results = {
        "reference": reference,
        "model": model,
        "comparison": comparison,
        "xtb_model": xtb,
        "lammps": lammps_runs,
        "nve_reference": nve_reference if args.nve_reference else None,
        "npt_reference": npt_reference,
        "npt_models": npt_models,
        "pooled_densities": pooled,
        "nve_models": nve_models,
        "stopped_runs": stopped,
        "test_errors": evaluations,
        "machine": report.finish(machine),
        "note": args.note,
    }
    report.write_json(results, RESULTS / "water.json")
    plot(reference, model, xtb, lammps_runs, list(stopped))
    (RESULTS / "water.md").write_text(markdown(results))
    print((RESULTS / "water.md").read_text())


def model_sha256(potential: str) -> str | None:
    """The model file's sha256 (None for the classical reference), recorded with each run."""
    from mdplugin.hashing import file_sha256

    return file_sha256(potential) if Path(potential).is_file() else None


def pooled_densities(runs: list[dict]) -> list[dict]:
    """NPT densities pooled over the runs of one model file (the same bytes, wherever it lay), per engine
    and for both: the mean of the run means and its standard error (the runs are independent; within a
    run, frames are not). Failed runs are left out. The model is the sha256 the run recorded; runs from
    before that record are hashed by their file as it is now, and left out when it is gone."""
    groups: dict[str, list[dict]] = {}
    for run in runs:
        digest = run["run"].get("potential_sha256") or model_sha256(run["potential"])
        if "analysed_before_failure_ps" in run or digest is None:
            continue
        groups.setdefault(digest[:12], []).append(run)
    pooled = []
    for digest, members in groups.items():
        for engine in ("openmm", "lammps", "both"):
            chosen = [r for r in members if engine == "both" or (r.get("engine") == "lammps") == (engine == "lammps")]
            if len(chosen) < 2:
                continue
            means = np.array([r["density_g_cm3"] for r in chosen])
            pooled.append(
                {
                    "model_sha256": digest,
                    "potential": chosen[0]["potential"],
                    "engine": engine,
                    "runs": [r["name"] for r in chosen],
                    "total_ps": float(sum(r["run"]["npt"]["ran_ps"] for r in chosen)),
                    "density_g_cm3": float(means.mean()),
                    "standard_error": float(means.std(ddof=1) / np.sqrt(len(means))),
                }
            )
    return pooled


def plot(reference: dict, model: dict, xtb: dict | None, lammps: list[dict], stopped: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [(reference, "k", "-"), (model, "C0", "--")] + ([(xtb, "C3", ":")] if xtb else [])
    runs += [(run, f"C{2 + 2 * i}", "-.") for i, run in enumerate(lammps)]

    def label(run: dict) -> str:
        return run["name"] + (" (LAMMPS)" if run.get("engine") == "lammps" else "")

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, key in zip(axes, ("g_OO", "g_OH")):
        for run, color, style in runs:
            axis.plot(run["rdf"]["r_A"], run["rdf"][key], color=color, ls=style, label=label(run))
        axis.set_xlabel("r (Å)")
        axis.set_ylabel(key.replace("_", "$_{") + "}$(r)")
        axis.legend()
    figure.tight_layout()
    figure.savefig(RESULTS / "rdf.png", dpi=110)
    plt.close(figure)
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for run, color, _ in runs:
        axes[0].plot(*density_trace(run), color=color, lw=0.8, label=label(run))
        trace = nve_trace(run)
        if trace is not None:
            time_ps, total = trace
            axes[1].plot(
                time_ps, 1000 * (total - total[0]) / run["run"]["atoms"], color=color, lw=0.8, label=label(run)
            )
    for name in stopped:
        npt = read_segment(RUNS / name / "npt.csv")
        axes[0].plot(npt["time_ps"], npt["density_g_cm3"], color="0.6", lw=0.8, label=name + " (stopped)")
    axes[0].set_xlabel("first segment: time (ps)")
    axes[0].set_ylabel("density (g/cm³)")
    axes[1].set_xlabel("NVE time (ps)")
    axes[1].set_ylabel("total energy − E(0) (meV/atom)")
    for axis in axes:
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(RESULTS / "traces.png", dpi=110)
    plt.close(figure)


def _below(time_ps: float | None) -> str:
    return "never" if time_ps is None else f"{time_ps:.2f} ps"


def markdown(results: dict) -> str:
    reference, model, comparison, xtb = (
        results["reference"],
        results["model"],
        results["comparison"],
        results["xtb_model"],
    )

    def met(value: float, target: float) -> str:
        return "yes" if abs(value) <= target else "no"

    def length(run: dict) -> str:
        npt, nve = run["run"]["npt"], run["run"]["nve"]
        first = "NPT" if run["run"].get("barostat", True) else "NVT"
        return f"{first} {npt['ran_ps']:.1f} ps ({npt['timestep_fs']:g} fs), NVE {nve['ran_ps']:.1f} ps ({nve['timestep_fs']:g} fs)"

    nvt = not model["run"].get("barostat", True)
    rows = [
        [
            "density at 300 K, 1 bar (g/cm³)" + (" [both NVT here: fixed]" if nvt else ""),
            f"{reference['density_g_cm3']:.4f} ± {reference['density_standard_error']:.4f}",
            f"{model['density_g_cm3']:.4f} ± {model['density_standard_error']:.4f}",
            f"{100 * comparison['density_relative_difference']:+.2f} %",
            "within 2 %" if not nvt else "–",
            met(comparison["density_relative_difference"], 0.02) if not nvt else "–",
        ],
        [
            "D, " + ("NVT" if nvt else "NPT") + "/Langevin (1e-5 cm²/s)",
            f"{reference['diffusion_npt']['D_1e-5_cm2_s']:.2f} ± {reference['diffusion_npt']['standard_error']:.2f}",
            f"{model['diffusion_npt']['D_1e-5_cm2_s']:.2f} ± {model['diffusion_npt']['standard_error']:.2f}",
            f"{100 * comparison['diffusion_npt_relative_difference']:+.1f} %",
            "within 20 %",
            met(comparison["diffusion_npt_relative_difference"], 0.2),
        ],
    ]
    if "diffusion_nve_relative_difference" in comparison:
        nve_reference = results.get("nve_reference") or reference
        rows.append(
            [
                f"D, NVE (1e-5 cm²/s; {nve_reference['name']} at {nve_reference['nve_temperature_K']:.0f} K, model at "
                f"{model['nve_temperature_K']:.0f} K)",
                f"{nve_reference['diffusion_nve']['D_1e-5_cm2_s']:.2f} ± {nve_reference['diffusion_nve']['standard_error']:.2f}",
                f"{model['diffusion_nve']['D_1e-5_cm2_s']:.2f} ± {model['diffusion_nve']['standard_error']:.2f}",
                f"{100 * comparison['diffusion_nve_relative_difference']:+.1f} %",
                "within 20 %",
                met(comparison["diffusion_nve_relative_difference"], 0.2),
            ]
        )
    for key in ("g_OO", "g_OH"):
        rows.append(
            [
                f"∫ abs(Δ{key}) dr, 0–6 Å (Å)",
                f"noise floor {reference['rdf_halves_difference'][key]:.3f} (halves of the reference)",
                f"model halves {model['rdf_halves_difference'][key]:.3f}",
                f"{comparison[key + '_integrated_abs_difference_A']:.3f}",
                "–",
                "–",
            ]
        )
    rows.append(
        [
            "mean temperature, segment 1 / NVE (K)",
            f"{reference['temperature_K']:.0f} / {reference.get('nve_temperature_K', float('nan')):.0f}",
            f"{model['temperature_K']:.0f} / {model.get('nve_temperature_K', float('nan')):.0f}",
            "–",
            "300 (thermostat)",
            "–",
        ]
    )
    rows.append(
        [
            "NVE drift (meV/atom/ps)",
            report.number(reference.get("nve_drift_meV_per_atom_per_ps")),
            report.number(model.get("nve_drift_meV_per_atom_per_ps")),
            "–",
            "–",
            "–",
        ]
    )
    lines = [
        "# Liquid water: local model MD against its reference potential's MD",
        "",
        "Reference: SPC/Fw (PME, real-space cutoff 5.5 Å, Lennard-Jones switched from 4.5 Å, no dispersion correction), "
        f"the potential the model was trained on. {reference['atoms'] // 3} waters, OpenMM CPU platform, one thread. "
        "Generated by `python benchmarks/water.py report`; the runs by `python benchmarks/water.py md` (commands in the JSON).",
        "",
        f"Reference run ({reference['potential']}): {length(reference)}. Model run ({model['potential']}): {length(model)}.",
        "Averages leave out the first fifth of each NPT run; ± is one standard error (block averages).",
        ""
        if "analysed_before_failure_ps" not in model
        else f"**The model run failed** (blew up: temperature above 1000 K after {model['run']['npt']['steps'] * model['run']['npt']['timestep_fs'] / 1000:.2f} ps); "
        f"its numbers below come from the {model['analysed_before_failure_ps']:.2f} ps before that: a window, not an equilibrium average, so no "
        "target is met.",
        "",
        report.markdown_table(["observable", "reference", "model", "difference", "target", "met"], rows),
        "",
        "![g(r)](rdf.png) ![traces](traces.png)",
        "",
    ]
    npt_reference = results.get("npt_reference")
    if npt_reference is not None:
        lines += [
            "## Density in NPT (300 K, 1 bar)",
            "",
            f"Reference {npt_reference['name']}: {npt_reference['density_g_cm3']:.4f} ± "
            f"{npt_reference['density_standard_error']:.4f} g/cm³ ({length(npt_reference)}).",
            "",
        ]
        for run in results.get("npt_models", []):
            difference = run["density_g_cm3"] / npt_reference["density_g_cm3"] - 1
            lines += [
                f"Model run {run['name']} ({run['potential']}, {length(run)}"
                + (
                    f", failed after {run['run']['npt']['steps'] * run['run']['npt']['timestep_fs'] / 1000:.2f} ps"
                    if "analysed_before_failure_ps" in run
                    else ""
                )
                + f"): {run['density_g_cm3']:.4f} ± {run['density_standard_error']:.4f} g/cm³, {100 * difference:+.1f} % "
                f"(target within 2 %: {met(difference, 0.02)}); first and last fifth "
                f"{run['density_first_last_fifth_g_cm3'][0]:.3f} -> {run['density_first_last_fifth_g_cm3'][1]:.3f}.",
                "",
            ]
        for pool in results.get("pooled_densities", []):
            difference = pool["density_g_cm3"] / npt_reference["density_g_cm3"] - 1
            engine = {"openmm": "OpenMM", "lammps": "LAMMPS", "both": "OpenMM and LAMMPS"}[pool["engine"]]
            lines += [
                f"**Pooled, {engine}**, {len(pool['runs'])} runs of {pool['potential']} (sha256 {pool['model_sha256']}, "
                f"{pool['total_ps']:.0f} ps; {', '.join(pool['runs'])}): {pool['density_g_cm3']:.4f} ± "
                f"{pool['standard_error']:.4f} g/cm³ (standard error of the run means), {100 * difference:+.1f} % "
                f"(target within 2 %: {met(difference, 0.02)}).",
                "",
            ]
    if xtb is not None:
        lines += [
            "## GFN1-xTB water model",
            "",
            f"{xtb['potential']} ({'LAMMPS' if xtb.get('engine') == 'lammps' else 'OpenMM'}, {xtb['run']['atoms'] // 3} waters): "
            f"{length(xtb)}, failed: {xtb['run']['npt']['failed'] or xtb['run']['nve'].get('failed', False)}. "
            f"Density {xtb['density_g_cm3']:.4f} ± {xtb['density_standard_error']:.4f} g/cm³ at {xtb['temperature_K']:.0f} K "
            f"(no xTB MD to compare with: GFN1-xTB MD of this box is too slow here). "
            f"D (first segment, {'Nose-Hoover' if xtb.get('engine') == 'lammps' else 'Langevin'}) "
            f"{xtb['diffusion_npt']['D_1e-5_cm2_s']:.2f} ± {xtb['diffusion_npt']['standard_error']:.2f} × 1e-5 cm²/s. "
            f"Density in the first and last fifth: {xtb['density_first_last_fifth_g_cm3'][0]:.3f} -> "
            f"{xtb['density_first_last_fifth_g_cm3'][1]:.3f}; closest H–H {xtb['closest_hydrogens']['closest_A_min']:.2f} Å. "
            f"NVE drift {report.number(xtb.get('nve_drift_meV_per_atom_per_ps'))} meV/atom/ps. g(r) in rdf.png.",
            "",
        ]
    lines += [
        "Density in the first and last fifth of each NPT run (g/cm³): "
        + "; ".join(
            f"{run['name']} {run['density_first_last_fifth_g_cm3'][0]:.3f} -> {run['density_first_last_fifth_g_cm3'][1]:.3f}"
            for run in (reference, model) + ((xtb,) if xtb else ())
        )
        + ". Closest approach of any two hydrogens (Å; above ~1.3 in the training data), first / last "
        + "analysed frame, and when it first fell below 1 Å: "
        + "; ".join(
            f"{run['name']} {run['closest_hydrogens']['closest_A_first_last'][0]:.2f} / "
            f"{run['closest_hydrogens']['closest_A_first_last'][1]:.2f}, "
            + _below(run["closest_hydrogens"]["first_time_below_1A_ps"])
            for run in (reference, model) + ((xtb,) if xtb else ())
        )
        + ". Cost per step: "
        + "; ".join(
            f"{run['name']} NPT {run['run']['npt']['ms_per_step']:.0f} ms"
            for run in (reference, model) + ((xtb,) if xtb else ())
        )
        + ".",
        "",
    ]
    if results.get("nve_models"):
        nve_reference = results.get("nve_reference") or reference
        lines += [
            "## OpenMM NVE segments of the model",
            "",
            f"Against {nve_reference['name']}'s NVE: D {nve_reference['diffusion_nve']['D_1e-5_cm2_s']:.2f} ± "
            f"{nve_reference['diffusion_nve']['standard_error']:.2f} × 1e-5 cm²/s at "
            f"{nve_reference['nve_temperature_K']:.0f} K ({nve_reference['run']['nve']['ran_ps']:.0f} ps).",
            "",
        ]
        rows = []
        for run in results["nve_models"]:
            nve = run["run"]["nve"]
            d_nve = run.get("diffusion_nve")
            difference = run.get("diffusion_nve_relative_difference")
            rows.append(
                [
                    run["name"],
                    f"{nve['ran_ps']:.0f} ps at {nve['timestep_fs']:g} fs",
                    f"{run['nve_temperature_K']:.0f}",
                    report.number(run.get("nve_drift_meV_per_atom_per_ps")),
                    f"{d_nve['D_1e-5_cm2_s']:.2f} ± {d_nve['standard_error']:.2f}" if d_nve else "-",
                    f"{100 * difference:+.0f} % ({met(difference, 0.2)})" if difference is not None else "-",
                ]
            )
        lines += [
            report.markdown_table(
                ["run", "NVE", "T (K)", "drift (meV/atom/ps)", "D (1e-5 cm²/s)", "vs reference (within 20 %)"], rows
            ),
            "",
        ]
    if results.get("lammps"):
        nve_reference = results.get("nve_reference") or reference
        rows = []
        for run in results["lammps"]:
            first, nve = run["run"]["npt"], run["run"]["nve"]
            npt = run["run"].get("barostat", True)
            d_nve = run.get("diffusion_nve")
            rows.append(
                [
                    run["name"],
                    f"{'NPT' if npt else 'NVT'} {first['ran_ps']:.0f} ps ({first['timestep_fs']:g} fs)"
                    + (f" + NVE {nve['ran_ps']:.0f} ps ({nve['timestep_fs']:g} fs)" if nve.get("steps") else ""),
                    f"{first['ms_per_step']:.1f}",
                    "yes" if first["failed"] or nve.get("failed") else "no",
                    f"{run['density_g_cm3']:.4f} ± {run['density_standard_error']:.4f}"
                    + (f" ({100 * run['density_relative_difference']:+.1f} %)" if npt else " (fixed)"),
                    f"{run['g_OO_integrated_abs_difference_A']:.3f} / {run['g_OH_integrated_abs_difference_A']:.3f}",
                    f"{run['diffusion_npt']['D_1e-5_cm2_s']:.2f} ± {run['diffusion_npt']['standard_error']:.2f}",
                    "–"
                    if d_nve is None
                    else f"{d_nve['D_1e-5_cm2_s']:.2f} ± {d_nve['standard_error']:.2f}"
                    + (
                        f" ({100 * run['diffusion_nve_relative_difference']:+.0f} %)"
                        if "diffusion_nve_relative_difference" in run
                        else ""
                    ),
                    report.number(run.get("nve_drift_meV_per_atom_per_ps")),
                    f"{run['closest_hydrogens']['closest_A_min']:.2f}",
                ]
            )
        reference_nve = nve_reference.get("diffusion_nve")
        lines += [
            "## LAMMPS",
            "",
            "`pair_style transformer`, one rank, one thread (the periodic path: each atom evaluated once), Nose-Hoover "
            "thermostat (and barostat for NPT: 1 bar, Pdamp 1 ps), from the same boxes. Density differences are against "
            "the reference's NPT density; g(r) differences (∫|Δg| dr over 0–6 Å, g_OO / g_OH) against the reference run "
            "of the table above; D (1e-5 cm²/s) from the unwrapped oxygen MSD of the first segment (Nose-Hoover) and of "
            "the NVE segment"
            + (
                f", the latter against the reference's NVE, {reference_nve['D_1e-5_cm2_s']:.2f} ± "
                f"{reference_nve['standard_error']:.2f} ({nve_reference['name']}, NVE {nve_reference['run']['nve']['ran_ps']:.0f} ps)"
                if reference_nve
                else ""
            )
            + ".",
            "",
            report.markdown_table(
                [
                    "run",
                    "segments",
                    "ms/step",
                    "failed",
                    "density (g/cm³)",
                    "∫ abs(Δg) dr, OO / OH (Å)",
                    "D first segment",
                    "D NVE",
                    "NVE drift (meV/atom/ps)",
                    "closest H–H (Å)",
                ],
                rows,
            ),
            "",
        ]
    for name, stopped in results.get("stopped_runs", {}).items():
        lines += [
            f"Run `{name}` ({stopped['ran_ps']:.2f} ps NPT, summarised from its state data): density "
            f"{stopped['density_first_last_g_cm3'][0]:.3f} -> {stopped['density_first_last_g_cm3'][1]:.3f} g/cm³, "
            f"mean temperature {stopped['temperature_K']:.0f} K"
            + (
                f"; closest H–H {stopped['closest_hydrogens']['closest_A_min']:.2f} Å, "
                + (
                    "never below 1 Å."
                    if stopped["closest_hydrogens"]["first_time_below_1A_ps"] is None
                    else f"first below 1 Å at {stopped['closest_hydrogens']['first_time_below_1A_ps']:.2f} ps."
                )
                if "closest_hydrogens" in stopped
                else "."
            ),
            "",
        ]
    if results["test_errors"]:
        rows = [
            [
                name,
                e["frames"],
                e["atoms_per_frame"],
                f"{e['energy_mae_meV_per_atom']:.2f}",
                f"{e['force_mae_meV_per_A']:.1f}",
                f"{e['stress_mae_meV_per_A3']:.3f}",
                f"{e['stress_mae_GPa']:.3f}",
                f"{e.get('pressure_mae_GPa', float('nan')):.3f}",
                f"{e.get('force_labels_mean_abs_meV_per_A', float('nan')):.0f}",
                f"{e.get('stress_labels_mean_abs_meV_per_A3', float('nan')):.2f}",
                # per water: centre-of-mass force and torque errors against the labels' mean magnitudes
                f"{e['molecule_force_mae_meV_per_A']:.1f} / {e['molecule_force_labels_mean_abs_meV_per_A']:.0f}"
                if "molecule_force_mae_meV_per_A" in e
                else "–",
                f"{e['molecule_torque_mae_meV']:.1f} / {e['molecule_torque_labels_mean_abs_meV']:.0f}"
                if "molecule_torque_mae_meV" in e
                else "–",
            ]
            for name, e in results["test_errors"].items()
        ]
        lines += [
            "## Test errors",
            "",
            report.markdown_table(
                [
                    "model",
                    "test frames",
                    "atoms",
                    "energy MAE (meV/atom)",
                    "force MAE (meV/Å)",
                    "stress MAE (meV/Å³)",
                    "stress MAE (GPa)",
                    "pressure MAE (GPa)",
                    "mean abs force label (meV/Å)",
                    "mean abs stress label (meV/Å³)",
                    "molecule force MAE / mean abs label (meV/Å)",
                    "molecule torque MAE / mean abs label (meV)",
                ],
                rows,
            ),
            "",
        ]
    if results.get("note"):
        lines += [results["note"], ""]
    lines += [report.machine_markdown(results["machine"]), ""]
    return "\n".join(lines)


def add_segment_arguments(parser, npt_ps: float, nve_ps: float, nve_report_steps: int) -> None:
    """Length, timestep and report interval of the first (NPT or NVT) segment and of the NVE segment."""
    parser.add_argument("--npt-ps", type=float, default=npt_ps)
    parser.add_argument("--nve-ps", type=float, default=nve_ps)
    parser.add_argument("--npt-timestep-fs", type=float, default=1.0)
    parser.add_argument("--nve-timestep-fs", type=float, default=0.5)
    parser.add_argument("--npt-report-steps", type=int, default=50)
    parser.add_argument("--nve-report-steps", type=int, default=nve_report_steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    md = commands.add_parser("md", help="NPT then NVE of one potential")
    md.add_argument("potential", help="'classical' or a model file (export or checkpoint)")
    md.add_argument("--name", required=True)
    md.add_argument("--structure", default=str(START))
    add_segment_arguments(md, npt_ps=100.0, nve_ps=20.0, nve_report_steps=20)
    md.add_argument("--minutes", type=float, default=600.0, help="wall-clock budget of the NPT segment")
    md.add_argument("--nve-minutes", type=float, default=600.0, help="wall-clock budget of the NVE segment")
    md.add_argument("--threads", type=int, default=1)
    md.add_argument("--platform", default="CPU", help="OpenMM platform: CPU (default) or CUDA (mixed precision)")
    md.add_argument(
        "--no-barostat", action="store_true", help="NVT instead of NPT in the first segment (fixed box of --structure)"
    )
    md.add_argument("--seed", type=int, default=1)
    md.set_defaults(function=run_md)
    evaluate = commands.add_parser("evaluate", help="test MAEs of a model")
    evaluate.add_argument("model")
    evaluate.add_argument("test_file")
    evaluate.add_argument("--name", required=True)
    evaluate.add_argument("--threads", type=int, default=1)
    evaluate.set_defaults(function=evaluate_model)
    lammps = commands.add_parser("lammps", help="NPT (or NVT) then NVE of a model export in LAMMPS")
    lammps.add_argument("model")
    lammps.add_argument("--name", required=True)
    lammps.add_argument("--structure", default=str(START))
    add_segment_arguments(lammps, npt_ps=2.0, nve_ps=0.0, nve_report_steps=100)
    lammps.add_argument("--no-barostat", action="store_true", help="NVT in the box of --structure first")
    lammps.add_argument("--minutes", type=float, default=30.0)
    lammps.add_argument("--seed", type=int, default=4928459)
    lammps.set_defaults(function=run_lammps)
    summary = commands.add_parser("report", help="analyse the runs, write JSON, Markdown and plots")
    summary.add_argument("--reference", default="classical")
    summary.add_argument("--model", default="model")
    summary.add_argument("--xtb", default=None)
    summary.add_argument("--lammps", nargs="*", default=[], help="LAMMPS runs (benchmarks/water.py lammps)")
    summary.add_argument(
        "--nve-reference", default=None, help="the reference run whose NVE segment D(NVE) compares with"
    )
    summary.add_argument("--npt-reference", default=None, help="the reference's NPT run, when --reference is NVT")
    summary.add_argument("--npt-models", nargs="*", default=[], help="NPT runs of models (with run.json)")
    summary.add_argument(
        "--nve-models",
        nargs="*",
        default=[],
        help="OpenMM runs of models whose NVE segment D compares with the reference",
    )
    summary.add_argument("--stopped", nargs="*", default=[], help="runs stopped by hand: summarised from their CSV")
    summary.add_argument("--note", default="")
    summary.set_defaults(function=write_report)
    args = parser.parse_args()
    try:
        args.function(args)
    except (ValueError, FileNotFoundError) as error:  # a wrong name, file or option: the sentence, no traceback
        raise SystemExit(f"water.py {args.command}: {error}") from None


if __name__ == "__main__":
    main()
