#!/usr/bin/env bash
# One device call for issue 23: the compiled exports on the GPU against the TorchScript ones. Set up
# (benchmarks/gpu/setup_device.sh: unpack, then build openmm-torch and the pair style in the background),
# compile the md17 and water models for cuda and measure them (gpu.py compiled: per call at 21 to 12,288
# atoms, a CUDA-graph capture of the compiled water model over two pair lists, OpenMM CUDA through
# PythonForce), then the TorchForce side (gpu.py openmm: CUDA graphs off and on) once the build is done.
#
#   set -o pipefail; OUT=$OUT BUDGET_S=540 bash benchmarks/gpu/run_compiled.sh 2>&1 | tee $OUT/log.txt
#
# Carry .devcarry (benchmarks/gpu/prepare_carry.sh). Brings back gpu.json and gpu.md. No MACE here: the
# device image has no mace-torch and no network (benchmarks/results/gpu/README.md).
set -u
OUT=${OUT:-/tmp/gpu}
BUDGET_S=${BUDGET_S:-540}
export DEV=${DEV:-/tmp/dev} PYTHONUNBUFFERED=1
started=$(date +%s)
mkdir -p "$OUT"

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv
bash benchmarks/gpu/setup_device.sh unpack || exit 1
JOBS=8 bash benchmarks/gpu/setup_device.sh build > "$DEV-build.log" 2>&1 &
build=$!
# shellcheck disable=SC1091
source "$DEV/env.sh"
# Inductor compiles its kernels on the remaining cores while openmm-torch builds
timeout $((BUDGET_S - 200)) python3 benchmarks/gpu/gpu.py compiled --json "$OUT/gpu.json"
wait $build
echo "build exit status $? after $(($(date +%s) - started)) s"
# shellcheck disable=SC1091
source "$DEV/env.sh"
left=$((BUDGET_S - ($(date +%s) - started) - 20))
if [ "$left" -gt 60 ]; then
  timeout "$left" python3 benchmarks/gpu/gpu.py openmm --json "$OUT/gpu.json"
fi
python3 benchmarks/gpu/gpu.py report --json "$OUT/gpu.json" --markdown "$OUT/gpu.md"
echo "done after $(($(date +%s) - started)) s"
