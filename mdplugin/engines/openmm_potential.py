"""openmm-ml support: `MLPotential('transformer', modelPath='model.pt')`.

Registered through the `openmmml.potentials` entry point, so `createSystem` and `createMixedSystem`
(mechanical embedding) work once mdplugin is installed. In a periodic box (PME) a global model computes
the ML molecules, each rebuilt whole with the minimum image; the force field computes everything else,
ML-MM interactions included.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import openmm
import openmm.app
from openmmml.mlpotential import MLPotentialImpl, MLPotentialImplFactory

from mdplugin.engines.openmm_force import create_torch_force, molecule_bonds_force, uses_periodic_box
from mdplugin.export.model_file import ModelFile, open_model

PRECISIONS = {None: None, "single": "float32", "double": "float64"}


class TransformerPotentialImplFactory(MLPotentialImplFactory):
    """Creates the transformer potential for openmm-ml."""

    def createImpl(self, name: str, modelPath: str | Path | None = None, **args) -> MLPotentialImpl:  # noqa: N802, N803
        return TransformerPotentialImpl(modelPath)


class TransformerPotentialImpl(MLPotentialImpl):
    """A trained mdplugin model (export or checkpoint) as an openmm-ml potential.

    >>> potential = MLPotential('transformer', modelPath='model-export.pt')
    >>> system = potential.createSystem(topology, charge=0, multiplicity=1)

    `createSystem` and `addForces` accept `charge`, `multiplicity`, `precision` ('single' or 'double';
    it applies to checkpoints, scripted on the fly) and `device` ('cpu' or 'cuda').
    """

    def __init__(self, model_path: str | Path | ModelFile | None):
        if model_path is None:
            raise ValueError(
                "MLPotential('transformer') needs modelPath=, the path of an mdplugin export or checkpoint"
            )
        # opened once here; every System this potential creates uses the same file object
        self.model = model_path if isinstance(model_path, ModelFile) else open_model(model_path)

    def addForces(  # noqa: N802
        self,
        topology: openmm.app.Topology,
        system: openmm.System,
        atoms: Iterable[int] | None,
        forceGroup: int,  # noqa: N803
        charge: int = 0,
        multiplicity: int = 1,
        precision: str | None = None,
        device: str | None = None,
        **args,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; use 'single' or 'double'")
        force = create_torch_force(
            self.model,
            topology,
            atoms,
            charge,
            multiplicity,
            system=system,
            dtype=PRECISIONS[precision],
            device=device,
        )
        force.setForceGroup(forceGroup)
        system.addForce(force)
        if uses_periodic_box(topology, system) and atoms is not None:
            # mechanical embedding removed the ML bonds; keep the molecules whole under a barostat
            bonds = molecule_bonds_force(topology, atoms)
            if bonds.getNumBonds():
                bonds.setForceGroup(forceGroup)
                system.addForce(bonds)

    def getMLLongRange(self) -> bool:  # noqa: N802
        # the model sees the ML molecules alone, never their periodic images: interactions between images
        # are left to the force field's charges (mechanical embedding keeps them)
        return False
