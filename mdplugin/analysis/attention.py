"""What the attention learned: per-layer, per-head attention weights against interatomic distance.

The model has no distance features; the seed paper found that its attention nevertheless decays with
distance, with an effective radius that adapts to the environment. This module re-runs the eager
model's blocks by hand, keeping softmax(q kᵀ / √d + mask) of every head (the fused attention kernel
never materialises it), then fits w ∝ exp(-r/λ) per layer and head and reports effective radii:
the attention-weighted mean distance Σ_j w_ij r_ij, and the radius holding 90% of an atom's attention.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mdplugin.model.transformer import Attention, TransformerPotential

RADIUS_FRACTION = 0.9  # the effective radius holds this fraction of an atom's attention


def attention_weights(attention: Attention, x: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Attention.forward by hand: the block's output [B, N, width] and its weights [B, heads, N, N]."""
    batch, atoms, width = x.shape
    q, k, v = (
        attention.qkv(x)
        .view(batch, atoms, 3, attention.heads, width // attention.heads)
        .permute(2, 0, 3, 1, 4)
        .unbind(0)
    )
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.size(-1)) + attention_mask, dim=-1)
    y = weights @ v
    return attention.out(y.transpose(1, 2).reshape(batch, atoms, width)), weights


def forward_with_attention(
    model: TransformerPotential, positions: Tensor, species: Tensor, mask: Tensor, charge: Tensor, multiplicity: Tensor
) -> tuple[Tensor, list[Tensor]]:
    """TransformerPotential.forward, step for step, also returning every layer's weights [B, heads, N, N]."""
    x, attention_mask = model.embed(positions, species, mask, charge, multiplicity)
    layers = []
    for block in model.blocks:
        update, layer_weights = attention_weights(block.attention, block.attention_norm(x), attention_mask)
        x = x + update
        x = x + block.ffn(block.ffn_norm(x))
        layers.append(layer_weights)
    return model.readout(x, species) * mask.to(x.dtype), layers


def structure_attention(
    model: TransformerPotential, positions: np.ndarray, numbers: np.ndarray, charge: int = 0, multiplicity: int = 1
) -> list[np.ndarray]:
    """Per-layer attention weights [heads, N, N] of one structure (Å, atomic numbers)."""
    dtype = model.reference_energies.dtype
    numbers_tensor = torch.as_tensor(np.asarray(numbers), dtype=torch.long)
    species = model.species_of_atomic_number[numbers_tensor]
    if bool((species < 0).any()):
        unknown = sorted({int(z) for z in numbers_tensor[species < 0]})
        raise ValueError(f"atomic numbers {unknown} are not among the model's elements {model.config.elements}")
    with torch.no_grad():
        _, layers = forward_with_attention(
            model,
            torch.as_tensor(np.asarray(positions), dtype=dtype).unsqueeze(0),
            species.unsqueeze(0),
            torch.ones(1, len(numbers), dtype=torch.bool),
            torch.tensor([charge]),
            torch.tensor([multiplicity]),
        )
    return [layer[0].numpy() for layer in layers]


# -------------------------------------------------------------------------------------- statistics


def fit_decay(distances: np.ndarray, mean_weights: np.ndarray, counts: np.ndarray) -> dict:
    """Least-squares fit of log w = log A - r/λ over the binned means (weighted by pair counts).

    λ is None when the weights do not fall with distance (slope ≥ 0).
    """
    usable = (counts > 0) & (mean_weights > 0)
    if usable.sum() < 2:
        return {"decay_length": None, "amplitude": None}
    slope, intercept = np.polyfit(distances[usable], np.log(mean_weights[usable]), 1, w=np.sqrt(counts[usable]))
    return {"decay_length": float(-1.0 / slope) if slope < 0 else None, "amplitude": float(np.exp(intercept))}


