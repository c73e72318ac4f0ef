"""The graph-free Transformer potential.

One token per atom; LLaMA-2 style blocks (pre-RMSNorm, bidirectional attention, SwiGLU);
no positional encoding, no graph, no distance features. Inputs in Å, energies in eV.
Forces are -dE/dx by autograd, so the model is conservative by construction.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Tuple  # noqa: UP035 - TorchScript needs typing generics

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MAX_ATOMIC_NUMBER = 118


@dataclass
class ModelConfig:
    elements: list[int] = field(default_factory=lambda: [1, 6, 7, 8])  # atomic numbers
    width: int = 128
    depth: int = 4
    heads: int = 8
    ffn_multiplier: float = 8 / 3  # SwiGLU hidden = multiplier * width, as in LLaMA
    coordinate_embedding: str = "quadratic"  # x, y, z, |r|^2; or "gaussian" (soft bins), "fourier", "linear"
    coordinate_range: float = 8.0  # Å; gaussian centres span [-range, range]; quadratic: |r|^2 / range
    coordinate_features: int = 48  # per axis: gaussian bins or Fourier frequencies
    shortest_period: float = 2.0  # Å; Fourier periods run from 4 * range down to this
    max_charge: int = 4  # charge embedding covers -max_charge..max_charge
    max_multiplicity: int = 6  # spin multiplicity embedding covers 1..max_multiplicity

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        known = set(cls.__dataclass_fields__)
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown model config keys {sorted(unknown)}; is this file from a newer mdplugin?")
        return cls(**values)


class RMSNorm(nn.Module):
    def __init__(self, width: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class CoordinateEmbedding(nn.Module):
    """A smooth map from centred Cartesian coordinates (Å) to a width-dimensional vector.

    Every feature is infinitely differentiable in the positions: hard bins would make the energy
    jump where autograd sees no force, and NVE would drift.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.kind = config.coordinate_embedding
        k = config.coordinate_features
        if self.kind == "gaussian":
            centres = torch.linspace(-config.coordinate_range, config.coordinate_range, k)
            self.register_buffer("centres", centres)
            self.inverse_width = 1.0 / float(centres[1] - centres[0])
            in_features = 3 * k
        elif self.kind == "fourier":
            # geometric periods from 4 * range down to shortest_period; low frequencies let attention
            # logits approximate -c |r_i - r_j|^2 (cos(w d) ~ 1 - w^2 d^2 / 2), which trains far faster
            periods = torch.logspace(math.log10(4 * config.coordinate_range), math.log10(config.shortest_period), k)
            self.register_buffer("centres", 2 * math.pi / periods)
            self.inverse_width = 1.0
            in_features = 6 * k
        elif self.kind == "quadratic":
            self.register_buffer("centres", torch.zeros(1))
            self.inverse_width = 1.0 / config.coordinate_range
            in_features = 4
        elif self.kind == "linear":
            self.register_buffer("centres", torch.zeros(1))
            self.inverse_width = 1.0
            in_features = 3
        else:
            raise ValueError(f"unknown coordinate_embedding {self.kind!r}; use gaussian, fourier, linear or quadratic")
        self.project = nn.Linear(in_features, config.width)

    def forward(self, positions: Tensor) -> Tensor:
        if self.kind == "gaussian":
            offsets = (positions.unsqueeze(-1) - self.centres) * self.inverse_width
            features = torch.exp(-0.5 * offsets.pow(2)).flatten(-2)
        elif self.kind == "fourier":
            phases = positions.unsqueeze(-1) * self.centres
            features = torch.cat([torch.sin(phases), torch.cos(phases)], dim=-1).flatten(-2)
        elif self.kind == "quadratic":
            # x, y, z and |r|^2 / range: enough for an attention logit to equal -gamma |r_i - r_j|^2
            features = torch.cat([positions, positions.pow(2).sum(-1, keepdim=True) * self.inverse_width], dim=-1)
        else:
            features = positions
        return self.project(features)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.width % config.heads != 0:
            raise ValueError(f"width {config.width} is not divisible by heads {config.heads}")
        self.heads = config.heads
        self.qkv = nn.Linear(config.width, 3 * config.width, bias=False)
        self.out = nn.Linear(config.width, config.width, bias=False)

    def forward(self, x: Tensor, attention_mask: Tensor) -> Tensor:
        batch, atoms, width = x.shape
        q, k, v = self.qkv(x).view(batch, atoms, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        # bidirectional: every atom attends to every real atom; padding keys are masked out
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask)
        return self.out(y.transpose(1, 2).reshape(batch, atoms, width))


