"""The OpenMM adapter: an export (or a checkpoint) as an openmm-torch `TorchForce`.

OpenMM hands the force every particle's position in nm (float64 on Reference and CPU, float32 on
CUDA in single or mixed precision) and wants kJ/mol and kJ/mol/nm back. A small scripted wrapper
selects the model's atoms, converts units and calls the export; the other particles get zero force.

In a periodic System a global (molecular) model computes only a subset: whole molecules (ML/MM). OpenMM
hands over unwrapped positions in which a molecule may straddle the box, so the wrapper rebuilds each
molecule whole with the minimum image before calling the model, and refuses one longer than half the box.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Tuple  # noqa: UP035 - TorchScript needs typing generics

import openmm
import openmm.app
import openmm.unit
import torch
from torch import Tensor, nn

from mdplugin.allocation import retain_freed_memory
from mdplugin.export.model_file import ModelFile, ModelInfo, open_model
from mdplugin.units import KJ_PER_MOL_PER_EV

if TYPE_CHECKING:
    import openmmtorch

ANGSTROM_PER_NM = 10.0
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


def minimum_image(displacements: Tensor, box: Tensor) -> Tensor:
    """Displacements [N, 3] reduced to their minimum image in OpenMM's reduced triclinic box (rows are
    vectors; a along x, b in the xy plane): subtract c, then b, then a."""
    for axis in [2, 1, 0]:
        displacements = displacements - torch.round(displacements[:, axis : axis + 1] / box[axis, axis]) * box[axis]
    return displacements


def one_decimal(value: float) -> str:
    """`f"{value:.1f}"` for TorchScript, whose format strings know only {} (non-negative values)."""
    tenths = int(round(value * 10.0))
    return f"{tenths // 10}.{tenths % 10}"


class MoleculesTorchForceModule(TorchForceModule):
    """Global model on whole molecules of a periodic System: positions [N_particles, 3] and box [3, 3]
    (nm, rows are vectors) -> (energy kJ/mol, forces kJ/mol/nm).

    Each molecule is rebuilt around its anchor atom (a central atom) with the minimum image, and the
    molecules around the first one, so the model sees the ML region as one whole cluster. Shifting atoms
    by box vectors leaves the forces unchanged. A molecule whose longest internal distance, as rebuilt, is
    more than half the shortest box width is refused: there the minimum image is ambiguous (and a wrong
    image shows up as exactly such a distance)."""

    def __init__(
        self,
        model: torch.jit.ScriptModule,
        atomic_numbers: Tensor,
        indices: Tensor,
        charge: int,
        multiplicity: int,
        anchors: Tensor,
        molecules: Tensor,
    ):
        super().__init__(model, atomic_numbers, indices, charge, multiplicity)
        self.register_buffer("anchors", anchors)  # per model atom: the model-order index of its molecule's anchor
        self.register_buffer("same_molecule", molecules[:, None] == molecules[None, :])

    def forward(self, positions: Tensor, box: Tensor) -> Tuple[Tensor, Tensor]:  # noqa: UP006
        device = self.indices.device
        selected = positions.to(device).index_select(0, self.indices) * self.angstrom_per_nm
        cell = box.to(device=device, dtype=selected.dtype) * self.angstrom_per_nm
        anchors = selected.index_select(0, self.anchors)
        whole = selected[0] + minimum_image(anchors - selected[0], cell) + minimum_image(selected - anchors, cell)
        self.check_whole(whole, cell)
        energy, forces, _ = self.model(whole, self.atomic_numbers, self.charge, self.multiplicity)
        all_forces = torch.zeros_like(positions)
        all_forces.index_copy_(0, self.indices.to(positions.device), forces.to(positions.device) * self.force_unit)
        return energy.detach().to(positions.device) * self.energy_unit, all_forces

    def check_whole(self, whole: Tensor, cell: Tensor) -> None:
        half_width = 0.5 * float(torch.diagonal(cell).min())
        distances = torch.cdist(whole.detach(), whole.detach())
        longest = float(torch.where(self.same_molecule, distances, torch.zeros_like(distances)).max())
        if longest > half_width:
            raise ValueError(
                f"a molecule of the ML region spans {one_decimal(longest)} Å, more than half the shortest periodic box width "
                f"({one_decimal(half_width)} Å): the model sees each molecule whole, rebuilt with the minimum image, which needs "
                "molecules smaller than half the box; use a larger box (more solvent padding) or a smaller "
                "ML region"
            )


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


def model_atomic_numbers(topology: openmm.app.Topology, atoms: list[int], info: ModelInfo) -> list[int]:
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
    known = set(info.atomic_numbers)
    unknown = sorted({topology_atoms[i].element.symbol for i, z in zip(atoms, numbers) if z not in known})
    if unknown:
        raise ValueError(
            f"the model knows the elements {', '.join(info.elements)}, but the structure contains "
            f"{', '.join(unknown)}; use a model trained on those elements or compute those atoms with a force field (ML/MM)"
        )
    return numbers


def create_torch_force(
    model: str | Path | ModelFile,
    topology: openmm.app.Topology,
    atoms: Iterable[int] | None = None,
    charge: int = 0,
    multiplicity: int = 1,
    *,
    system: openmm.System | None = None,
    dtype: str | None = None,
    device: str | None = None,
    module_path: str | Path | None = None,
) -> openmmtorch.TorchForce | openmm.PythonForce:
    """A `TorchForce` computing the model's energy and forces for `atoms` (default: all of them); for a compiled
    export (`mdplugin export --compile`), which openmm-torch cannot load, an `openmm.PythonForce` running it.

    `system` (when given) is checked for periodic boundaries. `module_path`, when given, receives the
    scripted wrapper and the force loads it from there; otherwise the module is handed over in memory.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model if isinstance(model, ModelFile) else open_model(model)
    retain_freed_memory()  # no page faults for every step's activations (mdplugin.allocation)
    periodic = uses_periodic_box(topology, system)
    particles = system.getNumParticles() if system is not None else topology.getNumAtoms()
    atoms = selected_atoms(atoms, max(particles, topology.getNumAtoms()))
    model.info.check_periodic(periodic, whole_system=len(atoms) >= particles)
    model.info.check_state(charge, multiplicity)
    numbers = model_atomic_numbers(topology, atoms, model.info)
    module = model.module(dtype, device)
    arguments = (
        module,
        torch.tensor(numbers, dtype=torch.long, device=device),
        torch.tensor(atoms, dtype=torch.long, device=device),
        int(charge),
        int(multiplicity),
    )
    if model.is_local:
        wrapper = LocalTorchForceModule(*arguments)
    elif periodic:
        molecules = ml_molecules(topology, atoms, system)
        check_one_molecule(topology, molecules)
        anchors, labels = molecule_anchors(molecules, atoms)
        wrapper = MoleculesTorchForceModule(
            *arguments,
            torch.tensor(anchors, dtype=torch.long, device=device),
            torch.tensor(labels, dtype=torch.long, device=device),
        )
    else:
        wrapper = TorchForceModule(*arguments)
    if model.kind == "compiled":
        # openmm-torch loads TorchScript only; the same wrapper runs the compiled package from Python
        force = openmm.PythonForce(CompiledForceComputation(wrapper, periodic))
        force.setUsesPeriodicBoundaryConditions(periodic)
        return force
    torch_force = import_openmmtorch().TorchForce
    scripted = torch.jit.script(wrapper)
    if module_path is None:
        force = torch_force(scripted)
    else:
        scripted.save(str(module_path))
        force = torch_force(str(module_path))
    force.setOutputsForces(True)  # forces come from autograd inside the export, not a second backward
    force.setUsesPeriodicBoundaryConditions(periodic)  # the box becomes the module's second input
    return force


