"""The OpenMM adapter: an export (or a checkpoint) as an openmm-torch `TorchForce`.

OpenMM hands the force every particle's position in nm (float64 on Reference and CPU, float32 on
CUDA in single or mixed precision) and wants kJ/mol and kJ/mol/nm back. A small scripted wrapper
selects the model's atoms, converts units and calls the export; the other particles get zero force.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Tuple  # noqa: UP035 - TorchScript needs typing generics

import openmm
import openmm.app
import torch
from torch import Tensor, nn

from mdplugin.export.loader import load_model_file

if TYPE_CHECKING:
    import openmmtorch

ANGSTROM_PER_NM = 10.0
KJ_PER_MOL_PER_EV = 96.48533212
FORCE_UNIT = KJ_PER_MOL_PER_EV * ANGSTROM_PER_NM  # eV/Å -> kJ/mol/nm
_TORCH_PLUGINS_RETRIED = False


class TorchForceModule(nn.Module):
    """Global model: positions [N_particles, 3] nm -> (energy kJ/mol, forces [N_particles, 3] kJ/mol/nm)."""

    def __init__(
        self, model: torch.jit.ScriptModule, atomic_numbers: Tensor, indices: Tensor, charge: int, multiplicity: int
    ):
        super().__init__()
        self.model = model
        self.register_buffer("atomic_numbers", atomic_numbers)
        self.register_buffer("indices", indices)  # the particles the model sees (ML/MM selects a subset)
        self.charge = charge
        self.multiplicity = multiplicity
        self.angstrom_per_nm = ANGSTROM_PER_NM
        self.energy_unit = KJ_PER_MOL_PER_EV
        self.force_unit = FORCE_UNIT

    def forward(self, positions: Tensor) -> Tuple[Tensor, Tensor]:  # noqa: UP006
        # the model runs where its buffers live (where it was loaded); results go back to the input's device
        selected = positions.to(self.indices.device).index_select(0, self.indices) * self.angstrom_per_nm
        energy, forces, _ = self.model(selected, self.atomic_numbers, self.charge, self.multiplicity)
        all_forces = torch.zeros_like(positions)
        all_forces.index_copy_(0, self.indices.to(positions.device), forces.to(positions.device) * self.force_unit)
        # detach: a frozen export's energy still carries its autograd graph; OpenMM needs only the value
        return energy.detach().to(positions.device) * self.energy_unit, all_forces


class LocalTorchForceModule(TorchForceModule):
    """Local model: positions [N_particles, 3] nm and, in a periodic System, the box [3, 3] nm (rows are
    vectors) -> (energy kJ/mol, forces kJ/mol/nm). Positions may be unwrapped: the model's neighbour
    search finds the images in range, so wrapping is never needed."""

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:  # noqa: UP006, UP045
        device = self.indices.device
        selected = positions.to(device).index_select(0, self.indices) * self.angstrom_per_nm
        if box is None:
            cell = torch.zeros(3, 3, dtype=selected.dtype, device=device)
            pbc = torch.zeros(3, dtype=torch.bool, device=device)
        else:
            cell = box.to(device=device, dtype=selected.dtype) * self.angstrom_per_nm
            pbc = torch.ones(3, dtype=torch.bool, device=device)
        energy, forces, _, _ = self.model(selected, self.atomic_numbers, self.charge, self.multiplicity, cell, pbc)
        all_forces = torch.zeros_like(positions)
        all_forces.index_copy_(0, self.indices.to(positions.device), forces.to(positions.device) * self.force_unit)
        return energy.detach().to(positions.device) * self.energy_unit, all_forces


def import_openmmtorch():
    """openmmtorch, with its OpenMM kernels registered even if openmm was imported before torch.

    OpenMM loads its plugins when first imported; the TorchForce kernels need the CUDA libraries that
    only `import torch` loads, so after `import openmm; import torch` they are missing ("Specified a
    Platform for a Context which does not support all required kernels"). Load them again now.
    """
    global _TORCH_PLUGINS_RETRIED
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # openmmtorch imports simtk.openmm, which logs a deprecation warning
    try:
        import openmmtorch
    finally:
        logging.disable(previous)

    if not _TORCH_PLUGINS_RETRIED:
        _TORCH_PLUGINS_RETRIED = True
        for failure in openmm.Platform.getPluginLoadFailures():
            match = re.match(r"Error loading library (\S*OpenMMTorch\S*): ", failure)
            if match:
                try:
                    openmm.Platform.loadPluginLibrary(match.group(1))
                except openmm.OpenMMException:
                    pass  # e.g. the OpenCL kernels on a machine without OpenCL
    return openmmtorch


def uses_periodic_box(topology: openmm.app.Topology, system: openmm.System | None = None) -> bool:
    return topology.getPeriodicBoxVectors() is not None or (
        system is not None and system.usesPeriodicBoundaryConditions()
    )


def check_periodic(metadata: dict, periodic: bool) -> None:
    """A model that cannot see periodic images must not silently run in a periodic box."""
    if not periodic:
        return
    if metadata.get("model_kind", "global") != "local":
        raise ValueError(
            "the system is periodic, but the model uses global attention (interaction_range: none) and "
            "cannot see periodic images; simulate the molecule without a periodic box (no CRYST1 line or "
            "box vectors, NoCutoff) or use a model with a finite interaction range"
        )
    if not metadata.get("periodic", False):
        raise ValueError("the system is periodic, but the export takes no box vectors; simulate without a periodic box")


def model_atomic_numbers(topology: openmm.app.Topology, atoms: list[int], metadata: dict) -> list[int]:
    """Atomic numbers of the selected atoms; a clear error for an element the model does not know."""
    topology_atoms = list(topology.atoms())
    numbers = []
    for index in atoms:
        if not 0 <= index < len(topology_atoms):
            raise ValueError(f"atom index {index} is outside the topology's {len(topology_atoms)} atoms")
        atom = topology_atoms[index]
        if atom.element is None:
            raise ValueError(
                f"atom {index} ({atom.name} in {atom.residue.name}) has no element; the model needs one for every atom it computes"
            )
        numbers.append(atom.element.atomic_number)
    known = set(metadata["atomic_numbers"])
    unknown = sorted({topology_atoms[i].element.symbol for i, z in zip(atoms, numbers) if z not in known})
    if unknown:
        raise ValueError(
            f"the model knows the elements {', '.join(metadata['elements'])}, but the structure contains "
            f"{', '.join(unknown)}; use a model trained on those elements or compute those atoms with a force field (ML/MM)"
        )
    return numbers


def check_system_state(metadata: dict, charge: int, multiplicity: int) -> None:
    low, high = metadata.get("charge_range", [charge, charge])
    if not low <= charge <= high:
        raise ValueError(f"total charge {charge} is outside the model's range {low}..{high}")
    low, high = metadata.get("multiplicity_range", [multiplicity, multiplicity])
    if not low <= multiplicity <= high:
        raise ValueError(f"spin multiplicity {multiplicity} is outside the model's range {low}..{high}")


def create_torch_force(
    model_path: str | Path,
    topology: openmm.app.Topology,
    atoms: Iterable[int] | None = None,
    charge: int = 0,
    multiplicity: int = 1,
    *,
    system: openmm.System | None = None,
    dtype: str | None = None,
    device: str | None = None,
    module_path: str | Path | None = None,
) -> openmmtorch.TorchForce:
    """A `TorchForce` computing the model's energy and forces for `atoms` (default: all of them).

    `system` (when given) is checked for periodic boundaries. `module_path`, when given, receives the
    scripted wrapper and the force loads it from there; otherwise the module is handed over in memory.
    """
    torch_force = import_openmmtorch().TorchForce
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    module, metadata = load_model_file(model_path, dtype, device)
    periodic = uses_periodic_box(topology, system)
    check_periodic(metadata, periodic)
    atoms = selected_atoms(atoms, topology.getNumAtoms())
    check_system_state(metadata, charge, multiplicity)
    numbers = model_atomic_numbers(topology, atoms, metadata)
    local = metadata.get("model_kind") == "local"
    wrapper = (LocalTorchForceModule if local else TorchForceModule)(
        module,
        torch.tensor(numbers, dtype=torch.long, device=device),
        torch.tensor(atoms, dtype=torch.long, device=device),
        int(charge),
        int(multiplicity),
    )
    scripted = torch.jit.script(wrapper)
    if module_path is None:
        force = torch_force(scripted)
    else:
        scripted.save(str(module_path))
        force = torch_force(str(module_path))
    force.setOutputsForces(True)  # forces come from autograd inside the export, not a second backward
    force.setUsesPeriodicBoundaryConditions(local and periodic)  # the box becomes the module's second input
    return force


def selected_atoms(atoms: Iterable[int] | None, particles: int) -> list[int]:
    """The model's atoms as distinct valid indices; a repeated or fractional index would silently
    compute a different molecule, so both are errors."""
    if atoms is None:
        return list(range(particles))
    selected = []
    for atom in atoms:
        if isinstance(atom, bool) or int(atom) != atom:
            raise ValueError(f"atom index {atom!r} is not a whole number; give integer particle indices")
        if not 0 <= int(atom) < particles:
            raise ValueError(f"atom index {atom} is outside the system's {particles} particles (0..{particles - 1})")
        selected.append(int(atom))
    if not selected:
        raise ValueError("no atoms selected for the model")
    if len(set(selected)) != len(selected):
        repeated = sorted({a for a in selected if selected.count(a) > 1})
        raise ValueError(f"atom indices {repeated[:10]} are given more than once; each atom may appear only once")
    return selected


def create_system(
    model_path: str | Path,
    topology: openmm.app.Topology,
    charge: int = 0,
    multiplicity: int = 1,
    *,
    remove_cm_motion: bool = True,
    dtype: str | None = None,
    device: str | None = None,
) -> openmm.System:
    """An all-ML `System`: masses from the elements, the model's force, and a CMMotionRemover."""
    system = openmm.System()
    if topology.getPeriodicBoxVectors() is not None:
        system.setDefaultPeriodicBoxVectors(*topology.getPeriodicBoxVectors())
    for atom in topology.atoms():
        system.addParticle(atom.element.mass if atom.element is not None else 0.0)
    system.addForce(
        create_torch_force(model_path, topology, None, charge, multiplicity, system=system, dtype=dtype, device=device)
    )
    if remove_cm_motion:
        system.addForce(openmm.CMMotionRemover())
    return system
