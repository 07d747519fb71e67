"""Faults: kill -9 during training, two writers of one model directory, a full disk.

Each run is a real ``hybrid-hwr`` process. A kill is sent right after the process prints
a given log line (never after a delay), so where it lands varies only within the next
step, and every such point must be recoverable: ``train --resume`` then ends with the
very model an uninterrupted run writes. The full-disk tests mount a 1 MB tmpfs and are
skipped where mounting is not allowed (not root, or no CAP_SYS_ADMIN).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from hybrid_hwr.data import sample_dir
from hybrid_hwr.demo import default_model_dir

pytestmark = pytest.mark.faults

REPO = Path(__file__).resolve().parent.parent
TRAIN_SETTINGS = ["--states", "3", "--mixtures", "4", "--iterations", "3"]   # 9 iterations


def command(*argv) -> list[str]:
    return [sys.executable, "-u", "-m", "hybrid_hwr", *map(str, argv)]


def environment() -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def hwr(*argv, check=True) -> subprocess.CompletedProcess:
    done = subprocess.run(command(*argv), env=environment(), capture_output=True, text=True, timeout=300)
    assert "Traceback" not in done.stderr + done.stdout
    if check:
        assert done.returncode == 0, done.stderr
    return done


def start(*argv) -> subprocess.Popen:
    return subprocess.Popen(command(*argv), env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def wait_for_line(process: subprocess.Popen, prefix: str) -> str:
    """Read the process's stdout until a line starting with ``prefix``; fail if it exits first."""
    for line in process.stdout:
        if line.startswith(prefix):
            return line
    process.wait()
    raise AssertionError(f"the process ended (status {process.returncode}) before printing {prefix!r}: "
                         f"{process.stderr.read()}")


def kill_after(argv, prefix: str) -> None:
    process = start(*argv)
    try:
        wait_for_line(process, prefix)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
        process.stdout.close()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faults")
    rows = (sample_dir() / "train.tsv").read_text(encoding="utf-8").splitlines(True)[:10]
    (root / "train.tsv").write_text("".join(rows), encoding="utf-8")
    (root / "lines").symlink_to(sample_dir() / "lines")
    return root / "train.tsv"


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory) -> Path:
    """The model directory of an uninterrupted run."""
    out = tmp_path_factory.mktemp("reference") / "model"
    hwr("train", "--train", dataset, *TRAIN_SETTINGS, "-o", out)
    return out


def assert_same_model(model_dir: Path, reference_dir: Path) -> None:
    reference = json.loads((reference_dir / "model.json").read_text())
    description = json.loads((model_dir / "model.json").read_text())
    assert description["arrays_sha256"] == reference["arrays_sha256"]     # bit-identical parameters
    got = [r["train_loglik_per_frame"] for r in description["history"]["iterations"]]
    assert got == [r["train_loglik_per_frame"] for r in reference["history"]["iterations"]]
    assert sorted(p.name for p in model_dir.iterdir()) == [".lock", description["arrays_file"], "cache", "model.json"]
    assert not list((model_dir / "cache").glob("*.tmp"))


@pytest.mark.parametrize("moment", ["train:", "iteration 2/9", "iteration 6/9"])
def test_train_killed_then_resumed_reaches_the_uninterrupted_model(moment, dataset, reference, tmp_path):
    out = tmp_path / "model"
    argv = ["train", "--train", dataset, *TRAIN_SETTINGS, "-o", out]
    kill_after(argv, moment)
    done = hwr(*argv, "--resume")
    if moment != "train:":   # killed after a checkpoint: the resumed run continues from it
        saved = int(moment.split()[1].split("/")[0])
        assert any(line.startswith(f"resuming from {out} after iteration ") and int(line.split()[-1]) >= saved
                   for line in done.stdout.splitlines()), done.stdout
    assert_same_model(out, reference)


