"""Speed of CTC decoding (``hybrid-hwr decode --emissions FILE.npz --ctc ALPHABET.txt``) per mode.

A CTC network's stored outputs are decoded in the character loop (no decoder folder) and
in the mode of every decoder folder given (its ``decoder.json``: lexicon + word LM,
character LM, ...).  Each mode builds its recogniser, decodes one warm-up line (JIT
compilation and LM loading are not timed), then the lines, starting from its LM caches
as the warm-up left them.  The table gives, per mode: lines/s per core (CPU time of
``CtcRecognizer.decode_loglik``: the search, the lattice, n-best rescoring and word
confidences), the search alone (``TokenSearch.run``: the Numba kernel and the LM entries
it asks for) and its share, the rest in ms per line (what the decoder does after the
search: lattice, n-best, confidences), and a digest of the decoded texts (two versions of
the decoder that agree give the same).

    python benchmarks/ctc_decode.py --emissions exp/crnn/test.npz --ctc exp/crnn/model/alphabet.txt \\
        --models exp/crnn/charlm exp/crnn/lexicon_lm --limit 100

``--nbest N`` times n-best lists of N entries.  The script uses only the public API, so
an older checkout times the same work (``PYTHONPATH=OLD_CHECKOUT python benchmarks/ctc_decode.py ...``).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time

import numpy as np

from hybrid_hwr.ctc import CtcModel
from hybrid_hwr.decode import DecoderSettings


def time_mode(model, settings, arrays, nbest):
    """(lines/s per core, search lines/s per core, search share, rest ms per line, texts) of one mode."""
    rec = settings.recognizer(model, nbest=nbest)
    rec.decode_loglik(arrays[0])          # warm-up: compilation, first LM entries
    search_run, spent = rec.search.run, [0.0]

    def timed_run(*args, **kwargs):
        t0 = time.process_time()
        try:
            return search_run(*args, **kwargs)
        finally:
            spent[0] += time.process_time() - t0

    rec.search.run = timed_run
    texts = []
    t0 = time.process_time()
    for x in arrays:
        texts.append(rec.decode_loglik(x).text)
    total = time.process_time() - t0
    n = len(arrays)
    return n / total, n / spent[0], spent[0] / total, 1000.0 * (total - spent[0]) / n, texts


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--emissions", required=True, help="a .npz of (frames, columns) CTC outputs, one per line")
    ap.add_argument("--ctc", required=True, metavar="ALPHABET.txt", help="the alphabet file (blank on line 1)")
    ap.add_argument("--log-softmax", action="store_true", help="the outputs are logits")
    ap.add_argument("--models", nargs="*", default=[], metavar="DIR",
                    help="decoder folders (decoder.json) to time after the character loop")
    ap.add_argument("--limit", type=int, default=100, help="first N lines of the file (default 100)")
    ap.add_argument("--nbest", type=int, default=1, help="n-best list length (default 1)")
    args = ap.parse_args(argv)

    with np.load(args.emissions) as npz:
        arrays = [npz[name].astype(np.float64) for name in npz.files[:args.limit]]
    model = CtcModel.from_file(args.ctc, log_softmax=args.log_softmax)
    frames = sum(len(x) for x in arrays)
    print(f"{len(arrays)} lines, {frames} frames; nbest {args.nbest}; load average {os.getloadavg()[0]:.1f}")
    print(f"{'mode':<34} {'lines/s':>8} {'search l/s':>10} {'search %':>9} {'rest ms/line':>12}  texts")
    modes = [("character loop", DecoderSettings())]
    modes += [(DecoderSettings.load(d).mode + f" ({os.path.basename(os.path.normpath(d))})", DecoderSettings.load(d))
              for d in args.models]
    for name, settings in modes:
        rate, search_rate, share, rest, texts = time_mode(model, settings, arrays, args.nbest)
        digest = hashlib.sha1("\n".join(texts).encode("utf-8")).hexdigest()[:10]
        print(f"{name:<34} {rate:8.2f} {search_rate:10.2f} {100 * share:8.1f}% {rest:12.1f}  {digest}", flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
