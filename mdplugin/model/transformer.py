"""The graph-free Transformer potential, global or local.

One token per atom; LLaMA-2 style blocks (pre-RMSNorm, bidirectional attention, SwiGLU);
no positional encoding, no graph, no distance features. Inputs in Å, energies in eV.
Forces are -dE/dx by autograd, so the model is conservative by construction.

Two variants share every block and differ in one place, the attention:
- global (`interaction_range=None`, for molecules): every atom attends to every atom; geometry enters
  as a smooth embedding of centroid-centred coordinates added to the tokens.
- local (`interaction_range=R`, for periodic boxes and large systems): atom i attends to itself and
  to the atoms closer than R (periodic images included); geometry enters only as displacements
  r_j - r_i, which shift the keys and values (relative position representations), and every weight
  is multiplied by a smooth cutoff f_c(|r_j - r_i|) that vanishes with all its derivatives at R.
  Stacked over `depth` blocks, an atom's energy depends on the atoms within depth x R.
"""

from __future__ import annotations

import math
from typing import List, Optional, Tuple  # noqa: UP035 - TorchScript needs typing generics

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from vesin_torch import NeighborList

from mdplugin.model import repulsion
from mdplugin.model.config import ModelConfig

MAX_ATOMIC_NUMBER = 118


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
    """Global attention: every atom attends to every real atom of its structure."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.width % config.heads != 0:
            raise ValueError(f"width {config.width} is not divisible by heads {config.heads}")
        self.heads = config.heads
        self.qkv = nn.Linear(config.width, 3 * config.width, bias=False)
        self.out = nn.Linear(config.width, config.width, bias=False)

    def forward(
        self, queries: Tensor, context: Tensor, attention_bias: Tensor, neighbors: Tensor, displacement: Tensor
    ) -> Tensor:
        # queries and context are the same tokens [B, N, width]; attention_bias [B, 1, 1, N] masks padding
        # keys; neighbors and displacement are unused (every atom is a neighbour; geometry is in the tokens)
        batch, atoms, width = queries.shape
        q, k, v = (
            self.qkv(queries).view(batch, atoms, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        )
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_bias)
        return self.out(y.transpose(1, 2).reshape(batch, atoms, width))


def log_cutoff(squared_distance: Tensor, cutoff: float) -> Tensor:
    """log f_c, with f_c(r) = exp(1 - 1 / (1 - r^2/R^2)) below R and 0 beyond.

    f_c is 1 at r = 0 and reaches 0 at R with all its derivatives, so an atom crossing R changes
    neither the energy nor the forces abruptly. Beyond R the log is -1e12: a weight of exactly 0.
    """
    gap = (1 - squared_distance / (cutoff * cutoff)).clamp(min=1e-12)
    return 1 - 1 / gap


class DisplacementEncoding(nn.Module):
    """A learned smooth function of the displacement r_j - r_i (Å), shared by all blocks.

    Its input is r/R and r^2/R^2 and, with radial_features = n, n Gaussians of |r| centred evenly on
    [0, R]: a fine radial resolution from the first step (bond lengths and contact distances differ by
    tenths of an Å), which an MLP of (x, y, z, r^2) alone has to learn slowly.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        assert config.interaction_range is not None
        self.inverse_range = 1.0 / config.interaction_range
        radial = config.radial_features
        centres = torch.linspace(0.0, 1.0, radial) if radial > 0 else torch.zeros(0)
        self.register_buffer("radial_centres", centres, persistent=False)  # fixed by the config, not saved
        self.radial_sharpness = float(radial * radial) / 2.0  # Gaussian width: the spacing 1 / n of the centres
        features = config.displacement_features
        self.mlp = nn.Sequential(nn.Linear(4 + radial, features), nn.SiLU(), nn.Linear(features, features))

    def forward(self, displacement: Tensor) -> Tensor:
        scaled = displacement * self.inverse_range
        squared = scaled.pow(2).sum(-1, keepdim=True)
        inputs = [scaled, squared]
        if self.radial_centres.numel() > 0:
            # sqrt(r^2 + eps): |r| with a finite gradient at r = 0 (the self slot)
            distance = (squared + 1e-12).sqrt()
            inputs.append(torch.exp(-self.radial_sharpness * (distance - self.radial_centres.to(scaled.dtype)).pow(2)))
        return self.mlp(torch.cat(inputs, dim=-1))


