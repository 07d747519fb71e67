"""hybrid_hwr: a classical offline handwriting recognizer (features, HMMs, GMM/MLP, lexicon + n-gram)."""

from . import numba_cache as _numba_cache

__version__ = "0.2.0"

# before any kernel is defined: a writable place for Numba's compiled-kernel cache
_numba_cache.configure()
