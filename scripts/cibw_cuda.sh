#!/usr/bin/env bash
# Builds the CUDA variant of the Linux x86_64 wheels with cibuildwheel: the portable
# CPU build of pyproject.toml plus the CUDA backend as one more module. Published as
# the distribution "lmfast-cu13" (import name still lmfast), which depends on NVIDIA's
# cudart and cuBLAS wheels instead of carrying them; on a machine without a GPU or
# driver the CUDA module does not load and lmfast runs on the CPU.
#
#   scripts/cibw_cuda.sh [cibuildwheel options]      (needs Docker)
#
# CUDA architectures: CMakeLists.txt's default set, or CUDA_ARCHS="80-real;90".
set -euo pipefail
cd "$(dirname "$0")/.."
CUDA_ARCHS=${CUDA_ARCHS:-}
export CIBW_PLATFORM=linux
export CIBW_ARCHS_LINUX=x86_64
# Toolkit from NVIDIA's wheels, then the distribution name and dependencies.
export CIBW_BEFORE_ALL_LINUX="bash {project}/scripts/install_cuda_toolkit.sh /opt/cuda /opt/python/cp312-cp312/bin/python \
 && /opt/python/cp312-cp312/bin/python {project}/scripts/cuda_variant.py {project}/pyproject.toml"
export CIBW_ENVIRONMENT_LINUX="CUDAToolkit_ROOT=/opt/cuda/nvidia/cu13 CUDACXX=/opt/cuda/nvidia/cu13/bin/nvcc \
 CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-8}"
defines="cmake.define.LMFAST_PORTABLE=ON cmake.define.GGML_CUDA=ON build-dir=build/cibw-cuda-{wheel_tag}"
defines+=" cmake.define.CUDA_cuda_driver_LIBRARY=/opt/cuda/nvidia/cu13/lib/stubs/libcuda.so"
[ -n "$CUDA_ARCHS" ] && defines+=" cmake.define.CMAKE_CUDA_ARCHITECTURES=$CUDA_ARCHS"
export CIBW_CONFIG_SETTINGS_LINUX="$defines"
# The driver and NVIDIA's runtime wheels provide these at run time.
export CIBW_REPAIR_WHEEL_COMMAND_LINUX="auditwheel repair --exclude libcuda.so.1 --exclude libcudart.so.13 \
 --exclude libcublas.so.13 --exclude libcublasLt.so.13 -w {dest_dir} {wheel}"
exec cibuildwheel "$@"
