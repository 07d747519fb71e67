"""The ``hybrid-hwr`` command line.

Every subcommand is one pair of functions: ``_add_<name>(subparsers)`` declares its
arguments (and ``set_defaults(run=_run_<name>)``), ``_run_<name>(args)`` does the work
and returns the exit status. Subcommands that read line datasets take the shared
input flags of :func:`dataset_parent` (``DATA.tsv|IMAGE...``, ``--images``, ``--limit``,
``--jobs``, ``--scheduler``), so every such command reads its input the same way;
``train`` and ``tune`` take ``--jobs`` and ``--scheduler`` from :func:`add_scaling_options`
too. With ``--scheduler`` the whole subcommand runs inside one Dask session
(:func:`hybrid_hwr.cluster.connect`), which the batch helpers use instead of processes.

Errors: an :class:`HwrError` (bad input), an interrupt, or a failing write becomes one
line ``hybrid-hwr: error: ...`` on stderr and exit status 1 (130 for Ctrl-C, 143 for SIGTERM); usage
errors exit with 2. In a batch, a line that cannot be processed is reported as one
``hybrid-hwr: warning: ...`` line and skipped; the others are processed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import os
import signal
import sys
import threading
from pathlib import Path

import numpy as np

from . import __version__
from .argtypes import MAX_JOBS, any_int, finite_float, int_upto, non_negative_float, positive_float, positive_int
from .batch import line_features, warn
from .data import Line, read_inputs, read_transcriptions
from .fileio import AtomicNpzWriter, RecordFile, atomic_write_text, complete_records, directory_lock
from .text import LANGUAGES
from .errors import HwrError, Terminated, raise_on_sigterm

PROG = "hybrid-hwr"


# ---------------------------------------------------------------------------------------
# Helpers shared by subcommands


def dataset_parent() -> argparse.ArgumentParser:
    """Input flags shared by every subcommand that reads lines (use as ``parents=[dataset_parent()]``)."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("input lines")
    group.add_argument(
        "inputs", nargs="*", metavar="DATA.tsv|IMAGE",
        help="split files <dir>/<split>.tsv (id<TAB>text, images <dir>/lines/<id>.png), IAM lines.txt files "
        "(with --images ROOT) and/or line images (id = file stem)",
    )
    group.add_argument(
        "--images", metavar="DIR", help="read the images of split files from DIR/<id>.png (IAM: the lines/ root)"
    )
    group.add_argument("--limit", type=positive_int, metavar="N", help="use only the first N lines")
    add_scaling_options(group)
    group.add_argument("--allow-outside-paths", action="store_true",
                       help="let line ids name images outside the image folder (e.g. '../x'; refused by default)")
    return parent


def add_scaling_options(parser, jobs_help: str = "run over N processes (default 1)") -> None:
    """``--jobs N`` and ``--scheduler ADDRESS`` (a Dask cluster instead of local processes)."""
    from .cluster import parse_scheduler

    parser.add_argument("--jobs", type=int_upto(MAX_JOBS), default=1, metavar="N", help=jobs_help)
    parser.add_argument("--scheduler", type=parse_scheduler, metavar="ADDRESS",
                        help="run the work on a Dask cluster: a scheduler address tcp://host:8786 (workers sharing "
                        "the data path), or local:N to start N local worker processes; needs "
                        "pip install 'hybrid_hwr[dask]'")


def _cluster_session(args: argparse.Namespace):
    """The Dask session of ``--scheduler`` for the whole subcommand (a no-op without it)."""
    address = getattr(args, "scheduler", None)
    if address is None:
        return contextlib.nullcontext()
    if getattr(args, "jobs", 1) not in (None, 1):
        raise HwrError("--jobs and --scheduler: give one (the cluster's workers replace local processes)")
    from .cluster import connect

    return connect(address)


def input_lines(args: argparse.Namespace) -> list[Line]:
    """The lines named by the shared input flags."""
    lines = read_inputs(args.inputs, images=args.images, limit=args.limit)
    if not lines:
        raise HwrError("no input lines")
    return lines


# ---------------------------------------------------------------------------------------
# import


def _add_import(subparsers) -> None:
    p = subparsers.add_parser(
        "import", help="make a line dataset of PAGE/ALTO pages, or of PyLaia or kraken line data",
        description="--format page (default): cut every text line of the PAGE or ALTO XML pages in SRC along "
        "its polygon (outside set to white) and write DATASET_DIR/lines/<id>.png and DATASET_DIR/<split>.tsv; "
        "DATASET_DIR/layout.json records where each line lies on its page (for decode --page-xml/--alto). "
        "--format pylaia: SRC is a ground-truth file of 'ID TRANSCRIPTION' lines (plain text or PyLaia's "
        "character tokens with <space>), images IMAGES/ID.<ext> (--images, default the file's folder), "
        "--img-list keeps the ids of a PyLaia id list. --format kraken: SRC is a folder searched for line "
        "images with a NAME.gt.txt transcription beside them.",
    )
    p.add_argument("pages", metavar="SRC", help="page: directory with *.xml and their page images; pylaia: the "
                   "ground-truth file; kraken: the folder of images and .gt.txt files")
    p.add_argument("-o", "--output", required=True, metavar="DATASET_DIR", help="dataset directory to write")
    p.add_argument("--format", choices=("page", "pylaia", "kraken"), default="page",
                   help="layout of SRC (default page: PAGE or ALTO XML)")
    p.add_argument("--split", default="all", metavar="NAME", help="name of the split file (default: all -> all.tsv)")
    p.add_argument("--scale", type=positive_float, default=1.0, help="page: resize pages by this factor before cutting")
    p.add_argument("--images", metavar="DIR", help="pylaia: folder the ids are relative to (default: SRC's folder)")
    p.add_argument("--img-list", metavar="FILE", help="pylaia: import only the ids of this list (one a line), in its order")
    p.add_argument("--keep-empty", action="store_true", help="also write lines without transcription")
    p.add_argument("--allow-outside-paths", action="store_true",
                   help="read page images that the XML names outside its folder (refused by default)")
    p.set_defaults(run=_run_import)


def _run_import(args: argparse.Namespace) -> int:
    if not args.split or "/" in args.split or args.split.startswith("."):
        raise HwrError(f"--split must be a plain name, got {args.split!r}")
    misplaced = [option for option, value, formats in (("--scale", args.scale != 1.0, ("page",)),
                                                       ("--images", args.images, ("pylaia",)),
                                                       ("--img-list", args.img_list, ("pylaia",)))
                 if value and args.format not in formats]
    if misplaced:
        raise HwrError(f"{', '.join(misplaced)}: not an option of --format {args.format}")
    if args.format == "page":
        from .pages import import_pages

        count = import_pages(
            args.pages, args.output, args.split, scale=args.scale, keep_empty=args.keep_empty,
            on_error=warn, progress=True,
        )
    else:
        from .toolkit_data import import_lines, read_kraken, read_pylaia

        lines = (read_pylaia(args.pages, args.images, args.img_list) if args.format == "pylaia"
                 else read_kraken(args.pages))
        count = import_lines(lines, args.output, args.split, keep_empty=args.keep_empty, on_error=warn)
    print(f"imported {count} lines into {Path(args.output) / (args.split + '.tsv')}")
    return 0


# ---------------------------------------------------------------------------------------
# evaluate


def _add_evaluate(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="corpus CER and WER of hypotheses against references",
        description="Corpus CER and WER (errors summed over lines / reference length), with "
        "substitutions, deletions and insertions. Both sides are tokenised first by the tokeniser of the "
        "lexicons and LMs (hybrid_hwr.text): punctuation marks are words of their own, so 'support, a' and "
        "'support , a' are the same line, and typographic variants (curly quotes, dashes) count as their "
        "ASCII forms; --lang none scores the white-space words of the raw texts. With two "
        "hypothesis files: the difference B - A and its paired bootstrap confidence interval over lines.",
    )
    p.add_argument("reference", metavar="REF.tsv", help="reference transcriptions (id<TAB>text)")
    p.add_argument("hypotheses", nargs="+", metavar="HYP.tsv", help="one or two hypothesis files (id<TAB>text)")
    p.add_argument("--lang", choices=(*LANGUAGES, "none"), default="en",
                   help="tokeniser conventions (default en; none: no tokenisation)")
    p.add_argument("--details", metavar="FILE", help="write per-line counts (TSV with a header) to FILE")
    p.add_argument("--resamples", type=int_upto(1_000_000), default=1000, metavar="N", help="bootstrap resamples (1000)")
    p.add_argument("--seed", type=any_int, default=0, help="bootstrap random seed (0)")
    p.set_defaults(run=_run_evaluate)


