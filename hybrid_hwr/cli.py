"""The ``hybrid-hwr`` command line.

Every subcommand is one pair of functions: ``_add_<name>(subparsers)`` declares its
arguments (and ``set_defaults(run=_run_<name>)``), ``_run_<name>(args)`` does the work
and returns the exit status. Subcommands that read line datasets take the shared
input flags of :func:`dataset_parent` (``DATA.tsv|IMAGE...``, ``--images``, ``--limit``,
``--jobs``), so every such command reads its input the same way.

Errors: an :class:`HwrError` (bad input), an interrupt, or a failing write becomes one
line ``hybrid-hwr: error: ...`` on stderr and exit status 1 (130 for Ctrl-C); usage
errors exit with 2. In a batch, a line that cannot be processed is reported as one
``hybrid-hwr: warning: ...`` line and skipped; the others are processed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from . import __version__
from .data import Line, read_inputs, read_transcriptions
from .errors import HwrError

PROG = "hybrid-hwr"


# ---------------------------------------------------------------------------------------
# Helpers shared by subcommands


def warn(message: str) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr, flush=True)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def dataset_parent() -> argparse.ArgumentParser:
    """Input flags shared by every subcommand that reads lines (use as ``parents=[dataset_parent()]``)."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("input lines")
    group.add_argument(
        "inputs", nargs="+", metavar="DATA.tsv|IMAGE",
        help="split files <dir>/<split>.tsv (id<TAB>text, images <dir>/lines/<id>.png), IAM lines.txt files "
        "(with --images ROOT) and/or line images (id = file stem)",
    )
    group.add_argument(
        "--images", metavar="DIR", help="read the images of split files from DIR/<id>.png (IAM: the lines/ root)"
    )
    group.add_argument("--limit", type=positive_int, metavar="N", help="use only the first N lines")
    group.add_argument("--jobs", type=positive_int, default=1, metavar="N", help="run over N processes (default 1)")
    return parent


def input_lines(args: argparse.Namespace) -> list[Line]:
    """The lines named by the shared input flags."""
    lines = read_inputs(args.inputs, images=args.images, limit=args.limit)
    if not lines:
        raise HwrError("no input lines")
    return lines


def progress(iterable: Iterable, total: int | None = None, desc: str = "", unit: str = "line"):
    """A progress bar on stderr (shown when stderr is a terminal)."""
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, disable=None, dynamic_ncols=True)


