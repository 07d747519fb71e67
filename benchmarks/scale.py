"""Scaling out: decoding lines/s and GMM training frames/s over local processes and Dask workers.

The same work runs side by side on four backends: ``--jobs 1`` (this process), ``--jobs 2``
(a forked pool), and a Dask LocalCluster of 1 and 2 worker processes (``--scheduler
local:1`` / ``local:2``), each through the code path of the command line
(:func:`hybrid_hwr.batch.map_line_images` for decoding, :func:`hybrid_hwr.train.expectation`
for one Baum-Welch E-step):

* decode: wall time of the lines after the decoder is loaded everywhere (the pool forks
  after loading; each Dask worker builds it first with ``client.run``), images read from
  the shared path by the workers;
* training: one E-step over the lines' features (computed once, before), with the GMMs of
  a uniform segmentation split to ``--mixtures`` Gaussians; the first run of each backend
  sends the lines to the workers and is not timed (``--repeats`` timed runs follow, best
  kept); the accumulators of every backend are checked to be identical;
* CPU: the processor time of this process and all its worker processes (pool, Dask
  workers, their nannies, the scheduler) over the same span, so that the cost of each
  backend shows even on a machine shared with other jobs, where wall time mostly
  measures the others; "per CPU s" is the work done per second of that time;
* overhead per shard: a Dask round trip of an empty task, and the bytes and pickling time
  of one E-step shard's input (its lines' features) and output (its accumulators).

    .venv/bin/python benchmarks/scale.py --decode ../shared/data/copiste/valid.tsv --decode-limit 100 \\
        --train ../shared/data/copiste/train.tsv --train-limit 400

Without ``--model`` decoding uses the bundled default model with its decoder.json.
"""

from __future__ import annotations

import argparse
import os
import pickle
import resource
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from hybrid_hwr import cluster  # noqa: E402
from hybrid_hwr.batch import line_features, map_line_images  # noqa: E402
from hybrid_hwr.data import Alphabet, read_split  # noqa: E402
from hybrid_hwr.decode import image_decoder, load_recognizer  # noqa: E402
from hybrid_hwr.features import FrontEnd, Normalizer  # noqa: E402
from hybrid_hwr.hmm import HmmTopology, Transitions  # noqa: E402
from hybrid_hwr.train import SHARD_LINES, _estep_chunk, _set_model, _slice, encode_lines, expectation, \
    uniform_segmentation  # noqa: E402

BACKENDS = (("jobs 1", 1, None), ("jobs 2", 2, None), ("dask local:1", 1, "local:1"), ("dask local:2", 1, "local:2"))


def session_for(address):
    return cluster.connect(address) if address else _NoSession()


class _NoSession:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def cpu_seconds() -> float:
    """User + system time of this process, its finished children and its live descendants."""
    import psutil

    own = resource.getrusage(resource.RUSAGE_SELF)
    done = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + done.ru_utime + done.ru_stime
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            continue
    return total