def _format_rate(rate: float) -> str:
    return f"{100.0 * rate:7.2f} %" if rate != float("inf") else "    inf  "


def _run_evaluate(args: argparse.Namespace) -> int:
    from .metrics import compare, score_corpus

    if len(args.hypotheses) > 2:
        raise HwrError("evaluate compares at most two hypothesis files")
    refs = read_transcriptions(args.reference)
    if not refs:
        raise HwrError(f"{args.reference}: no reference lines")
    scores = []
    for hyp_path in args.hypotheses:
        score = score_corpus(refs, read_transcriptions(hyp_path), None if args.lang == "none" else args.lang)
        if score.missing:
            warn(f"{hyp_path}: {len(score.missing)} of {len(refs)} reference lines have no hypothesis "
                 f"(scored as empty), e.g. {score.missing[0]}")
        if score.extra:
            warn(f"{hyp_path}: {len(score.extra)} ids are not in {args.reference} (ignored), e.g. {score.extra[0]}")
        scores.append(score)

    print(f"reference: {args.reference} ({len(refs)} lines)")
    header = f"{'':12} {'rate':>9} {'errors':>8} {'ref len':>8} {'sub':>7} {'del':>7} {'ins':>7}"
    for label, (hyp_path, score) in zip("AB", zip(args.hypotheses, scores)):
        print()
        print(f"{label + ': ' if len(scores) > 1 else ''}{hyp_path}")
        print(header)
        for name, counts in (("CER", score.chars), ("WER", score.words)):
            print(f"{name:12} {_format_rate(counts.rate)} {counts.errors:8d} {counts.ref_len:8d} "
                  f"{counts.substitutions:7d} {counts.deletions:7d} {counts.insertions:7d}")
    if len(scores) == 2:
        confidence = 0.95
        print()
        print(f"B - A (percentage points), paired bootstrap over {len(refs)} lines, "
              f"{args.resamples} resamples, seed {args.seed}:")
        for name, unit in (("CER", "chars"), ("WER", "words")):
            result = compare(scores[0], scores[1], unit, n_resamples=args.resamples, confidence=confidence,
                             seed=args.seed)
            print(f"{name:12} {100 * result.difference:+7.2f}   {int(confidence * 100)}% CI "
                  f"[{100 * result.low:+.2f}, {100 * result.high:+.2f}]   "
                  f"B better in {100 * result.prob_b_better:.1f}% of resamples")
    if args.details:
        _write_details(Path(args.details), scores)
    return 0


def _write_details(path: Path, scores) -> None:
    columns = ["system", "id", "ref_chars", "char_errors", "char_sub", "char_del", "char_ins",
               "ref_words", "word_errors", "word_sub", "word_del", "word_ins", "ref", "hyp"]
    rows = ["\t".join(columns)]
    for label, score in zip("AB", scores):
        for line in score.lines:
            c, w = line.chars, line.words
            rows.append("\t".join(map(str, [
                label, line.id, c.ref_len, c.errors, c.substitutions, c.deletions, c.insertions,
                w.ref_len, w.errors, w.substitutions, w.deletions, w.insertions, line.ref, line.hyp,
            ])))
    atomic_write_text(path, "\n".join(rows) + "\n")


# ---------------------------------------------------------------------------------------
# features


def _add_features(subparsers) -> None:
    p = subparsers.add_parser(
        "features", parents=[dataset_parent()], help="write the (un-normalised) features of lines to a .npz",
        description="Preprocess each line image and extract its frame features; writes one array "
        "(frames x dims, float32) per line id (an image's id is its file stem).",
    )
    p.add_argument("-o", "--output", required=True, metavar="feats.npz", help="output file (written atomically)")
    p.add_argument("--kind", choices=("handcrafted", "pixels"), help="feature type (default: handcrafted)")
    p.add_argument("--width", type=positive_int, help="sliding-window width in pixels")
    p.add_argument("--shift", type=positive_int, help="sliding-window shift in pixels")
    p.set_defaults(run=_run_features)


def _make_frontend(args: argparse.Namespace):
    from .features import FrontEnd

    frontend = FrontEnd()
    changes = {name: getattr(args, name) for name in ("kind", "width", "shift") if getattr(args, name) is not None}
    if changes:
        frontend = dataclasses.replace(frontend, features=dataclasses.replace(frontend.features, **changes))
    return frontend


def _run_features(args: argparse.Namespace) -> int:
    lines = input_lines(args)
    frontend = _make_frontend(args)
    output = Path(args.output)
    with AtomicNpzWriter(output) as writer:
        for line, feats, _ in line_features(lines, frontend, args.jobs, desc="features"):
            writer.add(line.id, feats)
        skipped = len(lines) - writer.count
        if writer.count == 0:
            raise HwrError(f"no line could be processed ({skipped} skipped); {output} not written")
    print(f"wrote features of {writer.count} lines to {output}" + (f" ({skipped} skipped)" if skipped else ""))
    return 0



# ---------------------------------------------------------------------------------------
# train


def _add_train(subparsers) -> None:
    from .train import TrainConfig

    defaults = TrainConfig()
    p = subparsers.add_parser(
        "train", help="train a GMM-HMM (or hybrid MLP-HMM) optical model on a line dataset",
        description="Embedded training on whole lines. The model directory is rewritten after every "
        "iteration (atomically) and doubles as the checkpoint: --resume continues an interrupted run.",
    )
    p.add_argument("--train", required=True, nargs="+", metavar="DATA.tsv", help="training split file(s)")
    p.add_argument("--valid", nargs="+", metavar="DATA.tsv", help="validation split file(s): likelihood per iteration")
    p.add_argument("--images", metavar="DIR", help="read the images of split files from DIR/<id>.png")
    p.add_argument("--allow-outside-paths", action="store_true",
                   help="let line ids name images outside the image folder (refused by default)")
    p.add_argument("--emission", choices=("gmm", "mlp"), default="gmm", help="emission model (default gmm)")
    p.add_argument("--init-model", metavar="DIR",
                   help="start from this model (for mlp: the HMM whose forced alignments are the targets, a "
                   "GMM-HMM or, for another realignment round, a hybrid)")
    p.add_argument("--states", type=int_upto(100), default=defaults.states, help="emitting states per character")
    p.add_argument("--mixtures", type=int_upto(1024), default=defaults.mixtures, help="Gaussians per state at the end")
    p.add_argument("--iterations", type=int_upto(1000), default=defaults.iterations,
                   help="re-estimation iterations per mixture stage")
    p.add_argument("--states-from", metavar="MODEL_DIR",
                   help="states per character from the mean character lengths of this model's alignments "
                   "(its front end is used too: --kind/--width/--shift are ignored; not recomputed on --resume)")
    p.add_argument("--init", choices=("uniform", "flat"), default=defaults.init, help="initialisation")
    p.add_argument("--method", choices=("baum-welch", "viterbi"), default=defaults.method)
    p.add_argument("--kind", choices=("handcrafted", "pixels"), help="feature type (default: handcrafted)")
    p.add_argument("--width", type=positive_int, help="sliding-window width in pixels")
    p.add_argument("--shift", type=positive_int, help="sliding-window shift in pixels")
    mlp = p.add_argument_group("hybrid MLP (--emission mlp)")
    mlp.add_argument("--hidden", default="1024", metavar="N[,N...]",
                     help="hidden layer sizes, e.g. 1024 (shallow) or 512,512,512 (deep)")
    mlp.add_argument("--context", type=int_upto(100, low=0), default=4, metavar="K", help="input frames t-K..t+K (default 4)")
    mlp.add_argument("--epochs", type=positive_int, default=30, help="maximum number of epochs")
    mlp.add_argument("--max-minutes", type=positive_float, help="stop training after this many minutes")
    mlp.add_argument("--prior-scale", type=non_negative_float, default=1.0,
                     help="kappa in log p(s|x) - kappa log p(s) stored with the network (decode and emissions "
                     "can override it)")
    mlp.add_argument("--dropout", type=non_negative_float, default=0.0, metavar="P",
                     help="share of hidden units dropped in each training batch, in [0, 1) (default 0)")
    mlp.add_argument("--input-noise", type=non_negative_float, default=0.0, metavar="SIGMA",
                     help="standard deviation of Gaussian noise on the normalised inputs while training (default 0)")
    mlp.add_argument("--weight-decay", type=non_negative_float, default=0.0, metavar="L2",
                     help="L2 penalty L2/2 sum ||W||^2 on the weight matrices (default 0)")
    mlp.add_argument("--epoch-frames", type=positive_int, metavar="N",
                     help="each epoch trains on a fresh random sample of N training frames (default: all), so "
                     "validation, checkpoints and --max-minutes act every N frames")
    mlp.add_argument("--mlp-input", choices=("handcrafted", "pixels"), help="MLP input (default: the initial model's features)")
    mlp.add_argument("--realign", action="store_true", help="realign with the hybrid model and train once more")
    mlp.add_argument("--seed", type=any_int, default=0, help="seed of the MLP initialisation and shuffling")
    mlp.add_argument("--threads", type=int_upto(MAX_JOBS), default=1, metavar="N",
                     help="BLAS threads while training (default 1: two threads only pay on an otherwise idle machine)")
    p.add_argument("--limit", type=positive_int, metavar="N", help="use only the first N lines of each split")
    add_scaling_options(p, "accumulate over N processes (default 1)")
    p.add_argument("--resume", action="store_true", help="continue the run saved in MODEL_DIR (a hybrid: with "
                   "the new --epochs / --max-minutes budget)")
    p.add_argument("-o", "--output", required=True, metavar="MODEL_DIR", help="model directory to write")
    # the MLP options, to refuse them for a GMM rather than ignore them
    p.set_defaults(run=_run_train, mlp_options=[(a.dest, a.default, a.option_strings[0]) for a in mlp._group_actions])
    # and the GMM-HMM options, to refuse them for a hybrid (which keeps its initial model's HMMs)
    p.set_defaults(gmm_options=[(a.dest, a.default, a.option_strings[0]) for a in p._actions
                                if a.dest in ("states", "mixtures", "iterations", "states_from", "init", "method")])


