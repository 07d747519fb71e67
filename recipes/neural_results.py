"""Collect a CRNN experiment's figures for notebooks/05_neural_vs_hmm.ipynb.

    python recipes/neural_results.py EXP_DIR REF.tsv [--hmm HMM_HYP.tsv] [--lang fr] [-o notebooks/results]

EXP_DIR is a recipes/neural_baseline.sh experiment (model/, test.greedy.tsv,
test.lexicon_lm.tsv, test.charlm.tsv, lexicon_lm/ and charlm/ with their decoder.json, test.npz);
REF.tsv the test lines those hypotheses cover. Writes OUT/copiste_crnn.json (training history,
parameters, time, tuned settings, test CER/WER of each mode and of the HMM system on the same
lines) and OUT/copiste_crnn_sample.npz + OUT/copiste_crnn_alphabet.txt: the network's outputs
for the bundled sample's test lines that are in REF.tsv (at most --sample N), so the notebook
decodes them without PyTorch.
"""

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from hybrid_hwr.data import read_transcriptions, sample_dir
from hybrid_hwr.metrics import score_corpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("exp")
    parser.add_argument("reference")
    parser.add_argument("--hmm", help="an HMM system's hypotheses on the same test lines")
    parser.add_argument("--lang", default="fr")
    parser.add_argument("--sample", type=int, default=4)
    parser.add_argument("-o", "--output", default="notebooks/results")
    args = parser.parse_args()
    exp, out = Path(args.exp), Path(args.output)
    refs = read_transcriptions(args.reference)
    ref_ids = {i for i, _ in refs}

    def rates(path):
        hyps = {i: t for i, t in read_transcriptions(path) if i in ref_ids}
        score = score_corpus(refs, hyps, args.lang)
        return {"cer": round(100 * score.cer, 2), "wer": round(100 * score.wer, 2)}

    info = json.loads((exp / "model" / "crnn.json").read_text())
    systems = {"crnn greedy": rates(exp / "test.greedy.tsv")}
    settings = {}
    for mode in ("lexicon_lm", "charlm"):
        if (exp / f"test.{mode}.tsv").is_file():
            systems[f"crnn {mode}"] = rates(exp / f"test.{mode}.tsv")
            decoder = json.loads((exp / mode / "decoder.json").read_text())
            settings[mode] = {k: decoder.get(k) for k in ("lm_weight", "word_penalty", "char_penalty", "beam")}
    if args.hmm:
        systems["mlp-hmm (bundled default model)"] = rates(args.hmm)
    result = {"test_lines": len(refs), "lang": args.lang, "parameters": info["parameters"],
              "config": info["config"], "epochs": len(info["history"]), "best_epoch": info["best_epoch"],
              "seconds": round(info["seconds"]), "cpu_seconds": round(info["cpu_seconds"]),
              "history": [{k: r[k] for k in ("epoch", "train_loss", "valid_cer", "seconds")} for r in info["history"]],
              "settings": settings, "systems": systems}
    out.mkdir(parents=True, exist_ok=True)
    (out / "copiste_crnn.json").write_text(json.dumps(result, indent=1) + "\n")
    sample = [i for i, _ in read_transcriptions(sample_dir() / "test.tsv") if i in ref_ids][:args.sample]
    with np.load(exp / "test.npz") as arrays:
        np.savez_compressed(out / "copiste_crnn_sample.npz", **{i: arrays[i].astype(np.float16) for i in sample})
    shutil.copy(exp / "model" / "alphabet.txt", out / "copiste_crnn_alphabet.txt")
    print(json.dumps(systems, indent=1))


if __name__ == "__main__":
    main()
