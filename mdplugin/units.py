"""Unit conversions used across the package: the model works in Å, eV and eV/Å; OpenMM in nm and kJ/mol."""

KJ_PER_MOL_PER_EV = 96.48533212
GPA_PER_EV_PER_CUBIC_ANGSTROM = 160.21766208  # stress and pressure