def _read_splits(args: argparse.Namespace):
    """(training lines, validation lines or None) of train's arguments."""
    train = read_inputs(args.train, images=args.images, limit=args.limit)
    valid = read_inputs(args.valid, images=args.images, limit=args.limit) if args.valid else None
    return train, valid


def _run_train(args: argparse.Namespace) -> int:
    frontend_options = [f"--{name}" for name in ("kind", "width", "shift") if getattr(args, name) is not None]
    if frontend_options and args.init_model:
        raise HwrError(f"{', '.join(frontend_options)}: the front end is --init-model's; drop these options "
                       "(--mlp-input pixels trains a hybrid on pixel windows)")
    if frontend_options and args.states_from:
        warn(f"{', '.join(frontend_options)} ignored: --states-from gives its model's front end")
    if args.emission == "mlp":
        from .mlp import MlpEmission
        from .train import train_mlp_hmm

        if not args.init_model:
            raise HwrError("--emission mlp needs --init-model DIR (the HMM whose forced alignments are the targets)")
        gmm_only = [option for dest, default, option in args.gmm_options if getattr(args, dest) != default]
        if gmm_only:
            raise HwrError(f"{', '.join(gmm_only)}: options of --emission gmm; a hybrid keeps the HMMs of --init-model")
        try:
            hidden = tuple(int(n) for n in args.hidden.split(","))
        except ValueError:
            raise HwrError(f"--hidden: expected sizes like 1024 or 512,512,512, got {args.hidden!r}") from None
        params = {"hidden_layers": hidden, "context": args.context, "max_epochs": args.epochs,
                  "prior_scale": args.prior_scale, "seed": args.seed, "threads": args.threads,
                  "max_seconds": args.max_minutes * 60 if args.max_minutes else None,
                  "dropout": args.dropout, "input_noise": args.input_noise, "weight_decay": args.weight_decay,
                  "epoch_frames": args.epoch_frames}
        MlpEmission(**params).check_params()  # bad settings are refused before the lines are read
        train, valid = _read_splits(args)
        with directory_lock(args.output, "model directory"):
            train_mlp_hmm(train, args.init_model, args.output, valid_lines=valid, mlp_params=params,
                          input_kind=args.mlp_input, realign=args.realign, jobs=args.jobs,
                          resume=args.resume, log=print)
        print(f"model written to {args.output}")
        return 0
    mlp_only = [option for dest, default, option in args.mlp_options if getattr(args, dest) != default]
    if mlp_only:
        raise HwrError(f"{', '.join(mlp_only)}: options of --emission mlp; a GMM-HMM does not use them")
    train, valid = _read_splits(args)
    with directory_lock(args.output, "model directory"):
        return _train_gmm(args, train, valid)


def _train_gmm(args: argparse.Namespace, train, valid) -> int:
    from .model import MODEL_FILE, load_model
    from .train import TrainConfig, train_gmm_hmm

    frontend = _make_frontend(args)
    counts = None
    resuming = args.resume and (Path(args.output) / MODEL_FILE).is_file()  # as train_gmm_hmm decides
    if args.states_from and resuming:
        warn(f"--states-from {args.states_from} ignored: --resume keeps the saved states per character")
    if args.states_from and not resuming:  # a resumed run keeps its saved topology
        from .train import state_counts_from_alignments

        counts = state_counts_from_alignments(train, args.states_from, jobs=args.jobs)
        frontend = load_model(args.states_from).frontend
    config = TrainConfig(states=args.states, mixtures=args.mixtures, iterations=args.iterations,
                         init=args.init, method=args.method, state_counts=counts, jobs=args.jobs)
    train_gmm_hmm(train, args.output, config, valid_lines=valid, frontend=frontend,
                  init_model=args.init_model, resume=args.resume, log=print)
    print(f"model written to {args.output}")
    return 0


# ---------------------------------------------------------------------------------------
# align


def _add_align(subparsers) -> None:
    p = subparsers.add_parser(
        "align", parents=[dataset_parent()], help="forced alignment of lines with their transcriptions",
        description="Writes ALIGN_DIR/alignments.jsonl, one JSON object per line: id, text, n_frames, score, "
        "frame_shift, chars [{char, index, first_frame, last_frame, x_start, x_end}], words [{text, first_frame, "
        "last_frame, x_start, x_end}] (x in pixels of the original image), and ALIGN_DIR/states.npz: the HMM "
        "state of every frame (int32 array per line id).",
    )
    p.add_argument("--model", required=True, metavar="DIR", help="model directory")
    p.add_argument("-o", "--output", required=True, metavar="ALIGN_DIR", help="output directory")
    p.set_defaults(run=_run_align)


def _align_line(gray: np.ndarray, line: Line, model) -> tuple[dict, np.ndarray]:
    """(alignments.jsonl record, per-frame states) of one line; HwrError if it cannot be aligned."""
    from .align import force_align
    from .decode import frames_to_pixels

    ids = model.alphabet.encode(line.text)
    raw, pre = model.frontend.line_features(gray)
    feats = model.normalizer.transform(np.asarray(raw, dtype=np.float32)).astype(np.float32)
    result = force_align(model.emission, model.topology, model.transitions, feats, ids)
    if result is None:
        raise HwrError(f"{len(feats)} frames cannot hold its transcription")
    pixels = lambda a, b: frames_to_pixels(model, pre, len(feats), a, b)  # noqa: E731
    chars = [{"char": line.text[c.char_index], "index": c.char_index, "first_frame": c.first_frame,
              "last_frame": c.last_frame, **dict(zip(("x_start", "x_end"), pixels(c.first_frame, c.last_frame)))}
             for c in result.chars]
    words = [{"text": line.text[w.first_char:w.last_char + 1], "first_frame": w.first_frame,
              "last_frame": w.last_frame, **dict(zip(("x_start", "x_end"), pixels(w.first_frame, w.last_frame)))}
             for w in result.words]
    record = {"id": line.id, "text": line.text, "n_frames": len(feats), "score": result.score,
              "frame_shift": model.frontend.features.shift, "chars": chars, "words": words}
    return record, result.states


def _line_aligner(model_dir: str):
    """:func:`_align_line` with the model of ``model_dir`` (built once per process)."""
    import functools

    from .model import load_model

    return functools.partial(_align_line, model=load_model(model_dir))


def _run_align(args: argparse.Namespace) -> int:
    import json

    from .batch import map_line_images
    from .cluster import PerProcess

    model_dir = str(Path(args.model).absolute())
    aligner = PerProcess(_line_aligner, model_dir, built=_line_aligner(model_dir))
    lines = input_lines(args)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    done = 0
    with RecordFile(out / "alignments.jsonl") as jsonl, AtomicNpzWriter(out / "states.npz") as states:
        for line, (record, path) in map_line_images(lines, aligner, args.jobs, "alignment", "align",
                                                    with_line=True):
            jsonl.write(json.dumps(record, ensure_ascii=False))
            states.add(line.id, path)
            done += 1
        if done == 0:
            raise HwrError(f"no line could be aligned ({len(lines)} skipped)")
    print(f"aligned {done} lines into {out}" + (f" ({len(lines) - done} skipped)" if done < len(lines) else ""))
    return 0


