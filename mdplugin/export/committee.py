"""A committee export: K checkpoints of one architecture (trained with different seeds) in one TorchScript file.

`forward` (and, for local models, `forward_neighbors`) is member 0's: every engine runs a committee export
exactly as a single model, at one model's cost per step. The extra method `deviation` evaluates every member
on the same structure and returns DeePMD's model deviation: the largest per-atom force deviation
sqrt(<|F_i - <F_i>|^2>) over the members (eV/Å), the per-atom values [N], and the standard deviation of the
members' energies per atom (eV). Clients call it every N steps (mdplugin run's state data, the ASE
calculator's results, `Potential.deviation`). `others` gives the energies and forces of members 1..K-1
alone, for a client that has member 0's forces from its step already (K-1 extra evaluations instead of K).
The metadata says `committee: {members: K, ...}`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import List, Optional, Tuple  # noqa: UP035 - TorchScript needs typing generics

import torch
from torch import Tensor, nn

from mdplugin.export.contract import METADATA_JSON, METADATA_TEXT, ExportError
from mdplugin.export.exporter import (
    DTYPES,
    EXCHANGE_METHODS,
    ExportedLocalPotential,
    ExportedPotential,
    check_finite_weights,
    export_metadata,
    metadata_text,
)
from mdplugin.model.checkpoint import model_from_checkpoint, read_checkpoint


def force_deviation(forces: Tensor, energies: Tensor, atoms: int) -> Tuple[Tensor, Tensor, Tensor]:  # noqa: UP006
    """forces [K, N, 3], energies [K] -> (max over atoms, per atom [N], energy per atom) of the deviation."""
    forces, energies = forces.detach(), energies.detach()
    mean = forces.mean(0, keepdim=True)
    per_atom = ((forces - mean) ** 2).sum(-1).mean(0).sqrt()
    energy = (energies / atoms).std(unbiased=False)
    return per_atom.max(), per_atom, energy


class ExportedCommittee(nn.Module):
    """Global models: member 0 computes; `deviation` asks them all."""

    def __init__(self, members: List[ExportedPotential]):  # noqa: UP006
        super().__init__()
        self.members = nn.ModuleList(members)
        self.lead = members[0]
        self.elements: List[int] = list(members[0].elements)  # noqa: UP006

    def forward(
        self, positions: Tensor, atomic_numbers: Tensor, charge: int = 0, multiplicity: int = 1
    ) -> Tuple[Tensor, Tensor, Tensor]:  # noqa: UP006
        return self.lead(positions, atomic_numbers, charge, multiplicity)

    @torch.jit.export
    def others(
        self, positions: Tensor, atomic_numbers: Tensor, charge: int = 0, multiplicity: int = 1
    ) -> Tuple[Tensor, Tensor]:  # noqa: UP006
        """Energies [K-1] and forces [K-1, N, 3] of every member but the lead: a client that has the lead's
        forward already (every MD step) pays K-1 evaluations for the deviation, not K."""
        forces: List[Tensor] = []  # noqa: UP006
        energies: List[Tensor] = []  # noqa: UP006
        for index, member in enumerate(self.members):
            if index > 0:
                energy, member_forces, _ = member(positions, atomic_numbers, charge, multiplicity)
                forces.append(member_forces.detach())
                energies.append(energy.detach())
        return torch.stack(energies), torch.stack(forces)

    @torch.jit.export
    def deviation(
        self, positions: Tensor, atomic_numbers: Tensor, charge: int = 0, multiplicity: int = 1
    ) -> Tuple[Tensor, Tensor, Tensor]:  # noqa: UP006
        energy, forces, _ = self.lead(positions, atomic_numbers, charge, multiplicity)
        energies, others = self.others(positions, atomic_numbers, charge, multiplicity)
        return force_deviation(
            torch.cat([forces.detach().unsqueeze(0), others]),
            torch.cat([energy.detach().reshape(1), energies]),
            positions.size(0),
        )


class ExportedLocalCommittee(nn.Module):
    """Local models: member 0 computes (forward and forward_neighbors); `deviation` asks them all."""

    def __init__(self, members: List[ExportedLocalPotential]):  # noqa: UP006
        super().__init__()
        self.members = nn.ModuleList(members)
        self.lead = members[0]
        self.elements: List[int] = list(members[0].elements)  # noqa: UP006
        self.cutoff = members[0].cutoff
        self.interaction_range = members[0].interaction_range  # read by the C++ clients' record check
        self.receptive_field = members[0].receptive_field
        self.width = members[0].width
        self.depth = members[0].depth

    def forward(
        self,
        positions: Tensor,
        atomic_numbers: Tensor,
        charge: int = 0,
        multiplicity: int = 1,
        cell: Optional[Tensor] = None,  # noqa: UP045
        pbc: Optional[Tensor] = None,  # noqa: UP045
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:  # noqa: UP006
        return self.lead(positions, atomic_numbers, charge, multiplicity, cell, pbc)

    @torch.jit.export
    def forward_neighbors(
        self,
        positions: Tensor,
        atomic_numbers: Tensor,
        neighbors: Tensor,
        n_local: int,
        charge: int = 0,
        multiplicity: int = 1,
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:  # noqa: UP006
        return self.lead.forward_neighbors(positions, atomic_numbers, neighbors, n_local, charge, multiplicity)

    # the lead's per-block methods (contract version 3), for engines that exchange ghost keys and values
    @torch.jit.export
    def exchange_tokens(self, atomic_numbers: Tensor, charge: int = 0, multiplicity: int = 1) -> Tensor:
        return self.lead.exchange_tokens(atomic_numbers, charge, multiplicity)

    @torch.jit.export
    def exchange_geometry(
        self, neighbors: Tensor, displacements: Tensor, atomic_numbers: Tensor, n_local: int
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:  # noqa: UP006
        return self.lead.exchange_geometry(neighbors, displacements, atomic_numbers, n_local)

    @torch.jit.export
    def exchange_keys(self, layer: int, tokens: Tensor) -> Tensor:
        return self.lead.exchange_keys(layer, tokens)

    @torch.jit.export
    def exchange_block(
        self, layer: int, tokens: Tensor, keys_values: Tensor, index: Tensor, encoded: Tensor, bias: Tensor
    ) -> Tensor:
        return self.lead.exchange_block(layer, tokens, keys_values, index, encoded, bias)

    @torch.jit.export
    def exchange_energies(self, tokens: Tensor, atomic_numbers: Tensor, core: Tensor) -> Tensor:
        return self.lead.exchange_energies(tokens, atomic_numbers, core)

    @torch.jit.export
    def others(
        self,
        positions: Tensor,
        atomic_numbers: Tensor,
        charge: int = 0,
        multiplicity: int = 1,
        cell: Optional[Tensor] = None,  # noqa: UP045
        pbc: Optional[Tensor] = None,  # noqa: UP045
    ) -> Tuple[Tensor, Tensor]:  # noqa: UP006
        """Energies [K-1] and forces [K-1, N, 3] of every member but the lead (see ExportedCommittee.others)."""
        forces: List[Tensor] = []  # noqa: UP006
        energies: List[Tensor] = []  # noqa: UP006
        for index, member in enumerate(self.members):
            if index > 0:
                energy, member_forces, _, _ = member(positions, atomic_numbers, charge, multiplicity, cell, pbc)
                forces.append(member_forces.detach())
                energies.append(energy.detach())
        return torch.stack(energies), torch.stack(forces)

    @torch.jit.export
    def deviation(
        self,
        positions: Tensor,
        atomic_numbers: Tensor,
        charge: int = 0,
        multiplicity: int = 1,
        cell: Optional[Tensor] = None,  # noqa: UP045
        pbc: Optional[Tensor] = None,  # noqa: UP045
    ) -> Tuple[Tensor, Tensor, Tensor]:  # noqa: UP006
        energy, forces, _, _ = self.lead(positions, atomic_numbers, charge, multiplicity, cell, pbc)
        energies, others = self.others(positions, atomic_numbers, charge, multiplicity, cell, pbc)
        return force_deviation(
            torch.cat([forces.detach().unsqueeze(0), others]),
            torch.cat([energy.detach().reshape(1), energies]),
            positions.size(0),
        )


def script_committee(models: list, dtype: str, device: str) -> torch.jit.ScriptModule:
    """The scripted, frozen committee of `models` (TransformerPotentials of one architecture)."""
    local = models[0].config.is_local
    members = [
        (ExportedLocalPotential if local else ExportedPotential)(model.to(device=device, dtype=DTYPES[dtype]).eval())
        for model in models
    ]
    committee = (ExportedLocalCommittee if local else ExportedCommittee)(members)
    preserved = ["elements", "deviation", "others"] + (
        ["forward_neighbors", "interaction_range", "receptive_field", "width", "depth", *EXCHANGE_METHODS]
        if local
        else []
    )
    return torch.jit.freeze(torch.jit.script(committee).eval(), preserved_attrs=preserved)


def export_committee(
    checkpoint_paths: list[str | Path],
    output: str | Path,
    dtype: str = "float32",
    device: str = "cpu",
    overwrite: bool = False,
    repulsion: str | None = None,
) -> Path:
    """Write the committee export of two or more checkpoints of one architecture; returns its path (repulsion:
    as for `export`)."""
    paths = [Path(path) for path in checkpoint_paths]
    output = Path(output)
    if len(paths) < 2:
        raise ExportError("a committee needs at least two checkpoints; export a single one with `mdplugin export`")
    if any(output.resolve() == path.resolve() for path in paths):
        raise ExportError(f"the export would overwrite one of its checkpoints ({output}); choose another -o")
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} exists; pass --force to overwrite it or choose another -o")
    if dtype not in DTYPES:
        raise ExportError(f"unknown dtype {dtype!r}; use float32 or float64")
    checkpoints, digests, models = [], [], []
    for path in paths:
        data = path.read_bytes() if path.is_file() else None
        checkpoint = read_checkpoint(path, data)
        model = model_from_checkpoint(checkpoint, repulsion)
        check_finite_weights(model, path)
        checkpoints.append(checkpoint)
        digests.append(hashlib.sha256(data).hexdigest())
        models.append(model)
    first = checkpoints[0]["config"]
    for path, checkpoint in zip(paths[1:], checkpoints[1:]):
        if checkpoint["config"] != first:
            differ = sorted(k for k in first if checkpoint["config"].get(k) != first[k])
            raise ExportError(
                f"{path} has another architecture than {paths[0]} ({', '.join(differ)}); a committee's members differ "
                "only in their seed"
            )
    metadata = export_metadata(checkpoints[0], models[0], dtype, device, digests[0])
    metadata["committee"] = {
        "members": len(models),
        "lead": 0,  # forward and forward_neighbors are this member's
        "deviation": "max over atoms of sqrt(<|F_i - <F_i>|^2>) over the members, eV/angstrom",
        "checkpoint_sha256": digests,
    }
    text = metadata_text(metadata) + f"committee={len(models)}\n"
    extra_files = {METADATA_JSON: json.dumps(metadata, indent=2), METADATA_TEXT: text}
    temporary = output.with_name(output.name + ".partial")
    torch.jit.save(script_committee(models, dtype, device), str(temporary), _extra_files=extra_files)
    temporary.replace(output)
    return output
