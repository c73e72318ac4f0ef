"""Train a MACE (mace-torch) on the same extxyz files as a Transformer, for a fixed wall-clock budget.

The trained baseline for `benchmarks/accuracy.py --compare`: the same training and validation files
the Transformer saw, the same machine, one torch thread, stopped when `--minutes` have passed. The
model is a standard small MACE (ScaleShiftMACE, cutoff 5 Å, two interactions, 64x0e + 64x1o hidden
features, L_max 3 spherical harmonics, correlation order 3: the speed baseline's shape with about as
many parameters as the shipped Transformer); the recipe is MACE's defaults for small molecules:
per-atom energy + force loss with weights 1 and 100, Adam (amsgrad) at 0.01, batches of 5, EMA 0.99,
E0s by least squares on the training set, rms-forces scaling. The learning rate follows a cosine in
the budget spent (down to 1% at its end), so the schedule finishes whatever the machine's speed; the
budget is wall-clock minutes and optionally CPU minutes of this process, the larger fraction counts
(as in `benchmarks/timed_training.py`). Every `--eval-every-s` seconds the EMA weights are scored on the validation file (for the log
only; the final weights are kept, nothing is selected) and /proc/loadavg is recorded.

Periodic frames (extxyz with a Lattice) keep their cell and pbc, which MACE's neighbour list uses; their
stress labels are read, scored (`stress_mae_GPa`) and, with `--stress-weight` > 0, trained on. The
recipe's size can be changed (`--max-ell`, `--hidden-irreps`, `--batch-size`, `--r-max`, ...) and the
options used are recorded in training.json. Memory grows with the edges of a batch: a 192-atom water
box has about 9,000 edges within 5 Å, and a training step (forces by double backward through the
L_max 3 tensor products, in float64) holds gigabytes per frame, so periodic boxes want small batches.

    python -m benchmarks.mace_train data/md17/ethanol/ethanol_{300,500,800}K_train.extxyz \
        --validation data/md17/ethanol/ethanol_300K_test.extxyz --minutes 24 -o runs/mace-ethanol
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repository root
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import copy
import csv
import json
import math
import sys
import time
from pathlib import Path

import ase.io
import numpy as np
import torch

from benchmarks import mace_baseline
from benchmarks.timed_training import Budget
from mdplugin.units import GPA_PER_EV_PER_CUBIC_ANGSTROM

R_MAX = mace_baseline.R_MAX
RECIPE = {
    "r_max_angstrom": R_MAX,
    "hidden_irreps": "64x0e + 64x1o",
    "max_ell": 3,
    "correlation": 3,
    "num_interactions": 2,
    "num_bessel": 8,
    "num_polynomial_cutoff": 5,
    "mlp_irreps": "16x0e",
    "batch_size": 5,
    "learning_rate": 0.01,
    "optimizer": "Adam (amsgrad)",
    "ema_decay": 0.99,
    "energy_weight": 1.0,
    "forces_weight": 100.0,
    "gradient_clip": 10.0,
    "stress_weight": 0.0,
    "evaluation_batch_size": 5,
    "schedule": "cosine in the budget spent (max of wall and CPU fractions), to 1% of the peak at its end",
}


def read_frames(paths: list[Path]) -> list:
    return [atoms for path in paths for atoms in ase.io.read(path, index=":")]


def read_graphs(paths: list[Path], elements: list[int], r_max: float = R_MAX) -> list:
    """MACE graphs (cutoff r_max) of every frame in `paths`, with energy, forces and stress labels."""
    return graphs_of(read_frames(paths), elements, r_max)


def graphs_of(frames: list, elements: list[int], r_max: float = R_MAX) -> list:
    """MACE graphs of labelled ase.Atoms frames; cell and pbc go to MACE's neighbour list."""
    _, data, _, tools, _ = mace_baseline._import_mace()
    # ASE moves extxyz labels into a SinglePointCalculator: copy them back under names MACE reads
    keys = data.KeySpecification(
        info_keys={"energy": "REF_energy", "stress": "REF_stress"}, arrays_keys={"forces": "REF_forces"}
    )
    table = tools.AtomicNumberTable(elements)
    graphs = []
    for atoms in frames:
        atoms = atoms.copy() if atoms.calc is None else _labelled(atoms)
        configuration = data.config_from_atoms(atoms, key_specification=keys)
        graphs.append(data.AtomicData.from_config(configuration, z_table=table, cutoff=r_max))
    return graphs


def _labelled(atoms):
    copy_ = atoms.copy()
    copy_.info["REF_energy"] = atoms.get_potential_energy()
    copy_.arrays["REF_forces"] = atoms.get_forces()
    if "stress" in atoms.calc.results:  # ASE's Voigt order and sign, eV/Å^3, as MACE's stress
        copy_.info["REF_stress"] = atoms.get_stress()
    return copy_