# ---------------------------------------------------------------------------------------
# decode


def _add_decode(subparsers) -> None:
    from .decode import DEFAULT_BEAM, DEFAULT_MAX_ACTIVE, DEFAULT_UNK_BEAM, DEFAULT_UNK_MAX_ACTIVE

    p = subparsers.add_parser(
        "decode", parents=[dataset_parent()], help="recognise line images",
        description="Decodes each line and writes id<TAB>text as each result is produced (to -o FILE, or "
        "standard output). Search score: log p(x|W) + lm_weight * log P_LM(W) + word_penalty * |W| "
        "+ glue_penalty * (joins without a space between letters or digits) (+ unk_penalty per "
        "out-of-lexicon word); without --lexicon, a character loop whose per-character term is "
        "-char_penalty. Weights and penalties not given here or in decoder.json take calibrated defaults "
        "for the model's emission type (GMM or MLP) and the mode; `hybrid-hwr tune` fits them to a model.",
    )
    p.add_argument("--model", metavar="DIR",
                   help="model directory (default: the bundled model); its decoder.json, if any, gives the "
                   "default decoding settings, which the options below override")
    p.add_argument("--lexicon", metavar="FILE", help="lexicon, one word a line (default: character loop)")
    p.add_argument("--lm", metavar="FILE", help="word n-gram LM (.arpa, .arpa.gz or KenLM binary)")
    p.add_argument("--char-lm", metavar="FILE", help="character n-gram LM: lexicon-free decoding, or with "
                   "--unk-penalty the speller of out-of-lexicon words")
    p.add_argument("--lm-weight", type=finite_float, help="LM scale (default: calibrated, e.g. 6 for an MLP, 16 for a GMM)")
    p.add_argument("--word-penalty", type=finite_float,
                   help="added per word (negative: fewer words; default: calibrated per model type and mode)")
    p.add_argument("--glue-penalty", type=finite_float,
                   help="added per pair of words that touch without a space, letters or digits on both sides "
                   "(negative: a cost; punctuation joins are free; default: calibrated)")
    p.add_argument("--unk-penalty", type=finite_float,
                   help="allow out-of-lexicon words (spelled by --char-lm), adding this to the score of each "
                   "(negative: a cost; default: strict lexicon)")
    p.add_argument("--char-penalty", type=finite_float,
                   help="character insertion penalty without lexicon (positive: fewer characters; default 0)")
    p.add_argument("--beam", type=positive_float, help=f"pruning beam (default {DEFAULT_BEAM})")
    p.add_argument("--max-active", type=int_upto(100_000),
                   help=f"at most this many tokens per frame (default {DEFAULT_MAX_ACTIVE})")
    p.add_argument("--unk-beam", type=positive_float,
                   help=f"open vocabulary: pruning beam of the tokens inside out-of-lexicon words "
                   f"(default {DEFAULT_UNK_BEAM:g}; never wider than --beam)")
    p.add_argument("--unk-max-active", type=int_upto(100_000),
                   help=f"open vocabulary: at most this many tokens inside out-of-lexicon words per frame "
                   f"(default {DEFAULT_UNK_MAX_ACTIVE})")
    p.add_argument("--prior-scale", type=non_negative_float, metavar="KAPPA",
                   help="hybrid MLP models: scaled likelihoods log p(s|x) - KAPPA log p(s) (default: decoder.json's "
                   "prior_scale, else the network's own, normally 1; --emissions files written by `hybrid-hwr emissions` "
                   "record the scale of their scores and are moved to this one)")
    p.add_argument("--nbest", type=int_upto(1000), default=1, help="n-best list length (written with --details)")
    p.add_argument("--lang", choices=LANGUAGES,
                   help="tokeniser conventions for joining lexicon words into text (default en)")
    p.add_argument("--emissions", metavar="FILE.npz|DIR",
                   help="decode these frame x state log-likelihood matrices (one per line id, in an .npz or as "
                   "DIR/<id>.npy) instead of images")
    p.add_argument("--ctc", metavar="ALPHABET.txt",
                   help="--emissions are a CTC network's outputs: one column per line of ALPHABET.txt (one "
                   "symbol a line, <space> or a single space for the space); rows are probabilities or "
                   "log-probabilities (see --log-softmax)")
    p.add_argument("--blank", type=int, default=0, help="with --ctc: line index of the blank (default 0)")
    p.add_argument("--log-softmax", action="store_true", help="with --ctc: the outputs are logits")
    p.add_argument("-o", "--output", metavar="hyp.tsv", help="hypotheses file (default: standard output)")
    p.add_argument("--details", metavar="FILE.jsonl", help="also write scores, word spans, n-best, one JSON per line "
                   "(skipped lines as {\"id\", \"skipped\": reason})")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted decode: skip the ids already in -o FILE and append to it")
    page = p.add_argument_group("recognised text on its pages (lines cut by `hybrid-hwr import`)")
    page.add_argument("--page-xml", metavar="DIR", help="write DIR/<page>.xml, PAGE 2019: each line's polygon, "
                      "baseline, words with their boxes and confidences")
    page.add_argument("--alto", metavar="DIR", help="write DIR/<page>.xml, ALTO v4 (pixel units)")
    page.add_argument("--layout", metavar="FILE", help="the layout.json of `hybrid-hwr import` (default: the one "
                      "next to each split file or its image folder)")
    p.set_defaults(run=_run_decode)


def _run_decode(args: argparse.Namespace) -> int:
    import json

    from .batch import map_line_images, progress
    from .decode import DecoderSettings, emissions_prior_scale, image_decoder, load_recognizer, settings_line

    # decode's options are the decoder's knobs (DecoderSettings' fields, nbest apart: --nbest has a default)
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(DecoderSettings) if f.name != "nbest"}
    recorded_scale = emissions_prior_scale(args.emissions) if args.emissions else None
    if args.emissions and args.prior_scale is not None and recorded_scale is None:
        raise HwrError(f"--prior-scale: {args.emissions} does not record the prior scale of its scores (it was not "
                       "written by `hybrid-hwr emissions`): pass it to the program that computed them")
    if args.emissions and args.inputs:
        raise HwrError("--emissions decodes the matrices of its file: give no images or split files with it")
    if args.resume and not args.output:
        raise HwrError("--resume continues the output file: give it with -o FILE")
    if args.emissions and args.jobs > 1:
        warn("--jobs ignored: decode --emissions searches its matrices in one process")
    if args.nbest > 1 and not args.details:
        warn(f"--nbest {args.nbest}: the n-best lists are written to --details FILE only; -o gets the best text")
    if args.emissions and args.scheduler:
        raise HwrError("--scheduler decodes line images on a cluster; --emissions files are decoded here: "
                       "compute them with `hybrid-hwr emissions --scheduler ...` and decode without --scheduler")
    page_outputs = [(fmt, folder) for fmt, folder in (("page", args.page_xml), ("alto", args.alto)) if folder]
    if args.page_xml and args.alto and Path(args.page_xml).resolve() == Path(args.alto).resolve():
        raise HwrError("--page-xml and --alto write DIR/<page>.xml each: give them different folders")
    if page_outputs and args.resume:
        raise HwrError("--page-xml and --alto write whole pages: they cannot continue a --resume'd decode")
    if page_outputs and args.emissions and not args.layout:
        raise HwrError("--page-xml and --alto with --emissions need --layout FILE (the layout.json of the import)")
    all_lines = None if args.emissions or args.ctc else input_lines(args)   # a bad split file fails before the model loads
    locations = None
    if page_outputs:   # checked before decoding: a line without a page is an error now, not after an hour
        from .page_output import find_locations

        ids = None if args.emissions else [line.id for line in all_lines]
        locations = find_locations(args.inputs, args.images, args.layout, ids)
    if args.ctc:
        recognizer, settings = _ctc_recognizer(args, given)
        print(f"{PROG}: CTC outputs over {args.ctc}; decoding: {settings.describe('ctc')}", file=sys.stderr)
    else:
        if args.log_softmax or args.blank != 0:
            raise HwrError("--blank and --log-softmax describe CTC outputs: they need --ctc")
        recognizer, settings = load_recognizer(args.model, nbest=args.nbest, **given)
        print(f"{PROG}: {settings_line(args.model, recognizer, settings)}", file=sys.stderr)
        if recognizer.prior_shift(recorded_scale) is not None:
            print(f"{PROG}: {args.emissions} holds scores of prior scale {recorded_scale:g}: "
                  f"moved to {recognizer.model.emission.prior_scale:g}", file=sys.stderr)
    if recognizer.lexicon_message:  # lexicon words the model cannot spell are reported, not silently dropped
        warn(recognizer.lexicon_message)
    decoded = []
    finished = _finished_ids(args) if args.resume else set()
    details = _details_file(args.details, finished if args.resume else None) if args.details else None

    def skipped(line_id, reason):   # also recorded in the details, so a reader knows which lines are missing
        if details is not None:
            details.write(json.dumps({"id": line_id, "skipped": reason}, ensure_ascii=False))

    if args.ctc:
        results = progress(_ctc_results(recognizer, args.emissions, finished, skipped), desc="decode")
    elif args.emissions:
        def bad_array(line_id, message):
            warn(f"skipped line {line_id}: {message}")
            skipped(line_id, message)

        results = progress(((Line(line_id, "", Path(args.emissions)), hyp)
                            for line_id, hyp in recognizer.decode_emissions(args.emissions, bad_array, finished)),
                           desc="decode")
    else:
        lines = [line for line in all_lines if line.id not in finished]
        # built once per worker process from the model directory, whether forked or on a cluster
        decode = image_decoder(args.model, args.nbest, given, built=recognizer.decode_image)
        results = map_line_images(lines, decode, args.jobs, "decoding", "decode", on_skip=skipped)
    out = RecordFile(args.output, append=args.resume) if args.output else None
    done = 0
    try:
        for line, hyp in results:
            # details first: a kill between the two writes leaves a record that --resume drops and redoes
            if details is not None:
                details.write(json.dumps({"id": line.id, **hyp.to_dict()}, ensure_ascii=False))
            # lexicon words are tokens ("l'", "État", ","): written text joins them back; one write per line
            row = f"{line.id}\t{settings.display_text(hyp)}"
            if out is None:
                sys.stdout.write(row + "\n")
                sys.stdout.flush()
            else:
                out.write(row)
            if locations is not None:
                decoded.append((line.id, settings.display_text(hyp), hyp))
            done += 1
    finally:
        if out is not None:
            out.close()
        if details is not None:
            details.close()
    if done == 0 and not finished:
        raise HwrError("no line could be decoded")
    if page_outputs:
        from .page_output import write_pages

        for fmt, folder in page_outputs:
            written = write_pages(decoded, locations, folder, fmt)
            print(f"{PROG}: wrote {len(written)} {'PAGE' if fmt == 'page' else 'ALTO'} file(s) to {folder}",
                  file=sys.stderr)
    if finished:
        print(f"{PROG}: resumed: {len(finished)} lines were already in {args.output}, {done} decoded now",
              file=sys.stderr)
    return 0


