"""An optional short-range repulsive core: the ZBL screened nuclear repulsion, switched off smoothly.

Each element pair gets a cutoff r_c: the shortest distance of that pair in the training data when the
checkpoint records it, so the core is exactly zero on every training structure and changes nothing the
model learned; otherwise 0.8 x the sum of the covalent radii, below any bond. Below 0.75 r_c the core is the
full ZBL energy (Ziegler, Biersack and Littmark's universal screening); from 0.75 r_c to r_c a quintic switch
takes it to zero with its first and second derivatives. It lives inside the model, so every engine sees it.
"""

from __future__ import annotations

import torch
from torch import Tensor

SWITCH_START = 0.75  # the full ZBL energy below this fraction of the cutoff
COVALENT_FRACTION = 0.8  # cutoff of a pair the training data does not hold: this fraction of the covalent radii
# covalent radii (Å), Cordero et al. 2008, H to Kr; 1.5 Å beyond
COVALENT_RADII = [0.0, 0.31, 0.28, 1.28, 0.96, 0.84, 0.76, 0.71, 0.66, 0.57, 0.58, 1.66, 1.41, 1.21, 1.11, 1.07, 1.05,
                  1.02, 1.06, 2.03, 1.76, 1.70, 1.60, 1.53, 1.39, 1.39, 1.32, 1.26, 1.24, 1.32, 1.22, 1.22, 1.20, 1.19,
                  1.20, 1.20, 1.16]  # fmt: skip


def covalent_radius(number: int) -> float:
    return COVALENT_RADII[number] if number < len(COVALENT_RADII) else 1.5


def core_cutoffs(elements: list[int], shortest: dict[str, float] | None) -> tuple[list[list[float]], dict[str, float]]:
    """The cutoff table [species, species] (Å) and the same by pair name ("H-O"), from the training data's
    shortest distances where known (keys as `domain["shortest_distance"]` writes them)."""
    from mdplugin.elements import symbols

    names = symbols(elements)
    table = [[0.0] * len(elements) for _ in elements]
    by_name = {}
    for a, za in enumerate(elements):
        for b, zb in enumerate(elements):
            pair = f"{names[a]}-{names[b]}" if a <= b else f"{names[b]}-{names[a]}"
            known = (shortest or {}).get(pair) or (shortest or {}).get(f"{names[b]}-{names[a]}")
            cutoff = float(known) if known else COVALENT_FRACTION * (covalent_radius(za) + covalent_radius(zb))
            table[a][b] = cutoff
            by_name[pair] = cutoff
    return table, by_name


def zbl_energy(distance: Tensor, zi: Tensor, zj: Tensor, cutoff: Tensor, switch_start: float) -> Tensor:
    """Pair energies (eV) at `distance` (Å) of atomic numbers zi, zj, switched off from switch_start x cutoff
    to `cutoff` (0: no core). Zero where distance >= cutoff or distance == 0 (empty slots), with a finite
    gradient everywhere. (TorchScript reads no module-level numbers: the caller passes SWITCH_START.)"""
    inside = (distance > 0) & (distance < cutoff)
    r = torch.where(inside, distance, torch.ones_like(distance))
    fi, fj = zi.to(r.dtype), zj.to(r.dtype)
    screening = 0.46850 / (fi.pow(0.23) + fj.pow(0.23))
    x = r / screening
    phi = (
        0.18175 * torch.exp(-3.19980 * x)
        + 0.50986 * torch.exp(-0.94229 * x)
        + 0.28022 * torch.exp(-0.40290 * x)
        + 0.02817 * torch.exp(-0.20162 * x)
    )
    start = switch_start * cutoff
    t = ((r - start) / (cutoff - start).clamp(min=1e-12)).clamp(0.0, 1.0)
    switch = 1 - t * t * t * (10 - 15 * t + 6 * t * t)
    energy = 14.399645 * fi * fj / r * phi * switch  # e^2 / (4 pi eps0) = 14.399645 eV Å
    return torch.where(inside, energy, torch.zeros_like(energy))
