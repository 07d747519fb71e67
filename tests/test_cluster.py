"""Training and decoding on a Dask cluster (a LocalCluster of 2 worker processes) give the
results of one local process: the same model to the last bit, the same text, the same
decoder.json, also when a worker dies in the middle of an iteration."""

import json
import shutil
import sys

import numpy as np
import pytest

from test_cli import run

from hybrid_hwr import cluster
from hybrid_hwr.batch import tree_sum
from hybrid_hwr.data import read_split, sample_dir
from hybrid_hwr.model import load_model
from hybrid_hwr.train import TrainConfig, shard_bounds, train_gmm_hmm

# a second test cluster on this machine finds Dask's default HTTP port taken: not a problem here
pytestmark = pytest.mark.filterwarnings("ignore:Port .* is already in use:UserWarning")

CONFIG = TrainConfig(states=3, mixtures=2, iterations=1)   # 2 iterations: M=1, then M=2


@pytest.fixture(scope="module")
def scheduler():
    """Address of a LocalCluster with 2 single-threaded worker processes."""
    distributed = pytest.importorskip("distributed", reason="Dask (hybrid_hwr[dask]) is not installed")
    import logging

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=logging.CRITICAL) as local:
        yield local.scheduler_address


@pytest.fixture(scope="module")
def train_lines():
    return read_split(sample_dir() / "train.tsv", limit=40)   # 2 shards: 32 lines, 8 lines


@pytest.fixture(scope="module")
def local_model(train_lines, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "model"
    train_gmm_hmm(train_lines, out, CONFIG, log=lambda _: None)
    shutil.rmtree(out / "cache")
    return out


def assert_same_model(a_dir, b_dir):
    a, b = load_model(a_dir), load_model(b_dir)
    for name in ("means", "variances", "log_weights"):
        assert np.array_equal(getattr(a.emission, name), getattr(b.emission, name)), name
    assert np.array_equal(a.transitions.log_self, b.transitions.log_self)
    assert (a.transitions.space_prob, a.transitions.blank_prob) == (b.transitions.space_prob, b.transitions.blank_prob)
    strip = lambda h: [{k: v for k, v in r.items() if k not in ("seconds", "frames_per_second")}  # noqa: E731
                       for r in h["iterations"]]
    assert strip(a.history) == strip(b.history)


def test_shards_and_their_sum_do_not_depend_on_jobs_or_workers():
    assert shard_bounds(70) == [(0, 32), (32, 64), (64, 70)]
    # the tree: ((1+2)+(3+4)) + 5, whatever computes the values
    assert tree_sum([1, 2, 3, 4, 5], lambda a, b: f"({a}+{b})") == "(((1+2)+(3+4))+5)"
    assert tree_sum([], lambda a, b: a + b) is None


BUILDS = []


def _counting_factory(path):
    BUILDS.append(path)
    return lambda x: (path, x)


def test_a_per_process_function_is_built_once_and_again_when_its_file_changes(tmp_path):
    import os
    import pickle

    model = tmp_path / "model"
    model.mkdir()
    (model / "model.json").write_text("{}")
    first = cluster.PerProcess(_counting_factory, str(model))
    assert first(1) == (str(model), 1) and first(2) == (str(model), 2)
    copy = pickle.loads(pickle.dumps(first))      # what a worker receives: the recipe only
    assert copy(3) == (str(model), 3) and len(BUILDS) == 1
    stat = (model / "model.json").stat()
    os.utime(model / "model.json", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))   # the model was replaced
    assert pickle.loads(pickle.dumps(first))(4) == (str(model), 4) and len(BUILDS) == 2


def test_gmm_training_on_the_cluster_is_the_model_of_one_process(scheduler, train_lines, local_model, tmp_path):
    with cluster.connect(scheduler) as session:
        assert session.n_workers == 2
        train_gmm_hmm(train_lines, tmp_path / "model", CONFIG, log=lambda _: None)
    assert_same_model(local_model, tmp_path / "model")
    assert len(load_model(tmp_path / "model").history["iterations"]) == 2


