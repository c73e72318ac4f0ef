"""mdplugin: a graph-free Transformer interatomic potential for OpenMM and LAMMPS."""

from __future__ import annotations

__version__ = "0.1.0"


def load(path, device: str = "cpu"):
    """A callable potential from an export or a checkpoint (exported in memory); see `mdplugin.export.loader`."""
    from mdplugin.export.loader import Potential

    return Potential.load(path, device=device)
