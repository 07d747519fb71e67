"""The installed package outside the repository: the README's Python example, the
bundled resources and the kernel-cache fallback."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import hybrid_hwr
from hybrid_hwr import numba_cache, resources
from hybrid_hwr.errors import HwrError

ROOT = Path(__file__).resolve().parents[1]


def _readme_python_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"\n((?:    .*\n|\n)+)", section).group(1)
    return "\n".join(line[4:] for line in block.splitlines())


def test_readme_python_example_runs_from_another_directory(tmp_path):
    code = _readme_python_example()
    assert "load_default_recognizer" in code
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    # prints the displayed text, the score and the word boxes of a real line
    assert re.search(r"\[\('\w+', [\d.]+, [\d.]+, [\d.]+\)", result.stdout), result.stdout


def test_bundled_resources_are_the_repository_files():
    names = resources.names()
    for name in ("en-50k.txt", "fr-50k.txt", "en-3gram.arpa.gz", "fr-3gram.arpa.gz",
                 "en-char4gram.arpa.gz", "fr-char4gram.arpa.gz"):
        assert name in names
    assert resources.path("fr-50k.txt").read_bytes() == (ROOT / "lexicons" / "fr-50k.txt").read_bytes()
    with pytest.raises(HwrError, match="no bundled file 'xx-1k.txt'"):
        resources.path("xx-1k.txt")
    with pytest.raises(HwrError):
        resources.path("../__init__.py")


def _cache_choice(env: dict) -> str:
    code = "import os, hybrid_hwr; print(os.environ.get('NUMBA_CACHE_DIR', 'in-tree'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**env, "PYTHONPATH": str(ROOT)})
    return out.stdout.strip()


def test_kernel_cache_falls_back_when_the_package_is_read_only(tmp_path, monkeypatch):
    # the package folder as seen by configure(): not writable
    monkeypatch.setattr(numba_cache, "_package_cache_writable", lambda: False)
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    chosen = numba_cache.configure()
    assert chosen == str(tmp_path / "cache" / "hybrid_hwr" / "numba")
    assert os.environ["NUMBA_CACHE_DIR"] == chosen
    # an unwritable user cache too: a private temporary folder
    blocked = tmp_path / "blocked"
    blocked.write_text("a file, not a folder")
    monkeypatch.delenv("NUMBA_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(numba_cache.tempfile, "tempdir", None)    # gettempdir() reads TMPDIR again
    chosen = numba_cache.configure()
    assert chosen == str(tmp_path / "tmp" / f"hybrid_hwr-numba-{os.getuid()}") and os.access(chosen, os.W_OK)
    assert os.stat(chosen).st_mode & 0o777 == 0o700
    monkeypatch.delenv("NUMBA_CACHE_DIR")
    assert numba_cache.configure() == chosen          # the next command reuses it: no new folder, no recompilation
    # a folder of that name that others can write is not used
    os.chmod(chosen, 0o777)
    monkeypatch.delenv("NUMBA_CACHE_DIR")
    other = numba_cache.configure()
    assert other != chosen and "hybrid_hwr-numba-" in other and os.access(other, os.W_OK)
    # a value the user set is kept
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))
    assert numba_cache.configure() == str(tmp_path / "mine")


def test_user_cache_dir_is_kept_and_cold_cache_is_detected(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "nc")}
    assert _cache_choice(env) == str(tmp_path / "nc")
    env_probe = "import os, hybrid_hwr.numba_cache as c; print(c.is_cold('search'), c.cache_location())"
    out = subprocess.run([sys.executable, "-c", env_probe], capture_output=True, text=True, check=True,
                         env={**env, "PYTHONPATH": str(ROOT)}).stdout.split()
    assert out[0] == "True" and out[1].startswith(str(tmp_path / "nc"))


def test_version_and_license_agree_with_setup():
    setup = (ROOT / "setup.cfg").read_text()
    assert "license = MIT" in setup and "MIT License" in (ROOT / "LICENSE").read_text()
    assert re.match(r"\d+\.\d+\.\d+$", hybrid_hwr.__version__)
    assert f"## {hybrid_hwr.__version__}" in (ROOT / "CHANGELOG.md").read_text()


def test_missing_lmplz_names_the_build_command(tmp_path, monkeypatch):
    from hybrid_hwr.lm import find_kenlm_binary

    monkeypatch.delenv("HYBRID_HWR_KENLM_BIN", raising=False)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(HwrError) as info:
        find_kenlm_binary("lmplz")
    script = Path(hybrid_hwr.__file__).parent / "scripts" / "build_kenlm.sh"
    assert f"bash {script} {sys.prefix}" in str(info.value)
    assert script.is_file()


def test_data_command_lists_and_prints_paths(capsys):
    from hybrid_hwr.cli import main

    assert main(["data"]) == 0
    listing = capsys.readouterr().out
    assert "fr-3gram.arpa.gz" in listing and "default model" in listing and "kernel cache" in listing
    assert main(["data", "en-50k.txt"]) == 0
    assert capsys.readouterr().out.strip() == str(resources.path("en-50k.txt"))
    assert main(["data", "zz.txt"]) == 1
    assert "no bundled file 'zz.txt'" in capsys.readouterr().err
