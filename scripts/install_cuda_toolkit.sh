#!/usr/bin/env bash
# Installs a CUDA 13 toolkit for building lmfast's CUDA backend from NVIDIA's Python
# wheels (through pip's configured index: no system package repository needed), e.g.
# in cibuildwheel's before-all inside a manylinux_2_28 container:
#
#   scripts/install_cuda_toolkit.sh /opt/cuda [python]
#
# Leaves a toolkit root at $1/nvidia/cu13 (bin/nvcc, include, lib) the way the wheels
# lay it out, adds the unversioned library names FindCUDAToolkit looks for, and a
# link-time stub of the driver library (libcuda.so; the real one comes with the
# NVIDIA driver at run time). Prints the root.
set -euo pipefail
DEST=${1:?usage: install_cuda_toolkit.sh DEST [python]}
PY=${2:-python3}
CUDA_VERSION=${CUDA_VERSION:-13.0}
"$PY" -m pip install --quiet --target "$DEST" \
    "nvidia-cuda-nvcc==$CUDA_VERSION.*" "nvidia-cuda-crt==$CUDA_VERSION.*" "nvidia-nvvm==$CUDA_VERSION.*" \
    "nvidia-cuda-runtime==$CUDA_VERSION.*" "nvidia-cuda-cccl==$CUDA_VERSION.*" "nvidia-cublas==$CUDA_VERSION.*"
ROOT="$DEST/nvidia/cu13"
cd "$ROOT/lib"
for lib in cudart cublas cublasLt; do
    [ -e "lib$lib.so" ] || ln -s "$(ls "lib$lib.so."* | head -1)" "lib$lib.so"
done
[ -e lib64 ] || ln -s lib ../lib64 2>/dev/null || true
mkdir -p stubs
echo 'void lmfast_cuda_driver_stub(void) {}' > stubs/stub.c
cc -shared -fPIC -o stubs/libcuda.so -Wl,-soname,libcuda.so.1 stubs/stub.c
echo "$ROOT"