def binned_means(distances: np.ndarray, weights: np.ndarray, bin_width: float) -> dict:
    """Mean weight per distance bin: bin centres (Å), means per head [heads, bins], pair counts."""
    edges = np.arange(0.0, distances.max() + bin_width, bin_width)
    index = np.clip(np.digitize(distances, edges) - 1, 0, len(edges) - 2)
    counts = np.bincount(index, minlength=len(edges) - 1)
    sums = np.stack([np.bincount(index, weights=head, minlength=len(edges) - 1) for head in weights])
    means = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
    return {"distance": 0.5 * (edges[1:] + edges[:-1]), "mean_weight": means, "count": counts}


def radius_holding(weights: np.ndarray, distances: np.ndarray, fraction: float = RADIUS_FRACTION) -> np.ndarray:
    """Per head and query atom, the smallest distance within which `fraction` of its attention lies.

    weights [heads, N, N], distances [N, N] (self included at r = 0); returns [heads, N].
    """
    order = np.argsort(distances, axis=-1)
    sorted_distances = np.take_along_axis(distances, order, axis=-1)
    cumulative = np.cumsum(np.take_along_axis(weights, order[None].repeat(len(weights), 0), axis=-1), axis=-1)
    first = np.argmax(cumulative >= fraction - 1e-12, axis=-1)  # [heads, N]
    return np.take_along_axis(np.broadcast_to(sorted_distances, weights.shape), first[..., None], axis=-1)[..., 0]


def collect(model: TransformerPotential, frames: list) -> list[dict]:
    """Per layer: pair distances (i ≠ j), pair weights per head, and per-query radii, over all frames."""
    depth, heads = model.config.depth, model.config.heads
    layers = [
        {"distances": [], "weights": [], "self": [], "mean_distance": [], "radius": [], "uniform": []}
        for _ in range(depth)
    ]
    for atoms in frames:
        maps = structure_attention(
            model, atoms.positions, atoms.numbers, atoms.info.get("charge", 0), atoms.info.get("multiplicity", 1)
        )
        distances = np.linalg.norm(atoms.positions[:, None] - atoms.positions[None], axis=-1)
        off_diagonal = ~np.eye(len(atoms), dtype=bool)
        for layer, weights in zip(layers, maps):
            layer["distances"].append(distances[off_diagonal])
            layer["weights"].append(weights[:, off_diagonal].reshape(heads, -1))
            layer["self"].append(np.diagonal(weights, axis1=-2, axis2=-1))
            layer["mean_distance"].append((weights * distances).sum(-1))
            layer["radius"].append(radius_holding(weights, distances))
            layer["uniform"].append(distances.mean(-1))
    return [{key: np.concatenate(values, axis=-1) for key, values in layer.items()} for layer in layers]


def layer_summary(index: int, layer: dict, bin_width: float) -> dict:
    """Decay fits and effective radii of one layer, per head and for the head average."""
    bins = binned_means(layer["distances"], layer["weights"], bin_width)
    heads = []
    for head in range(len(layer["weights"])):
        heads.append(
            {
                "head": head,
                **fit_decay(bins["distance"], bins["mean_weight"][head], bins["count"]),
                "weighted_mean_distance": float(layer["mean_distance"][head].mean()),
                "radius_90": float(layer["radius"][head].mean()),
                "self_weight": float(layer["self"][head].mean()),
            }
        )
    average = bins["mean_weight"].mean(0)
    return {
        "layer": index,
        **fit_decay(bins["distance"], average, bins["count"]),
        "weighted_mean_distance": float(layer["mean_distance"].mean()),
        "radius_90": float(layer["radius"].mean()),
        "uniform_mean_distance": float(layer["uniform"].mean()),
        "self_weight": float(layer["self"].mean()),
        "heads": heads,
        "binned": {
            "distance": bins["distance"].tolist(),
            "mean_weight": average.tolist(),
            "count": bins["count"].tolist(),
        },
    }


# ---------------------------------------------------------------------------------------- driver


