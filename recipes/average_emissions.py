"""Average the emission scores of hybrid models that share their HMM states (a frame-level ensemble).

    python recipes/average_emissions.py A.npz B.npz [...] -o AVERAGE.npz

Each input is a `hybrid-hwr emissions` file of the same lines, from models with the same
topology (same alphabet and states per character, e.g. two MLPs trained on alignments of
GMM-HMMs built with the same `--states-from`). The scaled likelihoods log p(s|x) - kappa log p(s)
are averaged frame by frame (the log of the geometric mean of the posteriors, divided by the
geometric mean of the priors); `hybrid-hwr decode --emissions AVERAGE.npz --model A` decodes it.
"""

import argparse
import sys

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", metavar="FILE.npz")
    parser.add_argument("-o", "--output", required=True, metavar="FILE.npz")
    args = parser.parse_args()
    if len(args.inputs) < 2:
        parser.error("give at least two emission files")
    files = [np.load(path) for path in args.inputs]
    lines = sorted(name for name in files[0].files if not name.startswith("__"))
    for path, scores in zip(args.inputs[1:], files[1:]):
        if sorted(name for name in scores.files if not name.startswith("__")) != lines:
            print(f"average_emissions: {path} does not hold the same line ids as {args.inputs[0]}", file=sys.stderr)
            return 1
    # "__prior_scale__": kept only if every file records it (else the mean's scale is unknown)
    facts = set.intersection(*({name for name in scores.files if name.startswith("__")} for scores in files))
    for path, scores in zip(args.inputs, files):
        for name in sorted(set(scores.files) - set(lines) - facts):
            print(f"average_emissions: {path}: {name} is not in every file: left out of the average", file=sys.stderr)
    ids = [name for name in files[0].files if name in facts or not name.startswith("__")]
    averaged = {}
    for line_id in ids:
        arrays = [scores[line_id] for scores in files]
        if any(a.shape != arrays[0].shape for a in arrays):
            shapes = ", ".join(str(a.shape) for a in arrays)
            print(f"average_emissions: line {line_id}: shapes differ ({shapes}): not the same states or frames",
                  file=sys.stderr)
            return 1
        # "__prior_scale__" (not a line): the mean kappa is the kappa of the mean scores
        dtype = np.float64 if line_id.startswith("__") else np.float32
        averaged[line_id] = np.mean([a.astype(np.float64) for a in arrays], axis=0).astype(dtype)
    np.savez(args.output, **averaged)
    n_lines = sum(not line_id.startswith("__") for line_id in averaged)
    print(f"averaged {len(args.inputs)} files over {n_lines} lines into {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