class CompiledForceComputation:
    """The computation of an `openmm.PythonForce` for a compiled export: OpenMM's State -> (kJ/mol, kJ/mol/nm),
    through the wrapper a TorchForce would script (atom selection, units, whole molecules), run eagerly."""

    def __init__(self, wrapper: nn.Module, periodic: bool):
        self.wrapper = wrapper
        self.periodic = periodic

    def __call__(self, state: openmm.State):
        positions = torch.from_numpy(state.getPositions(asNumpy=True).value_in_unit(openmm.unit.nanometer))
        arguments = [positions]
        if self.periodic:
            box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(openmm.unit.nanometer)
            arguments.append(torch.from_numpy(box))
        energy, forces = self.wrapper(*arguments)
        return float(energy), forces.numpy()


def ml_molecules(
    topology: openmm.app.Topology, atoms: list[int], system: openmm.System | None = None
) -> list[list[int]]:
    """The ML atoms grouped into molecules (connected by the topology's bonds among them; a virtual site,
    such as openmm-ml's link-atom cap, joins its first parent), each with its anchor first: a graph
    centre (fewest bonds to its farthest atom), so that the molecule is rebuilt from its middle.

    A residue whose ML atoms fall into several molecules means missing bonds: an error, since each
    piece would be rebuilt whole on its own."""
    selected = set(atoms)
    neighbours: dict[int, set[int]] = {atom: set() for atom in atoms}
    for bond in topology.bonds():
        first, second = bond.atom1.index, bond.atom2.index
        if first in selected and second in selected:
            neighbours[first].add(second)
            neighbours[second].add(first)
    if system is not None:
        for atom in atoms:
            if atom < system.getNumParticles() and system.isVirtualSite(atom):
                parent = system.getVirtualSite(atom).getParticle(0)
                if parent in selected:
                    neighbours[atom].add(parent)
                    neighbours[parent].add(atom)
    molecules, seen = [], set()
    for atom in atoms:
        if atom in seen:
            continue
        molecule, frontier = [], [atom]
        seen.add(atom)
        while frontier:
            current = frontier.pop()
            molecule.append(current)
            for neighbour in neighbours[current] - seen:
                seen.add(neighbour)
                frontier.append(neighbour)
        anchor = min(molecule, key=lambda atom: (_eccentricity(atom, neighbours), atom))
        molecules.append([anchor, *sorted(set(molecule) - {anchor})])
    topology_atoms = list(topology.atoms())
    molecule_of = {atom: i for i, molecule in enumerate(molecules) for atom in molecule}
    residues: dict[int, set[int]] = {}
    for atom in atoms:
        residues.setdefault(topology_atoms[atom].residue.index, set()).add(molecule_of[atom])
    for index, found in residues.items():
        if len(found) > 1:
            residue = list(topology.residues())[index]
            raise ValueError(
                f"the ML atoms of residue {residue.name} {residue.id} are not bonded into one molecule (the "
                f"topology has no bonds joining them, {len(found)} pieces): in a periodic box the model rebuilds "
                "each molecule whole from its bonds; give a PDB with standard residue names or CONECT records "
                "(or call topology.createStandardBonds()), and select whole molecules as the ML region"
            )
    return molecules


