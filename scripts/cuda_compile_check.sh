#!/usr/bin/env bash
# Compile check of the CUDA build on a machine without a GPU or driver: configures
# lmfast with GGML_CUDA=ON in a build folder of its own and builds the extension module.
#
#   scripts/cuda_compile_check.sh [BUILD_DIR]
#
# Environment: CUDA_ARCHS (default 90), JOBS (default 2), NICE (default 19),
# CUBLAS_ROOT: a folder with include/cublas_v2.h and lib/libcublas.so* when the CUDA
# toolkit has no cuBLAS (e.g. NVIDIA's nvidia-cublas wheel unpacked: .../nvidia/cu13),
# CUDA_DRIVER_STUB: a libcuda.so to link against when there is no driver and no
# toolkit stubs folder (the script makes an empty one with the soname libcuda.so.1:
# enough for a shared module, whose driver symbols resolve at load time).
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
B=${1:-$SRC/build/cuda-check}
PY=${PYTHON:-python3}
NVCC=${NVCC:-$(command -v nvcc)}
NVCC=$(readlink -f "$NVCC")
# /usr/local/bin/nvcc may be a wrapper script: ask nvcc where it lives.
CUDA_BIN=$("$NVCC" -v -E -x cu /dev/null -o /dev/null 2>&1 | sed -n 's/^#\$ _HERE_=//p' | head -1)
[ -n "$CUDA_BIN" ] && NVCC="$CUDA_BIN/nvcc"
args=(-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-90}" -DCMAKE_CUDA_COMPILER="$NVCC"
      -DLMFAST_REFERENCE_PROGRAMS=OFF)
if [ -n "${CUBLAS_ROOT:-}" ]; then
    lib=$CUBLAS_ROOT/lib
    [ -e "$lib/libcublas.so" ] || ln -s libcublas.so.13 "$lib/libcublas.so"
    [ -e "$lib/libcublasLt.so" ] || ln -s libcublasLt.so.13 "$lib/libcublasLt.so"
    args+=(-DCMAKE_CUDA_FLAGS="-I$CUBLAS_ROOT/include" -DCMAKE_CXX_FLAGS="-I$CUBLAS_ROOT/include"
           -DCUDA_cublas_LIBRARY="$lib/libcublas.so" -DCUDA_cublasLt_LIBRARY="$lib/libcublasLt.so")
fi
if [ -z "${CUDA_DRIVER_STUB:-}" ] && ! ldconfig -p | grep -q 'libcuda\.so'; then
    mkdir -p "$B/stub"
    echo 'void lmfast_cuda_driver_stub(void) {}' > "$B/stub/stub.c"
    cc -shared -fPIC -o "$B/stub/libcuda.so" -Wl,-soname,libcuda.so.1 "$B/stub/stub.c"
    CUDA_DRIVER_STUB=$B/stub/libcuda.so
fi
[ -n "${CUDA_DRIVER_STUB:-}" ] && args+=(-DCUDA_cuda_driver_LIBRARY="$CUDA_DRIVER_STUB")
t0=$(date +%s)
cmake -S "$SRC" -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython_EXECUTABLE="$(command -v "$PY")" \
    -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" "${args[@]}"
nice -n "${NICE:-19}" cmake --build "$B" --target _core -j "${JOBS:-2}"
echo "== CUDA compile check: built $(ls "$B"/_core*.so) in $(( $(date +%s) - t0 )) s"
ldd "$B"/_core*.so | grep -E 'cuda|cublas' || true