class NeighbourAttention(nn.Module):
    """Local attention: atom i attends to its neighbour slots (slot 0 is i itself).

    As seen from i, neighbour j offers the key k_j + A phi_ij and the value v_j + B phi_ij, phi_ij the
    encoded displacement r_j - r_i; adding log f_c(r_ij) to the logits makes every weight proportional to
    f_c exp(q.k). Absolute positions never enter, so the energy is translation and periodic-image invariant.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.width % config.heads != 0:
            raise ValueError(f"width {config.width} is not divisible by heads {config.heads}")
        self.heads = config.heads
        self.scale = 1.0 / math.sqrt(config.width // config.heads)
        self.qkv = nn.Linear(config.width, 3 * config.width, bias=False)
        self.key_displacement = nn.Linear(config.displacement_features, config.width, bias=False)
        self.value_displacement = nn.Linear(config.displacement_features, config.width, bias=False)
        self.out = nn.Linear(config.width, config.width, bias=False)

    def forward(
        self, queries: Tensor, context: Tensor, attention_bias: Tensor, neighbors: Tensor, displacement: Tensor
    ) -> Tensor:
        # queries [S, width]: the atoms being updated; context [M, width]: every atom; neighbors [S, K] indices
        # into context; attention_bias [S, K] log f_c (-inf: empty slot); displacement [S, K, F] encoded r_j - r_i.
        return self.attend(queries, self.keys_values(context), attention_bias, neighbors, displacement)

    def keys_values(self, context: Tensor) -> Tensor:
        """[M, 2 width]: each atom's key and value, the only part of an atom that its neighbours read."""
        width = context.size(1)
        return F.linear(context, self.qkv.weight[width:])

    def attend(
        self, queries: Tensor, keys_values: Tensor, attention_bias: Tensor, neighbors: Tensor, displacement: Tensor
    ) -> Tensor:
        """The update of `queries` from the keys and values [M, 2 width] of the atoms in their slots.

        Products are elementwise over [S, K, H, .]: on a CPU, millions of tiny per-atom matrix products
        (einsum -> bmm) cost more."""
        atoms, width = queries.shape
        slots = neighbors.size(1)
        head_width = width // self.heads
        q = F.linear(queries, self.qkv.weight[:width]).view(atoms, self.heads, head_width)
        k, v = keys_values.view(-1, 2, self.heads, head_width).unbind(1)
        flat = neighbors.flatten()
        keys = k.index_select(0, flat).view(atoms, slots, self.heads, head_width)
        values = v.index_select(0, flat).view(atoms, slots, self.heads, head_width)
        key_geometry = self.key_displacement.weight.view(self.heads, head_width, -1)  # [H, D, F]
        value_geometry = self.value_displacement.weight.view(self.heads, head_width, -1)
        # q.(A phi) = (A^T q).phi: project each query once rather than every neighbour's displacement
        query_geometry = torch.einsum("mhd,hdf->mhf", q, key_geometry)
        logits = (q.unsqueeze(1) * keys).sum(-1) + (query_geometry.unsqueeze(1) * displacement.unsqueeze(2)).sum(-1)
        weights = torch.softmax(logits * self.scale + attention_bias.unsqueeze(-1), dim=1)  # [S, K, H]
        y = (weights.unsqueeze(-1) * values).sum(1)  # [S, H, D]
        # sum_j w_ij B phi_ij = B (sum_j w_ij phi_ij): pool the displacements first
        pooled = (weights.unsqueeze(-1) * displacement.unsqueeze(2)).sum(1)  # [S, H, F]
        y = y + torch.einsum("mhf,hdf->mhd", pooled, value_geometry)
        return self.out(y.reshape(atoms, width))


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
        self.attention = NeighbourAttention(config) if config.is_local else Attention(config)
        self.ffn_norm = RMSNorm(config.width)
        self.ffn = FeedForward(config)

    def forward(
        self, x: Tensor, context: Tensor, attention_bias: Tensor, neighbors: Tensor, displacement: Tensor
    ) -> Tensor:
        """x: the tokens to update; context: the tokens they attend to (the global model passes x twice)."""
        x = x + self.attention(
            self.attention_norm(x), self.attention_norm(context), attention_bias, neighbors, displacement
        )
        return x + self.ffn(self.ffn_norm(x))

    def keys_values(self, context: Tensor) -> Tensor:
        """Local model: the keys and values [M, 2 width] that `update` reads from the tokens `context`."""
        return self.attention.keys_values(self.attention_norm(context))

    def update(
        self, x: Tensor, keys_values: Tensor, attention_bias: Tensor, neighbors: Tensor, displacement: Tensor
    ) -> Tensor:
        """Local model: `forward` with the context's keys and values given (they may come from other ranks)."""
        x = x + self.attention.attend(self.attention_norm(x), keys_values, attention_bias, neighbors, displacement)
        return x + self.ffn(self.ffn_norm(x))