def read_frames(path: str | Path, max_structures: int) -> list:
    """Up to `max_structures` frames of a structure file or data set (any format ASE reads), evenly spaced."""
    import ase.io

    try:
        frames = ase.io.read(path, index=":")
    except Exception as error:  # ase raises many kinds for a file it cannot parse
        from mdplugin.errors import reason  # a bare StopIteration has no text

        raise ValueError(
            f"cannot read {path} as structures ({reason(error)}); give an extxyz, XYZ or PDB file"
        ) from None
    if not frames:
        raise ValueError(f"{path} holds no structures")
    small = [index for index, atoms in enumerate(frames) if len(atoms) < 2]
    if small:
        raise ValueError(
            f"{path}, frame {small[0]}: {len(frames[small[0]])} atom(s); attention between atoms needs at least two"
        )
    if len(frames) > max_structures:
        frames = [frames[i] for i in np.linspace(0, len(frames) - 1, max_structures).round().astype(int)]
    return frames


def load_eager_model(checkpoint: str | Path) -> TransformerPotential:
    """The eager model of a training checkpoint in float64; an export is refused (its weights are frozen constants)."""
    from mdplugin.model.checkpoint import CheckpointError, load_model

    try:
        model = load_model(checkpoint)
    except CheckpointError as error:
        raise ValueError(
            f"{error}. The attention analysis needs the training checkpoint (e.g. md17.pt), not its TorchScript export"
        ) from None
    if model.config.is_local:
        raise ValueError(
            f"{checkpoint} holds a local model; the attention analysis covers global-attention models "
            "(a local model's attention is confined to its interaction range by construction)"
        )
    return model.double().eval()


def analyze_attention(
    checkpoint: str | Path,
    structures: str | Path,
    output: str | Path,
    max_structures: int = 100,
    bin_width: float = 0.25,
    overwrite: bool = False,
) -> dict:
    """Write attention.json and attention.png for the structures in a file; returns the summary."""
    output = Path(output)
    json_path, figure_path = output / "attention.json", output / "attention.png"
    existing = [str(path) for path in (json_path, figure_path) if path.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} exist; pass --force to overwrite or choose another --output")
    model = load_eager_model(checkpoint)
    frames = read_frames(structures, max_structures)
    layers = collect(model, frames)
    summary = {
        "model": str(checkpoint),
        "structures_file": str(structures),
        "structures": len(frames),
        "atoms_per_structure": sorted({len(atoms) for atoms in frames}),
        "radius_fraction": RADIUS_FRACTION,
        "bin_width_angstrom": bin_width,
        "units": {"distance": "angstrom", "decay_length": "angstrom"},
        "layers": [layer_summary(index, layer, bin_width) for index, layer in enumerate(layers)],
    }
    output.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(summary, indent=2) + "\n")
    plot_attention(layers, summary, figure_path)
    return summary


def plot_attention(layers: list[dict], summary: dict, path: Path, max_points: int = 4000) -> None:
    """Per layer: weight against distance (scatter over heads), head-averaged binned mean, exponential fit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    figure, axes = plt.subplots(1, len(layers), figsize=(3.6 * len(layers), 3.6), squeeze=False, sharey=True)
    for axis, layer, info in zip(axes[0], layers, summary["layers"]):
        heads, pairs = layer["weights"].shape
        chosen = rng.choice(heads * pairs, size=min(max_points, heads * pairs), replace=False)
        axis.scatter(
            np.tile(layer["distances"], heads)[chosen],
            layer["weights"].reshape(-1)[chosen],
            s=2,
            alpha=0.15,
            color="0.5",
            label="pairs (all heads)",
        )
        distance, mean_weight = np.array(info["binned"]["distance"]), np.array(info["binned"]["mean_weight"])
        filled = np.array(info["binned"]["count"]) > 0
        axis.plot(distance[filled], mean_weight[filled], "o-", color="C0", ms=3, label="binned mean")
        title = f"layer {info['layer']}: r90 = {info['radius_90']:.2f} Å"
        if info["decay_length"] is not None:
            axis.plot(
                distance[filled],
                info["amplitude"] * np.exp(-distance[filled] / info["decay_length"]),
                "--",
                color="C3",
                label=f"exp(-r/{info['decay_length']:.2f} Å)",
            )
        axis.set(yscale="log", xlabel="distance r (Å)", title=title)
        axis.legend(fontsize=7)
    axes[0][0].set_ylabel("attention weight")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
