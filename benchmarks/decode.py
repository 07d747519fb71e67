"""Decoding speed, accuracy and memory as the beam varies.

Features and emission scores of every line are computed once; then each beam decodes
all lines (one warm-up line first, so JIT compilation is not timed).  The table gives,
per beam: search lines/s per core (CPU time of ``Recognizer.decode_loglik``, starting
from empty LM caches), lines/s per core including the emission scores, WER and CER
(corpus level), the LM queries made, and the peak resident memory of the process so far.

    .venv/bin/python benchmarks/decode.py --model exp/iam_small --lexicon lexicons/en-50k.txt \\
        --lm lm/en-3gram.arpa.gz ../shared/data/iamondb/valid.tsv --limit 100 \\
        --beams 50 100 150 200 300 --plot decode_beam.png

Without ``--model`` a random GMM model over the alphabet of the data is used (speed
only: its WER is meaningless).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

from hybrid_hwr.data import Alphabet, load_image, read_split
from hybrid_hwr.decode import DEFAULT_MAX_ACTIVE, Recognizer
from hybrid_hwr.features import FrontEnd, Normalizer
from hybrid_hwr.gmm import GmmSet
from hybrid_hwr.hmm import HmmTopology, Transitions
from hybrid_hwr.metrics import cer, wer
from hybrid_hwr.model import HwrModel, load_model


def random_model(texts, states=7, mixtures=4, seed=0) -> HwrModel:
    """A GMM-HMM with random Gaussians: right sizes, meaningless output."""
    alphabet = Alphabet.from_texts(texts)
    topology = HmmTopology(alphabet.symbols, states)
    frontend = FrontEnd()
    rng = np.random.default_rng(seed)
    S, D = topology.n_emitting, frontend.dim
    gmms = GmmSet(rng.normal(size=(S, mixtures, D)), rng.uniform(0.5, 2.0, size=(S, mixtures, D)),
                  np.log(np.full((S, mixtures), 1.0 / mixtures)))
    return HwrModel(alphabet, frontend, Normalizer(), topology, Transitions(topology), gmms)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="dataset split file <dir>/<split>.tsv")
    p.add_argument("--model", help="model directory (default: a random GMM model)")
    p.add_argument("--lexicon")
    p.add_argument("--lm")
    p.add_argument("--char-lm")
    p.add_argument("--unk-penalty", type=float)
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--beams", type=float, nargs="+", default=[50, 100, 150, 200, 300])
    p.add_argument("--max-active", type=int, default=DEFAULT_MAX_ACTIVE)
    p.add_argument("--lm-weight", type=float, default=1.0)
    p.add_argument("--word-penalty", type=float, default=0.0)
    p.add_argument("--char-penalty", type=float, default=0.0)
    p.add_argument("--nbest", type=int, default=1)
    p.add_argument("--plot", help="write WER and speed against the beam to this PNG")
    args = p.parse_args(argv)

    lines = read_split(args.data, limit=args.limit)
    model = load_model(args.model) if args.model else random_model([ln.text for ln in lines])
    t0 = time.process_time()
    feats = [model.frontend.line_features(load_image(ln.image_path))[0] for ln in lines]
    if not args.model:
        model.normalizer.fit(feats)
    t1 = time.process_time()
    logliks = [model.log_likelihoods(model.normalizer.transform(f).astype(np.float32)) for f in feats]
    t_emit = (time.process_time() - t1) / len(lines)
    print(f"{len(lines)} lines, {sum(len(x) for x in logliks) / len(lines):.0f} frames/line, "
          f"{model.topology.n_emitting} states; features {(t1 - t0) / len(lines) * 1e3:.0f} ms/line, "
          f"emissions {t_emit * 1e3:.0f} ms/line (CPU)")

    def build(beam):
        return Recognizer(model, lexicon=args.lexicon, lm=args.lm, char_lm=args.char_lm,
                          unk_penalty=args.unk_penalty, lm_weight=args.lm_weight,
                          word_penalty=args.word_penalty, beam=beam, max_active=args.max_active,
                          nbest=args.nbest, char_penalty=args.char_penalty)

    t0 = time.process_time()
    recognizer = build(args.beams[0])
    print(f"mode {recognizer.mode}: recogniser built in {time.process_time() - t0:.1f} s CPU, "
          f"{recognizer.tree.n_nodes} tree nodes, {len(recognizer.search.net.net_emit)} network states")
    if recognizer.lexicon_message:
        print(recognizer.lexicon_message)
    recognizer.decode_loglik(logliks[0][:20])   # compile

    refs = [ln.text for ln in lines]
    rows = []
    header = (f"{'beam':>7} {'max_act':>7} {'search l/s':>10} {'total l/s':>9} {'WER %':>6} {'CER %':>6} "
              f"{'LM req':>7} {'peak MB':>8}")
    print(header)
    for beam in args.beams:
        recognizer = build(beam)    # fresh LM caches: each row pays for its own LM queries
        requests0 = recognizer.search.n_lm_requests
        t0 = time.process_time()
        hyps = [recognizer.decode_loglik(x).text for x in logliks]
        t_search = (time.process_time() - t0) / len(lines)
        row = (beam, 1.0 / t_search, 1.0 / (t_search + t_emit), 100 * wer(refs, hyps), 100 * cer(refs, hyps),
               recognizer.search.n_lm_requests - requests0, peak_rss_mb())
        rows.append(row)
        print(f"{beam:7.0f} {args.max_active:7d} {row[1]:10.1f} {row[2]:9.1f} {row[3]:6.2f} {row[4]:6.2f} "
              f"{row[5]:7d} {row[6]:8.0f}")
        sys.stdout.flush()
    print(f"peak memory {peak_rss_mb():.0f} MB (resource.getrusage ru_maxrss); search arrays and LM tables "
          f"{recognizer.search.nbytes / 2**20:.0f} MB")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows_a = np.array(rows)
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(rows_a[:, 0], rows_a[:, 3], "o-", color="C0")
        ax.set_xlabel("beam (natural log)")
        ax.set_ylabel("WER %", color="C0")
        ax2 = ax.twinx()
        ax2.plot(rows_a[:, 0], rows_a[:, 1], "s--", color="C1")
        ax2.set_ylabel("search lines/s per core", color="C1")
        ax.set_title(f"{Path(args.data).name}: {recognizer.mode}, {len(lines)} lines")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"plot written to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