def test_a_run_interrupted_on_the_cluster_resumes_there_to_the_same_model(scheduler, train_lines, local_model,
                                                                         tmp_path):
    class Interrupt(Exception):
        pass

    def stop_after_first(message):
        if message.startswith("iteration 1/"):
            raise Interrupt

    with cluster.connect(scheduler):
        with pytest.raises(Interrupt):
            train_gmm_hmm(train_lines, tmp_path / "model", CONFIG, log=stop_after_first)
        assert len(load_model(tmp_path / "model").history["iterations"]) == 1   # the checkpoint
        train_gmm_hmm(train_lines, tmp_path / "model", CONFIG, resume=True, log=lambda _: None)
    assert_same_model(local_model, tmp_path / "model")


def test_train_command_on_local_workers_is_the_model_of_a_process_pool(capsys, tmp_path):
    pytest.importorskip("distributed", reason="Dask (hybrid_hwr[dask]) is not installed")
    common = ["train", "--train", sample_dir() / "train.tsv", "--valid", sample_dir() / "test.tsv", "--limit", 12,
              "--states", 3, "--mixtures", 1, "--iterations", 2]
    assert run(capsys, *common, "--jobs", 2, "-o", tmp_path / "pool")[0] == 0
    code, out, err = run(capsys, *common, "--scheduler", "local:2", "-o", tmp_path / "dask")
    assert code == 0, err
    assert "iteration 2/2" in out and "valid LL/frame" in out
    assert_same_model(tmp_path / "pool", tmp_path / "dask")


def test_alignments_for_state_counts_on_the_cluster(scheduler, train_lines, local_model):
    from hybrid_hwr.train import state_counts_from_alignments

    local = state_counts_from_alignments(train_lines[:12], local_model, log=lambda _: None)
    with cluster.connect(scheduler):
        assert state_counts_from_alignments(train_lines[:12], local_model, log=lambda _: None) == local
    assert len(local) > 10


def test_a_worker_killed_during_an_iteration_still_gives_the_same_model(scheduler, train_lines, local_model,
                                                                       tmp_path):
    import cloudpickle
    from distributed import WorkerPlugin

    class KillOnce(WorkerPlugin):
        """The first E-step shard that starts on a worker kills that worker's process (once)."""

        name = "kill-once"

        def __init__(self, marker):
            self.marker = str(marker)

        def transition(self, key, start, finish, **kwargs):
            import os

            if finish == "executing" and str(key).startswith("_run_one") and not os.path.exists(self.marker):
                open(self.marker, "w").close()
                os._exit(1)

    cloudpickle.register_pickle_by_value(sys.modules[__name__])   # the workers cannot import this file
    marker = tmp_path / "killed"
    with cluster.connect(scheduler) as session:
        before = set(session.client.scheduler_info()["workers"])
        session.client.register_plugin(KillOnce(marker))
        try:
            train_gmm_hmm(train_lines, tmp_path / "model", CONFIG, log=lambda _: None)
            after = set(session.client.scheduler_info()["workers"])
        finally:
            session.client.unregister_worker_plugin(KillOnce.name)
        session.client.wait_for_workers(2, timeout=60)
    assert marker.exists(), "no worker was killed"
    assert before - after, "the killed worker is still there"
    assert_same_model(local_model, tmp_path / "model")


def test_decode_on_the_cluster_writes_the_text_of_one_process(scheduler, local_model, capsys, tmp_path):
    common = ["decode", "--model", local_model, sample_dir() / "test.tsv", "--limit", 8, "--nbest", 3]
    assert run(capsys, *common, "-o", tmp_path / "local.tsv", "--details", tmp_path / "local.jsonl")[0] == 0
    code, _, err = run(capsys, *common, "--scheduler", scheduler, "-o", tmp_path / "dask.tsv",
                       "--details", tmp_path / "dask.jsonl")
    assert code == 0, err
    local = (tmp_path / "local.tsv").read_text(encoding="utf-8")
    assert local == (tmp_path / "dask.tsv").read_text(encoding="utf-8")
    assert len(local.splitlines()) == 8 and any(row.split("\t")[1] for row in local.splitlines())
    # scores, word spans and n-best lists too
    assert (tmp_path / "local.jsonl").read_text() == (tmp_path / "dask.jsonl").read_text()


