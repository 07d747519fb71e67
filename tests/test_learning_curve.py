"""recipes/learning_curve.py builds the learning-curve table from the files a run leaves."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "recipes" / "learning_curve.py"
REFS = {"a": "le chat dort", "b": "un chien"}   # 20 characters, 5 words


def write_tsv(path: Path, texts: dict) -> Path:
    path.write_text("".join(f"{i}\t{t}\n" for i, t in texts.items()), encoding="utf-8")
    return path


def plant_size(exp: Path, n_lines: int, decodes: dict, times: dict) -> None:
    """One nN/ folder: train.tsv, SYSTEM.time and the finished (or unfinished) decodes."""
    size = exp / f"n{n_lines}"
    size.mkdir(parents=True)
    write_tsv(size / "train.tsv", {f"t{i}": "mot" for i in range(n_lines)})
    for system, (cpu, wall) in times.items():
        (size / f"{system}.time").write_text(f"{cpu} {wall}\n")
    for name, (texts, finished) in decodes.items():
        write_tsv(size / f"{name}.tsv", texts)
        if finished:
            (size / f"{name}.results").write_text("0 0\n")


def run(exp: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(exp), "-o", str(out), *extra],
                          capture_output=True, text=True, cwd=SCRIPT.parent.parent)


@pytest.fixture
def experiment(tmp_path):
    exp = tmp_path / "exp"
    exp.mkdir()
    write_tsv(exp / "test.ref.tsv", REFS)
    perfect, one_sub, half = dict(REFS), {"a": "le chas dort", "b": "un chien"}, {"a": "", "b": "un chien"}
    plant_size(exp, 3, {"gmm.nolm": (half, True), "gmm.lm": (one_sub, True),
                        "mlp.nolm": (one_sub, True), "mlp.lm": (perfect, False)},   # mlp.lm still decoding
               {"gmm": (10.0, 30.0), "mlp": (5.5, 12.0)})
    plant_size(exp, 12, {"crnn.nolm": (perfect, True)}, {"crnn": (40.0, 90.0)})
    full = tmp_path / "full"
    full.mkdir()
    (full / "crnn.json").write_text(json.dumps({"cpu_seconds": 764.4, "seconds": 3053.2}))
    write_tsv(tmp_path / "full_lm.tsv", {**one_sub, "c": "une ligne de plus"})   # lines outside REF ignored
    return exp, full, tmp_path / "full_lm.tsv"


def test_table_from_planted_runs(experiment, tmp_path):
    exp, full, full_lm = experiment
    out = tmp_path / "results" / "curve"
    done = run(exp, out, "--full", f"system=crnn-ctc,lines=4852,model={full},lm={full_lm}",
               "--full", f"system=mlp-hmm,lines=4852,nolm={full_lm},cpu=100,total_cpu=400,label=all lines")
    assert done.returncode == 0, done.stderr
    table = json.loads(out.with_suffix(".json").read_text())
    assert table["test_lines"] == 2
    rows = {(r["system"], r["lines"], r["with_lm"]): r for r in table["rows"]}
    # the unfinished decode (no .results) is left out, every finished one is in
    assert set(rows) == {("gmm-hmm", 3, False), ("gmm-hmm", 3, True), ("mlp-hmm", 3, False),
                         ("crnn-ctc", 12, False), ("crnn-ctc", 4852, True), ("mlp-hmm", 4852, False)}
    assert (rows["gmm-hmm", 3, False]["cer"], rows["gmm-hmm", 3, False]["wer"]) == (60.0, 60.0)
    assert (rows["gmm-hmm", 3, True]["cer"], rows["gmm-hmm", 3, True]["wer"]) == (5.0, 20.0)
    assert rows["crnn-ctc", 12, False]["cer"] == 0.0
    # an MLP-HMM's total cost includes the GMM-HMM that gave it its targets
    mlp = rows["mlp-hmm", 3, False]
    assert (mlp["train_cpu_s"], mlp["train_wall_s"], mlp["total_cpu_s"]) == (5.5, 12.0, 15.5)
    assert rows["gmm-hmm", 3, True]["total_cpu_s"] == 10.0
    crnn_full = rows["crnn-ctc", 4852, True]
    assert (crnn_full["train_cpu_s"], crnn_full["train_wall_s"], crnn_full["source"]) == (764.4, 3053.2, "full")
    assert (crnn_full["cer"], crnn_full["wer"]) == (5.0, 20.0)
    mlp_full = rows["mlp-hmm", 4852, False]
    assert (mlp_full["train_cpu_s"], mlp_full["total_cpu_s"], mlp_full["source"]) == (100.0, 400.0, "all lines")
    tsv = out.with_suffix(".tsv").read_text().splitlines()
    assert tsv[0].split("\t")[:5] == ["system", "lines", "with_lm", "cer", "wer"]
    assert len(tsv) == 1 + len(table["rows"])
    assert tsv[1].split("\t")[:2] == ["gmm-hmm", "3"]   # ordered by system, mode, size


def test_incomplete_full_run_is_refused(experiment, tmp_path):
    exp, _, _ = experiment
    partial = write_tsv(tmp_path / "partial.tsv", {"a": "le chat dort"})
    done = run(exp, tmp_path / "curve", "--full", f"system=gmm-hmm,lines=4852,lm={partial}")
    assert done.returncode != 0
    assert done.stderr.strip().count("\n") == 0 and "no hypothesis for 1 of the 2" in done.stderr
    assert not (tmp_path / "curve.json").exists()


@pytest.mark.parametrize("spec, message", [
    ("system=hmm,lines=10,lm=x.tsv", "system must be one of"),
    ("system=gmm-hmm,lm=x.tsv", "lines=N"),
    ("system=gmm-hmm,lines=10", "nolm=HYP.tsv"),
    ("system=gmm-hmm,lines=10,lm", "key=value"),
])
def test_bad_full_spec_is_one_error_line(experiment, tmp_path, spec, message):
    exp, _, _ = experiment
    done = run(exp, tmp_path / "curve", "--full", spec)
    assert done.returncode != 0
    assert message in done.stderr and "Traceback" not in done.stderr