def _finished_ids(args: argparse.Namespace) -> set[str]:
    """Ids already written to decode's -o file; a last line cut short by an interruption is removed."""
    if not args.output:
        raise HwrError("--resume continues the output file: give it with -o FILE")
    try:
        return {row.split("\t", 1)[0] for row in complete_records(args.output).decode("utf-8").splitlines() if row}
    except UnicodeDecodeError:
        raise HwrError(f"{args.output}: not a UTF-8 hypotheses file; cannot resume it") from None


def _details_file(path, finished: set[str] | None) -> RecordFile:
    """decode's --details file; when resuming, only the records of lines in -o are kept (the
    others, e.g. skipped lines or a record written just before a kill, are tried again)."""
    import json

    if finished is None:
        return RecordFile(path)
    kept = []
    for row in complete_records(path).decode("utf-8", errors="replace").splitlines():
        try:
            if json.loads(row).get("id") in finished:
                kept.append(row + "\n")
        except (json.JSONDecodeError, AttributeError):
            continue
    atomic_write_text(path, "".join(kept))
    return RecordFile(path, append=True)


def _ctc_recognizer(args, given):
    from .ctc import CtcModel
    from .decode import DecoderSettings, resolve_model_dir

    if not args.emissions:
        raise HwrError("--ctc reads a network's outputs: give them with --emissions FILE.npz|DIR")
    if given.get("prior_scale") is not None:
        raise HwrError("--prior-scale does not apply to CTC outputs")
    settings = DecoderSettings.load(resolve_model_dir(args.model)) if args.model else DecoderSettings()
    settings = settings.replace(**{k: v for k, v in given.items() if v is not None})
    model = CtcModel.from_file(args.ctc, args.blank, args.log_softmax)
    return settings.recognizer(model, nbest=args.nbest), settings


def _ctc_results(recognizer, emissions, finished=frozenset(), on_skip=None):
    """(Line, Hypothesis) of every CTC output not in ``finished``; a bad array is reported and skipped."""
    from .decode import emission_arrays

    for line_id, x, problem in emission_arrays(emissions):
        if line_id in finished:
            continue
        if problem is None:
            try:
                yield Line(line_id, "", Path(emissions)), recognizer.decode_loglik(x)
                continue
            except HwrError as exc:
                problem = f"{emissions}: array {line_id!r}: {exc}"
        warn(f"skipped line {line_id}: {problem}")
        if on_skip is not None:
            on_skip(line_id, problem)


# ---------------------------------------------------------------------------------------
# emissions


def _add_emissions(subparsers) -> None:
    p = subparsers.add_parser(
        "emissions", parents=[dataset_parent()], help="write a model's frame x state emission scores to a .npz",
        description="Computes, for each line, the (frames x states) natural-log emission scores the decoder "
        "uses: GMM log-likelihoods, or an MLP's scaled likelihoods log p(s|x) - prior_scale log p(s). "
        "The file (float32, one array per line id) is the format `decode --emissions` reads, so a "
        "parameter sweep decodes it many times without recomputing features and emissions.",
    )
    p.add_argument("--model", metavar="DIR", help="model directory (default: the bundled model)")
    p.add_argument("--prior-scale", type=non_negative_float, metavar="KAPPA",
                   help="hybrid MLP models: log p(s|x) - KAPPA log p(s) (default: the model directory's "
                   "decoder.json, else the network's own, normally 1)")
    p.add_argument("-o", "--output", required=True, metavar="FILE.npz", help="output file (written atomically)")
    p.set_defaults(run=_run_emissions)


def _emission_scores(gray: np.ndarray, model) -> np.ndarray:
    """The (frames x states) emission scores of one line image, float32."""
    feats, _ = model.features(gray)
    return model.log_likelihoods(feats).astype(np.float32)


def _emission_scorer(model_dir: str, prior_scale):
    """:func:`_emission_scores` of the model in ``model_dir`` (built once per process)."""
    import functools

    from .model import load_model

    model = load_model(model_dir)
    if prior_scale is not None:
        model = model.with_prior_scale(prior_scale)
    return functools.partial(_emission_scores, model=model)


def _run_emissions(args: argparse.Namespace) -> int:
    from .batch import map_line_images
    from .cluster import PerProcess
    from .decode import PRIOR_SCALE_ARRAY, DecoderSettings, resolve_model_dir

    model_dir = resolve_model_dir(args.model).absolute()
    # the kappa a decode of this model directory would use, so both paths score alike
    prior_scale = args.prior_scale
    if prior_scale is None:
        prior_scale = DecoderSettings.load(model_dir, keys=("prior_scale",)).prior_scale
    scorer = _emission_scorer(str(model_dir), prior_scale)
    model = scorer.keywords["model"]
    lines = input_lines(args)
    output = Path(args.output)
    # a cluster worker loads the model once for all its lines
    scores_of = PerProcess(_emission_scorer, str(model_dir), prior_scale, built=scorer)
    with AtomicNpzWriter(output) as writer:
        for line, scores in map_line_images(lines, scores_of, args.jobs, "emission scoring", "emissions"):
            writer.add(line.id, scores)
        written = writer.count
        skipped = len(lines) - written
        if written == 0:
            raise HwrError(f"no line could be processed ({skipped} skipped); {output} not written")
        if model.emission.prior_scale is not None:   # decode --emissions moves the scores to its own kappa
            writer.add(PRIOR_SCALE_ARRAY, np.array([model.emission.prior_scale]))
    print(f"wrote emission scores of {written} lines ({model.topology.n_emitting} states) to {output}"
          + (f" ({skipped} skipped)" if skipped else ""))
    return 0


# ---------------------------------------------------------------------------------------
# demo


def _add_demo(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="decode the bundled test lines with the bundled model, print CER and WER",
        description="Decodes the bundled sample's test lines (writers not seen in training) with the "
        "default model (or --model DIR and its decoder.json), prints each reference and hypothesis, then "
        "corpus CER, WER and the time taken. --output DIR also writes DIR/index.html: every line image "
        "with its recognised word boxes, hypothesis and reference.",
    )
    p.add_argument("--model", metavar="DIR", help="model directory (default: the bundled default model)")
    p.add_argument("--output", metavar="DIR", help="also write DIR/index.html and the line images")
    p.add_argument("--limit", type=positive_int, metavar="N", help="decode only the first N test lines")
    p.add_argument("--jobs", type=int_upto(MAX_JOBS), metavar="N", help="run over N processes (default 2)")
    p.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from . import demo

    demo.run_demo(args.model, output=args.output, limit=args.limit, jobs=args.jobs)
    return 0



