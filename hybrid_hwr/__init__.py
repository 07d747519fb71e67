"""hybrid_hwr: a classical offline handwriting recognizer (features, HMMs, GMM/MLP, lexicon + n-gram)."""

__version__ = "0.1.0"