def periodic(graphs: list) -> bool:
    """Whether every graph is periodic in all three directions (stress is defined); MACE gives molecules
    a large stand-in cell, so the cell alone does not tell."""
    return all(bool(graph.pbc.all()) for graph in graphs)


def elements_of(frames: list) -> list[int]:
    return sorted({int(z) for atoms in frames for z in atoms.numbers})


def reference_energies(frames: list, elements: list[int]) -> np.ndarray:
    """E0 per element by least squares of the total energies on element counts (minimum norm when, as for
    one molecule, the counts do not determine them)."""
    counts = np.array([[np.sum(atoms.numbers == z) for z in elements] for atoms in frames], dtype=float)
    energies = np.array([atoms.get_potential_energy() for atoms in frames])
    return np.linalg.lstsq(counts, energies, rcond=None)[0]


def loader(graphs: list, batch_size: int, shuffle: bool, seed: int = 0):
    _, _, _, _, torch_geometric = mace_baseline._import_mace()
    generator = torch.Generator().manual_seed(seed)
    return torch_geometric.dataloader.DataLoader(
        graphs, batch_size=batch_size, shuffle=shuffle, drop_last=False, generator=generator
    )


def build_model(
    elements: list[int], e0: np.ndarray, train_loader, recipe: dict = RECIPE
) -> tuple[torch.nn.Module, dict]:
    """ScaleShiftMACE with the recipe's shape; neighbours and scaling from the training data."""
    o3, _, modules, _, _ = mace_baseline._import_mace()
    average_neighbours = float(modules.compute_avg_num_neighbors(train_loader))
    shift, scale = modules.scaling_classes["rms_forces_scaling"](train_loader, e0)
    interaction = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    settings = {
        "r_max": recipe["r_max_angstrom"],
        "num_bessel": recipe["num_bessel"],
        "num_polynomial_cutoff": recipe["num_polynomial_cutoff"],
        "max_ell": recipe["max_ell"],
        "num_interactions": recipe["num_interactions"],
        "num_elements": len(elements),
        "hidden_irreps": recipe["hidden_irreps"],
        "MLP_irreps": recipe["mlp_irreps"],
        "atomic_energies": [float(e) for e in e0],
        "avg_num_neighbors": average_neighbours,
        "atomic_numbers": list(elements),
        "correlation": recipe["correlation"],
        "atomic_inter_scale": float(np.ravel(scale)[0]),
        "atomic_inter_shift": float(np.ravel(shift)[0]),
    }
    return make_model(settings, interaction, o3, modules), settings


def make_model(settings: dict, interaction=None, o3=None, modules=None) -> torch.nn.Module:
    if modules is None:
        o3, _, modules, _, _ = mace_baseline._import_mace()
        interaction = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    arguments = dict(settings)
    arguments["hidden_irreps"] = o3.Irreps(settings["hidden_irreps"])
    arguments["MLP_irreps"] = o3.Irreps(settings["MLP_irreps"])
    arguments["atomic_energies"] = np.array(settings["atomic_energies"])
    return modules.ScaleShiftMACE(
        interaction_cls=interaction,
        interaction_cls_first=interaction,
        gate=torch.nn.functional.silu,
        **arguments,
    )