class Span:
    """Wall and CPU seconds of a block."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), cpu_seconds()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, cpu_seconds() - self.cpu
        return False


def _warm(decode, image_path):
    """Load the decoder and decode one line (kernels compiled or read from their cache)."""
    from hybrid_hwr.data import load_image

    decode(load_image(image_path))


def bench_decode(lines, model_dir, backends):
    recognizer, _ = load_recognizer(model_dir)
    decode = image_decoder(model_dir, 1, {}, built=recognizer.decode_image)
    rows, texts = [], {}
    first = str(lines[0].image_path.absolute())
    _warm(decode, first)      # before the pool forks
    for name, jobs, address in backends:
        with session_for(address) as session:
            if session is not None:
                session.client.run(_warm, decode, first)       # every worker loads the decoder first
            with Span() as span:
                hyps = [h.text for _, h in map_line_images(lines, decode, jobs, "decoding")]
        texts[name] = hyps
        rows.append((name, len(hyps), span.wall, span.cpu))
    same = all(t == texts[backends[0][0]] for t in texts.values())
    return rows, same


def training_lines(lines, jobs):
    frontend = FrontEnd()
    kept, raw = [], []
    for line, f, _ in line_features(lines, frontend, jobs):
        kept.append(line)
        raw.append(f)
    alphabet = Alphabet.from_texts(line.text for line in kept)
    topology = HmmTopology(alphabet.symbols, n_states=7)
    normalizer = Normalizer().fit(raw)
    encoded = encode_lines(kept, raw, alphabet, normalizer, topology, "train")
    return encoded, topology


def bench_train(encoded, topology, mixtures, repeats, backends):
    frames_all = np.concatenate(encoded.feats)
    var = frames_all.var(axis=0).astype(np.float64)
    gmms = uniform_segmentation(encoded, topology, topology.n_emitting, var, 0.05 * var)
    gmms = gmms.split(mixtures)
    transitions = Transitions(topology)
    rows, sums = [], {}
    for name, jobs, address in backends:
        with session_for(address):
            expectation(encoded, topology, transitions, gmms, jobs=jobs)   # warm-up: lines sent, kernels loaded
            best = (float("inf"), float("inf"))
            for _ in range(repeats):
                with Span() as span:
                    gacc, tacc, total, frames, failed = expectation(encoded, topology, transitions, gmms, jobs=jobs)
                best = min(best, (span.wall, span.cpu))
        sums[name] = (gacc.first_order, gacc.second_order, tacc.self_counts, total)
        rows.append((name, frames, *best))
    ref = sums[backends[0][0]]
    same = all(all(np.array_equal(a, b) for a, b in zip(ref, s)) for s in sums.values())
    return rows, same, gmms, transitions


def _noop(item):
    return item


def bench_overhead(encoded, topology, gmms, transitions, tasks=200, idle_seconds=10.0):
    """(round trip of an empty task in ms, CPU of an idle 1- and 2-worker cluster in cores,
    [(shard input MB, pickling ms), (output MB, pickling ms)])."""
    idle = []
    for address in ("local:1", "local:2"):
        with cluster.connect(address):
            list(cluster.map_ordered(_noop, list(range(8)), per_task=1))        # warm-up
            if address == "local:1":
                t0 = time.perf_counter()
                for _ in range(tasks // 20):
                    list(cluster.map_ordered(_noop, list(range(20)), per_task=1))
                round_trip = (time.perf_counter() - t0) / tasks * 1000
            with Span() as span:      # heartbeats, memory monitors, event loops
                time.sleep(idle_seconds)
            idle.append(span.cpu / span.wall)
    shard = _slice(encoded, 0, min(SHARD_LINES, len(encoded.ids)))
    _set_model(topology, transitions, gmms, "baum-welch", 300.0, True)
    result = _estep_chunk(shard)
    timings = []
    for obj in (shard, result):
        t0 = time.perf_counter()
        data = pickle.dumps(obj, protocol=5)
        pickle.loads(data)
        timings.append((len(data) / 1e6, (time.perf_counter() - t0) * 1000))
    return round_trip, idle, timings


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decode", metavar="DATA.tsv", help="lines to decode")
    parser.add_argument("--decode-limit", type=int, default=100)
    parser.add_argument("--model", help="model directory for decoding (default: the bundled model)")
    parser.add_argument("--train", metavar="DATA.tsv", help="lines of the training E-step")
    parser.add_argument("--train-limit", type=int, default=400)
    parser.add_argument("--mixtures", type=int, default=4, help="Gaussians per state of the E-step's GMMs")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at start; each backend in turn, "
          "same run")
    if args.decode:
        lines = read_split(args.decode, limit=args.decode_limit)
        rows, same = bench_decode(lines, args.model, BACKENDS)
        print(f"\ndecode {len(lines)} lines of {args.decode} ({'same text on every backend' if same else 'TEXTS DIFFER'})")
        print(f"{'backend':<14} {'lines':>6} {'seconds':>8} {'lines/s':>8} {'vs jobs 1':>9} {'CPU s':>7} "
              f"{'per CPU s':>9}")
        for name, n, seconds, cpu in rows:
            print(f"{name:<14} {n:6d} {seconds:8.1f} {n / seconds:8.2f} {rows[0][2] / seconds:8.2f}x {cpu:7.1f} "
                  f"{n / cpu:9.2f}")
    if args.train:
        lines = read_split(args.train, limit=args.train_limit)
        encoded, topology = training_lines(lines, 2)
        rows, same, gmms, transitions = bench_train(encoded, topology, args.mixtures, args.repeats, BACKENDS)
        print(f"\nGMM E-step, {len(encoded.ids)} lines of {args.train}, {encoded.n_frames} frames, "
              f"{topology.n_emitting} states x {gmms.n_components} Gaussians, {-(-len(encoded.ids) // SHARD_LINES)} "
              f"shards ({'identical sums on every backend' if same else 'SUMS DIFFER'})")
        print(f"{'backend':<14} {'frames':>8} {'seconds':>8} {'frames/s':>9} {'vs jobs 1':>9} {'CPU s':>7} "
              f"{'per CPU s':>9}")
        for name, frames, seconds, cpu in rows:
            print(f"{name:<14} {frames:8d} {seconds:8.2f} {frames / seconds:9.0f} {rows[0][2] / seconds:8.2f}x "
                  f"{cpu:7.1f} {frames / cpu:9.0f}")
        round_trip, idle, ((in_mb, in_ms), (out_mb, out_ms)) = bench_overhead(encoded, topology, gmms, transitions)
        print(f"\noverhead per shard on Dask: empty task round trip {round_trip:.1f} ms; E-step shard of "
              f"{SHARD_LINES} lines: input {in_mb:.1f} MB ({in_ms:.1f} ms to pickle and unpickle, sent once per "
              f"training), result {out_mb:.1f} MB ({out_ms:.1f} ms, every iteration); an idle cluster of 1 / 2 "
              f"workers takes {idle[0]:.2f} / {idle[1]:.2f} of a core")


if __name__ == "__main__":
    main()