# ---------------------------------------------------------------------------------------
# build-lm


def _add_build_lm(subparsers) -> None:
    p = subparsers.add_parser(
        "build-lm", help="build a KenLM n-gram model (word or character) from text corpora",
        description="Tokenises the corpora (hybrid_hwr.text: the tokeniser of the lexicons and LMs) and runs "
        "KenLM's lmplz (modified Kneser-Ney; --discount_fallback is applied when a small corpus needs it).",
    )
    p.add_argument("corpora", nargs="+", metavar="CORPUS", help="text files (.txt, .xz, .gz, .bz2) or split files (.tsv)")
    p.add_argument("--order", type=positive_int, required=True, help="n-gram order")
    p.add_argument("-o", "--output", required=True, metavar="LM.arpa.gz", help=".arpa.gz, .arpa, .binary or .klm")
    p.add_argument("--vocab", metavar="LEXICON", help="restrict the vocabulary to this lexicon")
    p.add_argument("--prune", metavar="C1,C2,...", help="count thresholds per order, e.g. 0,1,1")
    p.add_argument("--unit", choices=("word", "char"), default="word", help="word or character LM")
    p.add_argument("--lang", choices=LANGUAGES, default="en",
                   help="tokeniser conventions: en, fr, or generic for any other language (default en)")
    p.add_argument("--memory", default="2G", help="lmplz -S memory (default 2G)")
    p.add_argument("--binary", metavar="FILE", help="also write a KenLM binary")
    p.set_defaults(run=_run_build_lm)


def _run_build_lm(args: argparse.Namespace) -> int:
    from .lm import build_lm

    try:
        prune = [int(c) for c in args.prune.split(",")] if args.prune else None
    except ValueError:
        raise HwrError(f"--prune: expected counts like 0,1,1, got {args.prune!r}") from None
    out = build_lm(args.corpora, args.order, args.output, lang=args.lang, unit=args.unit, vocab=args.vocab,
                   prune=prune, memory=args.memory, binary_path=args.binary)
    print(f"wrote {out}")
    return 0


# ---------------------------------------------------------------------------------------
# tune


def _add_tune(subparsers) -> None:
    from .tune import DEFAULT_TUNE_BEAM, OBJECTIVES, TUNE_BEAMS

    p = subparsers.add_parser(
        "tune", help="fit the decoding settings of a model on validation lines (writes MODEL/decoder.json)",
        description="Computes the validation lines' emission scores once (or reads them from --emissions), then "
        "for every decoding mode the "
        "given files allow (character loop, character LM, lexicon, lexicon + LM, open vocabulary) searches "
        "the LM weight, word, glue, unknown-word and character penalties (and an MLP's prior scale) one at a "
        "time from the calibrated defaults, widening the range when the best is on its edge. Prints the best "
        "of each mode and writes the best mode's settings to MODEL/decoder.json; points already decoded "
        "(MODEL/tune/points.jsonl) are reused by a rerun.",
    )
    p.add_argument("--model", metavar="DIR", help="model directory (its decoder.json is rewritten); with --ctc "
                   "the folder whose decoder.json is written (default: the alphabet file's folder)")
    p.add_argument("--valid", required=True, nargs="+", metavar="DATA.tsv", help="validation split file(s)")
    p.add_argument("--emissions", metavar="FILE.npz|DIR", help="the validation lines' emission scores (one array "
                   "per line id) instead of their images: with --model, scores over its states (`hybrid-hwr "
                   "emissions`, or the frame average of several networks'); with --ctc, the network's outputs")
    ctc = p.add_argument_group("a CTC network's outputs (modes: character loop, character LM, lexicon, lexicon + LM)")
    ctc.add_argument("--ctc", metavar="ALPHABET.txt", help="tune the decoding of CTC outputs over this alphabet")
    ctc.add_argument("--blank", type=int_upto(100_000, low=0), default=0, help="with --ctc: line index of the blank (0)")
    ctc.add_argument("--log-softmax", action="store_true", help="with --ctc: the outputs are logits")
    p.add_argument("--images", metavar="DIR", help="read the images of the split files from DIR/<id>.png")
    p.add_argument("--lexicon", metavar="FILE", help="lexicon (lexicon modes)")
    p.add_argument("--lm", metavar="FILE", help="word n-gram LM (with --lexicon)")
    p.add_argument("--char-lm", metavar="FILE", help="character LM (character-LM and open-vocabulary modes)")
    p.add_argument("--lang", choices=LANGUAGES, help="tokeniser of decoding and scoring (default: decoder.json's, "
                   "else generic)")
    p.add_argument("--modes", nargs="+", metavar="MODE", choices=("charloop", "charlm", "lexicon", "lexicon_lm",
                                                                  "open_vocab"),
                   help="only these modes (default: every mode the files allow)")
    p.add_argument("--beam", type=positive_float, help=f"search beam (default: decoder.json's, else {DEFAULT_TUNE_BEAM:g}; "
                   f"GMM-HMMs {TUNE_BEAMS['gmm']:g})")
    p.add_argument("--rounds", type=int_upto(100), default=2, help="coordinate-search rounds (default 2)")
    p.add_argument("--objective", choices=OBJECTIVES, default="wer",
                   help="what the search minimises first, the other rate breaking ties (default wer; cer for a "
                        "system judged by its characters)")
    p.add_argument("--limit", type=positive_int, metavar="N", help="use only the first N validation lines")
    p.add_argument("--allow-outside-paths", action="store_true",
                   help="let line ids name images outside the image folder (refused by default)")
    add_scaling_options(p)
    p.set_defaults(run=_run_tune)


def read_transcriptions_as_lines(splits, limit=None) -> list[Line]:
    """The ``(id, text)`` records of split files as lines without images (for outputs computed elsewhere)."""
    lines = [Line(line_id, text, Path(split)) for split in splits for line_id, text in read_transcriptions(split)]
    lines = lines[:limit] if limit is not None else lines
    if not lines:
        raise HwrError("no validation lines")
    return lines


_MODE_NAMES = {"charloop": "character loop", "charlm": "character LM", "lexicon": "lexicon",
               "lexicon_lm": "lexicon + LM", "open_vocab": "open vocabulary"}


def _run_tune(args: argparse.Namespace) -> int:
    from .decode import resolve_model_dir
    from .tune import tune

    if args.emissions:
        if args.images:
            raise HwrError("--images: the validation lines' scores come from --emissions, not from images")
        if args.scheduler:
            raise HwrError("--scheduler tunes from line images on a cluster; --emissions files are tuned here: "
                           "use --jobs")
    if args.ctc:
        from .tune import tune_ctc

        if not args.emissions:
            raise HwrError("--ctc ALPHABET.txt and --emissions FILE.npz go together (a CTC network's outputs)")
        lines = read_transcriptions_as_lines(args.valid, args.limit)
        modes = [_MODE_NAMES[m] for m in args.modes] if args.modes else None
        tune_ctc(args.ctc, args.emissions, lines, out_dir=args.model, blank=args.blank, log_softmax=args.log_softmax,
                 lexicon=args.lexicon, lm=args.lm, char_lm=args.char_lm, lang=args.lang, modes=modes,
                 beam=args.beam, jobs=args.jobs, rounds=args.rounds, objective=args.objective)
        return 0
    if args.blank or args.log_softmax:
        raise HwrError("--blank and --log-softmax describe CTC outputs: they need --ctc")
    if not args.model:
        raise HwrError("tune needs --model DIR (or --ctc ALPHABET.txt --emissions FILE.npz for a CTC network)")
    model_dir = resolve_model_dir(args.model)
    if args.emissions:
        lines = read_transcriptions_as_lines(args.valid, args.limit)
    else:
        lines = read_inputs(args.valid, images=args.images, limit=args.limit)
    if not lines:
        raise HwrError("no validation lines")
    modes = [_MODE_NAMES[m] for m in args.modes] if args.modes else None
    tune(model_dir, lines, lexicon=args.lexicon, lm=args.lm, char_lm=args.char_lm, lang=args.lang, modes=modes,
         beam=args.beam, jobs=args.jobs, rounds=args.rounds, emissions=args.emissions, objective=args.objective)
    return 0


# ---------------------------------------------------------------------------------------
# ensemble


