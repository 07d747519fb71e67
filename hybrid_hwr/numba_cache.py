"""Where Numba keeps the compiled kernels, and telling the user when they are compiled.

Every kernel is compiled with ``cache=True``.  Numba stores the machine code next to
the source (``hybrid_hwr/__pycache__``) or, when that folder is read-only (a system-wide
or pip install), in ``~/.cache/numba``; with neither writable it raises "no locator
available" at the first kernel.  :func:`configure` runs when the package is imported,
before any kernel is defined, and picks a writable place:

1. ``NUMBA_CACHE_DIR`` when the user set it;
2. the package folder itself when it is writable (Numba's own default);
3. ``$XDG_CACHE_HOME/hybrid_hwr/numba`` (``~/.cache/hybrid_hwr/numba``);
4. a private folder of the user in the temporary directory, ``hybrid_hwr-numba-<uid>``
   (mode 0700, reused by later commands, so that a read-only home does not cost a
   compilation and a folder per command); a fresh ``mkdtemp`` folder if that one is not
   safely ours.

A cold cache costs about a minute of compilation on the first command; :func:`announce`
says so once, on stderr, instead of leaving the user in front of a still progress bar.
"""

from __future__ import annotations

import glob
import os
import sys
import tempfile
from pathlib import Path

ENV = "NUMBA_CACHE_DIR"
COMPILE_SECONDS = 30   # cold-cache compilation of the decoding kernels, one core (measured 23 s, rounded up)
_PACKAGE_DIR = Path(__file__).resolve().parent
_announced = False


def _writable_dir(path: Path) -> bool:
    """Whether files can be created in ``path`` (made if missing)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-"):
            return True
    except OSError:
        return False


def _package_cache_writable() -> bool:
    cache = _PACKAGE_DIR / "__pycache__"
    return _writable_dir(cache) if cache.exists() or os.access(_PACKAGE_DIR, os.W_OK) else False


def user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hybrid_hwr" / "numba"


def _private_temporary_dir() -> Path:
    """``$TMPDIR/hybrid_hwr-numba-<uid>``, if it is a real folder of ours that only we can
    write (others could plant code in a shared one); else a new private folder."""
    import stat

    shared = Path(tempfile.gettempdir()) / f"hybrid_hwr-numba-{os.getuid()}"
    try:
        shared.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(shared)
        if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o077 \
                and _writable_dir(shared):
            return shared
    except OSError:
        pass
    return Path(tempfile.mkdtemp(prefix="hybrid_hwr-numba-"))


def configure() -> str | None:
    """Set ``NUMBA_CACHE_DIR`` to a writable folder unless the user or the package
    folder provides one; returns the folder chosen (None: Numba's in-tree default)."""
    if os.environ.get(ENV):
        return os.environ[ENV]
    if _package_cache_writable():
        return None
    chosen = user_cache_dir()
    if not _writable_dir(chosen):
        chosen = _private_temporary_dir()
    os.environ[ENV] = str(chosen)
    if "numba" in sys.modules:     # imported before us: its config has read the environment already
        from numba.core import config
        config.CACHE_DIR = str(chosen)
    return str(chosen)


# modules whose kernels live in a sub-package: the file that holds them
_KERNEL_FILES = {"search": "search/kernel.py", "preprocess": "preprocess/pipeline.py"}


def _kernel_source(module: str) -> Path:
    return _PACKAGE_DIR / _KERNEL_FILES.get(module, f"{module}.py")


def cache_location(module: str | None = None) -> Path:
    """The folder that holds (or will hold) the compiled kernels of ``hybrid_hwr.<module>``
    (default: of the package's top-level modules; a sub-package's sit in a folder of their own)."""
    source = _kernel_source(module) if module else _PACKAGE_DIR / "__init__.py"
    chosen = os.environ.get(ENV)
    if not chosen:
        return source.parent / "__pycache__"
    from numba.core.caching import _CacheLocator   # the sub-folder Numba derives from the source path
    return Path(chosen) / _CacheLocator.get_suitable_cache_subpath(str(source))


def is_cold(module: str = "search") -> bool:
    """Whether the kernels of ``hybrid_hwr.<module>`` have never been compiled into the cache."""
    return not glob.glob(str(cache_location(module) / f"{_kernel_source(module).stem}.*.nbi"))


def announce(module: str = "search") -> None:
    """One stderr line before the kernels of ``module`` fill a cold cache (once per process)."""
    global _announced
    if _announced or not is_cold(module):
        return
    _announced = True
    print(f"hybrid-hwr: compiling kernels (once, about {COMPILE_SECONDS} s; cached in {cache_location()})",
          file=sys.stderr, flush=True)
