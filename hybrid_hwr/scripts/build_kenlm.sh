#!/usr/bin/env bash
# Build KenLM's `lmplz` and `build_binary` from the `kenlm` source package on PyPI
# and install them into VENV/bin (default .venv). Skipped when both are already there.
#
#   hybrid_hwr/scripts/build_kenlm.sh [VENV]
#
# Needs cmake, a C++ compiler and Debian's
#   libboost-program-options-dev libboost-system-dev libboost-thread-dev
#   libboost-test-dev zlib1g-dev libbz2-dev liblzma-dev
# (KenLM's CMakeLists asks for boost's unit_test_framework even without tests);
# system_packages.sh beside this script installs the missing ones when it can.
# The script ships inside the package, so a pip install can run it too
# (`hybrid-hwr build-lm` prints the command when lmplz is missing).
#
# Environment:
#   KENLM_VERSION    source version to build (default: the installed kenlm module's, else 0.3.0)
#   KENLM_SDIST      path to a kenlm-*.tar.gz to build instead of downloading one
#   KENLM_MAX_ORDER  highest n-gram order (default 6, the same as the kenlm Python
#                    module's, so every LM that lmplz writes can be queried from Python)
#   KENLM_FORCE=1    rebuild even when the binaries exist
set -euo pipefail

venv=${1:-.venv}
bin="$venv/bin"
max_order=${KENLM_MAX_ORDER:-6}

if [[ "${KENLM_FORCE:-0}" != 1 && -x "$bin/lmplz" && -x "$bin/build_binary" ]]; then
    echo "KenLM: $bin/lmplz and $bin/build_binary already built"
    exit 0
fi
if [[ ! -x "$bin/python" ]]; then
    echo "build_kenlm.sh: no Python in $bin (create the venv first)" >&2
    exit 1
fi

# cmake, a compiler, Boost and the compression headers: installed when possible, else one command to run
PYTHON="$bin/python" bash "$(dirname "${BASH_SOURCE[0]}")/system_packages.sh" kenlm

work=$(mktemp -d "${TMPDIR:-/tmp}/kenlm-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
start=$SECONDS

sdist=${KENLM_SDIST:-}
if [[ -z "$sdist" ]]; then
    version=${KENLM_VERSION:-$("$bin/python" -c \
        'import importlib.metadata as m; print(m.version("kenlm"))' 2>/dev/null || echo 0.3.0)}
    echo "KenLM: downloading the kenlm $version source package"
    # --no-binary kenlm: the sdist (C++ sources + CMakeLists), not the wheel.
    "$bin/python" -m pip download --quiet --no-deps --no-binary kenlm \
        "kenlm==$version" -d "$work" >/dev/null
    sdist=$(ls "$work"/kenlm-*.tar.gz)
fi
tar -xzf "$sdist" -C "$work"
src=$(ls -d "$work"/kenlm-*/)

echo "KenLM: building lmplz and build_binary (max order $max_order)"
jobs=$(nproc 2>/dev/null || echo 2)
nice cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DKENLM_MAX_ORDER="$max_order" \
    -DCOMPILE_TESTS=OFF -DENABLE_PYTHON=OFF -DENABLE_INTERPOLATE=OFF >"$work/cmake.log" 2>&1 \
    || { tail -30 "$work/cmake.log" >&2; exit 1; }
nice cmake --build "$work/build" --target lmplz build_binary -j "$jobs" >"$work/make.log" 2>&1 \
    || { tail -30 "$work/make.log" >&2; exit 1; }

install -m 755 "$work/build/bin/lmplz" "$work/build/bin/build_binary" "$bin/"
echo "KenLM: installed $bin/lmplz and $bin/build_binary in $((SECONDS - start)) s"
