"""The exporter: a trained checkpoint becomes one TorchScript file with forces and metadata inside.

The contract (export/SPEC.md). A global model is written as version 1: forward(positions [N,3] Å,
atomic_numbers [N] int64, charge, multiplicity) -> (energy [] eV, forces [N,3] eV/Å, per_atom_energy [N]).
A local model is written as version 2: forward(..., cell, pbc) also returns the virial, and
forward_neighbors serves engines that bring their own neighbour list. Metadata travels in the file as
`_extra_files`: `mdplugin.json` (everything) and `mdplugin.txt` (flat key=value lines for C++ clients).
"""

from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path
from typing import List, Optional, Tuple  # noqa: UP035 - TorchScript needs typing generics

import torch
from torch import Tensor, nn

from mdplugin.elements import symbols
from mdplugin.export.contract import (
    EXPORT_FORMAT,
    GLOBAL_EXPORT_VERSION,
    LOCAL_EXPORT_VERSION,
    METADATA_JSON,
    METADATA_TEXT,
    ExportError,
)
from mdplugin.model.checkpoint import check_output_file, model_from_checkpoint, package_versions, read_checkpoint
from mdplugin.model.repulsion import SWITCH_START, core_cutoffs
from mdplugin.model.transformer import TransformerPotential, count_parameters, pair_slots

DTYPES = {"float32": torch.float32, "float64": torch.float64}
EXCHANGE_METHODS = ["exchange_tokens", "exchange_geometry", "exchange_keys", "exchange_block", "exchange_energies"]


def check_positions(positions: Tensor, atoms: int) -> None:
    """Positions [atoms, 3], finite: the check every call makes (the atoms' own checks: `checked_species`)."""
    if positions.dim() != 2 or positions.size(1) != 3:
        raise ValueError(f"positions must have shape [N, 3] (Å), got {list(positions.shape)}")
    if positions.size(0) != atoms:
        raise ValueError(
            f"atomic_numbers must have shape [N] matching positions, got {atoms} for {positions.size(0)} atoms"
        )
    if not bool(torch.isfinite(positions).all()):
        raise ValueError("positions contain NaN or infinite values; check the structure or the integrator")


def checked_species(positions: Tensor, atomic_numbers: Tensor, lookup: Tensor, elements: List[int]) -> Tensor:  # noqa: UP006
    """Species indices [N] of a structure, after the checks every entry point makes."""
    if positions.dim() != 2 or positions.size(1) != 3:
        raise ValueError(f"positions must have shape [N, 3] (Å), got {list(positions.shape)}")
    if atomic_numbers.dim() != 1 or atomic_numbers.size(0) != positions.size(0):
        raise ValueError(
            f"atomic_numbers must have shape [N] matching positions, got {list(atomic_numbers.shape)} for {positions.size(0)} atoms"
        )
    if positions.size(0) == 0:
        raise ValueError("the structure has no atoms")
    check_positions(positions, positions.size(0))
    return species_of(atomic_numbers, lookup, elements)


def species_of(atomic_numbers: Tensor, lookup: Tensor, elements: List[int]) -> Tensor:  # noqa: UP006
    """Species indices [N] of atomic numbers [N], each checked to be one of the model's elements."""
    numbers = atomic_numbers.to(torch.long)
    largest = lookup.size(0) - 1
    if bool(((numbers < 1) | (numbers > largest)).any()):
        raise ValueError(f"atomic numbers must lie in 1..{largest}")
    species = lookup[numbers]
    if bool((species < 0).any()):
        unknown = int(numbers[species < 0][0])
        raise ValueError(
            f"atomic number {unknown} is not one of the model's elements {elements}; use a model trained on it"
        )
    return species


def check_system(charge: int, multiplicity: int, max_charge: int, max_multiplicity: int) -> None:
    if charge < -max_charge or charge > max_charge:
        raise ValueError(f"total charge {charge} is outside the model's range {-max_charge}..{max_charge}")
    if multiplicity < 1 or multiplicity > max_multiplicity:
        raise ValueError(f"spin multiplicity {multiplicity} is outside the model's range 1..{max_multiplicity}")