def check_one_molecule(topology: openmm.app.Topology, molecules: list[list[int]]) -> None:
    """A global model in a periodic box computes one molecule. With several, attention sees them together,
    and which periodic image of one the other sees flips when their separation crosses half the box: the
    energy jumps (by 1.1 eV for two waters, issue 25), with no force to tell the dynamics."""
    if len(molecules) < 2:
        return
    atoms = list(topology.atoms())
    names = ", ".join(
        f"{atoms[m[0]].residue.name} {atoms[m[0]].residue.id} (atoms {min(m)}-{max(m)})" for m in molecules[:3]
    )
    raise ValueError(
        f"the ML region holds {len(molecules)} molecules ({names}{', ...' if len(molecules) > 3 else ''}), and the "
        "model uses global attention: it sees them together, and in a periodic box which image of one the other "
        "sees flips when their separation crosses half the box, so the energy would jump; select one molecule as "
        "the ML region, or use a local model (finite interaction range: mdplugin train --interaction-range)"
    )


def _eccentricity(atom: int, neighbours: dict[int, set[int]]) -> int:
    """Bonds from `atom` to the farthest atom of its molecule (breadth-first search)."""
    distance, frontier = {atom: 0}, [atom]
    while frontier:
        following = []
        for current in frontier:
            for neighbour in neighbours[current]:
                if neighbour not in distance:
                    distance[neighbour] = distance[current] + 1
                    following.append(neighbour)
        frontier = following
    return max(distance.values())


def molecule_anchors(molecules: list[list[int]], atoms: list[int]) -> tuple[list[int], list[int]]:
    """Per ML atom (in model order): the model-order index of its molecule's anchor, and its molecule's number."""
    position = {atom: i for i, atom in enumerate(atoms)}
    anchors, labels = [0] * len(atoms), [0] * len(atoms)
    for label, molecule in enumerate(molecules):
        for atom in molecule:
            anchors[position[atom]], labels[position[atom]] = position[molecule[0]], label
    return anchors, labels


def molecule_bonds_force(topology: openmm.app.Topology, atoms: Iterable[int]) -> openmm.CustomBondForce:
    """A force of zero energy holding the bonds among `atoms`. Mechanical embedding removes the ML region's
    bonded terms, and with them what tells OpenMM that its atoms form one molecule: without this, a
    MonteCarloBarostat would scale each ML atom's position on its own and stretch the molecule."""
    selected = set(atoms)
    force = openmm.CustomBondForce("0")
    force.setName("MLMoleculeBonds")
    for bond in topology.bonds():
        if bond.atom1.index in selected and bond.atom2.index in selected:
            force.addBond(bond.atom1.index, bond.atom2.index, [])
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
    model: str | Path | ModelFile,
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
        create_torch_force(model, topology, None, charge, multiplicity, system=system, dtype=dtype, device=device)
    )
    if remove_cm_motion:
        system.addForce(openmm.CMMotionRemover())
    return system
