"""Capture-safe energy and forces, and the compiled export (contract version 4).

The TorchScript exports check their inputs inside `forward` (`bool(tensor)`: a host synchronisation) and size
the local model's neighbour table from the data (`int(counts.max())`: another). Here the checks run once,
outside the differentiated computation (`CompiledPotential.__call__`), and the neighbour table has a fixed
capacity recorded in the metadata; the width the pairs actually needed comes back as a device tensor, and a
caller that finds it above the capacity refuses the result (never a silent truncation). The computation is
then one graph: `torch.compile(fullgraph=True)` traces it with no graph break, and AOT-Inductor compiles it
into a shared library inside a `.pt2` package (`compile_export`), which `CompiledPotential` runs with the
TorchScript export's call signature, so `mdplugin.load`, ASE and OpenMM's `PythonForce` take either.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from mdplugin.export.contract import COMPILED_EXPORT_VERSION, METADATA_JSON, METADATA_TEXT, ExportError
from mdplugin.export.exporter import (
    DTYPES,
    check_cell,
    check_export_paths,
    check_finite_weights,
    check_positions,
    check_system,
    checked_species,
    export_metadata,
    metadata_text,
)
from mdplugin.model.checkpoint import model_from_checkpoint, read_checkpoint
from mdplugin.model.transformer import TransformerPotential, pair_table, pairs_within

# neighbour capacity when the training domain records no neighbour count: a liquid or molecular crystal
# at 0.15 atoms/Å^3 (water has 0.1, ice 0.093, dense organics ~0.12) with 25 % headroom
DENSEST_LIQUID_ATOMS_PER_CUBIC_ANGSTROM = 0.15
CAPACITY_HEADROOM = 1.25
MAX_COMPILED_ATOMS = 1 << 20  # the largest N a package accepts (dynamic shapes need an upper bound)


def default_capacity(interaction_range: float, domain: dict | None) -> int:
    """Neighbour slots per atom (the atom itself included) for a local model: the training domain's most
    crowded atom with headroom when the domain records it, else a dense liquid's count with headroom."""
    seen = (domain or {}).get("max_neighbours")
    if seen:
        neighbours = CAPACITY_HEADROOM * float(seen)
    else:
        sphere = 4.0 / 3.0 * math.pi * interaction_range**3
        neighbours = CAPACITY_HEADROOM * DENSEST_LIQUID_ATOMS_PER_CUBIC_ANGSTROM * sphere
    return 1 + math.ceil(neighbours)


def energy_gradients(
    energy: Callable[..., tuple[Tensor, list[Tensor]]], inputs: list[Tensor], functional: bool
) -> tuple[list[Tensor], Tensor, list[Tensor]]:
    """(dE/d input for each input, E, the other outputs) of `energy(*inputs) -> (E, [other outputs])`.

    `functional` differentiates with torch.func (what torch.compile traces without a graph break); otherwise
    with torch.autograd.grad (what make_fx traces into the graph that AOT-Inductor compiles). Same numbers.
    """
    if functional:
        argnums = tuple(range(len(inputs)))
        gradients, (value, others) = torch.func.grad_and_value(energy, argnums=argnums, has_aux=True)(*inputs)
        return list(gradients), value, others
    leaves = [x.detach().requires_grad_(True) for x in inputs]
    with torch.enable_grad():
        value, others = energy(*leaves)
    gradients = torch.autograd.grad([value], leaves)
    return list(gradients), value.detach(), [other.detach() for other in others]