def check_cell(cell: Tensor, pbc: Tensor) -> None:
    if cell.dim() != 2 or cell.size(0) != 3 or cell.size(1) != 3:
        raise ValueError(f"cell must have shape [3, 3] (Å, rows are lattice vectors), got {list(cell.shape)}")
    if pbc.dim() != 1 or pbc.size(0) != 3:
        raise ValueError(f"pbc must have shape [3] (one flag per lattice vector), got {list(pbc.shape)}")
    if not bool(torch.isfinite(cell).all()):
        raise ValueError("the cell contains NaN or infinite values; check the box vectors")
    if bool(pbc.any()) and float(torch.linalg.det(cell.to(torch.float64)).abs()) < 1e-6:
        raise ValueError("the periodic cell has zero volume; give three independent lattice vectors (Å)")


class ExportedPotential(nn.Module):
    """Global model, contract version 1: energy, forces and per-atom energies of one isolated structure."""

    def __init__(self, model: TransformerPotential):
        super().__init__()
        self.model = model
        self.elements: List[int] = list(model.config.elements)  # noqa: UP006

    def forward(
        self, positions: Tensor, atomic_numbers: Tensor, charge: int = 0, multiplicity: int = 1
    ) -> Tuple[Tensor, Tensor, Tensor]:  # noqa: UP006
        species = checked_species(positions, atomic_numbers, self.model.species_of_atomic_number, self.elements)
        check_system(charge, multiplicity, self.model.max_charge, self.model.multiplicity_embedding.num_embeddings)
        dtype = self.model.reference_energies.dtype
        # centre in the input's precision before casting: a float32 model keeps its digits far from the origin
        centred = positions.detach() - positions.detach().mean(0, keepdim=True)
        x = centred.to(dtype).unsqueeze(0).requires_grad_(True)
        mask = torch.ones_like(species, dtype=torch.bool).unsqueeze(0)
        system = torch.tensor([charge, multiplicity], dtype=torch.long, device=positions.device)
        per_atom = self.model(x, species.unsqueeze(0), mask, system[:1], system[1:])[0]
        energy = per_atom.sum()
        gradient = torch.autograd.grad([energy], [x])[0]
        if gradient is None:
            raise RuntimeError("no gradient of the energy with respect to the positions")
        forces = -gradient[0]
        return energy.detach().to(positions.dtype), forces.to(positions.dtype), per_atom.detach().to(positions.dtype)


