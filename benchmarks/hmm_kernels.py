"""Speed of the Viterbi and forward-backward kernels against hmmlearn and plain NumPy.

The same left-to-right line HMM (a random transcription of ``--chars`` characters,
``--states`` states per character, optional spaces and blanks) and the same
emission log-likelihoods go to:

* hybrid_hwr.align (numba, sparse arcs), exact and with a forward-backward beam;
* hmmlearn's dense algorithms (``decode(algorithm='viterbi')``, ``score_samples``),
  with the graph as a (G, G) transition matrix and the final weights folded into
  the last frame;
* a plain-NumPy version of the same sparse recursions (reference only).

Each timing is the median CPU time of ``--repeats`` runs after a warm-up call (JIT compiled).
Paths and log-probabilities are checked to be identical before anything is printed.

    .venv/bin/python benchmarks/hmm_kernels.py --frames 300 --chars 40 --states 6 7 8
"""

import argparse
import statistics
import sys
import time

import numpy as np
from hmmlearn.base import BaseHMM

from hybrid_hwr.align import forward_backward, viterbi
from hybrid_hwr.hmm import HmmTopology, Transitions, build_line_graph

LETTERS = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:'-")


class FixedEmissionHMM(BaseHMM):
    """hmmlearn's dense HMM fed with precomputed per-node log-likelihoods."""

    def __init__(self, framelogprob=None, startprob=None, transmat=None, implementation="log"):
        super().__init__(n_components=len(startprob), implementation=implementation)
        self.framelogprob = framelogprob
        self.startprob_ = startprob
        self.transmat_ = transmat

    def _check(self):
        pass   # rows of a line model's last state sum to < 1 (the exit goes to the end of line)

    def _compute_log_likelihood(self, X):
        return self.framelogprob


# ----------------------------------------------------------------------------- NumPy reference

def viterbi_numpy(loglik, g):
    E = loglik[:, g.emit_state]
    T, G, A = len(E), g.n_nodes, g.n_arcs
    starts = g.in_ptr()[:-1]              # every node has its self-loop, so no empty segment
    arc_ids = np.arange(A)
    back = np.zeros((T, G), dtype=np.int64)
    delta = g.init_logp + E[0]
    for t in range(1, T):
        cand = delta[g.arc_from] + g.arc_logp
        best = np.maximum.reduceat(cand, starts)
        back[t] = np.minimum.reduceat(np.where(cand == best[g.arc_to], arc_ids, A), starts)
        delta = best + E[t]
    end = delta + g.final_logp
    if not np.isfinite(end.max()):
        return -np.inf, np.empty(0, np.int32)
    path = np.empty(T, dtype=np.int32)
    path[-1] = np.argmax(end)
    for t in range(T - 1, 0, -1):
        path[t - 1] = g.arc_from[back[t, path[t]]]
    return float(end.max()), path


def forward_backward_numpy(loglik, g):
    E = loglik[:, g.emit_state]
    T, G = E.shape
    starts = g.in_ptr()[:-1]
    by_src = np.argsort(g.arc_from, kind="stable")
    src_starts = np.searchsorted(g.arc_from[by_src], np.arange(G))
    alpha = np.empty((T, G))
    beta = np.empty((T, G))
    alpha[0] = g.init_logp + E[0]
    for t in range(1, T):
        alpha[t] = np.logaddexp.reduceat(alpha[t - 1][g.arc_from] + g.arc_logp, starts) + E[t]
    log_prob = np.logaddexp.reduce(alpha[-1] + g.final_logp)
    beta[-1] = g.final_logp
    for t in range(T - 2, -1, -1):
        v = g.arc_logp + E[t + 1][g.arc_to] + beta[t + 1][g.arc_to]
        beta[t] = np.logaddexp.reduceat(v[by_src], src_starts)
    gamma = np.exp(alpha + beta - log_prob).astype(np.float32)
    xi = alpha[:-1, g.arc_from] + g.arc_logp + E[1:, g.arc_to] + beta[1:, g.arc_to] - log_prob
    return float(log_prob), gamma, np.exp(xi).sum(0)


# ----------------------------------------------------------------------------- benchmark

def make_line(n_chars, n_states, n_frames, rng):
    """A random transcription, its graph, and emissions that favour a planted alignment."""
    top = HmmTopology([" "] + LETTERS, n_states)
    tr = Transitions(top)
    tr.log_self = np.log(rng.uniform(0.4, 0.8, top.n_emitting))
    tr.log_next = np.log1p(-np.exp(tr.log_self))
    words, left = [], n_chars
    while left > 0:
        n = min(left, int(rng.integers(2, 9)))
        words.append("".join(rng.choice(LETTERS, n)))
        left -= n + 1
    text = " ".join(words)[:n_chars]
    g = build_line_graph(top, tr, [top.symbols.index(c) for c in text])
    # planted alignment: the line's mandatory states, stretched evenly over the frames
    states = g.emit_state[g.node_pos >= 0]
    planted = states[np.linspace(0, len(states) - 1e-9, n_frames).astype(int)]
    loglik = rng.normal(0.0, 2.0, (n_frames, top.n_emitting))
    loglik[np.arange(n_frames), planted] += 6.0
    return top, g, loglik, text


