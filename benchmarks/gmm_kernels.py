"""Speed of the GMM emission kernel (GmmSet.log_likelihoods) against plain NumPy.

One random diagonal GMM set of real size (``--states`` states, ``--mixtures`` components,
``--dims`` dimensions; unit-scale features as after normalisation) scores one line of
``--frames`` frames with:

* hybrid_hwr.gmm.GmmSet.log_likelihoods (numba, single thread);
* NumPy "gemm": the scikit-learn formulation, (x - mu)^2 / v expanded into matrix products
  (``hybrid_hwr.gmm.log_likelihoods_numpy``), BLAS limited to one thread as the kernel;
* NumPy "broadcast": the direct difference form, vectorised over frames and components,
  in chunks of states so the temporaries stay small.

Also timed: GmmAccumulator.accumulate on ``--pairs-per-frame`` (frame, state) pairs per
frame, as a pruned forward-backward produces. Each timing is the least CPU time of
``--repeats`` runs after a warm-up call; results are checked against each other before printing.

    .venv/bin/python benchmarks/gmm_kernels.py --frames 300 --states 600 --dims 56 --mixtures 1 4 16
"""

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from hybrid_hwr.gmm import LOG_2PI, GmmAccumulator, GmmSet, log_likelihoods_numpy


def log_likelihoods_broadcast(gmms: GmmSet, X: np.ndarray, chunk: int = 16) -> np.ndarray:
    """Direct NumPy form: sum_d (x_d - mu_d)^2 / v_d over a (T, chunk, M, D) temporary."""
    S, M, D = gmms.means.shape
    inv_var = 1.0 / gmms.variances
    const = gmms.log_weights - 0.5 * (D * LOG_2PI + np.log(gmms.variances).sum(axis=2))
    out = np.empty((len(X), S))
    for start in range(0, S, chunk):
        sl = slice(start, start + chunk)
        diff = X[:, None, None, :] - gmms.means[None, sl]
        comp = const[None, sl] - 0.5 * np.einsum("tsmd,tsmd,smd->tsm", diff, diff, inv_var[sl], optimize=True)
        peak = comp.max(axis=2, keepdims=True)
        out[:, sl] = peak[:, :, 0] + np.log(np.exp(comp - peak).sum(axis=2))
    return out


def random_model(rng, n_states, n_mixtures, n_dims):
    means = rng.normal(size=(n_states, n_mixtures, n_dims))
    variances = rng.uniform(0.3, 1.5, size=(n_states, n_mixtures, n_dims))
    weights = rng.dirichlet(np.ones(n_mixtures), size=n_states)
    return GmmSet(means, variances, np.log(weights))


def best_time(fn, repeats):
    fn()  # warm-up (JIT compilation, caches)
    times = []
    for _ in range(repeats):
        start = time.process_time()  # CPU time: other jobs on a shared machine do not count
        fn()
        times.append(time.process_time() - start)
    return min(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--states", type=int, default=600)
    parser.add_argument("--dims", type=int, default=56)
    parser.add_argument("--mixtures", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--pairs-per-frame", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    X = rng.normal(size=(args.frames, args.dims))
    T, S, D = args.frames, args.states, args.dims
    print(f"T={T} frames, S={S} states, D={D} dims; least CPU time of {args.repeats} runs, 1 thread")
    header = (f"{'M':>3} {'numba ms':>9} {'np-gemm ms':>11} {'ratio':>6} {'np-bcast ms':>12} {'ratio':>6}"
              f" {'Gcomp-dim/s':>12} {'max|diff|':>10} {'acc ms':>7}")
    print(header)
    print("-" * len(header))
    with threadpool_limits(limits=1):
        for M in args.mixtures:
            gmms = random_model(rng, S, M, D)
            fast = gmms.log_likelihoods(X)
            gemm = log_likelihoods_numpy(gmms, X)
            bcast = log_likelihoods_broadcast(gmms, X)
            diff = max(np.abs(fast - gemm).max(), np.abs(fast - bcast).max())
            assert diff < 1e-6 * np.abs(fast).max(), f"kernels disagree by {diff}"
            t_fast = best_time(lambda: gmms.log_likelihoods(X), args.repeats)
            t_gemm = best_time(lambda: log_likelihoods_numpy(gmms, X), args.repeats)
            t_bcast = best_time(lambda: log_likelihoods_broadcast(gmms, X), max(1, args.repeats // 2))

            n_pairs = T * args.pairs_per_frame
            frames = np.repeat(np.arange(T), args.pairs_per_frame)
            states = rng.integers(0, S, n_pairs)
            weights = rng.random(n_pairs)

            def accumulate():
                GmmAccumulator.like(gmms).accumulate(gmms, X, frames, states, weights)

            t_acc = best_time(accumulate, args.repeats)
            rate = T * S * M * D / t_fast / 1e9
            print(f"{M:>3} {1e3 * t_fast:>9.2f} {1e3 * t_gemm:>11.2f} {t_gemm / t_fast:>6.1f}"
                  f" {1e3 * t_bcast:>12.2f} {t_bcast / t_fast:>6.1f} {rate:>12.2f} {diff:>10.1e} {1e3 * t_acc:>7.2f}")
    print(f"ratio = NumPy time / numba time; acc = accumulate of {args.pairs_per_frame} "
          f"(frame, state) pairs per frame")


if __name__ == "__main__":
    main()
