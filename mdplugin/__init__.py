"""mdplugin: a graph-free Transformer interatomic potential for OpenMM and LAMMPS."""

from __future__ import annotations

__version__ = "0.1.0"


def open_model(path):
    """A checkpoint or an export, read once and checked: kind, typed metadata, sha256, the module."""
    from mdplugin.export.model_file import open_model as _open_model

    return _open_model(path)


def load(path, device: str = "cpu", threads: int | None = None):
    """A callable potential from an export or a checkpoint (scripted in memory); see `mdplugin.export.loader`.

    `threads`: torch's CPU threads per evaluation; by default one for small systems (< 500 atoms),
    else up to four, or OMP_NUM_THREADS when it is set.
    """
    from mdplugin.export.loader import Potential

    return Potential.load(path, device=device, threads=threads)