def load_mace(path: str | Path) -> torch.nn.Module:
    """The trained MACE of a checkpoint written by `train_mace` (float64, eval mode)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if checkpoint.get("kind") != "mace":
        raise ValueError(f"{path} is not a MACE checkpoint written by benchmarks/mace_train.py")
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        model = make_model(checkpoint["model_settings"])
    finally:
        torch.set_default_dtype(previous)
    model.load_state_dict(checkpoint["weights"])
    return model.double().eval()


def is_mace_checkpoint(path: str | Path) -> bool:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:
        return False
    return isinstance(checkpoint, dict) and checkpoint.get("kind") == "mace"


def evaluate(model: torch.nn.Module, graphs: list, batch_size: int = 5) -> dict:
    """Energy MAE (meV/atom), force MAE (meV/Å, over components) and, for periodic graphs, stress MAE
    (GPa, over the six Voigt components as `benchmarks/water.py evaluate`) on labelled graphs.

    Batches are small: the forward pass keeps its autograd graph for the forces, gigabytes for a few
    periodic boxes."""
    stress = periodic(graphs)
    energy_error, force_error, stress_error, atoms, structures = 0.0, 0.0, 0.0, 0, 0
    voigt = [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]
    for batch in loader(graphs, batch_size, shuffle=False):
        output = model(batch.to_dict(), training=False, compute_force=True, compute_stress=stress)
        counts = batch.ptr[1:] - batch.ptr[:-1]
        energy_error += float(((output["energy"].detach() - batch.energy).abs() / counts).sum())
        force_error += float((output["forces"].detach() - batch.forces).abs().sum())
        if stress:
            difference = (output["stress"].detach() - batch.stress)[:, [i for i, _ in voigt], [j for _, j in voigt]]
            stress_error += float(difference.abs().sum())
        atoms += int(counts.sum())
        structures += len(counts)
        del output
    metrics = {
        "energy_mae_mev_per_atom": 1000 * energy_error / structures,
        "force_mae_mev_per_a": 1000 * force_error / (3 * atoms),
    }
    if stress:
        metrics["stress_mae_GPa"] = GPA_PER_EV_PER_CUBIC_ANGSTROM * stress_error / (6 * structures)
    return metrics


def load_average() -> list[float]:
    return [float(value) for value in Path("/proc/loadavg").read_text().split()[:3]]


def train_mace(
    train_files: list[Path],
    validation_files: list[Path],
    output: Path,
    minutes: float,
    seed: int = 0,
    eval_every_s: float = 300.0,
    cpu_minutes: float | None = None,
    recipe: dict | None = None,
    validation_fraction: float = 0.0,
    steps: int | None = None,
) -> dict:
    """Train until the budget is spent; write output/mace.pt, training.csv and training.json.

    `recipe` overrides entries of RECIPE; with no validation files, `validation_fraction` of the
    training frames (a seeded random choice) is held out for validation instead. With `steps`, the
    budget is also that many optimizer steps (the larger spent fraction counts, as for wall and CPU)."""
    recipe = {**RECIPE, **(recipe or {})}
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # mace-torch trains in float64 by default
    try:
        return _train_mace(
            train_files, validation_files, output, minutes, seed, eval_every_s, cpu_minutes, recipe, validation_fraction,
            steps,
        )  # fmt: skip
    finally:
        torch.set_default_dtype(previous)


def split(frames: list, fraction: float, seed: int) -> tuple[list, list]:
    """(training, validation) frames, `fraction` of them (at least one) drawn at random for validation."""
    order = np.random.default_rng(seed).permutation(len(frames))
    held = set(order[: max(1, round(fraction * len(frames)))].tolist())
    return [f for i, f in enumerate(frames) if i not in held], [f for i, f in enumerate(frames) if i in held]


def peak_rss_gb() -> float:
    """Peak resident memory of this process (GB, from /proc: VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024**2
    return float("nan")


def _train_mace(
    train_files, validation_files, output, minutes, seed, eval_every_s, cpu_minutes, recipe, validation_fraction, steps
) -> dict:
    torch.manual_seed(seed)
    output.mkdir(parents=True, exist_ok=True)
    train_frames = read_frames(train_files)
    if validation_files:
        validation_frames = read_frames(validation_files)
    else:
        train_frames, validation_frames = split(train_frames, validation_fraction, seed)
    elements = elements_of(train_frames)
    e0 = reference_energies(train_frames, elements)
    r_max = recipe["r_max_angstrom"]
    train_graphs = graphs_of(train_frames, elements, r_max)
    validation_graphs = graphs_of(validation_frames, elements, r_max)
    train_loader = loader(train_graphs, recipe["batch_size"], shuffle=True, seed=seed)
    model, settings = build_model(elements, e0, train_loader, recipe)
    _, _, modules, _, _ = mace_baseline._import_mace()
    stress = recipe["stress_weight"] > 0
    if stress and not periodic(train_graphs):
        raise ValueError("--stress-weight needs periodic training frames (a cell) with stress labels")
    weights = (recipe["energy_weight"], recipe["forces_weight"])
    if stress:
        loss_function = modules.WeightedEnergyForcesStressLoss(*weights, recipe["stress_weight"])
    else:
        loss_function = modules.WeightedEnergyForcesLoss(*weights)
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe["learning_rate"], amsgrad=True)
    ema = copy.deepcopy(model)
    budget = Budget(minutes, cpu_minutes)
    history, step, epoch = [], 0, 0
    next_evaluation = eval_every_s

    def fraction_spent() -> float:
        return max(budget.spent(), step / steps) if steps else budget.spent()

    spent = fraction_spent()

    def row(loss_value: float, learning_rate: float) -> dict:
        return log_row(
            ema, validation_graphs, epoch, step, learning_rate, loss_value, budget, recipe["evaluation_batch_size"]
        )

    while spent < 1.0:
        epoch += 1
        model.train()
        for batch in train_loader:
            spent = fraction_spent()
            if spent >= 1.0:
                break
            learning_rate = recipe["learning_rate"] * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * spent)))
            for group in optimizer.param_groups:
                group["lr"] = learning_rate
            predicted = model(batch.to_dict(), training=True, compute_force=True, compute_stress=stress)
            loss = loss_function(pred=predicted, ref=batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            loss_value = float(loss.detach())
            del predicted, loss  # nothing of this step's graph survives into the next
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe["gradient_clip"])
            optimizer.step()
            with torch.no_grad():
                for averaged, current in zip(ema.parameters(), model.parameters()):
                    averaged.lerp_(current, 1 - recipe["ema_decay"])
            step += 1
            if budget.elapsed()[0] >= next_evaluation:
                history.append(row(loss_value, learning_rate))
                next_evaluation += eval_every_s
    training_seconds, cpu_seconds = budget.elapsed()
    history.append(row(loss_value, learning_rate))
    summary = {
        "kind": "mace",
        "recipe": recipe,
        "model_settings": settings,
        "parameters": mace_baseline.count(model),
        "training_files": [str(path) for path in train_files],
        "validation_files": [str(path) for path in validation_files],
        "validation_fraction": 0.0 if validation_files else validation_fraction,
        "training_structures": len(train_graphs),
        "validation_structures": len(validation_graphs),
        "budget_minutes": minutes,
        "budget_cpu_minutes": cpu_minutes,
        "budget_steps": steps,
        "training_time_s": training_seconds,
        "cpu_time_s": cpu_seconds,
        "steps": step,
        "epochs": epoch,
        "threads": torch.get_num_threads(),
        "seed": seed,
        "peak_rss_gb": peak_rss_gb(),
        "history": history,
    }
    torch.save({**summary, "weights": ema.state_dict()}, output / "mace.pt")
    (output / "training.json").write_text(json.dumps(summary, indent=2))
    with open(output / "training.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    return summary


def log_row(ema, validation_graphs, epoch, step, learning_rate, loss, budget: Budget, batch_size: int = 5) -> dict:
    metrics = evaluate(ema, validation_graphs, batch_size)
    row = {
        "epoch": epoch,
        "step": step,
        "learning_rate": learning_rate,
        "train_loss": float(loss),
        **metrics,
        "elapsed_s": budget.elapsed()[0],
        "cpu_s": budget.elapsed()[1],
        "load_average_1min": load_average()[0],
        "peak_rss_gb": peak_rss_gb(),
    }
    stress = f", stress MAE {metrics['stress_mae_GPa']:.3f} GPa" if "stress_mae_GPa" in metrics else ""
    print(
        f"[mace {time.strftime('%H:%M:%S')}] step {step} epoch {epoch}: validation force MAE "
        f"{metrics['force_mae_mev_per_a']:.1f} meV/Å, energy MAE {metrics['energy_mae_mev_per_atom']:.2f} meV/atom"
        f"{stress}, peak RSS {row['peak_rss_gb']:.2f} GB",
        file=sys.stderr,
        flush=True,
    )
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("train_files", type=Path, nargs="+", help="extxyz training files (energy, forces)")
    parser.add_argument("--validation", type=Path, action="append", default=[], help="validation file (repeatable)")
    parser.add_argument(
        "--validation-fraction",
        type=float,
        default=0.1,
        help="held-out share of the training frames without --validation",
    )
    parser.add_argument("--minutes", type=float, required=True, help="wall-clock training budget")
    parser.add_argument("--cpu-minutes", type=float, default=None, help="CPU-time budget of this process (optional)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="directory for mace.pt and the logs")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--eval-every-s", type=float, default=300.0, help="wall-clock seconds between validation log lines"
    )
    recipe = parser.add_argument_group("recipe (defaults: RECIPE; recorded in training.json)")
    for name, key, kind in [
        ("--r-max", "r_max_angstrom", float),
        ("--max-ell", "max_ell", int),
        ("--hidden-irreps", "hidden_irreps", str),
        ("--correlation", "correlation", int),
        ("--num-interactions", "num_interactions", int),
        ("--batch-size", "batch_size", int),
        ("--evaluation-batch-size", "evaluation_batch_size", int),
        ("--learning-rate", "learning_rate", float),
        ("--stress-weight", "stress_weight", float),
    ]:
        recipe.add_argument(name, dest=key, type=kind, default=RECIPE[key], help=f"default {RECIPE[key]}")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    mace_baseline.unavailable_reason()  # registers the e3nn load fix
    summary = train_mace(
        args.train_files,
        args.validation,
        args.output,
        args.minutes,
        args.seed,
        args.eval_every_s,
        args.cpu_minutes,
        recipe={key: getattr(args, key) for key in RECIPE if hasattr(args, key)},
        validation_fraction=args.validation_fraction,
    )
    keys = ("parameters", "training_time_s", "cpu_time_s", "steps", "epochs", "peak_rss_gb")
    print(json.dumps({key: summary[key] for key in keys}))


if __name__ == "__main__":
    main()