class FeedForward(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        hidden = int(config.ffn_multiplier * config.width)
        self.gate = nn.Linear(config.width, hidden, bias=False)
        self.up = nn.Linear(config.width, hidden, bias=False)
        self.down = nn.Linear(hidden, config.width, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.attention_norm = RMSNorm(config.width)
        self.attention = Attention(config)
        self.ffn_norm = RMSNorm(config.width)
        self.ffn = FeedForward(config)

    def forward(self, x: Tensor, attention_mask: Tensor) -> Tensor:
        x = x + self.attention(self.attention_norm(x), attention_mask)
        return x + self.ffn(self.ffn_norm(x))


class TransformerPotential(nn.Module):
    """Energy of a padded batch of structures.

    positions [B, N, 3] Å, species [B, N] (index into config.elements), mask [B, N] (True for real
    atoms), charge [B] and multiplicity [B] (int64). Returns per-atom energies [B, N] in eV (zero on
    padding); the total energy is their sum.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        width = config.width
        self.species_embedding = nn.Embedding(len(config.elements), width)
        self.coordinate_embedding = CoordinateEmbedding(config)
        self.charge_embedding = nn.Embedding(2 * config.max_charge + 1, width)
        self.multiplicity_embedding = nn.Embedding(config.max_multiplicity, width)
        self.max_charge = config.max_charge
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.depth)])
        self.norm = RMSNorm(width)
        self.head = nn.Linear(width, 1)
        nn.init.zeros_(self.head.bias)  # start from E = sum of E0: no constant offset to unlearn
        # energy = scale * network output + E0[element]; set from the training data
        self.register_buffer("energy_scale", torch.ones(()))
        self.register_buffer("reference_energies", torch.zeros(len(config.elements)))
        # atomic number -> species index (-1 for elements the model does not know)
        lookup = torch.full((MAX_ATOMIC_NUMBER + 1,), -1, dtype=torch.long)
        lookup[torch.tensor(config.elements)] = torch.arange(len(config.elements))
        self.register_buffer("species_of_atomic_number", lookup)

    def forward(self, positions: Tensor, species: Tensor, mask: Tensor, charge: Tensor, multiplicity: Tensor) -> Tensor:
        x, attention_mask = self.embed(positions, species, mask, charge, multiplicity)
        for block in self.blocks:
            x = block(x, attention_mask)
        return self.readout(x, species, mask)

    def embed(
        self, positions: Tensor, species: Tensor, mask: Tensor, charge: Tensor, multiplicity: Tensor
    ) -> Tuple[Tensor, Tensor]:  # noqa: UP006 - TorchScript needs typing generics
        """Input tokens [B, N, width] and the additive key-padding mask [B, 1, 1, N]."""
        weights = mask.to(positions.dtype).unsqueeze(-1)
        # centre on the centroid of real atoms: exact translation invariance, forces sum to zero
        centroid = (positions * weights).sum(1, keepdim=True) / weights.sum(1, keepdim=True)
        centred = (positions - centroid) * weights
        x = self.species_embedding(species) + self.coordinate_embedding(centred)
        system = self.charge_embedding(charge + self.max_charge) + self.multiplicity_embedding(multiplicity - 1)
        x = x + system.unsqueeze(1)
        # padding keys get -inf, broadcast over heads and queries
        attention_mask = torch.zeros_like(weights.squeeze(-1)).masked_fill(~mask, float("-inf"))[:, None, None, :]
        return x, attention_mask

    def readout(self, x: Tensor, species: Tensor, mask: Tensor) -> Tensor:
        """Per-atom energies (eV), zero on padding."""
        per_atom = self.head(self.norm(x)).squeeze(-1) * self.energy_scale + self.reference_energies[species]
        return per_atom * mask.to(per_atom.dtype)


def init_distance_attention(
    model: TransformerPotential, coordinate_gain: float = 0.3, constant_gain: float = 7.0
) -> None:
    """Start every attention head as a Gaussian kernel of interatomic distance.

    A randomly initialised model sits for thousands of steps on a plateau where it predicts no
    forces: uniform attention over centred coordinates carries no pair information. Here the first
    five residual channels hold x, y, z, |r|^2/range (scaled by coordinate_gain) and a constant, and
    the first four query/key dimensions of head h are set so that its logit is
    -gamma_h |r_i - r_j|^2 + (terms constant over j): exactly in the first block; later blocks read
    the same channels after earlier blocks have added their (small, random) updates. The gains assume the RMS of an element token
    alone (gamma_h from 0.5 to 4 per Å^2); the random charge and spin embeddings make real tokens
    larger, so the starting kernels are wider: gamma_h is about 0.14 to 1.1 per Å^2 at width 64
    (measured in tests/test_model.py). The weights stay ordinary trainable parameters; only their
    starting values change. Needs the quadratic coordinate embedding.
    """
    config = model.config
    if config.coordinate_embedding != "quadratic":
        raise ValueError(
            f"distance attention initialisation needs coordinate_embedding 'quadratic', not "
            f"{config.coordinate_embedding!r}; pass --coordinate-embedding quadratic, or --attention-init random"
        )
    width, heads = config.width, config.heads
    head_width = width // heads
    if width < 6 or head_width < 4:
        raise ValueError(
            f"distance attention initialisation needs width >= 6 and width / heads >= 4, not {width} / {heads}"
        )
    length = config.coordinate_range
    with torch.no_grad():
        project = model.coordinate_embedding.project
        project.weight.zero_()
        project.bias.zero_()
        project.weight[:4, :4] = coordinate_gain * torch.eye(4)
        # element tokens: channels 0-3 free for the coordinates, channel 4 constant, equal norms
        species = model.species_embedding.weight
        species[:, :4] = 0
        species[:, 4] = 1
        species[:, 5:] *= math.sqrt(width - 5) / species[:, 5:].norm(dim=1, keepdim=True)
        model.charge_embedding.weight[:, :5] = 0
        model.multiplicity_embedding.weight[:, :5] = 0
        rms = math.sqrt((width - 4) / width)  # RMSNorm divisor of a token, coordinates neglected
        gammas = [0.5 * 8 ** (h / max(heads - 1, 1)) for h in range(heads)]
        for block in model.blocks:
            weight = block.attention.qkv.weight
            query, key = weight[:width], weight[width : 2 * width]
            for h, gamma in enumerate(gammas):
                first = h * head_width
                query[first : first + head_width] *= 0.1  # the kernel dominates at first
                key[first : first + head_width] *= 0.1
                query[first : first + 4] = 0
                key[first : first + 4] = 0
                # logit = q.k / sqrt(head_width) = 2 gamma r_i.r_j - gamma |r_j|^2
                gain = rms * math.sqrt(2 * gamma * math.sqrt(head_width)) / coordinate_gain
                for axis in range(3):
                    query[first + axis, axis] = gain
                    key[first + axis, axis] = gain
                query[first + 3, 4] = constant_gain
                key[first + 3, 3] = -math.sqrt(head_width) * length * rms**2 * gamma / (coordinate_gain * constant_gain)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