def neighbor_slots(
    positions: Tensor, centers: Tensor, neighbors: Tensor, shifts: Tensor, cutoff: float
) -> Tuple[Tensor, Tensor, Tensor]:  # noqa: UP006
    """The pair list as a padded table: slot 0 of every atom is the atom itself, then its neighbours.

    positions [M, 3] Å; pairs (centers[e], neighbors[e]) with displacement positions[j] - positions[i] +
    shifts[e]. Returns indices [M, K] (empty slots point at the atom itself), displacements [M, K, 3] Å
    and log f_c [M, K] (-inf on empty slots). Computed in the positions' precision: displacements of
    atoms far from the origin keep their digits even when the model runs in float32.
    """
    displacement = (
        positions.index_select(0, neighbors) - positions.index_select(0, centers) + shifts.to(positions.dtype)
    )
    return pair_slots(centers, neighbors, displacement, positions.size(0), cutoff)


def pair_slots(
    centers: Tensor, neighbors: Tensor, displacement: Tensor, atoms: int, cutoff: float
) -> Tuple[Tensor, Tensor, Tensor]:  # noqa: UP006
    """The padded table of `neighbor_slots` for the first `atoms` atoms, from each pair's displacement [E, 3] Å,
    exactly as wide as the most crowded atom needs (one host synchronisation: the width is read back).

    Every centre must be below `atoms`; neighbours may be any atom (ghosts beyond the rows updated).
    """
    counts = torch.bincount(centers, minlength=atoms)
    width = 1 + (int(counts.max()) if centers.numel() > 0 else 0)
    index, table, bias, _ = pair_table(centers, neighbors, displacement, atoms, cutoff, width)
    return index, table, bias


