#!/usr/bin/env bash
# The test suite against one of ggml's x86 instruction-set levels instead of this machine's best.
#
# ggml's AVX2 and AVX-512 kernels round differently, so a small model's greedy words can differ
# between hosts (issue 35). The suite compares such words only with llama.cpp's own programs
# built from the same objects; this script checks that claim from one machine: on an AVX-512
# host, `avx2` runs every test on the kernels an AVX2-only host uses. The reverse (`avx512` on an
# AVX2-only host) needs an emulator that implements AVX-512 and is refused here.
#
#   scripts/test_cpu_variant.sh avx2 [pytest arguments]      e.g. -m "not slow" tests
#
# Each variant gets its own virtual environment (.venv-VARIANT) and build folder
# (build/cpu-VARIANT), so the default build is left as it is.
set -euo pipefail
cd "$(dirname "$0")/.."

variant=${1:?usage: scripts/test_cpu_variant.sh avx2|avx512 [pytest arguments]}
shift
case "$variant" in
    avx2)   needs="avx2 fma f16c bmi2"
            flags="GGML_AVX=ON GGML_AVX2=ON GGML_FMA=ON GGML_F16C=ON GGML_BMI2=ON" ;;
    avx512) needs="avx512f avx512bw avx512vl fma f16c"
            flags="GGML_AVX=ON GGML_AVX2=ON GGML_FMA=ON GGML_F16C=ON GGML_BMI2=ON GGML_AVX512=ON" ;;
    *) echo "test_cpu_variant.sh: error: unknown variant '$variant' (avx2 or avx512)" >&2; exit 2 ;;
esac
for f in $needs; do
    if ! grep -qw "$f" /proc/cpuinfo; then
        echo "test_cpu_variant.sh: error: this CPU lacks '$f', which the $variant kernels use" >&2
        exit 1
    fi
done

defines=(-C "build-dir=build/cpu-$variant" -C cmake.define.GGML_NATIVE=OFF)
for f in $flags; do defines+=(-C "cmake.define.$f"); done

python3 -m venv ".venv-$variant"
# shellcheck disable=SC1090
source ".venv-$variant/bin/activate"
python -m pip install --quiet --upgrade pip
pip install --quiet "${defines[@]}" ".[test]"
# ggml's own account of the kernels it was built with: AVX512 must be absent for avx2.
python -c "import lmfast._core as c; print('ggml:', c.system_info())"
python -m pytest "$@"