class GlobalEnergyForces(nn.Module):
    """Global model: (positions [N, 3] Å, atomic numbers [N], system [2] = charge, multiplicity) ->
    (energy [] eV, forces [N, 3] eV/Å, per-atom energies [N] eV), in the positions' dtype; inputs unchecked."""

    def __init__(self, model: TransformerPotential, functional: bool = False):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.functional = functional

    def forward(self, positions: Tensor, atomic_numbers: Tensor, system: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        species = self.model.species_of_atomic_number[atomic_numbers].unsqueeze(0)
        mask = torch.ones_like(species, dtype=torch.bool)
        # centre in the input's precision before casting: a float32 model keeps its digits far from the origin
        centred = (positions - positions.mean(0, keepdim=True)).to(self.model.reference_energies.dtype)

        def energy(points: Tensor) -> tuple[Tensor, list[Tensor]]:
            per_atom = self.model(points.unsqueeze(0), species, mask, system[:1], system[1:])[0]
            return per_atom.sum(), [per_atom]

        (gradient,), value, (per_atom,) = energy_gradients(energy, [centred], self.functional)
        out = positions.dtype
        return value.to(out), -gradient.to(out), per_atom.to(out)


class LocalEnergyForces(nn.Module):
    """Local model, given every ordered pair closer than the interaction range: (positions [N, 3] Å, atomic
    numbers [N], system [2], centres [E], neighbours [E], shifts [E, 3] Å (r_j - r_i + shift is the pair's
    displacement)) -> (energy, forces [N, 3], per-atom energies [N], virial [3, 3] eV, needed width []).

    The neighbour table holds `capacity` slots per atom; `needed` > capacity means pairs were dropped and the
    result must not be used. Pairs whose centre is N are padding (for fixed-size pair lists)."""

    def __init__(self, model: TransformerPotential, capacity: int, functional: bool = False):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.capacity = int(capacity)
        self.functional = functional

    def forward(
        self,
        positions: Tensor,
        atomic_numbers: Tensor,
        system: Tensor,
        centers: Tensor,
        neighbors: Tensor,
        shifts: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        model = self.model
        atoms = positions.size(0)
        species = model.species_of_atomic_number[atomic_numbers]
        tokens = model.system_embedding(system[:1], system[1:]).expand(atoms, -1)
        # the spare index N of padding pairs must still address a row: one zero row appended
        padded = torch.cat([positions, positions.new_zeros(1, 3)])
        # displacements in the positions' precision (digits far from the origin), cast inside table_energies
        separation = padded.index_select(0, neighbors) - padded.index_select(0, centers) + shifts.to(positions.dtype)

        def energy(points: Tensor, strain: Tensor) -> tuple[Tensor, list[Tensor]]:
            # the virial is -dE/dstrain for a homogeneous strain of positions and cell together
            deformation = torch.eye(3, dtype=strain.dtype, device=strain.device) + strain
            displacement = (separation + points.index_select(0, neighbors) - points.index_select(0, centers)) @ (
                deformation
            )
            index, table, bias, width = pair_table(centers, neighbors, displacement, atoms, model.cutoff, self.capacity)
            per_atom = model.table_energies(species, tokens, index, table, bias, -1)
            return per_atom.sum(), [per_atom, width]

        # positions enter through a zero offset: the separations above stay out of the differentiated inputs
        offset = positions.new_zeros(atoms + 1, 3)
        strain = positions.new_zeros(3, 3)
        (position_gradient, strain_gradient), value, (per_atom, needed) = energy_gradients(
            energy, [offset, strain], self.functional
        )
        out = positions.dtype
        forces = -position_gradient[:atoms].to(out)
        return value.to(out), forces, per_atom.to(out), -strain_gradient.to(out), needed


# ------------------------------------------------------------------------------------------ the package


def example_inputs(model: TransformerPotential, device: str) -> tuple[Tensor, ...]:
    """A small structure of the model's first element to trace with (the shapes are dynamic: any N, E)."""
    generator = torch.Generator().manual_seed(0)
    positions = (4.0 * torch.rand(6, 3, generator=generator, dtype=torch.float64)).to(device)
    numbers = torch.full((6,), model.config.elements[0], dtype=torch.long, device=device)
    system = torch.tensor([0, 1], dtype=torch.long, device=device)
    if not model.config.is_local:
        return positions, numbers, system
    box = torch.zeros(3, 3, dtype=torch.float64, device=device)
    centers, neighbors, shifts = pairs_within(positions, box, torch.zeros(3, dtype=torch.bool, device=device), 1e3)
    return positions, numbers, system, centers, neighbors, shifts


def compile_module(
    model: TransformerPotential, capacity: int, device: str, package_path: Path, threads: int = 1
) -> float:
    """AOT-Inductor-compile energy and forces of `model` into `package_path`; returns the seconds it took.

    make_fx traces autograd.grad into plain aten operations (torch.export alone cannot), torch.export makes
    the atom and pair counts dynamic, and AOT-Inductor writes a shared library with the weights folded in."""
    from torch.fx.experimental.proxy_tensor import make_fx

    start = time.perf_counter()
    local = model.config.is_local
    module = LocalEnergyForces(model, capacity) if local else GlobalEnergyForces(model)
    inputs = example_inputs(model, device)
    # the math attention: Inductor fuses its products and softmax (aspirin, md17 model: 0.50 ms per call against
    # 0.55 with the fused CPU kernel), and that kernel's compiled float64 backward fails in torch 2.9
    with sdpa_kernel([SDPBackend.MATH]):
        graph = make_fx(module, tracing_mode="symbolic", _allow_non_fake_inputs=True)(*inputs)
    atoms = torch.export.Dim("atoms", min=2, max=MAX_COMPILED_ATOMS)
    shapes: tuple = ({0: atoms}, {0: atoms}, None)
    if local:
        pairs = torch.export.Dim("pairs", min=2, max=MAX_COMPILED_ATOMS * 1024)
        shapes += ({0: pairs}, {0: pairs}, {0: pairs})
    program = torch.export.export(graph, inputs, dynamic_shapes=shapes)
    # the CPU kernels' thread count is fixed here: reading it at run time (cpp.dynamic_threads) made the water model
    # 2.8x slower on one thread (192 atoms: 53 ms against 19) and aspirin 10 % slower
    configs = {"cpp.threads": threads} if torch.device(device).type == "cpu" else {}
    torch._inductor.aoti_compile_and_package(program, package_path=str(package_path), inductor_configs=configs)
    return time.perf_counter() - start


def add_metadata(package_path: Path, extra_files: dict[str, str]) -> None:
    """Write the metadata into the package as `<archive>/extra/<name>`, where `open_model` looks for it."""
    with zipfile.ZipFile(package_path, "a") as archive:
        root = archive.namelist()[0].split("/")[0]
        for name, text in extra_files.items():
            archive.writestr(f"{root}/extra/{name}", text)


def compile_export(
    checkpoint_path: str | Path,
    output: str | Path | None = None,
    dtype: str = "float32",
    device: str = "cpu",
    overwrite: bool = False,
    capacity: int | None = None,
    threads: int = 1,
    repulsion: str | None = None,
) -> Path:
    """Write the compiled export (version 4, `<checkpoint>-export.pt2`) of a checkpoint; returns its path.
    `threads`: CPU threads each compiled kernel uses (fixed when compiling; 1 is fastest per core); repulsion
    "zbl" compiles the repulsive core in, as the TorchScript export has it (model/repulsion.py)."""
    checkpoint_path = Path(checkpoint_path)
    output = Path(output) if output is not None else checkpoint_path.with_name(f"{checkpoint_path.stem}-export.pt2")
    if output.suffix != ".pt2":
        raise ExportError(f"a compiled export is an AOT-Inductor package and its name ends in .pt2, not {output.name}")
    check_export_paths(checkpoint_path, output, overwrite, device)
    if dtype not in DTYPES:
        raise ExportError(f"unknown dtype {dtype!r}; use float32 or float64")
    data = checkpoint_path.read_bytes()
    checkpoint = read_checkpoint(checkpoint_path, data)
    model = model_from_checkpoint(checkpoint, repulsion)
    check_finite_weights(model, checkpoint_path)
    model = model.to(device=device, dtype=DTYPES[dtype])
    metadata = export_metadata(checkpoint, model, dtype, device, hashlib.sha256(data).hexdigest())
    if model.config.is_local:
        capacity = capacity or default_capacity(model.config.interaction_range, checkpoint.get("domain"))
        if capacity < 2:
            raise ExportError(f"--neighbour-capacity {capacity} leaves no slot for a neighbour; give at least 2")
    else:
        capacity = 0
    temporary = output.with_name(output.name + ".partial.pt2")  # AOT-Inductor wants the .pt2 suffix
    if threads < 1:
        raise ExportError(f"--threads {threads}: give at least 1")
    seconds = compile_module(model, capacity, device, temporary, threads)
    metadata["format_version"] = COMPILED_EXPORT_VERSION
    metadata["compiled"] = {
        "backend": "aot-inductor",
        "device": device,
        "torch": torch.__version__,
        "input_dtype": "float64",  # positions and shifts; outputs come back in the input's dtype
        "neighbour_capacity": capacity or None,  # slots per atom, the atom itself included (local models)
        "threads": threads if torch.device(device).type == "cpu" else None,  # CPU threads per kernel, fixed
        "compile_seconds": round(seconds, 1),
    }
    add_metadata(temporary, {METADATA_JSON: json.dumps(metadata, indent=2), METADATA_TEXT: metadata_text(metadata)})
    temporary.replace(output)
    return output


# ------------------------------------------------------------------------------------------ the client


class CompiledPotential:
    """A compiled export, called like the TorchScript export's `forward`: (positions [N, 3] Å, atomic numbers
    [N], charge, multiplicity[, cell, pbc]) -> (energy, forces, per-atom energies[, virial]), float64 tensors.

    The input checks and the local model's neighbour search run here, outside the compiled graph; a neighbour
    table that overflowed is an error naming the fix."""

    def __init__(self, package_path: str | Path, metadata: dict, device: str = "cpu"):
        compiled = metadata["compiled"]
        self.path = Path(package_path)
        if compiled["torch"].split("+")[0] != torch.__version__.split("+")[0]:
            raise ExportError(
                f"{self.path} was compiled with torch {compiled['torch']}, and this is torch {torch.__version__}: "
                "a compiled export runs only under the torch that compiled it; re-export it with "
                "`mdplugin export --compile`, or use the TorchScript export"
            )
        if torch.device(device).type != torch.device(compiled["device"]).type:
            raise ExportError(
                f"{self.path} was compiled for {compiled['device']}, not {device}: re-export it with "
                f"`mdplugin export --compile --device {torch.device(device).type}`, or run on {compiled['device']}"
            )
        self.device = torch.device(device)
        self.metadata = metadata
        self.local = metadata.get("model_kind") == "local"
        self.capacity = int(compiled["neighbour_capacity"] or 0)
        self.interaction_range = metadata["interaction_range"]
        self.elements = list(metadata["atomic_numbers"])
        self.charge_range = tuple(metadata["charge_range"])
        self.multiplicity_range = tuple(metadata["multiplicity_range"])
        self.checked: tuple[Tensor, tuple[int, int]] | None = None  # the atomic numbers and state last checked
        self.lookup = torch.full((119,), -1, dtype=torch.long)
        self.lookup[torch.tensor(self.elements)] = torch.arange(len(self.elements))
        self.runner = torch._inductor.aoti_load_package(str(self.path))

    def check(self, positions: Tensor, atomic_numbers: Tensor, charge: int, multiplicity: int) -> None:
        """The checks the TorchScript export makes inside its forward, made here before the compiled call. Those of
        the atoms, charge and multiplicity run again only when they change (in an MD run: once)."""
        numbers = atomic_numbers.cpu()
        state = (charge, multiplicity)
        if self.checked is not None and self.checked[1] == state and torch.equal(self.checked[0], numbers):
            check_positions(positions, len(numbers))
            return
        checked_species(positions.cpu(), numbers, self.lookup, self.elements)
        check_system(charge, multiplicity, self.charge_range[1], self.multiplicity_range[1])
        self.checked = (numbers.clone(), state)

    def __call__(self, positions: Tensor, atomic_numbers: Tensor, charge: int = 0, multiplicity: int = 1,
                 cell: Tensor | None = None, pbc: Tensor | None = None) -> tuple[Tensor, ...]:  # fmt: skip
        self.check(positions, atomic_numbers, charge, multiplicity)
        positions = positions.to(self.device, torch.float64)
        numbers = atomic_numbers.to(self.device, torch.long)
        system = torch.tensor([charge, multiplicity], dtype=torch.long, device=self.device)
        if not self.local:
            if len(numbers) < 2:
                raise ValueError("a compiled export needs at least 2 atoms; use the TorchScript export for one atom")
            return tuple(self.runner(positions, numbers, system))
        return self.local_call(positions, numbers, system, cell, pbc)

    def local_call(self, positions: Tensor, numbers: Tensor, system: Tensor, cell, pbc) -> tuple[Tensor, ...]:
        box = torch.zeros(3, 3, dtype=torch.float64) if cell is None else cell.to(torch.float64).cpu()
        periodic = torch.zeros(3, dtype=torch.bool) if pbc is None else pbc.to(torch.bool).cpu()
        check_cell(box, periodic)
        centers, neighbors, shifts = pairs_within(positions, box.to(self.device), periodic.to(self.device),
                                                  self.interaction_range)  # fmt: skip
        if len(numbers) < 2 or len(centers) < 2:
            # the package was traced for N >= 2 atoms and E >= 2 pairs: pad with pairs dropped by the table
            spare = torch.full((2,), len(numbers), dtype=torch.long, device=self.device)
            centers, neighbors = torch.cat([centers, spare]), torch.cat([neighbors, spare.clamp(max=0)])
            shifts = torch.cat([shifts, shifts.new_zeros(2, 3)])
        energy, forces, per_atom, virial, needed = self.runner(positions, numbers, system, centers, neighbors, shifts)
        if int(needed) > self.capacity:
            raise ValueError(
                f"an atom has {int(needed) - 1} neighbours within {self.interaction_range} Å, more than the "
                f"{self.capacity - 1} this compiled export's neighbour table holds ({self.path}); the structure is "
                "denser than the model's training domain allows for (check the cell and units), or re-export with "
                f"`mdplugin export --compile --neighbour-capacity {int(needed) + int(needed) // 4}`"
            )
        return energy, forces, per_atom, virial
