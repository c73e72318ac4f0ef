"""Clients of the export: OpenMM (TorchForce, openmm-ml, MD runs), LAMMPS (plugin build) and ASE."""
