#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages that a target needs and that are missing.
#
#   system_packages.sh demo     Python venv, a C++ compiler, Python and compression headers
#                               (the kenlm Python module is compiled at install time)
#   system_packages.sh kenlm    the above, plus cmake and Boost (KenLM's lmplz/build_binary)
#
# Missing pieces are found by what they provide (a header, a command, a Python module),
# not by package name, so other ways of providing them (a conda compiler, pyenv's Python)
# count too. As root, or with passwordless sudo, the packages are installed with apt-get;
# otherwise the script stops with the one command to run. Exit status 0 when nothing is
# missing afterwards.
set -euo pipefail

target=${1:-demo}
python=${PYTHON:-python3}
missing=()

need_header() {   # need_header HEADER PACKAGE: HEADER under /usr/include or the Python include dir
    [[ -e "/usr/include/$1" || -e "/usr/include/x86_64-linux-gnu/$1" || -e "/usr/include/aarch64-linux-gnu/$1" ]] \
        || missing+=("$2")
}

"$python" -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
py_include=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])' 2>/dev/null || true)
[[ -n "$py_include" && -e "$py_include/Python.h" ]] || missing+=(python3-dev)
command -v c++ >/dev/null || missing+=(g++)
command -v make >/dev/null || missing+=(make)
need_header zlib.h zlib1g-dev
need_header bzlib.h libbz2-dev
need_header lzma.h liblzma-dev
case "$target" in
    demo) ;;
    kenlm)
        command -v cmake >/dev/null || missing+=(cmake)
        need_header boost/program_options.hpp libboost-program-options-dev
        need_header boost/system/error_code.hpp libboost-system-dev
        need_header boost/thread.hpp libboost-thread-dev
        need_header boost/test/unit_test.hpp libboost-test-dev ;;
    *) echo "system_packages.sh: unknown target '$target' (demo or kenlm)" >&2; exit 2 ;;
esac
((${#missing[@]})) || exit 0

command="apt-get install -y --no-install-recommends ${missing[*]}"
if ! command -v apt-get >/dev/null; then
    echo "system packages missing (Debian names): ${missing[*]}; install their equivalents and retry" >&2
    exit 1
fi
if [[ $(id -u) == 0 ]]; then sudo=(); elif sudo -n true 2>/dev/null; then sudo=(sudo -n); else
    echo "system packages missing; install them with: sudo $command" >&2
    exit 1
fi
echo "installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" $command -qq >/dev/null
