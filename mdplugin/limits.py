"""What one structure may ask of memory: the neighbour pairs a local model would list, estimated before any
list is built (a cell in nm read as Å, or a collapsed box, would otherwise exhaust the machine)."""

from __future__ import annotations

import math

MAX_NEIGHBOURS_PER_ATOM = 1000


def check_neighbour_count(
    atoms: int, cell, pbc, interaction_range: float | None, what: str = "the structure", fix: str = ""
) -> None:
    """Refuse, before the pair list is built, a periodic cell whose atoms would each have more than
    MAX_NEIGHBOURS_PER_ATOM neighbours within `interaction_range` (estimated as density x sphere volume, which
    counts an atom's own periodic images in a small cell too)."""
    import numpy as np

    if interaction_range is None or cell is None or pbc is None or not np.all(pbc):
        return
    volume = abs(float(np.linalg.det(np.asarray(cell, dtype=np.float64))))
    if not (math.isfinite(volume) and volume > 0):
        return  # a degenerate cell is refused by the model's own check
    density = atoms / volume
    neighbours = density * 4 / 3 * math.pi * interaction_range**3
    if neighbours > MAX_NEIGHBOURS_PER_ATOM:
        raise ValueError(
            f"{what}: {atoms} atoms in a periodic cell of {volume:.3g} Å^3 ({density:.3g} atoms/Å^3; liquid water has "
            f"0.1) would give each atom ~{neighbours:.3g} neighbours within the interaction range "
            f"{interaction_range:g} Å, ~{atoms * neighbours:.3g} pairs in all (any material has a few hundred per "
            f"atom at most), more than the memory of any machine should hold for one structure. "
            + (fix or "Check the cell: its lengths are in Å (a cell in nm is 10 times too small)")
        )