def ordered_map(function: Callable, items: list, jobs: int = 1, initializer=None, initargs=()) -> Iterator:
    """``map(function, items)`` in input order, over ``jobs`` processes when jobs > 1."""
    if jobs <= 1 or len(items) <= 1:
        if initializer is not None:
            initializer(*initargs)
        yield from map(function, items)
        return
    import multiprocessing

    jobs = min(jobs, len(items))
    # fork: workers inherit the imported modules and compiled kernels (the default changes in Python 3.14)
    with multiprocessing.get_context("fork").Pool(jobs, initializer=initializer, initargs=initargs) as pool:
        yield from pool.imap(function, items, chunksize=max(1, min(8, len(items) // (4 * jobs))))


class AtomicNpzWriter:
    """Writes arrays one by one into ``path`` (.npz, no pickle); the file appears only on ``commit``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        self._zip = zipfile.ZipFile(self._tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
        self.count = 0

    def add(self, name: str, array: np.ndarray) -> None:
        with self._zip.open(f"{name}.npy", "w", force_zip64=True) as handle:
            np.lib.format.write_array(handle, np.ascontiguousarray(array), allow_pickle=False)
        self.count += 1

    def commit(self) -> None:
        self._zip.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        self._zip.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "AtomicNpzWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


# ---------------------------------------------------------------------------------------
# import


def _add_import(subparsers) -> None:
    p = subparsers.add_parser(
        "import", help="cut the text lines of PAGE/ALTO pages into a line dataset",
        description="Cut every text line of the PAGE or ALTO XML pages in PAGES_DIR along its polygon "
        "(outside set to white) and write DATASET_DIR/lines/<id>.png and DATASET_DIR/<split>.tsv.",
    )
    p.add_argument("pages", metavar="PAGES_DIR", help="directory with *.xml (PAGE or ALTO) and their page images")
    p.add_argument("-o", "--output", required=True, metavar="DATASET_DIR", help="dataset directory to write")
    p.add_argument("--split", default="all", metavar="NAME", help="name of the split file (default: all -> all.tsv)")
    p.add_argument("--scale", type=positive_float, default=1.0, help="resize pages by this factor before cutting")
    p.add_argument("--keep-empty", action="store_true", help="also write lines without transcription")
    p.set_defaults(run=_run_import)


def _run_import(args: argparse.Namespace) -> int:
    from .pages import import_pages

    if not args.split or "/" in args.split or args.split.startswith("."):
        raise HwrError(f"--split must be a plain name, got {args.split!r}")
    count = import_pages(
        args.pages, args.output, args.split, scale=args.scale, keep_empty=args.keep_empty,
        on_error=warn, progress=True,
    )
    print(f"imported {count} lines into {Path(args.output) / (args.split + '.tsv')}")
    return 0


# ---------------------------------------------------------------------------------------
# evaluate


def _add_evaluate(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="corpus CER and WER of hypotheses against references",
        description="Corpus CER and WER (errors summed over lines / reference length), with "
        "substitutions, deletions and insertions. With two hypothesis files: the difference B - A "
        "and its paired bootstrap confidence interval over lines.",
    )
    p.add_argument("reference", metavar="REF.tsv", help="reference transcriptions (id<TAB>text)")
    p.add_argument("hypotheses", nargs="+", metavar="HYP.tsv", help="one or two hypothesis files (id<TAB>text)")
    p.add_argument("--details", metavar="FILE", help="write per-line counts (TSV with a header) to FILE")
    p.add_argument("--resamples", type=positive_int, default=1000, metavar="N", help="bootstrap resamples (1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap random seed (0)")
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
        score = score_corpus(refs, read_transcriptions(hyp_path))
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
    _atomic_write_text(path, "\n".join(rows) + "\n")


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    import dataclasses

    from .features import FrontEnd

    frontend = FrontEnd()
    changes = {name: getattr(args, name) for name in ("kind", "width", "shift") if getattr(args, name) is not None}
    if changes:
        frontend = dataclasses.replace(frontend, features=dataclasses.replace(frontend.features, **changes))
    return frontend


_WORKER_FRONTEND = None


def _set_worker_frontend(frontend) -> None:
    global _WORKER_FRONTEND
    _WORKER_FRONTEND = frontend


def _line_features(line: Line):
    """(id, features or None, error message or None) of one line; never raises for a bad line."""
    from .data import load_image

    try:
        feats, _ = _WORKER_FRONTEND.line_features(load_image(line.image_path))
        feats = np.asarray(feats, dtype=np.float32)
        if feats.ndim != 2:
            raise HwrError(f"features have shape {feats.shape}, expected (frames, dims)")
        return line.id, feats, None
    except HwrError as exc:
        return line.id, None, str(exc)
    except (ValueError, IndexError, ArithmeticError, MemoryError) as exc:  # odd image the front end failed on
        return line.id, None, f"{line.image_path}: feature extraction failed ({type(exc).__name__}: {exc})"


def _run_features(args: argparse.Namespace) -> int:
    lines = input_lines(args)
    frontend = _make_frontend(args)
    output = Path(args.output)
    skipped = 0
    with AtomicNpzWriter(output) as writer:
        results = ordered_map(_line_features, lines, args.jobs, _set_worker_frontend, (frontend,))
        for line_id, feats, error in progress(results, total=len(lines), desc="features"):
            if error is not None:
                warn(f"skipped line {line_id}: {error}")
                skipped += 1
                continue
            writer.add(line_id, feats)
        if writer.count == 0:
            raise HwrError(f"no line could be processed ({skipped} skipped); {output} not written")
    print(f"wrote features of {writer.count} lines to {output}" + (f" ({skipped} skipped)" if skipped else ""))
    return 0


# ---------------------------------------------------------------------------------------
# Entry point

_SUBCOMMANDS = (_add_import, _add_evaluate, _add_features)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Classical offline handwriting recognition (features, HMMs, lexicon + n-gram).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(title="subcommands", metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(subparsers)
    return parser


def _one_line(message: str) -> str:
    return " ".join(str(message).split()) or "unknown error"


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 error, 2 usage, 130 interrupted)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors: argparse already printed
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    if getattr(args, "run", None) is None:
        parser.print_usage(sys.stderr)
        print(f"{PROG}: error: a subcommand is required", file=sys.stderr)
        return 2
    try:
        return int(args.run(args) or 0)
    except HwrError as exc:
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"{PROG}: error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. output piped into `head`: stop quietly
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"{PROG}: error: {where}{_one_line(exc.strerror or exc)}", file=sys.stderr)
    except Exception as exc:  # a bug: still one line, the traceback on request
        if os.environ.get("HYBRID_HWR_DEBUG"):
            raise
        print(f"{PROG}: error: internal error ({type(exc).__name__}: {_one_line(exc)}); "
              "set HYBRID_HWR_DEBUG=1 to see the traceback", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