def timed(fn, repeats):
    fn()                                   # warm-up (JIT compile / caches)
    times = []
    for _ in range(repeats):
        t0 = time.process_time()          # CPU time: robust on a shared machine
        fn()
        times.append(time.process_time() - t0)
    return statistics.median(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--chars", type=int, default=40)
    ap.add_argument("--states", type=int, nargs="+", default=[6, 7, 8])
    ap.add_argument("--beam", type=float, default=30.0, help="forward-backward beam (natural log)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)

    rows = []
    for n_states in args.states:
        top, g, loglik, text = make_line(args.chars, n_states, args.frames, rng)
        T = len(loglik)
        X = np.zeros((T, 1))
        frames = loglik[:, g.emit_state].copy()
        frames[-1] += g.final_logp
        with np.errstate(divide="ignore"):
            ref = FixedEmissionHMM(frames, np.exp(g.init_logp), np.exp(g.dense_logp()))
            ref_scaling = FixedEmissionHMM(frames, np.exp(g.init_logp), np.exp(g.dense_logp()),
                                           implementation="scaling")

            # correctness first: identical paths and log-probabilities
            score, path = viterbi(loglik, g)
            ref_score, ref_path = ref.decode(X, algorithm="viterbi")
            np_score, np_path = viterbi_numpy(loglik, g)
            log_prob, gamma, occ = forward_backward(loglik, g)
            ref_log_prob, ref_post = ref.score_samples(X)
            np_log_prob, np_gamma, np_occ = forward_backward_numpy(loglik, g)
            pruned_log_prob, pruned_gamma, _ = forward_backward(loglik, g, beam=args.beam)
        same_path = np.array_equal(path, ref_path) and np.array_equal(path, np_path)
        checks = {
            "viterbi paths identical (numba, hmmlearn, numpy)": same_path,
            "viterbi scores equal": np.isclose(score, ref_score, rtol=1e-12) and np.isclose(score, np_score),
            "forward log-probs equal": np.isclose(log_prob, ref_log_prob, rtol=1e-12)
            and np.isclose(log_prob, np_log_prob, rtol=1e-12),
            "posteriors equal": np.allclose(gamma, ref_post, atol=1e-5) and np.allclose(gamma, np_gamma, atol=1e-5),
            "arc occupancies equal (numba, numpy)": np.allclose(occ, np_occ, atol=1e-8),
        }
        failed = [k for k, ok in checks.items() if not ok]
        if failed:
            sys.exit(f"N={n_states}: check failed: {', '.join(failed)}")

        def run_ref_vit():
            with np.errstate(divide="ignore"):
                ref.decode(X, algorithm="viterbi")

        def run_ref_fb():
            with np.errstate(divide="ignore"):
                ref.score_samples(X)

        def run_ref_fb_scaling():
            with np.errstate(divide="ignore", under="ignore"):
                ref_scaling.score_samples(X)

        t_ref_vit = timed(run_ref_vit, args.repeats)
        t_ref_fb = timed(run_ref_fb, args.repeats)
        t_ref_fb_sc = timed(run_ref_fb_scaling, args.repeats)
        size = f"N={n_states} G={g.n_nodes} A={g.n_arcs} T={T}"
        measured = [
            ("viterbi", "hmmlearn decode (dense C++)", t_ref_vit),
            ("viterbi", "hybrid_hwr numba", timed(lambda: viterbi(loglik, g), args.repeats)),
            ("viterbi", "plain numpy (same arcs)", timed(lambda: viterbi_numpy(loglik, g), args.repeats)),
            ("fwd-bwd", "hmmlearn score_samples, log", t_ref_fb),
            ("fwd-bwd", "hmmlearn score_samples, scaling", t_ref_fb_sc),
            ("fwd-bwd", "hybrid_hwr numba exact",
             timed(lambda: forward_backward(loglik, g), args.repeats)),
            ("fwd-bwd", f"hybrid_hwr numba beam={args.beam:g}",
             timed(lambda: forward_backward(loglik, g, beam=args.beam), args.repeats)),
            ("fwd-bwd", "plain numpy exact (same arcs)",
             timed(lambda: forward_backward_numpy(loglik, g), args.repeats)),
        ]
        for kernel, impl, t in measured:
            if kernel == "viterbi":
                rows.append((size, kernel, impl, t * 1e3, t_ref_vit / t, None))
            else:
                rows.append((size, kernel, impl, t * 1e3, t_ref_fb / t, t_ref_fb_sc / t))
        kept = np.count_nonzero(pruned_gamma) / max(1, np.count_nonzero(gamma > 0))
        print(f"{size}: checks passed ({len(checks)}); text {text!r}; beam {args.beam:g} keeps "
              f"{kept:.1%} of the cells, log-prob {pruned_log_prob:.6f} vs exact {log_prob:.6f}",
              flush=True)

    print()
    print(f"{'model':<28} {'kernel':<8} {'implementation':<32} {'ms/line':>9} "
          f"{'x hmmlearn':>11} {'x hml-scaling':>13}")
    print("-" * 106)
    for size, kernel, impl, ms, ratio, ratio_sc in rows:
        sc = f"{ratio_sc:12.1f}x" if ratio_sc is not None else ""
        print(f"{size:<28} {kernel:<8} {impl:<32} {ms:9.3f} {ratio:10.1f}x {sc}")
    print(f"\nx hmmlearn: hmmlearn's time (decode for viterbi, log-space score_samples for "
          f"fwd-bwd) / this time;\nx hml-scaling: against hmmlearn's faster scaling forward-backward. "
          f"Median CPU time of {args.repeats} runs after warm-up, one core.")


if __name__ == "__main__":
    main()
