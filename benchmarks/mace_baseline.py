"""MACE (mace-torch) with random weights as a speed baseline: same structures, energy + forces.

The MACE has about as many parameters as the Transformer being measured (its channel count is
chosen for that), cutoff 5 Å, two interactions, L_max 1 features, correlation order 3: the shape
of the MACE models used for small organic molecules. Timing covers the model call (energy and
autograd forces); building the neighbour list is timed separately, as an engine would reuse it
between steps. The model runs eagerly: torch.jit.script of mace-torch fails with the e3nn 0.4.4
it pins under torch 2.9.
"""

from __future__ import annotations

import ase
import numpy as np
import torch

R_MAX = 5.0  # Å
CHANNEL_CHOICES = (8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 256)


def unavailable_reason() -> str | None:
    try:
        _import_mace()
    except Exception as error:  # ImportError, or e3nn failing on import under this torch
        return f"mace-torch is not usable here ({type(error).__name__}: {error}); pip install mace-torch (the `bench` extra)"
    return None


def _import_mace():
    # e3nn 0.4.4 reads its constants with torch.load, which defaults to weights_only since torch 2.6
    # and then refuses the builtin `slice` in that file; allowing `slice` executes no code
    torch.serialization.add_safe_globals([slice])
    from e3nn import o3
    from mace import data, modules, tools
    from mace.tools import torch_geometric

    return o3, data, modules, tools, torch_geometric


def build_mace(elements: list[int], channels: int, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """A MACE with random weights for the given atomic numbers."""
    o3, _, modules, _, _ = _import_mace()
    torch.manual_seed(0)
    interaction = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    threads = torch.get_num_threads()
    # construction runs thousands of tiny einsums; with several threads on a busy CPU each one waits
    # on the others (OpenMP barriers), turning one second into tens
    torch.set_num_threads(1)
    try:
        model = _mace(modules, o3, interaction, elements, channels)
    finally:
        torch.set_num_threads(threads)
    return model.to(dtype).eval()


def _mace(modules, o3, interaction, elements: list[int], channels: int) -> torch.nn.Module:
    return modules.MACE(
        r_max=R_MAX,
        num_bessel=8,
        num_polynomial_cutoff=5,
        max_ell=3,
        interaction_cls=interaction,
        interaction_cls_first=interaction,
        num_interactions=2,
        num_elements=len(elements),
        hidden_irreps=o3.Irreps(f"{channels}x0e + {channels}x1o"),
        MLP_irreps=o3.Irreps("16x0e"),
        atomic_energies=np.zeros(len(elements)),
        avg_num_neighbors=12.0,
        atomic_numbers=list(elements),
        correlation=3,
        gate=torch.nn.functional.silu,
    )


def comparable_mace(
    elements: list[int], parameters: int, dtype: torch.dtype = torch.float32
) -> tuple[torch.nn.Module, int]:
    """The MACE whose parameter count is closest to `parameters`, and its channel count."""
    best, best_channels, best_gap = None, 0, float("inf")
    for channels in CHANNEL_CHOICES:
        model = build_mace(elements, channels, dtype)
        gap = abs(np.log(count(model) / parameters))
        if gap < best_gap:
            best, best_channels, best_gap = model, channels, gap
        if count(model) > parameters:
            break
    return best, best_channels


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def mace_batch(atoms: ase.Atoms, elements: list[int], dtype: torch.dtype = torch.float32) -> dict:
    """The input dict MACE takes for one structure (builds the neighbour list within R_MAX)."""
    _, data, _, tools, torch_geometric = _import_mace()
    table = tools.AtomicNumberTable(list(elements))
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # AtomicData makes its float tensors in the default dtype
    try:
        graph = data.AtomicData.from_config(data.config_from_atoms(atoms), z_table=table, cutoff=R_MAX)
    finally:
        torch.set_default_dtype(previous)
    loader = torch_geometric.dataloader.DataLoader([graph], batch_size=1, shuffle=False, drop_last=False)
    return next(iter(loader)).to_dict()


def energy_and_forces(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    output = model(batch, training=False, compute_force=True)
    return output["energy"].detach(), output["forces"].detach()


def describe(context: dict) -> dict:
    """How the MACE baseline of a speed benchmark was built and timed (or why it was skipped)."""
    if context["mace"] is None:
        return {"skipped": context["skipped"].get("mace", "not requested")}
    return {
        "parameters": count(context["mace"]),
        "channels": context["mace_channels"],
        "r_max_angstrom": R_MAX,
        "mode": "eager (torch.jit.script fails in e3nn 0.4.4 under torch 2.9)",
        "timed": "model call with compute_force=True; neighbour list timed separately",
    }
