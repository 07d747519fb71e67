"""Collect a learning-curve experiment into one table (notebook 05 plots it).

    python recipes/learning_curve.py EXP_DIR [--full SPEC ...] [--lang fr] [-o notebooks/results/copiste_learning_curve]

EXP_DIR is a recipes/learning_curve.sh experiment: test.ref.tsv (the test lines every
system decoded) and one nN/ folder per size with train.tsv, SYSTEM.time ("CPU_SECONDS
WALL_SECONDS") and SYSTEM.nolm.tsv / SYSTEM.lm.tsv for SYSTEM in gmm, mlp, crnn. A decode
counts once its .results file exists (the recipe writes it when the decode is complete), so
a run still in progress gives the sizes finished so far.

--full adds the point of an existing run on all the training lines, as comma-separated
key=value pairs: system (gmm-hmm, mlp-hmm or crnn-ctc), lines, nolm and/or lm (hypothesis
files covering the reference lines; other lines are ignored), and optionally cpu and wall
(training seconds), total_cpu (with the GMM-HMM that gave an MLP its targets) or model (a
CRNN folder: cpu and wall from its crnn.json) and label (the source column, default
"full": e.g. another budget on fewer lines), e.g.
    --full system=crnn-ctc,lines=4852,model=exp/crnn/model,nolm=greedy.tsv,lm=lexicon_lm.tsv

Writes OUT.json ({"lang", "test_lines", "rows": [...]}) and OUT.tsv (one row per system,
size and mode: system, lines, with_lm, cer, wer, train_cpu_s, train_wall_s, total_cpu_s,
source). total_cpu_s is what the system costs from scratch: an MLP-HMM's includes the
GMM-HMM of its size.
"""

import argparse
import json
import sys
from pathlib import Path

from hybrid_hwr.data import read_transcriptions
from hybrid_hwr.errors import HwrError
from hybrid_hwr.metrics import score_corpus

SYSTEMS = {"gmm": "gmm-hmm", "mlp": "mlp-hmm", "crnn": "crnn-ctc"}
COLUMNS = ("system", "lines", "with_lm", "cer", "wer", "train_cpu_s", "train_wall_s", "total_cpu_s", "source")
FULL_KEYS = {"system", "lines", "nolm", "lm", "cpu", "wall", "total_cpu", "model", "label"}


def rates(refs, hyp_path: Path, lang: str) -> dict:
    """Corpus CER/WER (per cent) of a hypothesis file on the reference lines, all of which it must cover."""
    ref_ids = {line_id for line_id, _ in refs}
    hyps = {i: t for i, t in read_transcriptions(hyp_path) if i in ref_ids}
    missing = len(refs) - len(hyps)
    if missing:
        raise HwrError(f"{hyp_path}: no hypothesis for {missing} of the {len(refs)} reference lines")
    score = score_corpus(refs, hyps, lang)
    return {"cer": round(100 * score.cer, 2), "wer": round(100 * score.wer, 2)}


def read_time(path: Path) -> tuple[float, float]:
    """The (CPU seconds, wall seconds) pair a recipe wrote."""
    try:
        cpu, wall = (float(x) for x in path.read_text().split())
    except ValueError:
        raise HwrError(f"{path}: expected 'CPU_SECONDS WALL_SECONDS'") from None
    return cpu, wall


def curve_rows(exp: Path, refs, lang: str) -> list[dict]:
    """The rows of every finished training and decode under EXP_DIR/nN."""
    rows = []
    sizes = sorted((d for d in exp.glob("n*") if d.is_dir() and d.name[1:].isdigit()), key=lambda d: int(d.name[1:]))
    for size in sizes:
        lines = len(read_transcriptions(size / "train.tsv"))
        times = {s: read_time(size / f"{s}.time") for s in SYSTEMS if (size / f"{s}.time").is_file()}
        for short, system in SYSTEMS.items():
            if short not in times:
                continue
            cpu, wall = times[short]
            total = cpu + times["gmm"][0] if short == "mlp" and "gmm" in times else cpu
            for mode, with_lm in (("nolm", False), ("lm", True)):
                if (size / f"{short}.{mode}.results").is_file():
                    rows.append({"system": system, "lines": lines, "with_lm": with_lm,
                                 **rates(refs, size / f"{short}.{mode}.tsv", lang),
                                 "train_cpu_s": cpu, "train_wall_s": wall, "total_cpu_s": round(total, 1),
                                 "source": f"{size.name}"})
    return rows