def test_train_killed_while_writing_the_model_resumes(dataset, reference, tmp_path):
    """A kill inside save_model leaves the new arrays file, a partial temporary of it or of
    model.json, and the previous model.json: what save_model's order guarantees. The
    temporaries are planted beside a real kill's checkpoint; the resumed run ignores and
    removes them and still ends with the uninterrupted model."""
    out = tmp_path / "model"
    argv = ["train", "--train", dataset, *TRAIN_SETTINGS, "-o", out]
    kill_after(argv, "iteration 4/9")
    checkpoint = json.loads((out / "model.json").read_text())
    arrays = (out / checkpoint["arrays_file"]).read_bytes()
    (out / "arrays-0badc0de.npz").write_bytes(arrays[: len(arrays) // 2])     # written, model.json not yet replaced
    (out / "arrays-0badc0de.npz.k9x2.tmp").write_bytes(arrays[:1000])
    (out / "model.json.k9x2.tmp").write_text(json.dumps(checkpoint)[:300])
    (out / "cache" / "features-train-0.npz.k9x2.tmp").write_bytes(b"PK")
    hwr(*argv, "--resume")
    assert_same_model(out, reference)


def test_two_writers_of_one_model_directory(dataset, reference, tmp_path):
    """The second writer is refused while the first runs; the first's model is intact; a
    reader polling the directory meanwhile only ever sees a whole model (or none yet)."""
    from hybrid_hwr.errors import HwrError
    from hybrid_hwr.model import load_model

    out = tmp_path / "model"
    first = start("train", "--train", dataset, *TRAIN_SETTINGS, "-o", out)
    seen, problems, stop = [], [], threading.Event()

    def reader():
        while not stop.is_set():
            try:
                seen.append(len(load_model(out).history["iterations"]))
            except HwrError as exc:
                if "no model.json" not in str(exc) and "not a directory" not in str(exc):
                    problems.append(str(exc))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        wait_for_line(first, "iteration 1/9")     # the lock is held and a first checkpoint written
        first.send_signal(signal.SIGSTOP)          # so that it cannot finish before the second starts
        try:
            second = hwr("train", "--train", dataset, *TRAIN_SETTINGS, "-o", out, check=False)
        finally:
            first.send_signal(signal.SIGCONT)
        assert second.returncode == 1
        assert f"hybrid-hwr: error: model directory {out} is being written by another run (process {first.pid})" \
            in second.stderr
        first.stdout.read()
        assert first.wait(timeout=300) == 0, first.stderr.read()
    finally:
        stop.set()
        thread.join()
        first.kill()
        first.wait()
        first.stdout.close()
        first.stderr.close()
    assert problems == []
    assert seen and seen == sorted(seen) and seen[-1] <= 9     # checkpoints in order, never a half model
    assert_same_model(out, reference)


@pytest.fixture
def full_disk(tmp_path):
    """A 4 MB tmpfs and ``free(n_bytes)``, which fills it up to n_bytes of room; skipped
    where it cannot be mounted."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root (the full-disk cases are also covered by "
                    "tests/test_bad_input.py with a simulated ENOSPC)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    filler = mount / "filler"

    def free(n_bytes: int) -> None:
        with open(filler, "wb", buffering=0) as handle:   # unbuffered: nothing left to flush at close
            try:
                while True:
                    handle.write(b"\0" * 4096)
            except OSError:
                pass
        size = filler.stat().st_size
        os.truncate(filler, max(0, size - n_bytes))

    try:
        yield mount, free, filler
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def _plain_model(tmp_path) -> Path:
    """The default model without its decoder.json (a quick character-loop decode)."""
    plain = tmp_path / "plain"
    plain.mkdir()
    for item in default_model_dir().iterdir():
        if item.name == "model.json" or item.name.startswith("arrays-"):
            shutil.copy(item, plain / item.name)
    return plain


def test_decode_on_a_full_disk_keeps_whole_records_then_resumes(full_disk, tmp_path):
    mount, free, filler = full_disk
    model = _plain_model(tmp_path)
    data = sample_dir() / "test.tsv"
    reference = tmp_path / "ref.tsv"
    hwr("decode", "--model", model, data, "--limit", 12, "-o", reference, "--details", tmp_path / "ref.jsonl")
    out, details = mount / "hyp.tsv", mount / "details.jsonl"
    free(8192)     # a page for each file: the details (n-best, word spans) fill theirs first
    done = hwr("decode", "--model", model, data, "--limit", 12, "-o", out, "--details", details, check=False)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("hybrid-hwr: error:")]
    assert len(errors) == 1 and f"{details}: disk full" in errors[0], done.stderr
    rows = out.read_text(encoding="utf-8")
    records = details.read_text(encoding="utf-8")
    assert rows.endswith("\n") and records.endswith("\n")
    written = [json.loads(r)["id"] for r in records.splitlines()]          # whole records only
    assert written and reference.read_text(encoding="utf-8").startswith(rows)
    filler.unlink()                                                           # space again: resume
    hwr("decode", "--model", model, data, "--limit", 12, "-o", out, "--details", details, "--resume")
    assert out.read_text(encoding="utf-8") == reference.read_text(encoding="utf-8")
    ids = [json.loads(r)["id"] for r in details.read_text(encoding="utf-8").splitlines()]
    assert ids == [json.loads(r)["id"] for r in (tmp_path / "ref.jsonl").read_text(encoding="utf-8").splitlines()]


def test_features_on_a_full_disk_write_nothing_and_leave_no_temporary(full_disk):
    mount, free, _ = full_disk
    free(16384)
    output = mount / "f.npz"
    done = hwr("features", sample_dir() / "test.tsv", "--limit", 20, "-o", output, check=False)
    assert done.returncode == 1
    assert f"hybrid-hwr: error: {output}: disk full" in done.stderr and "nothing written" in done.stderr
    assert sorted(p.name for p in mount.iterdir()) == ["filler"]


def test_training_on_a_full_disk_keeps_the_last_checkpoint(full_disk, dataset, reference, tmp_path):
    """The features cache and first checkpoints fit, a later checkpoint does not: one error
    line, the last whole checkpoint stays loadable, and --resume (with space) finishes it."""
    from hybrid_hwr.model import load_model

    mount, free, filler = full_disk
    out = mount / "model"
    argv = ["train", "--train", dataset, *TRAIN_SETTINGS, "-o", out]
    # room for the features cache and the checkpoints with 1 and 2 Gaussians (old and new
    # arrays side by side), not for the first with 4 (its arrays beside the 2-Gaussian ones)
    cache = sum(p.stat().st_size for p in (reference / "cache").iterdir())
    arrays4 = next(reference.glob("arrays-*.npz")).stat().st_size
    free(cache + int(1.2 * arrays4))
    done = hwr(*argv, check=False)
    assert done.returncode == 1, done.stdout
    errors = [line for line in done.stderr.splitlines() if line.startswith("hybrid-hwr: error:")]
    assert len(errors) == 1 and ": disk full" in errors[0] and "is kept" in errors[0], done.stderr
    saved = load_model(out).history["iterations"]
    assert len(saved) == 6 and saved[-1]["mixtures"] == 2     # the last checkpoint that fitted
    filler.unlink()
    hwr(*argv, "--resume")
    shutil.copytree(out, tmp_path / "model")      # compare outside the tmpfs
    assert_same_model(tmp_path / "model", reference)


def test_decode_killed_then_resumed_writes_the_uninterrupted_output(tmp_path):
    """kill -9 once three results are on disk; --resume completes -o and --details to what an
    uninterrupted decode writes (the half-written last record of each removed first)."""
    import time

    model = _plain_model(tmp_path)
    data = sample_dir() / "test.tsv"
    reference = tmp_path / "ref.tsv"
    hwr("decode", "--model", model, data, "--limit", 16, "-o", reference, "--details", tmp_path / "ref.jsonl")
    out, details = tmp_path / "hyp.tsv", tmp_path / "details.jsonl"
    argv = ["decode", "--model", model, data, "--limit", 16, "-o", out, "--details", details]
    process = start(*argv)
    try:
        while process.poll() is None and (not out.exists() or out.read_bytes().count(b"\n") < 3):
            time.sleep(0.01)      # waiting for an event (three lines written), not for a time
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        process.kill()
        process.wait()
        process.stdout.close()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL      # killed midway: 16 lines, three were written
    rows = out.read_text(encoding="utf-8").count("\n")
    assert 3 <= rows < 16
    with open(details, "ab") as handle:                # as if the kill had cut a record in two
        handle.write(b'{"id": "cut sh')
    done = hwr(*argv, "--resume")
    assert f"resumed: {rows} lines were already in" in done.stderr
    assert out.read_text(encoding="utf-8") == reference.read_text(encoding="utf-8")
    assert details.read_text(encoding="utf-8") == (tmp_path / "ref.jsonl").read_text(encoding="utf-8")


@pytest.mark.parametrize("jobs", [1, 2])
def test_sigterm_removes_the_unfinished_file_and_says_so(jobs, tmp_path):
    """kill (SIGTERM) while features are written: exit 143, one line, no temporary left."""
    import time

    output = tmp_path / "f.npz"
    process = start("features", sample_dir() / "test.tsv", "--jobs", jobs, "-o", output)
    try:
        while process.poll() is None and not list(tmp_path.glob("f.npz.*.tmp")):
            time.sleep(0.01)      # the writer has started: its temporary exists
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 143, err
    assert err.strip().splitlines()[-1] == "hybrid-hwr: error: terminated" and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