def _add_ensemble(subparsers) -> None:
    p = subparsers.add_parser(
        "ensemble", help="join hybrid MLP-HMMs trained on the same HMM's alignments into one model",
        description="Writes a model directory whose emission scores are the mean of the networks' scaled "
        "likelihoods, frame by frame (networks trained with `train --emission mlp --init-model` of the same "
        "model, with other seeds, data or shapes). The first model gives the transitions and its decoder.json "
        "(with its lexicon and LM files) the starting settings; run `hybrid-hwr tune` on the result, since "
        "the mean scores are smoother than one network's. decode, tune, align and emissions read it like any "
        "model.",
    )
    p.add_argument("models", nargs="+", metavar="MODEL_DIR", help="two or more hybrid model directories")
    p.add_argument("-o", "--output", required=True, metavar="MODEL_DIR", help="model directory to write")
    p.set_defaults(run=_run_ensemble)


def _run_ensemble(args: argparse.Namespace) -> int:
    from .model import ensemble_model, load_model

    out = Path(args.output)
    sources = [Path(m).resolve() for m in args.models]
    if out.resolve() in sources:
        raise HwrError(f"--output {out} is one of the models: write the ensemble to a new directory")
    model = ensemble_model([load_model(m) for m in args.models], names=list(args.models))
    settings = _copied_decoder_settings(Path(args.models[0]), out)
    model.save(out, settings)
    n = len(model.emission.members)
    print(f"wrote an ensemble of {n} networks ({model.emission.n_parameters:,} parameters, "
          f"{model.emission.n_states} states) to {out}" + ("; decoding settings from " + args.models[0]
                                                           if settings is not None else ""))
    return 0


def _copied_decoder_settings(source: Path, out: Path):
    """The decoder.json settings of ``source`` with its lexicon and LM files copied into ``out``
    (files outside ``source`` stay where they are); None when it has no decoder.json."""
    import shutil

    from .decode import DECODER_FILE, DecoderSettings

    if not (source / DECODER_FILE).is_file():
        return None
    settings = DecoderSettings.load(source)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for key in ("lexicon", "lm", "char_lm"):
        path = getattr(settings, key)
        if path is not None and Path(path).is_relative_to(source):   # named in decoder.json relative to it
            target = out / Path(path).name
            shutil.copyfile(path, target)
            files[key] = target
    return settings.replace(**files) if files else settings


# ---------------------------------------------------------------------------------------
# split