def parse_full(spec: str) -> dict:
    fields = dict(part.split("=", 1) for part in spec.split(",") if "=" in part)
    if len(fields) != len(spec.split(",")) or not fields.keys() <= FULL_KEYS:
        raise HwrError(f"--full {spec!r}: expected comma-separated key=value pairs, keys among {sorted(FULL_KEYS)}")
    if fields.get("system") not in SYSTEMS.values():
        raise HwrError(f"--full {spec!r}: system must be one of {', '.join(SYSTEMS.values())}")
    if "lines" not in fields or not fields["lines"].isdigit():
        raise HwrError(f"--full {spec!r}: lines=N (the number of training lines) is needed")
    if not fields.keys() & {"nolm", "lm"}:
        raise HwrError(f"--full {spec!r}: give nolm=HYP.tsv and/or lm=HYP.tsv")
    return fields


def number(fields: dict, key: str):
    if key not in fields:
        return None
    try:
        return float(fields[key])
    except ValueError:
        raise HwrError(f"--full: {key}={fields[key]!r} is not a number") from None


def full_rows(fields: dict, refs, lang: str) -> list[dict]:
    """The rows of one run on all the training lines."""
    cpu, wall = number(fields, "cpu"), number(fields, "wall")
    if "model" in fields:
        info_path = Path(fields["model"]) / "crnn.json"
        if not info_path.is_file():
            raise HwrError(f"{info_path}: no such file (model= names a CRNN folder)")
        info = json.loads(info_path.read_text())
        cpu, wall = info["cpu_seconds"], info["seconds"]
    cpu, wall = (None if x is None else round(x, 1) for x in (cpu, wall))
    total = number(fields, "total_cpu")
    total = cpu if total is None else round(total, 1)
    rows = []
    for mode, with_lm in (("nolm", False), ("lm", True)):
        if mode in fields:
            rows.append({"system": fields["system"], "lines": int(fields["lines"]), "with_lm": with_lm,
                         **rates(refs, Path(fields[mode]), lang),
                         "train_cpu_s": cpu, "train_wall_s": wall, "total_cpu_s": total,
                         "source": fields.get("label", "full")})
    return rows


def collect(exp: Path, full_specs: list[str], lang: str) -> dict:
    refs = read_transcriptions(exp / "test.ref.tsv")
    if not refs:
        raise HwrError(f"{exp / 'test.ref.tsv'}: no reference lines")
    rows = curve_rows(exp, refs, lang)
    for spec in full_specs:
        rows += full_rows(parse_full(spec), refs, lang)
    rows.sort(key=lambda r: (list(SYSTEMS.values()).index(r["system"]), r["with_lm"], r["lines"]))
    return {"lang": lang, "test_lines": len(refs), "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("exp", help="a recipes/learning_curve.sh experiment folder")
    parser.add_argument("--full", action="append", default=[], metavar="SPEC",
                        help="a run on all the training lines (see the module's help)")
    parser.add_argument("--lang", default="fr")
    parser.add_argument("-o", "--output", default="notebooks/results/copiste_learning_curve",
                        help="output path without extension (.json and .tsv are written)")
    args = parser.parse_args()
    try:
        table = collect(Path(args.exp), args.full, args.lang)
    except HwrError as error:
        sys.exit(f"learning_curve.py: error: {error}")
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(table, indent=1) + "\n")
    lines = ["\t".join(COLUMNS)] + ["\t".join("" if r[c] is None else str(r[c]) for c in COLUMNS) for r in table["rows"]]
    out.with_suffix(".tsv").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
