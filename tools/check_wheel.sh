#!/usr/bin/env bash
# Checks that the wheel is complete and works outside the repository:
#   1. builds the wheel and checks that the bundled lexicons, LMs and default model are
#      real files in it (the checkout holds them as symbolic links);
#   2. installs it into a new virtual environment in a temporary folder;
#   3. runs `hybrid-hwr demo --limit 5` there, from another directory;
#   4. as root: again as user `nobody`, with a read-only home and read-only site-packages
#      (compiled kernels must then go to a temporary cache, without a traceback).
#
#   tools/check_wheel.sh            (PYTHON=python3.11 to choose the interpreter)
#
# The default interpreter is the system's /usr/bin/python3 when there is one: an
# interpreter under a private home (pyenv in /root) cannot be run by `nobody`.
set -euo pipefail
cd "$(dirname "$0")/.."
default_python=python3; [[ -x /usr/bin/python3 ]] && default_python=/usr/bin/python3
python=${PYTHON:-$default_python}
work=$(mktemp -d "${TMPDIR:-/tmp}/hybrid_hwr-wheel.XXXXXX")
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
start=$SECONDS

rm -rf build   # setuptools would reuse files of an earlier build that the tree no longer has
"$python" -m pip wheel --quiet --no-deps -w "$work/dist" . >/dev/null
wheel=$(ls "$work"/dist/hybrid_hwr-*.whl)
echo "wheel: $(basename "$wheel") ($(du -m "$wheel" | cut -f1) MB)"
"$python" - "$wheel" <<'PY'
import sys, zipfile
sizes = {i.filename: i.file_size for i in zipfile.ZipFile(sys.argv[1]).infolist()}
wanted = ["hybrid_hwr/resources/en-50k.txt", "hybrid_hwr/resources/fr-50k.txt",
          "hybrid_hwr/resources/en-3gram.arpa.gz", "hybrid_hwr/resources/fr-3gram.arpa.gz",
          "hybrid_hwr/resources/en-char4gram.arpa.gz", "hybrid_hwr/resources/fr-char4gram.arpa.gz",
          "hybrid_hwr/models/default/decoder.json", "hybrid_hwr/models/default/model.json",
          "hybrid_hwr/models/default/fr-copiste-3gram.arpa.gz",
          "hybrid_hwr/models/default/fr-copiste-113k.txt", "hybrid_hwr/models/default/fr-char4gram.arpa.gz",
          "hybrid_hwr/scripts/build_kenlm.sh",
          "hybrid_hwr/scripts/system_packages.sh", "hybrid_hwr/sample/test.tsv"]
bad = [f"{name} ({'missing' if name not in sizes else 'only a link'})" for name in wanted
       if sizes.get(name, 0) < 100]
if bad:
    sys.exit("check_wheel: the wheel lacks " + ", ".join(bad))
PY

"$python" -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet "$wheel"
cd "$work"
"$work/venv/bin/hybrid-hwr" demo --limit 5 --jobs 1 > "$work/demo.log" 2>&1 \
    || { cat "$work/demo.log" >&2; echo "check_wheel: demo failed in a fresh venv" >&2; exit 1; }
tail -3 "$work/demo.log"

if [[ $(id -u) == 0 ]] && id nobody >/dev/null 2>&1; then
    mkdir -p "$work/home" "$work/tmp" && chmod 555 "$work/home" && chmod 1777 "$work/tmp"   # a cold cache each time
    chmod -R a+rX,go-w "$work/venv"
    su nobody -s /bin/bash -c "cd /tmp && env -u NUMBA_CACHE_DIR -u XDG_CACHE_HOME HOME='$work/home' TMPDIR='$work/tmp' \
        '$work/venv/bin/hybrid-hwr' demo --limit 5 --jobs 1" > "$work/nobody.log" 2>&1 \
        || { cat "$work/nobody.log" >&2; echo "check_wheel: demo failed as nobody (read-only home)" >&2; exit 1; }
    if grep -q Traceback "$work/nobody.log"; then
        cat "$work/nobody.log" >&2; echo "check_wheel: traceback as nobody" >&2; exit 1
    fi
    grep -q "compiling kernels" "$work/nobody.log" \
        || { cat "$work/nobody.log" >&2; echo "check_wheel: a cold kernel cache was not announced" >&2; exit 1; }
    echo "as nobody, read-only home and package: $(grep "compiling kernels" "$work/nobody.log")"
    echo "  $(tail -1 "$work/nobody.log")"
else
    echo "check_wheel: not root, the read-only-home run as nobody is skipped"
fi
echo "check_wheel: passed in $((SECONDS - start)) s"
