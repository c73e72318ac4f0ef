"""Training: data, model, optimizer; loop over epochs; validate; checkpoint. Reads top to bottom."""

from __future__ import annotations

import copy
import csv
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from mdplugin.elements import symbols
from mdplugin.hashing import file_sha256
from mdplugin.limits import check_neighbour_count
from mdplugin.model.checkpoint import (
    build_checkpoint,
    check_output_file,
    model_from_checkpoint,
    non_finite_tensors,
    provenance,
    read_checkpoint,
    save_checkpoint,
)
from mdplugin.model.config import ModelConfig
from mdplugin.model.transformer import TransformerPotential, count_parameters, init_distance_attention
from mdplugin.training.dataset import (
    Structure,
    check_elements,
    collate,
    find_outliers,
    fit_reference_energies,
    outlier_message,
    periodic_data_warning,
    read_forces_only,
    read_structures,
    split,
    training_domain,
)
from mdplugin.training.options import MODEL_OPTIONS, TRAINING_OPTIONS, TrainingOptions
from mdplugin.units import GPA_PER_EV_PER_CUBIC_ANGSTROM


class TrainingDiverged(ValueError):
    """The loss, the gradients or the weights became NaN or infinite during training."""


def check_options(options: TrainingOptions) -> None:
    """Refuse settings that cannot train, before any data is read."""
    check_output_file(options.output)
    if options.epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {options.epochs}; training with no epochs writes nothing")
    if options.validate_every < 1:
        raise ValueError(f"validate_every must be at least 1 epoch, got {options.validate_every}")
    if options.batch_size < 1:
        raise ValueError(f"the batch size must be at least 1 structure, got {options.batch_size}")
    if not (math.isfinite(options.learning_rate) and options.learning_rate > 0):
        raise ValueError(f"the learning rate must be a positive number, got {options.learning_rate}")
    if not (math.isfinite(options.forces_only_weight) and options.forces_only_weight >= 0):
        raise ValueError(f"the forces-only weight must be a number >= 0, got {options.forces_only_weight}")
    if options.threads is not None and options.threads < 1:
        raise ValueError(f"threads must be at least 1, got {options.threads}")
    check_device(options.device)


def check_device(name: str) -> None:
    """Refuse, by name, a training device this torch cannot use."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"training runs on cpu or cuda, not {device.type!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for, but this torch sees no CUDA device; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {name!r} asked for, but this machine has {torch.cuda.device_count()} CUDA device(s)"
            )


def check_resume_state(state: dict, path: Path) -> None:
    """Refuse a saved training state holding NaN or infinite values: resumed, it diverges at once, which would
    be blamed on the learning rate."""
    parts = {"weights": state.get("model") or {}, "averaged (EMA) weights": state.get("ema") or {}}
    optimizer = state.get("optimizer") or {}
    parts["optimizer moments"] = {
        f"{name} of parameter {index}": value
        for index, moments in (optimizer.get("state") or {}).items()
        for name, value in moments.items()
    }
    broken = [
        f"{what}: {', '.join(bad[:3])}" for what, tensors in parts.items() if (bad := non_finite_tensors(tensors))
    ]
    if broken:
        raise ValueError(
            f"{path} holds a saved training state that is not finite ({'; '.join(broken)}): the run it holds "
            "cannot continue from it (the file was damaged, or its run diverged). Start a new run with --force "
            "(with a lower --learning-rate if the run diverged), or resume from a copy saved before"
        )


def check_interaction_range(interaction_range: float | None, domain: dict) -> None:
    """Refuse a local model whose range is shorter than every distance in the data: no atom would see a neighbour,
    and the model would learn isolated atoms."""
    shortest = domain.get("shortest_distance") or {}
    if interaction_range is None or not shortest:
        return
    pair, distance = min(shortest.items(), key=lambda item: item[1])
    if interaction_range <= distance:
        raise ValueError(
            f"--interaction-range {interaction_range:g} Å is shorter than the closest two atoms in the training data "
            f"({distance:.3g} Å, {pair}): no atom would attend to any neighbour. Give a range of a few bonds (3-6 Å "
            "for liquids and molecular crystals)"
        )


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """A collated batch moved to the training device."""
    return {name: tensor.to(device, non_blocking=True) for name, tensor in batch.items()}


def on_cpu(state):
    """A (nested) state dict with every tensor copied to the CPU: checkpoints load on any machine."""
    if isinstance(state, torch.Tensor):
        return state.detach().cpu().clone()
    if isinstance(state, dict):
        return {key: on_cpu(value) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(on_cpu(value) for value in state)
    return state


# what a resumed run never takes from the run it continues: the data and files of this invocation
NOT_RESUMED = {"train_files", "validation_files", "output", "elements", "progress", "threads", "device",
               "restart_schedule"}  # fmt: skip


def resumed_options(options: TrainingOptions, checkpoint: dict, given: set[str] | None = None) -> TrainingOptions:
    """The options of a resumed run, decided in this one place: the architecture is the checkpoint's, and
    options not `given` (None: all of them were) take the values the run recorded. Given options that
    contradict the checkpoint's architecture are refused, naming each one."""
    config = checkpoint["config"]
    recorded = checkpoint.get("training", {}).get("options", {})
    is_given = (lambda name: True) if given is None else given.__contains__
    conflicts = []
    if options.elements is not None and is_given("elements") and sorted(options.elements) != sorted(config["elements"]):
        conflicts.append(
            f"elements {','.join(symbols(sorted(options.elements)))} (checkpoint: {','.join(symbols(config['elements']))})"
        )
    stored_config = ModelConfig.from_dict(config)
    for name in MODEL_OPTIONS:
        value, stored = getattr(options.model, name), getattr(stored_config, name)
        if is_given(name) and not _same(value, stored):
            conflicts.append(f"{name} {value} (checkpoint: {stored})")
    # the starting weights are not in the config, but the run recorded how they were drawn
    if is_given("attention_init") and recorded.get("attention_init", options.attention_init) != options.attention_init:
        conflicts.append(f"attention_init {options.attention_init} (checkpoint: {recorded['attention_init']})")
    if conflicts:
        raise ValueError(
            f"resuming {options.output} keeps the architecture it was trained with, but these options differ from "
            f"it: {'; '.join(conflicts)}. Leave them out or give the checkpoint's values, or start a new run with --force"
        )
    taken = {
        name: recorded[name]
        for name in TRAINING_OPTIONS
        if name in recorded and name not in NOT_RESUMED and not is_given(name)
    }
    return replace(options, model=stored_config, **taken)


