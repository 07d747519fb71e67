"""The lexicons and language models that ship inside the package.

The files of this folder are those of the repository's ``lexicons/`` and ``lm/`` (in a
checkout, symbolic links to them; in a wheel, copies), so a pip-installed package
decodes with the same resources as a checkout.  ``hybrid-hwr data`` lists them and
``hybrid-hwr data NAME`` prints one path, for use on a command line::

    hybrid-hwr decode --lexicon "$(hybrid-hwr data en-50k.txt)" --lm "$(hybrid-hwr data en-3gram.arpa.gz)" ...
"""

from __future__ import annotations

from pathlib import Path

from ..errors import HwrError

RESOURCE_DIR = Path(__file__).resolve().parent
_SUFFIXES = (".txt", ".arpa.gz", ".arpa", ".binary")


def names() -> list[str]:
    """File names of the bundled lexicons and LMs, sorted."""
    return sorted(p.name for p in RESOURCE_DIR.iterdir()
                  if p.name.endswith(_SUFFIXES) and p.is_file())


def path(name: str) -> Path:
    """Path of the bundled file ``name`` (e.g. ``fr-50k.txt``)."""
    candidate = RESOURCE_DIR / name
    if name not in names():
        raise HwrError(f"no bundled file {name!r}; bundled: {', '.join(names()) or 'none'}")
    return candidate
