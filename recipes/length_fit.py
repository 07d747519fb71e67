"""Error rates by how well each line's frames fit its transcription's HMM.

    python recipes/length_fit.py MODEL_DIR FRAMES.npz REF.tsv HYP.tsv [HYP.tsv ...] [--lang en]

A left-to-right HMM of N emitting states needs at least N frames, so a line whose
transcription needs more frames than the image gives cannot be decoded correctly, and
lines just above that bound are squeezed. For every test line this computes
``frames / fewest frames its reference transcription needs`` under MODEL_DIR's topology
(frame counts from FRAMES.npz, e.g. the emissions file of recipes/decode_lm.sh) and prints
each hypothesis file's corpus CER/WER per band of that ratio.
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path

import numpy as np

from hybrid_hwr.data import read_transcriptions
from hybrid_hwr.errors import HwrError
from hybrid_hwr.hmm import build_line_graph, min_frames
from hybrid_hwr.metrics import score_corpus
from hybrid_hwr.model import load_model

BANDS = ((0.0, 1.0), (1.0, 1.2), (1.2, 1.5), (1.5, np.inf))


def frame_counts(path) -> dict:
    """Line id -> number of frames (rows) of each array of an .npz, read from the array headers only."""
    path = Path(path)
    if not path.is_file():
        raise HwrError(f"{path}: no such .npz file")
    counts = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if not name.endswith(".npy"):
                    continue
                with archive.open(name) as member:
                    version = np.lib.format.read_magic(member)
                    if version == (1, 0):
                        shape, _, _ = np.lib.format.read_array_header_1_0(member)
                    elif version == (2, 0):
                        shape, _, _ = np.lib.format.read_array_header_2_0(member)
                    else:
                        raise ValueError(f"array {name} has .npy format version {version}")
                counts[name[: -len(".npy")]] = shape[0] if shape else 0
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise HwrError(f"{path}: not a readable .npz file ({exc})") from None
    return counts


def frame_ratios(model, frames: dict, refs: dict) -> dict:
    """Line id -> frames / fewest frames of its transcription (characters outside the alphabet dropped)."""
    ratios = {}
    for line_id, text in refs.items():
        if line_id in frames:
            known = "".join(c for c in text if c in model.alphabet.symbols)
            graph = build_line_graph(model.topology, model.transitions, model.alphabet.encode(known))
            ratios[line_id] = frames[line_id] / max(min_frames(graph), 1)
    return ratios


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("frames", help=".npz with one (frames, ...) array per line id")
    parser.add_argument("ref")
    parser.add_argument("hyps", nargs="+")
    parser.add_argument("--lang", default="en", choices=("en", "fr", "none"))
    args = parser.parse_args(argv)
    try:
        model = load_model(args.model)
        refs = dict(read_transcriptions(args.ref))
        hyps = {path: dict(read_transcriptions(path)) for path in args.hyps}
        ratios = frame_ratios(model, frame_counts(args.frames), refs)
        if not ratios:
            raise HwrError(f"no line of {args.ref} is in {args.frames}")
    except HwrError as exc:
        print(f"length_fit: error: {exc}", file=sys.stderr)
        return 1
    names = ["/".join(Path(path).with_suffix("").parts[-3:]) for path in args.hyps]
    width = max(28, *(len(name) for name in names))
    print(f"{'frames / needed':16} {'lines':>6}  " + "  ".join(f"{name:>{width}}" for name in names))
    for low, high in BANDS:
        ids = [i for i, r in ratios.items() if low <= r < high]
        cells = []
        for path in args.hyps:
            if ids:
                score = score_corpus({i: refs[i] for i in ids}, {i: hyps[path].get(i, "") for i in ids},
                                     lang=None if args.lang == "none" else args.lang)
                cells.append(f"CER {100 * score.cer:6.2f} WER {100 * score.wer:6.2f}")
            else:
                cells.append("-")
        print(f"{f'[{low:g}, {high:g})':16} {len(ids):6d}  " + "  ".join(f"{c:>{width}}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
