"""mdplugin: a graph-free Transformer interatomic potential for OpenMM and LAMMPS."""

from __future__ import annotations

__version__ = "0.1.0"


def load(path, device: str = "cpu", threads: int | None = None):
    """A callable potential from an export or a checkpoint (scripted in memory); see `mdplugin.export.loader`.

    `threads`: torch's CPU threads per evaluation; by default one for small systems (< 500 atoms),
    else up to four, or OMP_NUM_THREADS when it is set.
    """
    from mdplugin.export.loader import Potential

    return Potential.load(path, device=device, threads=threads)