def pair_table(
    centers: Tensor, neighbors: Tensor, displacement: Tensor, atoms: int, cutoff: float, capacity: int
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:  # noqa: UP006
    """The table of `pair_slots` with a fixed width `capacity` (slot 0 included): no host synchronisation.

    Also returns the width every pair would need (a 0-dim tensor, on the device): a caller that finds it
    above `capacity` must not use the result (the pairs beyond were dropped) and reports or rebuilds.
    Pairs whose centre is `atoms` are padding (fixed-size pair lists) and are dropped.
    """
    device = displacement.device
    order = torch.argsort(centers, stable=True)
    centers, neighbors, displacement = centers[order], neighbors[order], displacement[order]
    # counts by index_add, not bincount: bincount's output length is data-dependent
    counts = torch.zeros(atoms + 1, dtype=torch.long, device=device).index_add_(0, centers, torch.ones_like(centers))
    slot = torch.arange(centers.numel(), device=device) - (torch.cumsum(counts, 0) - counts)[centers] + 1
    # overflowing and padding pairs land in a spare row and column, cut off below
    spare = (slot >= capacity) | (centers >= atoms)
    rows = centers.masked_fill(spare, atoms)
    slot = slot.masked_fill(spare, capacity)
    index = torch.arange(atoms + 1, device=device).unsqueeze(1).repeat(1, capacity + 1)
    index = index.index_put((rows, slot), neighbors)
    table = torch.zeros(atoms + 1, capacity + 1, 3, dtype=displacement.dtype, device=device)
    table = table.index_put((rows, slot), displacement)
    occupied = torch.zeros(atoms + 1, capacity + 1, dtype=torch.bool, device=device)
    occupied[:, 0] = True
    occupied = occupied.index_put((rows, slot), torch.ones_like(rows, dtype=torch.bool))
    index, table, occupied = index[:atoms, :capacity], table[:atoms, :capacity], occupied[:atoms, :capacity]
    bias = log_cutoff(table.pow(2).sum(-1), cutoff).masked_fill(~occupied, float("-inf"))
    return index, table, bias, 1 + counts[:atoms].max()


def pairs_within(points: Tensor, box: Tensor, periodic: Tensor, cutoff: float) -> Tuple[Tensor, Tensor, Tensor]:  # noqa: UP006
    """Every ordered pair (i, j) closer than `cutoff` (Å) among `points` [N, 3], and the Cartesian shift [E, 3]
    (Å) such that r_j - r_i + shift is the displacement to the image in range. The shifts carry the box's
    autograd graph (stress); the search itself is not differentiated (vesin, one host synchronisation)."""
    calculator = NeighborList(cutoff=cutoff, full_list=True, n_threads=1)
    i, j, images = calculator.compute(points.detach(), box.detach(), periodic, "ijS", True)
    return i.to(torch.long), j.to(torch.long), images.to(points.dtype) @ box


def rows_to_update(index: Tensor, attention_bias: Tensor, wanted: int, depth: int) -> List[Tensor]:  # noqa: UP006
    """For each block, the atoms whose new tokens a later block (or the energy of the first `wanted`
    atoms) reads: those within depth - 1 - l neighbour hops of the wanted atoms, for block l."""
    atoms = index.size(0)
    far = depth + 1
    hops = torch.full((atoms,), far, dtype=torch.long, device=index.device)
    hops[:wanted] = 0
    connected = attention_bias > float("-inf")
    for _ in range(depth - 1):
        through_neighbor = hops[index].masked_fill(~connected, far).min(1).values + 1
        hops = torch.minimum(hops, through_neighbor)
    return [torch.nonzero(hops <= depth - 1 - layer).squeeze(1) for layer in range(depth)]


class TransformerPotential(nn.Module):
    """Energy of a padded batch of structures.

    positions [B, N, 3] Å, species [B, N] (index into config.elements), mask [B, N] (True for real
    atoms, which come first in each row), charge [B] and multiplicity [B] (int64); for a local model
    optionally cell [B, 3, 3] (Å, rows are lattice vectors) and pbc [B, 3] (bool). Returns per-atom
    energies [B, N] in eV (zero on padding); the total energy is their sum.
    """

    __constants__ = ["local", "repulsion"]  # TorchScript compiles only the branches this model takes

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.local = config.is_local
        self.cutoff = float(config.interaction_range) if config.interaction_range is not None else 0.0
        width = config.width
        self.species_embedding = nn.Embedding(len(config.elements), width)
        if self.local:
            self.displacement_encoding = DisplacementEncoding(config)
        else:
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
        # the optional repulsive core (model/repulsion.py): cutoffs by species pair, set by enable_repulsion
        self.repulsion = config.repulsion == "zbl"
        self.core_switch_start = repulsion.SWITCH_START
        species = len(config.elements)
        self.register_buffer("core_cutoffs", torch.zeros(species, species), persistent=False)
        self.register_buffer("atomic_numbers", torch.tensor(config.elements), persistent=False)

    def enable_repulsion(self, cutoffs: List[List[float]]) -> None:  # noqa: UP006
        """Add the ZBL core with these cutoffs (Å) by species pair (`repulsion.core_cutoffs`)."""
        self.repulsion = True
        self.config.repulsion = "zbl"
        self.core_cutoffs.copy_(torch.tensor(cutoffs, dtype=self.core_cutoffs.dtype))

    def core_energies(self, species: Tensor, neighbor_species: Tensor, displacement: Tensor) -> Tensor:
        """Per-atom core energies [S] (eV): half of each pair's, from the displacements [S, K, 3] (Å) to the
        neighbours [S, K] of atoms of `species` [S] (zero-length slots count nothing)."""
        squared = displacement.pow(2).sum(-1)
        distance = squared.clamp(min=1e-30).sqrt() * (squared > 0)  # exactly 0 on empty and self slots
        centre = species.unsqueeze(1).expand_as(neighbor_species)
        pair = repulsion.zbl_energy(
            distance,
            self.atomic_numbers[centre],
            self.atomic_numbers[neighbor_species],
            self.core_cutoffs[centre, neighbor_species].to(distance.dtype),
            self.core_switch_start,
        )
        return 0.5 * pair.sum(1)

    def forward(
        self,
        positions: Tensor,
        species: Tensor,
        mask: Tensor,
        charge: Tensor,
        multiplicity: Tensor,
        cell: Optional[Tensor] = None,  # noqa: UP045
        pbc: Optional[Tensor] = None,  # noqa: UP045
    ) -> Tensor:
        if self.local:
            batch, atoms = mask.shape
            centers, neighbors, shifts = self.neighbor_pairs(positions, mask, cell, pbc)
            system = self.system_embedding(charge, multiplicity).unsqueeze(1).expand(-1, atoms, -1)
            per_atom = self.local_energies(
                positions.flatten(0, 1), species.flatten(), system.flatten(0, 1), centers, neighbors, shifts
            )
            return per_atom.view(batch, atoms) * mask.to(per_atom.dtype)
        if cell is not None and pbc is not None and bool(pbc.any()):
            raise ValueError(
                "a global-attention model cannot treat a periodic cell; use a local model (trained with --interaction-range)"
            )
        x, attention_bias = self.embed(positions, species, mask, charge, multiplicity)
        empty = torch.empty(0, device=positions.device)
        for block in self.blocks:
            x = block(x, x, attention_bias, empty, empty)
        energies = self.readout(x, species)
        if self.repulsion:  # every pair of real atoms; padding rows sit at the origin and are masked out
            batch, atoms = mask.shape
            displacement = (positions.unsqueeze(1) - positions.unsqueeze(2)) * (
                mask.unsqueeze(1) & mask.unsqueeze(2)
            ).unsqueeze(-1)
            neighbor_species = species.unsqueeze(1).expand(-1, atoms, -1).reshape(batch * atoms, atoms)
            core = self.core_energies(species.flatten(), neighbor_species, displacement.flatten(0, 1))
            energies = energies + core.view(batch, atoms).to(energies.dtype)
        return energies * mask.to(x.dtype)

    def system_embedding(self, charge: Tensor, multiplicity: Tensor) -> Tensor:
        """[B, width]: total charge and spin multiplicity, added to every token."""
        return self.charge_embedding(charge + self.max_charge) + self.multiplicity_embedding(multiplicity - 1)

    def embed(
        self, positions: Tensor, species: Tensor, mask: Tensor, charge: Tensor, multiplicity: Tensor
    ) -> Tuple[Tensor, Tensor]:  # noqa: UP006 - TorchScript needs typing generics
        """Global model: input tokens [B, N, width] and the additive key-padding mask [B, 1, 1, N]."""
        weights = mask.to(positions.dtype).unsqueeze(-1)
        # centre on the centroid of real atoms: exact translation invariance, forces sum to zero
        centroid = (positions * weights).sum(1, keepdim=True) / weights.sum(1, keepdim=True)
        centred = (positions - centroid) * weights
        x = self.species_embedding(species) + self.coordinate_embedding(centred)
        x = x + self.system_embedding(charge, multiplicity).unsqueeze(1)
        # padding keys get -inf, broadcast over heads and queries
        attention_bias = torch.zeros_like(weights.squeeze(-1)).masked_fill(~mask, float("-inf"))[:, None, None, :]
        return x, attention_bias

    def neighbor_pairs(
        self,
        positions: Tensor,
        mask: Tensor,
        cell: Optional[Tensor],  # noqa: UP045
        pbc: Optional[Tensor],  # noqa: UP045
    ) -> Tuple[Tensor, Tensor, Tensor]:  # noqa: UP006
        """Local model: pairs closer than the interaction range, flattened over the batch.

        Returns centre and neighbour indices into the [B * N] atoms and Cartesian shifts [E, 3] (Å), such
        that r_j - r_i + shift is the displacement to the image in range (several images of one atom
        appear when the cell is shorter than 2R). The shifts carry the cell's autograd graph (stress).
        """
        batch, atoms = mask.shape
        centers: List[Tensor] = []  # noqa: UP006
        neighbors: List[Tensor] = []  # noqa: UP006
        shifts: List[Tensor] = []  # noqa: UP006
        for b in range(batch):
            count = int(mask[b].sum())
            points = positions[b, :count].detach()
            if cell is None or pbc is None:
                box = torch.zeros(3, 3, dtype=positions.dtype, device=positions.device)
                periodic = torch.zeros(3, dtype=torch.bool, device=positions.device)
            else:
                box = cell[b]
                periodic = pbc[b]
            i, j, shift = pairs_within(points, box, periodic, self.cutoff)
            centers.append(i + b * atoms)
            neighbors.append(j + b * atoms)
            shifts.append(shift)
        return torch.cat(centers), torch.cat(neighbors), torch.cat(shifts)

    def local_energies(
        self,
        positions: Tensor,
        species: Tensor,
        system: Tensor,
        centers: Tensor,
        neighbors: Tensor,
        shifts: Tensor,
        wanted: int = -1,
    ) -> Tensor:
        """Local model: per-atom energies (eV) of M atoms given their pairs within range.

        Any pair list that holds every pair closer than R gives the same energies: the neighbour-list
        entry point of an export (LAMMPS ghosts) and the model's own search (periodic cells) meet here.
        With `wanted` = n, only the first n atoms' energies [n] are computed, and block l updates only
        the atoms within depth - 1 - l hops of them: the outer ghost shells are read, never updated.
        """
        index, displacement, attention_bias = neighbor_slots(positions, centers, neighbors, shifts, self.cutoff)
        return self.table_energies(species, system, index, displacement, attention_bias, wanted)

    def table_energies(
        self, species: Tensor, system: Tensor, index: Tensor, displacement: Tensor, attention_bias: Tensor, wanted: int
    ) -> Tensor:
        """`local_energies` from the padded neighbour table (index [M, K], displacements [M, K, 3] Å, log f_c)."""
        dtype = self.reference_energies.dtype
        encoded = self.displacement_encoding(displacement.to(dtype))
        attention_bias = attention_bias.to(dtype)
        x = self.species_embedding(species) + system.to(dtype)
        atoms = x.size(0)
        if wanted < 0 or wanted >= atoms:
            for block in self.blocks:
                x = block(x, x, attention_bias, index, encoded)
            energies = self.readout(x, species)
            if self.repulsion:
                energies = energies + self.core_energies(species, species[index], displacement).to(energies.dtype)
            return energies
        layer_rows = rows_to_update(index, attention_bias, wanted, len(self.blocks))
        for layer, block in enumerate(self.blocks):
            rows = layer_rows[layer]
            updated = block(x.index_select(0, rows), x, attention_bias[rows], index[rows], encoded[rows])
            x = x.index_copy(0, rows, updated)
        energies = self.readout(x[:wanted], species[:wanted])
        if self.repulsion:
            core = self.core_energies(species[:wanted], species[index[:wanted]], displacement[:wanted])
            energies = energies + core.to(energies.dtype)
        return energies

    def readout(self, x: Tensor, species: Tensor) -> Tensor:
        """Per-atom energies (eV) from the final tokens."""
        return self.head(self.norm(x)).squeeze(-1) * self.energy_scale + self.reference_energies[species]


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