class ExportedLocalPotential(nn.Module):
    """Local model, contract version 2: periodic cells, the virial, and a neighbour-list entry point."""

    def __init__(self, model: TransformerPotential):
        super().__init__()
        self.model = model
        self.elements: List[int] = list(model.config.elements)  # noqa: UP006
        self.cutoff = float(model.cutoff)
        # kept through freezing: C++ clients check mdplugin.txt's ranges against the module's own (SPEC.md)
        self.interaction_range = float(model.config.interaction_range)
        self.receptive_field = float(model.config.receptive_field)
        self.width = int(model.config.width)  # tokens; 2 width keys and values are exchanged (version 3)
        self.depth = int(model.config.depth)

    def forward(
        self,
        positions: Tensor,
        atomic_numbers: Tensor,
        charge: int = 0,
        multiplicity: int = 1,
        cell: Optional[Tensor] = None,  # noqa: UP045
        pbc: Optional[Tensor] = None,  # noqa: UP045
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:  # noqa: UP006
        """Energy [] eV, forces [N, 3] eV/Å, per-atom energies [N] eV, virial [3, 3] eV (-dE/dstrain)."""
        species = checked_species(positions, atomic_numbers, self.model.species_of_atomic_number, self.elements)
        check_system(charge, multiplicity, self.model.max_charge, self.model.multiplicity_embedding.num_embeddings)
        if cell is None:
            box = torch.zeros(3, 3, dtype=positions.dtype, device=positions.device)
        else:
            box = cell.to(positions.dtype)
        if pbc is None:
            periodic = torch.zeros(3, dtype=torch.bool, device=positions.device)
        else:
            periodic = pbc.to(torch.bool)
        check_cell(box, periodic)
        # the virial is the derivative with respect to a homogeneous strain of positions and cell together
        strain = torch.zeros(3, 3, dtype=positions.dtype, device=positions.device).requires_grad_(True)
        points = positions.detach().requires_grad_(True)
        deformation = torch.eye(3, dtype=positions.dtype, device=positions.device) + strain
        mask = torch.ones_like(species, dtype=torch.bool).unsqueeze(0)
        system = torch.tensor([charge, multiplicity], dtype=torch.long, device=positions.device)
        per_atom = self.model(
            (points @ deformation).unsqueeze(0),
            species.unsqueeze(0),
            mask,
            system[:1],
            system[1:],
            (box @ deformation).unsqueeze(0),
            periodic.unsqueeze(0),
        )[0]
        energy = per_atom.sum()
        gradients = torch.autograd.grad([energy], [points, strain])
        position_gradient, strain_gradient = gradients[0], gradients[1]
        if position_gradient is None or strain_gradient is None:
            raise RuntimeError("no gradient of the energy with respect to the positions")
        out = positions.dtype
        return energy.detach().to(out), -position_gradient.to(out), per_atom.detach().to(out), -strain_gradient.to(out)

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
        """For engines with their own neighbour list (LAMMPS: local atoms first, then ghosts).

        neighbors [2, E]: every ordered pair (i, j) closer than the interaction range among all atoms,
        displacement positions[j] - positions[i]. Returns the energy of the first n_local atoms, forces on
        every atom, their per-atom energies [n_local] and the edge gradient dE/d(r_j - r_i) [E, 3].
        """
        species = checked_species(positions, atomic_numbers, self.model.species_of_atomic_number, self.elements)
        check_system(charge, multiplicity, self.model.max_charge, self.model.multiplicity_embedding.num_embeddings)
        atoms = positions.size(0)
        if n_local < 0 or n_local > atoms:
            raise ValueError(f"n_local {n_local} is outside 0..{atoms}, the number of atoms given")
        if neighbors.dim() != 2 or neighbors.size(0) != 2:
            raise ValueError(f"neighbors must have shape [2, E], got {list(neighbors.shape)}")
        pairs = neighbors.to(torch.long)
        if pairs.numel() > 0 and bool(((pairs < 0) | (pairs >= atoms)).any()):
            raise ValueError(f"neighbor indices must lie in 0..{atoms - 1}")
        points = positions.detach().requires_grad_(True)
        # zero shifts whose gradient is dE/d(r_j - r_i): the pair forces, for the per-atom virial
        shifts = torch.zeros(pairs.size(1), 3, dtype=positions.dtype, device=positions.device).requires_grad_(True)
        system_state = torch.tensor([charge, multiplicity], dtype=torch.long, device=positions.device)
        system = self.model.system_embedding(system_state[:1], system_state[1:]).expand(atoms, -1)
        per_atom = self.model.local_energies(points, species, system, pairs[0], pairs[1], shifts, n_local)
        energy = per_atom.sum()
        gradients = torch.autograd.grad([energy], [points, shifts], allow_unused=True)
        position_gradient, edge_gradient = gradients[0], gradients[1]
        if position_gradient is None:
            position_gradient = torch.zeros_like(points)
        if edge_gradient is None:
            edge_gradient = torch.zeros_like(shifts)
        out = positions.dtype
        return energy.detach().to(out), -position_gradient.to(out), per_atom.detach().to(out), edge_gradient.to(out)

    # ---- version 3: one block at a time, for engines that exchange ghost atoms' keys and values between
    # blocks (LAMMPS across MPI ranks). Each block updates the local atoms from the keys and values of their
    # neighbours; the engine copies the local atoms' new keys and values to their ghost copies between
    # blocks, and back-propagates block by block, adding the ghost rows' gradients to their owners. A rank
    # computes nothing for its ghosts but their first keys and values (from the elements alone); see
    # export/SPEC.md. Autograd is the caller's.

    @torch.jit.export
    def exchange_tokens(self, atomic_numbers: Tensor, charge: int = 0, multiplicity: int = 1) -> Tensor:
        """The first block's input tokens [N_all, width] of local and ghost atoms (no geometry in them)."""
        if atomic_numbers.dim() != 1:
            raise ValueError(f"atomic_numbers must have shape [N], got {list(atomic_numbers.shape)}")
        species = species_of(atomic_numbers, self.model.species_of_atomic_number, self.elements)
        check_system(charge, multiplicity, self.model.max_charge, self.model.multiplicity_embedding.num_embeddings)
        system_state = torch.tensor([charge, multiplicity], dtype=torch.long, device=atomic_numbers.device)
        system = self.model.system_embedding(system_state[:1], system_state[1:])
        return self.model.species_embedding(species) + system

    @torch.jit.export
    def exchange_geometry(
        self, neighbors: Tensor, displacements: Tensor, atomic_numbers: Tensor, n_local: int
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:  # noqa: UP006
        """The local atoms' neighbour table (index [n_local, K], encoded displacements, attention bias) and
        their repulsive-core energies [n_local] (eV; zeros without a core).

        neighbors [2, E]: every ordered pair (i, j) closer than R with i local (i < n_local), j any atom;
        displacements [E, 3] Å: r_j - r_i; atomic_numbers [N_all]. The outputs carry the displacements'
        autograd graph.
        """
        if neighbors.dim() != 2 or neighbors.size(0) != 2:
            raise ValueError(f"neighbors must have shape [2, E], got {list(neighbors.shape)}")
        if displacements.dim() != 2 or displacements.size(1) != 3 or displacements.size(0) != neighbors.size(1):
            raise ValueError(f"displacements must have shape [E, 3] for E = {neighbors.size(1)} pairs")
        pairs = neighbors.to(torch.long)
        atoms = atomic_numbers.size(0)
        if pairs.numel() > 0 and bool(
            ((pairs[0] < 0) | (pairs[0] >= n_local) | (pairs[1] < 0) | (pairs[1] >= atoms)).any()
        ):
            raise ValueError(f"pair centres must be local atoms, 0..{n_local - 1}, and neighbours 0..{atoms - 1}")
        index, displacement, bias = pair_slots(pairs[0], pairs[1], displacements, n_local, self.cutoff)
        dtype = self.model.reference_energies.dtype
        if self.model.repulsion:
            species = self.model.species_of_atomic_number[atomic_numbers.to(torch.long)]
            core = self.model.core_energies(species[:n_local], species[index], displacement).to(dtype)
        else:
            core = torch.zeros(n_local, dtype=dtype, device=displacements.device)
        return index, self.model.displacement_encoding(displacement.to(dtype)), bias.to(dtype), core

    @torch.jit.export
    def exchange_keys(self, layer: int, tokens: Tensor) -> Tensor:
        """The keys and values [M, 2 width] that block `layer` reads from atoms with these tokens [M, width]."""
        for number, block in enumerate(self.model.blocks):
            if number == layer:
                return block.keys_values(tokens)
        raise ValueError(f"layer {layer} is outside 0..{len(self.model.blocks) - 1}")

    @torch.jit.export
    def exchange_block(
        self, layer: int, tokens: Tensor, keys_values: Tensor, index: Tensor, encoded: Tensor, bias: Tensor
    ) -> Tensor:
        """Block `layer`'s new tokens [n_local, width] of the local atoms from their tokens [n_local, width] and
        every atom's keys and values [N_all, 2 width] (`exchange_keys`: the local rows, the ghosts' copies)."""
        for number, block in enumerate(self.model.blocks):
            if number == layer:
                return block.update(tokens, keys_values, bias, index, encoded)
        raise ValueError(f"layer {layer} is outside 0..{len(self.model.blocks) - 1}")

    @torch.jit.export
    def exchange_energies(self, tokens: Tensor, atomic_numbers: Tensor, core: Tensor) -> Tensor:
        """Per-atom energies [n_local] (eV) of the local atoms from the last block's tokens [n_local, width] and
        their core energies (`exchange_geometry`)."""
        if atomic_numbers.size(0) != tokens.size(0) or core.size(0) != tokens.size(0):
            raise ValueError(
                f"exchange_energies takes one atomic number and one core energy per token row ({tokens.size(0)}), "
                f"got {atomic_numbers.size(0)} and {core.size(0)}"
            )
        species = self.model.species_of_atomic_number[atomic_numbers.to(torch.long)]
        return self.model.readout(tokens, species) + core


def default_output_path(checkpoint_path: str | Path) -> Path:
    path = Path(checkpoint_path)
    return path.with_name(f"{path.stem}-export.pt")


def script_model(model: TransformerPotential, dtype: str = "float32", device: str = "cpu") -> torch.jit.ScriptModule:
    """The scripted, frozen inference module for a model (no file written)."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use float32 or float64")
    wrapper = ExportedLocalPotential if model.config.is_local else ExportedPotential
    module = wrapper(model.to(device=device, dtype=DTYPES[dtype]).eval())
    scripted = torch.jit.script(module)
    # freezing inlines the weights as constants: identical numbers, less interpreter overhead
    local = ["forward_neighbors", "interaction_range", "receptive_field", "width", "depth", *EXCHANGE_METHODS]
    preserved = ["elements", *local] if model.config.is_local else ["elements"]
    return torch.jit.freeze(scripted.eval(), preserved_attrs=preserved)


def check_finite_weights(model: TransformerPotential, source: str | Path) -> None:
    """A model with NaN or infinite weights gives NaN energies: refuse it before anyone simulates with it."""
    broken = [
        name
        for name, value in model.state_dict().items()
        if value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]
    if broken:
        raise ExportError(
            f"{source} holds non-finite weights ({', '.join(broken[:3])}{', ...' if len(broken) > 3 else ''}); "
            "the training diverged or read a NaN label: retrain (lower --learning-rate, check the data)"
        )


def export_metadata(
    checkpoint: dict, model: TransformerPotential, dtype: str, device: str, checkpoint_sha256: str
) -> dict:
    config = model.config
    metadata = {
        "format": EXPORT_FORMAT,
        "format_version": LOCAL_EXPORT_VERSION if config.is_local else GLOBAL_EXPORT_VERSION,
        "model_kind": "local" if config.is_local else "global",
        "elements": symbols(model.config.elements),
        "atomic_numbers": list(model.config.elements),
        "units": {"positions": "angstrom", "energy": "eV", "forces": "eV/angstrom"},
        "dtype": dtype,
        "device": device,
        # Å: atoms attend to atoms closer than this in every block (None: global attention, no periodic cells)
        "interaction_range": config.interaction_range,
        "receptive_field": config.receptive_field,  # Å: the farthest atom that changes an atom's energy
        "periodic": config.is_local,
        "model_config": model.config.to_dict(),
        "parameters": count_parameters(model),
        "charge_range": [-model.max_charge, model.max_charge],
        "multiplicity_range": [1, model.multiplicity_embedding.num_embeddings],
        "provenance": {
            "checkpoint_sha256": checkpoint_sha256,
            "training_data_sha256": checkpoint["provenance"].get("data_sha256", {}),
            "trained": checkpoint["provenance"].get("date"),
            "exported": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "versions": package_versions(),
        },
    }
    if config.is_local:
        metadata["units"]["virial"] = "eV"  # -dE/dstrain; stress = -virial / volume
    if "domain" in checkpoint:  # what the training data covered: clients warn outside it
        metadata["domain"] = checkpoint["domain"]
    if model.repulsion:
        shortest = checkpoint.get("domain", {}).get("shortest_distance")
        metadata["repulsion"] = {
            "kind": "zbl",
            "cutoffs": core_cutoffs(config.elements, shortest)[1],  # Å by element pair
            "switch_start": SWITCH_START,  # the full ZBL energy below this fraction of each cutoff
        }
    return metadata


def metadata_text(metadata: dict) -> str:
    """Flat key=value lines, for clients without a JSON parser (the LAMMPS pair style, the C++ checker)."""
    lines = {
        "format": metadata["format"],
        "format_version": metadata["format_version"],
        "model_kind": metadata.get("model_kind", "global"),
        "dtype": metadata["dtype"],
        "elements": " ".join(metadata["elements"]),
        "atomic_numbers": " ".join(str(z) for z in metadata["atomic_numbers"]),
        "interaction_range": _text_number(metadata["interaction_range"]),
        "receptive_field": _text_number(metadata.get("receptive_field")),
        "energy_unit": metadata["units"]["energy"],
        "length_unit": metadata["units"]["positions"],
    }
    domain = metadata.get("domain", {})
    shortest = domain.get("shortest_distance")
    if shortest:
        lines["shortest_distance"] = " ".join(f"{pair}:{distance:.4f}" for pair, distance in shortest.items())
    for key in ("charges", "multiplicities"):  # the training data's; LAMMPS warns outside them
        if domain.get(key):
            lines[key] = " ".join(str(int(value)) for value in domain[key])
    return "".join(f"{key}={value}\n" for key, value in lines.items())


def _text_number(value: float | None) -> str:
    return "none" if value is None else repr(float(value))


def check_export_paths(checkpoint_path: Path, output: Path, overwrite: bool, device: str) -> None:
    """Refuse, before any work, an output that would overwrite the checkpoint or (without --force) a file."""
    if output.resolve() == checkpoint_path.resolve():
        raise ExportError(f"the export would overwrite its own checkpoint {checkpoint_path}; choose another -o")
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} exists; pass --force to overwrite it or choose another -o")
    try:
        check_output_file(output)
    except ValueError as error:
        raise ExportError(str(error)) from None
    if device == "cuda" and not torch.cuda.is_available():
        raise ExportError("--device cuda asked for, but torch sees no CUDA device here; export for cpu instead")


def export(
    checkpoint_path: str | Path,
    output: str | Path | None = None,
    dtype: str = "float32",
    device: str = "cpu",
    overwrite: bool = False,
    repulsion: str | None = None,
) -> Path:
    """Write the TorchScript export of a checkpoint; returns its path. repulsion "zbl" adds the repulsive
    core below the training data's shortest distances (model/repulsion.py)."""
    checkpoint_path = Path(checkpoint_path)
    output = Path(output) if output is not None else default_output_path(checkpoint_path)
    check_export_paths(checkpoint_path, output, overwrite, device)
    data = checkpoint_path.read_bytes() if checkpoint_path.is_file() else None  # one read: weights and hash
    checkpoint = read_checkpoint(checkpoint_path, data)
    model = model_from_checkpoint(checkpoint, repulsion)
    check_finite_weights(model, checkpoint_path)
    scripted = script_model(model, dtype, device)
    metadata = export_metadata(checkpoint, model, dtype, device, hashlib.sha256(data).hexdigest())
    extra_files = {METADATA_JSON: json.dumps(metadata, indent=2), METADATA_TEXT: metadata_text(metadata)}
    temporary = output.with_name(output.name + ".partial")
    torch.jit.save(scripted, str(temporary), _extra_files=extra_files)
    temporary.replace(output)
    return output
