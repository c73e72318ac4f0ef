"""The ML/MM System of `mdplugin run`: the ML region (residues or atoms the model computes, or the
solute of a structure solvated with OpenMM's Modeller), the OpenMM force field's System for the whole
structure, and openmm-ml's mechanical embedding that replaces the ML region's terms with the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import openmm
import openmm.app as app
from openmm import unit

from mdplugin.export.model_file import ModelFile
from mdplugin.md.options import RunOptions

WATER_MODELS = (
    "tip3pfb",
    "tip4pfb",
    "tip4pew",
    "tip5p",
    "spce",
    "opc3",
    "opc",
    "tip3p",
)  # --solvate: from --forcefield


@dataclass
class MLRegion:
    """An ML/MM run: the atoms the model computes, and the force field for the others."""

    atoms: list[int]
    forcefield: app.ForceField
    description: str  # for the summary: which residues or atoms


def uses_mlmm(options: RunOptions) -> bool:
    return options.ml_residues is not None or options.ml_atoms is not None or options.solvate_nm is not None


def load_forcefield(files: tuple[str, ...]) -> app.ForceField:
    try:
        return app.ForceField(*files)
    except Exception as error:  # ForceField raises ValueError, OSError or XML errors for a file it cannot use
        raise ValueError(
            f"cannot load the force field {', '.join(files)} ({error}); give OpenMM force field files (those "
            "shipped with OpenMM, such as amber14-all.xml amber14/tip3p.xml, or a path to an XML file)"
        ) from None


def water_model(files: tuple[str, ...]) -> str:
    """The water model --solvate adds: the one the force field files name (TIP3P when none does)."""
    for name in WATER_MODELS:
        if any(name in Path(file).name.lower().replace("-", "") for file in files):
            return {"tip3pfb": "tip3p", "tip4pfb": "tip4pew", "opc3": "tip3p"}.get(name, name)
    return "tip3p"


def solvate(
    topology: app.Topology, positions: unit.Quantity, forcefield: app.ForceField, options: RunOptions
) -> tuple[app.Topology, unit.Quantity]:
    """The structure in a box of water with `options.solvate_nm` of padding (ions neutralise it)."""
    modeller = app.Modeller(topology, positions)
    try:
        modeller.addSolvent(
            forcefield, model=water_model(options.forcefield), padding=options.solvate_nm * unit.nanometer
        )
    except Exception as error:  # e.g. "No template found for residue 1 (MOL)"
        raise ValueError(
            f"cannot solvate {options.structure} with {', '.join(options.forcefield)}: {error}. --solvate needs "
            "a PDB whose residues the force field knows (standard names, hydrogens included)"
        ) from None
    return modeller.topology, modeller.positions


def parse_indices(text: str, option: str) -> list[int]:
    """'0-21,30' -> [0, ..., 21, 30]."""
    indices = []
    for token in (part.strip() for part in text.split(",")):
        if not token:
            continue
        first, dash, last = token.partition("-")
        try:
            start, end = (int(first), int(last)) if dash else (int(token), int(token))
        except ValueError:
            raise ValueError(f"{option}: {token!r} is not a number or a range such as 0-21") from None
        if end < start:  # range() would select nothing, silently
            raise ValueError(f"{option}: the range {token!r} runs backwards; write it from low to high ({end}-{start})")
        indices.extend(range(start, end + 1))
    if not indices:
        raise ValueError(f"{option} selects nothing; give numbers or ranges such as 0-21")
    return indices


def select_residues(topology: app.Topology, text: str) -> list[int]:
    """Atoms of the residues named (case-insensitive) or numbered in `text`: names, PDB residue numbers
    and ranges, a number optionally after its chain ('ACE,ALA,NME', '1-3', 'A:1-3')."""
    residues = list(topology.residues())
    chosen: set[int] = set()
    for token in (part.strip() for part in text.split(",")):
        if not token:
            continue
        chain, _, numbers = token.rpartition(":")
        if numbers.replace("-", "").isdigit():
            wanted = set(parse_indices(numbers, "--ml-residues"))
            matched = {
                r.index: r.chain.id
                for r in residues
                if r.id.strip().isdigit() and int(r.id) in wanted and chain in ("", r.chain.id)
            }
            chains = sorted(set(matched.values()))
            if len(chains) > 1:
                raise ValueError(
                    f"--ml-residues: residue numbers {numbers} occur in chains {', '.join(chains)}; name the chain, "
                    f"e.g. {chains[0]}:{numbers}"
                )
        else:
            matched = {r.index: r.chain.id for r in residues if r.name.upper() == token.upper()}
        if not matched:
            names = ", ".join(dict.fromkeys(f"{r.name}" for r in residues))
            raise ValueError(
                f"--ml-residues: no residue is named or numbered {token!r} in the structure (its residues: {names}); "
                "give residue names or PDB residue numbers"
            )
        chosen |= set(matched)
    if not chosen:
        raise ValueError("--ml-residues selects nothing; give residue names or numbers such as ACE,ALA,NME or 1-3")
    return [atom.index for atom in topology.atoms() if atom.residue.index in chosen]


def ml_region(
    options: RunOptions, topology: app.Topology, positions: unit.Quantity
) -> tuple[app.Topology, unit.Quantity, MLRegion | None]:
    """For ML/MM: the (solvated) structure and the ML region; for an all-ML run, the structure and None."""
    if not uses_mlmm(options):
        return topology, positions, None
    forcefield = load_forcefield(tuple(options.forcefield))
    solute = topology.getNumAtoms()
    if options.solvate_nm is not None:
        topology, positions = solvate(topology, positions, forcefield, options)
    if options.ml_residues is not None:
        atoms = select_residues(topology, options.ml_residues)
        description = f"residues {options.ml_residues}"
    elif options.ml_atoms is not None:
        given = parse_indices(options.ml_atoms, "--ml-atoms")
        atoms = sorted(set(given))
        if len(atoms) < len(given):
            repeated = atom_ranges(sorted({a for a in atoms if given.count(a) > 1}))
            raise ValueError(
                f"--ml-atoms {options.ml_atoms}: atoms {repeated} are selected more than once (overlapping ranges); "
                "give each atom once"
            )
        outside = [a for a in atoms if not 0 <= a < topology.getNumAtoms()]
        if outside:
            raise ValueError(
                f"--ml-atoms: atom {outside[0]} is outside the structure's {topology.getNumAtoms()} atoms "
                f"(0-based, 0..{topology.getNumAtoms() - 1})"
            )
        description = f"atoms {options.ml_atoms}"
    else:
        atoms = list(range(solute))  # --solvate alone: the structure given is the ML region
        description = "the solute"
    check_no_cut_bonds(topology, atoms, description)
    if len(atoms) == topology.getNumAtoms():
        raise ValueError(
            "the ML region is the whole system, so no atom is left for the force field; select part of it with "
            "--ml-residues or --ml-atoms, or leave out the ML/MM options for an all-ML run"
        )
    return topology, positions, MLRegion(atoms, forcefield, description)


def check_no_cut_bonds(topology: app.Topology, atoms: list[int], description: str) -> None:
    """Mechanical embedding computes whole molecules with the model: an ML region that cuts a covalent bond
    would need link atoms (openmm-ml adds particles the topology lacks, and OpenMM fails with "wrong number
    of positions"). Refuse it, naming the bond."""
    selected = set(atoms)
    cut = [bond for bond in topology.bonds() if (bond.atom1.index in selected) != (bond.atom2.index in selected)]
    if not cut:
        return

    def name(atom: app.topology.Atom) -> str:
        return f"atom {atom.index} ({atom.name} of {atom.residue.name} {atom.residue.id})"

    first = cut[0]
    inside, outside = (first.atom1, first.atom2) if first.atom1.index in selected else (first.atom2, first.atom1)
    raise ValueError(
        f"the ML region ({description}) cuts {len(cut)} covalent bond(s), e.g. {name(inside)} in the region to "
        f"{name(outside)} outside it: the model computes whole molecules (mechanical embedding, no link atoms); "
        "select whole molecules or all residues of a molecule (e.g. --ml-residues ACE,ALA,NME)"
    )


def create_mm_system(
    region: MLRegion, topology: app.Topology, options: RunOptions, constraints: object = app.HBonds
) -> openmm.System:
    """The force field's System for the whole structure: PME in a periodic box (else no cutoff), bonds
    to hydrogen constrained (`constraints`) and rigid water (mechanical embedding frees the ML region's
    constraints)."""
    periodic = topology.getPeriodicBoxVectors() is not None
    if periodic:
        vectors = topology.getPeriodicBoxVectors().value_in_unit(unit.nanometer)
        width = min(vectors[0][0], vectors[1][1], vectors[2][2])
        if options.nonbonded_cutoff_nm > 0.5 * width:
            raise ValueError(
                f"--nonbonded-cutoff-nm {options.nonbonded_cutoff_nm:g} is more than half the periodic box width "
                f"({width:.2f} nm); use a larger box (more --solvate padding) or a shorter cutoff"
            )
    try:
        return region.forcefield.createSystem(
            topology,
            nonbondedMethod=app.PME if periodic else app.NoCutoff,
            nonbondedCutoff=options.nonbonded_cutoff_nm * unit.nanometer,
            constraints=constraints,
            rigidWater=True,
        )
    except ValueError as error:  # e.g. "No template found for residue 1 (MOL)"
        raise ValueError(
            f"the force field {', '.join(options.forcefield)} cannot parameterise {options.structure}: {error}. "
            "ML/MM needs a PDB whose MM residues the force field knows (standard names, hydrogens, CONECT "
            "records for other molecules), or --forcefield files that cover them"
        ) from None


def ml_region_charge(mm_system: openmm.System, atoms: list[int]) -> int:
    """The ML region's total charge as the force field sees it (its partial charges, rounded)."""
    for force in mm_system.getForces():
        if isinstance(force, openmm.NonbondedForce):
            total = sum(force.getParticleParameters(i)[0].value_in_unit(unit.elementary_charge) for i in atoms)
            return round(total)
    return 0


def create_mixed_system(
    region: MLRegion,
    model: ModelFile,
    mm_system: openmm.System,
    topology: app.Topology,
    charge: int,
    options: RunOptions,
    dtype: str,
    device: str,
) -> openmm.System:
    """openmm-ml's mechanical embedding: the model for the ML region (each molecule rebuilt whole in a
    periodic box), the force field for the rest and for ML-MM interactions."""
    from openmmml import MLPotential

    potential = MLPotential("transformer", modelPath=model)
    return potential.createMixedSystem(
        topology,
        mm_system,
        region.atoms,
        charge=charge,
        multiplicity=options.multiplicity,
        precision="double" if dtype == "float64" else "single",
        device=device,
    )


def atom_ranges(atoms: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5'."""
    parts, start = [], None
    for i, atom in enumerate(atoms):
        if start is None:
            start = atom
        if i + 1 == len(atoms) or atoms[i + 1] != atom + 1:
            parts.append(f"{start}" if start == atom else f"{start}-{atom}")
            start = None
    return ",".join(parts)