def _same(given, stored) -> bool:
    if isinstance(stored, float) and isinstance(given, (int, float)) and given is not None:
        return math.isclose(given, stored)
    return given == stored


def random_rotations(count: int, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """Uniformly distributed proper rotation matrices [count, 3, 3] (QR of a Gaussian matrix)."""
    q, r = torch.linalg.qr(torch.randn(count, 3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    q[torch.det(q) < 0, :, 0] *= -1  # reflections -> rotations
    return q.to(dtype)


def energy_and_forces(
    model: TransformerPotential, batch: dict, training: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Total energies [B], conservative forces [B, N, 3] = -dE/dx and, where the batch has stress
    labels, the virials [B, 3, 3] = -dE/dstrain (eV; None when no structure has a label)."""
    positions = batch["positions"].requires_grad_(True)
    cell = batch["cell"]
    strain = None
    if bool(batch["has_virial"].any()):
        # a homogeneous strain of positions and cell together; at zero strain dE/dx is unchanged
        strain = torch.zeros_like(cell).requires_grad_(True)
        deformation = torch.eye(3, dtype=cell.dtype, device=cell.device) + strain
        inputs = (positions @ deformation, cell @ deformation)
    else:
        inputs = (positions, cell)
    energy = model(
        inputs[0], batch["species"], batch["mask"], batch["charge"], batch["multiplicity"], inputs[1], batch["pbc"]
    ).sum(1)
    if strain is None:
        (gradient,) = torch.autograd.grad(energy.sum(), positions, create_graph=training)
        return energy, -gradient, None
    gradient, strain_gradient = torch.autograd.grad(energy.sum(), (positions, strain), create_graph=training)
    virial = -0.5 * (strain_gradient + strain_gradient.transpose(1, 2))  # a stress label is symmetric
    return energy, -gradient, virial


def learning_rate_at(step: int, total_steps: int, options: TrainingOptions) -> float:
    """Linear warm-up, then cosine decay to 1% of the peak."""
    warmup = max(1, int(options.warmup_fraction * total_steps))
    if step < warmup:
        return options.learning_rate * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return options.learning_rate * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))


def evaluate(model: TransformerPotential, structures: list[Structure], batch_size: int = 64) -> dict[str, float]:
    """Energy MAE (meV/atom), force MAE (meV/Å) and, where there are stress labels, stress MAE (GPa)."""
    model.eval()
    device, species = model.reference_energies.device, model.species_of_atomic_number.cpu()
    energy_error, force_error, atoms, stress_error, stresses = 0.0, 0.0, 0, 0.0, 0
    energies = sum(not s.forces_only for s in structures)
    for start in range(0, len(structures), batch_size):
        batch = to_device(collate(structures[start : start + batch_size], species), device)
        energy, forces, virial = energy_and_forces(model, batch, training=False)
        per_atom = (energy.detach() - batch["energy"]).abs() / batch["atom_count"]
        energy_error += per_atom[batch["has_energy"]].sum().item()
        force_error += ((forces.detach() - batch["forces"]).abs().sum(-1) * batch["mask"]).sum().item() / 3
        atoms += int(batch["mask"].sum())
        if virial is not None:
            labelled = batch["has_virial"]
            volume = torch.linalg.det(batch["cell"][labelled]).abs()[:, None, None]
            difference = (virial.detach()[labelled] - batch["virial"][labelled]) / volume
            stress_error += difference.abs().mean((1, 2)).sum().item() * GPA_PER_EV_PER_CUBIC_ANGSTROM
            stresses += int(labelled.sum())
    metrics = {
        "energy_mae_mev_per_atom": 1000 * energy_error / max(1, energies),
        "force_mae_mev_per_a": 1000 * force_error / atoms,
    }
    if stresses:
        metrics["stress_mae_gpa"] = stress_error / stresses
    return metrics


def train(
    options: TrainingOptions,
    resume: bool = False,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    given: set[str] | None = None,
) -> Path:
    """Train a model and write its checkpoint to options.output. Returns that path.

    `resume`: continue the run whose checkpoint is options.output; `given` names the options the user
    gave for it (None: all), the others take the values that run recorded (see resumed_options)."""
    checkpoint = None
    if resume:
        output = Path(options.output)
        if not output.is_file():
            raise ValueError(f"--resume needs the checkpoint {output} of the interrupted run; it does not exist")
        checkpoint = read_checkpoint(output)
        if "resume" not in checkpoint:
            raise ValueError(f"{output} has no training state to resume from (it was saved without one)")
        options = resumed_options(options, checkpoint, given)
    check_options(options)
    device = torch.device(options.device)  # check_options has refused one this torch cannot use
    output = Path(options.output)
    if options.threads:
        torch.set_num_threads(options.threads)

    # data; frames far outside the rest (a wrong label, a blown-up MD frame) are refused, or dropped if asked
    read = {"train": [(str(f), read_structures(f)) for f in options.train_files]}
    read["validation"] = [(str(f), read_structures(f)) for f in options.validation_files]
    labelled = [(f, i, s) for part in read.values() for f, frames in part for i, s in enumerate(frames)]
    outliers = find_outliers(labelled)
    if outliers and not options.drop_outliers:
        raise ValueError(outlier_message(outliers, len(labelled)))
    dropped = {id(o.structure) for o in outliers}
    if outliers:
        print(f"--drop-outliers: {len(outliers)} frame(s) left out:", *(o.describe() for o in outliers), sep="\n  ")
    training_set = [s for _, frames in read["train"] for s in frames if id(s) not in dropped]
    training_set += [s for f in options.forces_only_files for s in read_forces_only(f)]
    if all(s.forces_only for s in training_set):
        raise ValueError(
            "every training frame is forces-only; the energies need fully labelled frames: give at least one "
            "training file with energies (and stresses) as a plain argument, not --forces-only"
        )
    if options.validation_files:
        validation_set = [s for _, frames in read["validation"] for s in frames if id(s) not in dropped]
    else:
        training_set, validation_set = split(training_set, options.validation_fraction, options.seed)
    data_files = [*options.train_files, *options.forces_only_files, *options.validation_files]
    data_hashes = {str(f): file_sha256(f) for f in data_files}
    # the domain is where the energies were fitted: rattled or collapsed forces-only frames would widen it
    domain = training_domain([s for s in training_set if not s.forces_only], options.model.interaction_range)
    caution = periodic_data_warning([s for s in training_set if not s.forces_only])
    if caution:
        warnings.warn(caution, UserWarning, 2)

    # model
    torch.manual_seed(options.seed)
    if resume:
        if checkpoint["resume"]["epoch"] >= options.epochs:
            raise ValueError(
                f"{output} already holds {checkpoint['resume']['epoch']} epochs, and {options.epochs} were asked for; "
                "nothing to resume. Pass a larger --epochs to train further"
            )
        check_resume_state(checkpoint["resume"], output)
        model = model_from_checkpoint(checkpoint)
        model.load_state_dict(checkpoint["resume"]["model"])
    else:
        elements = sorted(options.elements or {int(z) for s in training_set for z in s.atomic_numbers})
        config = replace(options.model, elements=elements)
        model = TransformerPotential(config)
        if config.is_local:
            pass  # no absolute coordinates to start from: the smooth cutoff already makes attention local
        elif options.attention_init == "distance":
            init_distance_attention(model)
        elif options.attention_init != "random":
            raise ValueError(f"unknown attention_init {options.attention_init!r}; use distance or random")
    if not model.config.is_local and any(s.cell is not None for s in training_set + validation_set):
        raise ValueError(
            "the data holds periodic structures (a cell with pbc), which a global-attention model cannot treat; "
            "train a local model with --interaction-range (Å)"
        )
    check_interaction_range(model.config.interaction_range, domain)
    for source, index, structure in labelled:
        check_neighbour_count(
            len(structure.atomic_numbers), structure.cell, structure.pbc, model.config.interaction_range,
            f"{source} frame {index}", "Train with a shorter --interaction-range (3-6 Å), or check that frame's cell",
        )  # fmt: skip
    check_elements(training_set, model.config.elements, "the training data")
    check_elements(validation_set, model.config.elements, "the validation data")
    if not resume:
        reference_energies, force_rms = fit_reference_energies(training_set, model.config.elements)
        model.reference_energies.copy_(torch.from_numpy(reference_energies))
        model.energy_scale.fill_(force_rms)
    model.to(device)
    species = model.species_of_atomic_number.cpu()  # collate indexes it with CPU tensors
    ema = copy.deepcopy(model) if options.ema_decay > 0 else None

    # optimizer: no weight decay on norms, biases and embeddings of the system state
    decayed = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embedding" not in n]
    others = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decayed, "weight_decay": options.weight_decay}, {"params": others, "weight_decay": 0.0}],
        lr=options.learning_rate,
    )
    generator = torch.Generator().manual_seed(options.seed)
    steps_per_epoch = math.ceil(len(training_set) / options.batch_size)
    start_epoch, step, history = 0, 0, []
    if resume:
        state = checkpoint["resume"]
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        start_epoch, step, history = state["epoch"], state["step"], state["history"]
    # the schedule ends at the last epoch asked for, also when a resumed run has more (or fewer) frames
    total_steps = step + (options.epochs - start_epoch) * steps_per_epoch
    schedule_start = step if resume and options.restart_schedule else 0

    def rate(at: int) -> float:
        return learning_rate_at(at - schedule_start, total_steps - schedule_start, options)

    scale = float(model.energy_scale)
    log_path = output.with_suffix(".csv")
    started = time.perf_counter()
    for epoch in range(start_epoch, options.epochs):
        model.train()
        order = torch.randperm(len(training_set), generator=generator).tolist()
        progress = _progress(steps_per_epoch, f"epoch {epoch + 1}/{options.epochs}", options.progress)
        running = []
        for first in range(0, len(order), options.batch_size):
            batch = collate([training_set[i] for i in order[first : first + options.batch_size]], species)
            if options.augment_rotations:
                # rotate positions and force labels together: the labels stay consistent
                rotation = random_rotations(len(batch["energy"]), generator, batch["positions"].dtype)
                batch["positions"] = batch["positions"] @ rotation
                batch["forces"] = batch["forces"] @ rotation
                batch["cell"] = batch["cell"] @ rotation  # rows are lattice vectors: they turn with the atoms
                batch["virial"] = rotation.transpose(1, 2) @ batch["virial"] @ rotation  # sum of r (x) f turns twice
            batch = to_device(batch, device)
            for group in optimizer.param_groups:
                group["lr"] = rate(step)
            # fused attention kernels have no double backward; the math kernel does
            with sdpa_kernel(SDPBackend.MATH):
                energy, forces, virial = energy_and_forces(model, batch, training=True)
            labelled = batch["has_energy"]
            energy_error = ((energy - batch["energy"]) / batch["atom_count"] / scale) ** 2
            energy_loss = energy_error[labelled].sum() / max(1, int(labelled.sum()))
            frame_weight = torch.where(labelled, 1.0, options.forces_only_weight).to(forces.dtype)
            force_error = (((forces - batch["forces"]) / scale) ** 2).sum(-1) * frame_weight[:, None]
            force_loss = force_error[batch["mask"]].mean() / 3
            loss = options.energy_weight * energy_loss + options.force_weight * force_loss
            if virial is not None:  # per-atom virial, like the per-atom energy
                labelled = batch["has_virial"]
                error = (virial[labelled] - batch["virial"][labelled]) / batch["atom_count"][labelled, None, None]
                loss = loss + options.stress_weight * ((error / scale) ** 2).mean()
            if not torch.isfinite(loss):
                progress.close()
                raise _diverged(f"the loss became {loss.item()}", epoch, step, rate(step), options)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            gradient_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), options.gradient_clip)
            if not torch.isfinite(gradient_norm):
                progress.close()
                raise _diverged(f"the gradient norm became {gradient_norm.item()}", epoch, step, rate(step), options)
            optimizer.step()
            if ema is not None:
                with torch.no_grad():
                    for averaged, current in zip(ema.parameters(), model.parameters()):
                        averaged.lerp_(current, 1 - options.ema_decay)
            step += 1
            running.append((energy_loss.item(), force_loss.item()))
            progress.set_postfix(energy_loss=f"{energy_loss.item():.3g}", force_loss=f"{force_loss.item():.3g}")
            progress.update()
        progress.close()
        if (epoch + 1) % options.validate_every and epoch + 1 < options.epochs:
            continue  # small data sets: validating and saving every few steps would cost more than training

        inference_model = ema if ema is not None else model
        bad = non_finite_tensors(model.state_dict()) + non_finite_tensors(inference_model.state_dict())
        if bad:
            cause = f"the weights {', '.join(sorted(set(bad))[:3])} became NaN or infinite"
            raise _diverged(cause, epoch, step - 1, rate(step - 1), options)
        metrics = evaluate(inference_model, validation_set)
        row = {
            "epoch": epoch + 1,
            "step": step,
            "learning_rate": rate(step - 1),
            "train_energy_loss": float(np.mean([r[0] for r in running])),
            "train_force_loss": float(np.mean([r[1] for r in running])),
            **metrics,
            "elapsed_s": time.perf_counter() - started,
        }
        history.append(row)
        if options.progress:
            print(
                f"epoch {epoch + 1}: validation energy MAE {metrics['energy_mae_mev_per_atom']:.2f} meV/atom, "
                f"force MAE {metrics['force_mae_mev_per_a']:.1f} meV/Å",
                flush=True,
            )
        resume_state = {
            "model": on_cpu(model.state_dict()),
            "optimizer": on_cpu(optimizer.state_dict()),
            "ema": on_cpu(ema.state_dict()) if ema is not None else None,
            "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "epoch": epoch + 1,
            "step": step,
            "history": history,
        }
        training_record = {
            "options": asdict(options),
            "parameters": count_parameters(model),
            "training_structures": len(training_set),
            "validation_structures": len(validation_set),
            "dropped_outliers": [{"source": o.source, "frame": o.index, "reasons": o.reasons} for o in outliers],
            "history": history,
        }
        save_checkpoint(
            build_checkpoint(inference_model, provenance(data_hashes), training_record, resume_state, domain), output
        )
        _write_log(history, log_path)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, row)
    _plot_losses(history, output.with_name(output.stem + "_loss.png"))
    return output


def _diverged(cause: str, epoch: int, step: int, learning_rate: float, options: TrainingOptions) -> TrainingDiverged:
    # epochs before this one were saved (by this run or the one resumed); a diverged one never is
    kept = f"{options.output} keeps epoch {epoch}, the last one" if epoch > 0 else f"{options.output} was not written"
    return TrainingDiverged(
        f"training diverged in epoch {epoch + 1}, step {step + 1}: {cause} "
        f"(learning rate {learning_rate:.3g}). The learning rate is most likely "
        f"too high: lower --learning-rate (now {options.learning_rate:g}), lengthen --warmup-fraction or lower "
        f"--gradient-clip, and train again; {kept}"
    )


def _progress(total: int, description: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=description, disable=not enabled, leave=False, dynamic_ncols=True)


def _write_log(history: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def _plot_losses(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    figure, (losses, errors) = plt.subplots(1, 2, figsize=(10, 4))
    losses.semilogy(epochs, [r["train_energy_loss"] for r in history], label="energy")
    losses.semilogy(epochs, [r["train_force_loss"] for r in history], label="forces")
    losses.set(xlabel="epoch", ylabel="training loss (normalised)", title="training loss")
    losses.legend()
    errors.semilogy(epochs, [r["energy_mae_mev_per_atom"] for r in history], label="energy (meV/atom)")
    errors.semilogy(epochs, [r["force_mae_mev_per_a"] for r in history], label="forces (meV/Å)")
    errors.set(xlabel="epoch", ylabel="validation MAE", title="validation error")
    errors.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