def test_align_emissions_and_features_on_the_cluster(scheduler, local_model, capsys, tmp_path, monkeypatch):
    tsv = sample_dir() / "test.tsv"
    for where in ("local", "dask"):
        extra = ["--scheduler", scheduler] if where == "dask" else []
        assert run(capsys, "align", "--model", local_model, tsv, "--limit", 5, "-o", tmp_path / where, *extra)[0] == 0
        assert run(capsys, "emissions", "--model", local_model, tsv, "--limit", 5, "-o",
                   tmp_path / f"{where}.npz", *extra)[0] == 0
        if where == "dask":   # workers that do not see the data path get the images' bytes
            monkeypatch.setattr(cluster, "workers_can_read", lambda path, session=None: False)
        assert run(capsys, "features", tsv, "--limit", 5, "-o", tmp_path / f"{where}-f.npz", *extra)[0] == 0
    assert (tmp_path / "local" / "alignments.jsonl").read_text() == (tmp_path / "dask" / "alignments.jsonl").read_text()
    for a, b in (("local/states.npz", "dask/states.npz"), ("local.npz", "dask.npz"), ("local-f.npz", "dask-f.npz")):
        with np.load(tmp_path / a) as x, np.load(tmp_path / b) as y:
            assert x.files == y.files and len([k for k in x.files if not k.startswith("__")]) == 5
            assert all(np.array_equal(x[k], y[k]) for k in x.files)


def test_tune_on_the_cluster_writes_the_same_decoder_json(scheduler, local_model, capsys, tmp_path):
    args = ["--valid", sample_dir() / "test.tsv", "--limit", 6, "--modes", "charloop", "--rounds", 1]
    for where in ("local", "dask"):
        shutil.copytree(local_model, tmp_path / where)
        extra = ["--scheduler", scheduler] if where == "dask" else []
        code, _, err = run(capsys, "tune", "--model", tmp_path / where, *args, *extra)
        assert code == 0, err
    local = json.loads((tmp_path / "local" / "decoder.json").read_text())
    assert local == json.loads((tmp_path / "dask" / "decoder.json").read_text())
    points = lambda d: [json.loads(r)["wer"] for r in (d / "tune" / "points.jsonl").read_text().splitlines()]  # noqa: E731
    assert points(tmp_path / "local") == points(tmp_path / "dask") and len(points(tmp_path / "local")) > 3


def test_a_scheduler_without_workers_is_one_error_line(capsys, monkeypatch, tmp_path):
    distributed = pytest.importorskip("distributed", reason="Dask (hybrid_hwr[dask]) is not installed")
    import logging

    monkeypatch.setattr(cluster, "WORKERS_TIMEOUT", 2)
    with distributed.LocalCluster(n_workers=0, processes=True, dashboard_address=None,
                                  silence_logs=logging.CRITICAL) as empty:
        code, _, err = run(capsys, "features", sample_dir() / "test.tsv", "--limit", 2, "-o", tmp_path / "f.npz",
                           "--scheduler", empty.scheduler_address)
    assert code == 1 and err.strip().splitlines() == [
        f"hybrid-hwr: error: --scheduler {empty.scheduler_address}: no Dask worker joined the scheduler within 2 s "
        f"(start some with: dask worker {empty.scheduler_address} --nthreads 1)"]


def test_scheduler_errors_are_one_line(capsys, monkeypatch, tmp_path):
    code, _, err = run(capsys, "decode", "x.png", "--scheduler", "somewhere")
    assert code == 2 and "tcp://host:8786" in err
    code, _, err = run(capsys, "decode", "x.png", "--scheduler", "local:2", "--jobs", 2)
    assert code == 1 and "--jobs and --scheduler" in err
    code, _, err = run(capsys, "decode", "--emissions", tmp_path / "e.npz", "--scheduler", "local:2")
    assert code == 1 and "--emissions" in err and len(err.strip().splitlines()) == 1
    monkeypatch.setitem(sys.modules, "distributed", None)   # as if Dask were not installed
    code, _, err = run(capsys, "train", "--train", sample_dir() / "train.tsv", "-o", tmp_path / "m",
                       "--scheduler", "local:2")
    assert code == 1 and err.strip().splitlines() == [
        "hybrid-hwr: error: --scheduler needs Dask's distributed scheduler, which is not installed: "
        "pip install 'hybrid_hwr[dask]'"]