def _add_split(subparsers) -> None:
    p = subparsers.add_parser(
        "split", help="split a dataset into train/valid/test, pages (or writers) kept whole",
        description="Writes DIR/train.tsv, DIR/valid.tsv and DIR/test.tsv from one split file (e.g. the "
        "all.tsv of `hybrid-hwr import`) and links DIR/lines to its images. Lines of one group never "
        "straddle two splits: by default a group is the id without its last '_' part (the page of import's "
        "<page>_<line> ids); --group-by REGEX takes the regex's first group in the id instead. Deterministic "
        "for a seed.",
    )
    p.add_argument("dataset", metavar="DATA.tsv", help="split file to split (id<TAB>text)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="folder of the new split files")
    p.add_argument("--valid", type=non_negative_float, default=0.1, metavar="F", help="validation share (0.1)")
    p.add_argument("--test", type=non_negative_float, default=0.1, metavar="F", help="test share (0.1)")
    p.add_argument("--group-by", metavar="REGEX", help="regex whose first group (or match) in an id is its group")
    p.add_argument("--seed", type=any_int, default=0, help="shuffling seed (0)")
    p.add_argument("--images", metavar="DIR", help="image folder of the dataset (default: DATA.tsv's lines/)")
    p.set_defaults(run=_run_split)


def _run_split(args: argparse.Namespace) -> int:
    from .split import split_dataset

    counts = split_dataset(args.dataset, args.output, args.valid, args.test, args.group_by, args.seed, args.images)
    print(f"wrote {args.output}: " + ", ".join(f"{name} {n} lines" for name, n in counts.items()))
    return 0


# ---------------------------------------------------------------------------------------
# lexicon


def _add_lexicon(subparsers) -> None:
    p = subparsers.add_parser(
        "lexicon", help="build a lexicon (one word a line) from text corpora, with the LMs' tokeniser",
        description="Counts the tokens of the corpora with the tokeniser of the LMs and the WER "
        "(hybrid_hwr.text: punctuation marks are words, --lang's clitic/elision rules) and writes the most "
        "frequent first (ties in code-point order). --alphabet-of MODEL_DIR drops words the model cannot "
        "write. Use the same --lang for build-lm and evaluate.",
    )
    p.add_argument("corpora", nargs="+", metavar="CORPUS", help="text files (.txt, .xz, .gz, .bz2) or split files (.tsv)")
    p.add_argument("-o", "--output", required=True, metavar="LEX", help="lexicon file to write")
    p.add_argument("--size", type=positive_int, help="keep the N most frequent words (default: all)")
    p.add_argument("--min-count", type=positive_int, default=1, metavar="C", help="keep words seen C times or more")
    p.add_argument("--lang", choices=LANGUAGES, default="generic",
                   help="tokeniser conventions: en, fr, or generic for any other language (default generic)")
    p.add_argument("--alphabet-of", metavar="MODEL_DIR", help="keep only words this model's alphabet can write")
    p.set_defaults(run=_run_lexicon)


def _run_lexicon(args: argparse.Namespace) -> int:
    from .lexicon import count_tokens, most_frequent, save_lexicon, split_by_alphabet

    counts = count_tokens(args.corpora, args.lang)
    words = most_frequent(counts, min_count=args.min_count)
    dropped = ""
    if args.alphabet_of:
        from .model import load_model

        words, rejected = split_by_alphabet(words, load_model(args.alphabet_of).alphabet)
        if rejected:
            dropped = f"; {len(rejected)} words with characters outside the model's alphabet dropped"
    if args.size is not None:
        words = words[: args.size]
    if not words:
        raise HwrError("the corpora hold no word to put in the lexicon")
    save_lexicon(words, args.output)
    seen = sum(counts[w] for w in words)
    print(f"wrote {len(words)} words to {args.output} (of {len(counts)} token types, "
          f"{100 * seen / max(sum(counts.values()), 1):.1f} % of the corpus tokens{dropped})")
    return 0


# ---------------------------------------------------------------------------------------
# data


def _add_data(subparsers) -> None:
    p = subparsers.add_parser(
        "data", help="list the bundled lexicons, LMs, model and sample, or print the path of one",
        description="Without NAME: the bundled lexicons and language models (lexicons/ and lm/ of the "
        "repository, inside the package), the default model, the sample lines, where compiled kernels are "
        "cached and where KenLM's lmplz is. With NAME: only that file's path, for use in a command line, "
        "e.g. --lm \"$(hybrid-hwr data en-3gram.arpa.gz)\".",
    )
    p.add_argument("name", nargs="?", metavar="NAME", help="a bundled file name, e.g. fr-50k.txt")
    p.set_defaults(run=_run_data)


def _run_data(args: argparse.Namespace) -> int:
    from . import numba_cache, resources
    from .data import sample_dir
    from .decode import default_model_dir
    from .lm import find_kenlm_binary

    if args.name:
        print(resources.path(args.name))
        return 0
    for name in resources.names():
        size = resources.path(name).stat().st_size
        print(f"{name:<24} {size / 1e6:7.1f} MB  {resources.path(name)}")
    print(f"{'default model':<24} {'':10} {default_model_dir()}")
    print(f"{'sample lines':<24} {'':10} {sample_dir()}")
    print(f"{'kernel cache':<24} {'':10} {numba_cache.cache_location()}")
    try:
        lmplz = str(find_kenlm_binary("lmplz"))
    except HwrError as exc:
        lmplz = f"not built ({_one_line(exc).split(': ', 1)[-1]})"
    print(f"{'lmplz':<24} {'':10} {lmplz}")
    return 0


# ---------------------------------------------------------------------------------------
# crnn (the neural reference system; PyTorch is an optional extra)


def _add_crnn(subparsers) -> None:
    from .neural import CrnnConfig, TrainSettings

    config, settings = CrnnConfig(), TrainSettings()
    p = subparsers.add_parser(
        "crnn", help="a reference CRNN-CTC network: train it, write its outputs for decode --ctc",
        description="A small CRNN (4 conv blocks, 2-layer BLSTM, CTC) trained on the same split files and "
        "images as the HMM systems; its outputs are decoded by `hybrid-hwr decode --emissions FILE.npz --ctc "
        "DIR/alphabet.txt` with the same lexicons and LMs. Needs PyTorch (pip install 'hybrid_hwr[neural]').",
    )
    commands = p.add_subparsers(title="crnn commands", metavar="COMMAND")
    t = commands.add_parser(
        "train", help="train a CRNN with CTC; the best epoch on validation (greedy CER) is kept",
        description="Adam on the CTC loss; after every epoch the greedy CER of the validation lines decides "
        "(best epoch kept, learning rate halved after --halve-after epochs without improvement, stop after "
        "--patience). Writes DIR/crnn.pt, DIR/alphabet.txt, DIR/crnn.json (history) and DIR/checkpoint.pt "
        "(--resume continues from it).",
    )
    t.add_argument("train", nargs="+", metavar="TRAIN.tsv", help="training split file(s)")
    t.add_argument("--valid", required=True, nargs="+", metavar="VALID.tsv", help="validation split file(s)")
    t.add_argument("-o", "--output", required=True, metavar="DIR", help="model folder to write")
    t.add_argument("--images", metavar="DIR", help="read the images of the split files from DIR/<id>.png")
    t.add_argument("--limit", type=positive_int, metavar="N", help="use only the first N lines of each split")
    t.add_argument("--allow-outside-paths", action="store_true",
                   help="let line ids name images outside the image folder (refused by default)")
    t.add_argument("--height", type=int_upto(1024), default=config.height,
                   help=f"input height in pixels, a multiple of 16 (default {config.height})")
    t.add_argument("--preprocess", action="store_true",
                   help="feed the normalised line (contrast, slant, zones) instead of the height-resized image")
    t.add_argument("--hidden", type=int_upto(8192), default=config.hidden, help=f"BLSTM units per direction ({config.hidden})")
    t.add_argument("--dropout", type=non_negative_float, default=config.dropout, help=f"dropout ({config.dropout})")
    t.add_argument("--epochs", type=int_upto(100_000), default=settings.max_epochs, help=f"maximum epochs ({settings.max_epochs})")
    t.add_argument("--batch-size", type=int_upto(4096), default=settings.batch_size, help=f"lines per batch ({settings.batch_size})")
    t.add_argument("--learning-rate", type=positive_float, default=settings.learning_rate,
                   help=f"Adam's learning rate ({settings.learning_rate:g})")
    t.add_argument("--halve-after", type=int_upto(100_000), default=settings.halve_after,
                   help=f"halve the learning rate after N epochs without a better validation CER ({settings.halve_after})")
    t.add_argument("--patience", type=int_upto(100_000), default=settings.patience,
                   help=f"stop after N epochs without a better validation CER ({settings.patience})")
    t.add_argument("--max-minutes", type=positive_float, help="stop after this many minutes")
    t.add_argument("--seed", type=any_int, default=settings.seed, help="seed of the weights and batch order (0)")
    t.add_argument("--threads", type=int_upto(MAX_JOBS), default=settings.threads, help="CPU threads of PyTorch (1)")
    t.add_argument("--device", metavar="NAME", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    t.add_argument("--jobs", type=int_upto(MAX_JOBS), default=1, metavar="N", help="read and prepare images over N processes")
    t.add_argument("--resume", action="store_true", help="continue the run saved in DIR/checkpoint.pt")
    t.set_defaults(run=_run_crnn_train)
    g = commands.add_parser(
        "logits", help="write a trained CRNN's per-frame log-probabilities",
        description="One (frames, C) float32 array of log-probabilities per line id into FILE.npz (C = the "
        "blank + the characters, in the order of DIR/alphabet.txt, which is (re)written), for "
        "`hybrid-hwr decode --emissions FILE.npz --ctc DIR/alphabet.txt`.",
    )
    g.add_argument("model", metavar="DIR", help="model folder of `hybrid-hwr crnn train`")
    g.add_argument("inputs", nargs="+", metavar="DATA.tsv|IMAGE", help="split files and/or line images")
    g.add_argument("--images", metavar="DIR", help="read the images of split files from DIR/<id>.png")
    g.add_argument("--limit", type=positive_int, metavar="N", help="use only the first N lines")
    g.add_argument("--jobs", type=int_upto(MAX_JOBS), default=1, metavar="N", help="read and prepare images over N processes")
    g.add_argument("--allow-outside-paths", action="store_true",
                   help="let line ids name images outside the image folder (refused by default)")
    g.add_argument("-o", "--output", required=True, metavar="FILE.npz", help="output file (written atomically)")
    g.add_argument("--greedy", metavar="HYP.tsv", help="also write the best-path (greedy) text of each line: the "
                   "result of decode --ctc without lexicon, LM and character penalty, without the search")
    g.add_argument("--threads", type=int_upto(MAX_JOBS), default=1, help="CPU threads of PyTorch (1)")
    g.add_argument("--device", metavar="NAME", help="cpu, cuda, ... (default: cuda when available)")
    g.set_defaults(run=_run_crnn_logits)
    p.set_defaults(run=_run_crnn_missing, crnn_parser=p)


def _run_crnn_missing(args: argparse.Namespace) -> int:
    args.crnn_parser.print_usage(sys.stderr)
    print(f"{PROG}: error: crnn needs a command: train or logits", file=sys.stderr)
    return 2


def _run_crnn_train(args: argparse.Namespace) -> int:
    from .neural import CrnnConfig, TrainSettings, require_torch, train_crnn

    require_torch()
    config = CrnnConfig(height=args.height, preprocess=args.preprocess, hidden=args.hidden, dropout=args.dropout)
    config.check()
    settings = TrainSettings(max_epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                             halve_after=args.halve_after, patience=args.patience, seed=args.seed,
                             threads=args.threads, device=args.device,
                             max_seconds=args.max_minutes * 60 if args.max_minutes else None)
    train = read_inputs(args.train, images=args.images, limit=args.limit)
    valid = read_inputs(args.valid, images=args.images, limit=args.limit)
    with directory_lock(args.output, "model directory"):
        train_crnn(train, valid, args.output, config, settings, resume=args.resume, jobs=args.jobs)
    return 0


def _run_crnn_logits(args: argparse.Namespace) -> int:
    from .neural import require_torch, write_logits

    torch = require_torch()
    torch.set_num_threads(args.threads)
    write_logits(args.model, input_lines(args), args.output, jobs=args.jobs, device=args.device, greedy=args.greedy)
    return 0


# ---------------------------------------------------------------------------------------
# Entry point

_SUBCOMMANDS = (_add_import, _add_features, _add_train, _add_align, _add_emissions, _add_decode, _add_evaluate, _add_build_lm, _add_lexicon, _add_split, _add_ensemble, _add_tune, _add_crnn, _add_demo, _add_data)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Classical offline handwriting recognition (features, HMMs, lexicon + n-gram).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(title="subcommands", metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(subparsers)
    return parser


# the module whose Numba kernels a subcommand compiles first (a cold cache is announced)
_KERNELS = {_run_features: "features", _run_train: "gmm", _run_align: "align", _run_emissions: "features",
            _run_decode: "search", _run_demo: "search"}


def _announce_compilation(args: argparse.Namespace) -> None:
    module = _KERNELS.get(args.run)
    if module is not None:
        from . import numba_cache
        numba_cache.announce(module)


def _one_line(message: str) -> str:
    return " ".join(str(message).split()) or "unknown error"


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 error, 2 usage, 130 interrupted,
    143 terminated by SIGTERM)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors: argparse already printed
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    if getattr(args, "run", None) is None:
        parser.print_usage(sys.stderr)
        print(f"{PROG}: error: a subcommand is required", file=sys.stderr)
        return 2
    from .data import allow_outside_paths

    allow_outside_paths(getattr(args, "allow_outside_paths", False))   # for this run only
    previous = raise_on_sigterm() if threading.current_thread() is threading.main_thread() else None
    try:
        return _run(args)
    finally:
        allow_outside_paths(False)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace) -> int:
    """The subcommand, its errors as one line each."""
    try:
        _announce_compilation(args)
        with _cluster_session(args):
            return int(args.run(args) or 0)
    except HwrError as exc:
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        print(f"{PROG}: error: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return 143 if terminated else 130
    except BrokenPipeError:  # e.g. output piped into `head`: stop quietly
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        full = "disk full: " if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        print(f"{PROG}: error: {where}{full}{_one_line(exc.strerror or exc)}", file=sys.stderr)
    except MemoryError as exc:   # e.g. layers or batches far larger than the machine
        print(f"{PROG}: error: out of memory ({_one_line(exc) if str(exc) else 'no details'}); "
              "try smaller settings", file=sys.stderr)
    except Exception as exc:  # a bug: still one line, the traceback on request
        if os.environ.get("HYBRID_HWR_DEBUG"):
            raise
        print(f"{PROG}: error: internal error ({type(exc).__name__}: {_one_line(exc)}); "
              "set HYBRID_HWR_DEBUG=1 to see the traceback", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
