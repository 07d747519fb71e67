"""hybrid_hwr: a classical offline handwriting recognizer (features, HMMs, GMM/MLP, lexicon + n-gram).

The model is the API::

    import hybrid_hwr
    model = hybrid_hwr.train(hybrid_hwr.data.sample_dir() / "train.tsv", states=3, iterations=2)
    recognizer = model.recognizer(hybrid_hwr.DecoderSettings(lexicon="words.txt"))
    print(recognizer.decode_image(hybrid_hwr.data.load_image("line.png")).text)

``train`` (also ``HwrModel.fit``), ``load_model``, ``HwrModel``, ``DecoderSettings``,
``Recognizer`` and ``load_default_recognizer`` are imported when first used, so that
``import hybrid_hwr`` stays cheap.
"""

import importlib

from . import numba_cache as _numba_cache

__version__ = "0.2.0"

# before any kernel is defined: a writable place for Numba's compiled-kernel cache
_numba_cache.configure()

# top-level name -> the module that defines it
_LAZY = {
    "HwrModel": "model", "load_model": "model",
    "DecoderSettings": "decode", "Recognizer": "decode", "load_default_recognizer": "decode",
    "load_recognizer": "decode",
}
__all__ = ["__version__", "train", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    # submodules (hybrid_hwr.train is also a function: it trains a model, see train.fit)
    try:
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
