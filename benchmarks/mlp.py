"""Speed of MLP emission training and scoring, to plan the full IAM-OnDB training budget.

Random unit-scale features (``--frames`` frames of ``--dims`` dimensions in lines of
``--line-frames``) with random targets over ``--states`` states; for every network in
``--nets`` (hidden layer sizes, e.g. ``1024`` shallow, ``512,512,512`` deep at about the
same number of parameters):

* training: one epoch of MlpEmission.fit (mini-batch ``--batch-size``, Adam, context
  +-``--context`` frames gathered per batch), in frames/s of wall-clock and of CPU time,
  extrapolated to one epoch of ``--epoch-frames`` frames (1.5 M = IAM-OnDB train) and to
  the number of such epochs that fit in ``--budget-minutes``;
* scoring: MlpEmission.log_likelihoods line by line (what alignment and decoding call).

Every configuration runs with each BLAS thread count of ``--threads`` (MlpEmission's
``threads``; scoring uses the same count). On a shared machine the wall-clock figures
depend on the load (two threads suffer most when another job holds a core); the
CPU-time figures much less.

    .venv/bin/python benchmarks/mlp.py --frames 100000 --context 4 --nets 1024 512,512,512 448,448,448,448
"""

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from hybrid_hwr.mlp import MlpEmission


def synthetic_lines(rng, n_frames, line_frames, dims, states):
    feats, targets = [], []
    left = n_frames
    while left > 0:
        T = min(line_frames, left)
        feats.append(rng.normal(size=(T, dims)).astype(np.float32))
        targets.append(rng.integers(0, states, size=T))
        left -= T
    return feats, targets


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=100_000, help="training frames timed")
    parser.add_argument("--line-frames", type=int, default=600)
    parser.add_argument("--dims", type=int, default=56)
    parser.add_argument("--context", type=int, default=4)
    parser.add_argument("--states", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--activation", default="relu")
    parser.add_argument("--solver", default="adam")
    parser.add_argument("--nets", nargs="+", default=["1024", "512,512,512", "448,448,448,448"])
    parser.add_argument("--score-frames", type=int, default=20_000, help="frames scored by log_likelihoods")
    parser.add_argument("--epoch-frames", type=float, default=1.5e6)
    parser.add_argument("--budget-minutes", type=float, default=60.0)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="BLAS thread counts to time")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    train_f, train_y = synthetic_lines(rng, args.frames, args.line_frames, args.dims, args.states)
    valid_f, valid_y = synthetic_lines(rng, 2 * args.line_frames, args.line_frames, args.dims, args.states)
    score_f, _ = synthetic_lines(rng, args.score_frames, args.line_frames, args.dims, args.states)

    n_in = (2 * args.context + 1) * args.dims
    print(f"{args.frames} training frames, {args.dims} dims x {2 * args.context + 1} context frames = {n_in} "
          f"inputs, {args.states} states, batch {args.batch_size}, {args.solver}, {args.activation}")
    # Warm-up: compile the optimiser kernels (cached on disk afterwards).
    MlpEmission(hidden_layers=(8,), context=1, max_epochs=1).fit(
        train_f[:1], train_y[:1], valid_f[:1], valid_y[:1], n_states=args.states)
    header = (f"{'hidden layers':<18} {'params':>9} {'thr':>3} {'train f/s':>10} {'(CPU) f/s':>10} "
              f"{'epoch min':>10} {'(CPU) min':>10} {'epochs/budget':>14} {'score f/s':>10}")
    print(header)
    print("-" * len(header))
    for net in args.nets:
        hidden = [int(n) for n in net.split(",")]
        for threads in args.threads:
            model = MlpEmission(hidden_layers=hidden, context=args.context, activation=args.activation,
                                solver=args.solver, batch_size=args.batch_size, max_epochs=1, threads=threads,
                                seed=args.seed)
            cpu = time.process_time()
            model.fit(train_f, train_y, valid_f, valid_y, n_states=args.states)
            cpu = time.process_time() - cpu
            train_fps = model.history_[-1]["train_frames_per_second"]
            # CPU time of the whole fit (with validation and setup) per thread: a slight underestimate.
            cpu_fps = args.frames / (cpu / threads)
            with threadpool_limits(limits=threads, user_api="blas"):
                wall = time.perf_counter()
                for X in score_f:
                    model.log_likelihoods(X)
                score_fps = args.score_frames / (time.perf_counter() - wall)
            epoch_min = args.epoch_frames / train_fps / 60
            cpu_min = args.epoch_frames / cpu_fps / 60
            print(f"{net:<18} {model.n_parameters:>9,} {threads:>3} {train_fps:>10,.0f} {cpu_fps:>10,.0f} "
                  f"{epoch_min:>10.1f} {cpu_min:>10.1f} {args.budget_minutes / epoch_min:>14.1f} {score_fps:>10,.0f}",
                  flush=True)
    print(f"epoch min: minutes per {args.epoch_frames:,.0f}-frame epoch from wall-clock train frames/s; "
          f"(CPU): if every BLAS thread had a core to itself (CPU time / threads); "
          f"epochs/budget: epochs in {args.budget_minutes:g} min at the wall-clock speed")


if __name__ == "__main__":
    main()
