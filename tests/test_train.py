"""GMM-HMM training, model directories and decoding on the bundled real lines."""

import dataclasses
import json

import numpy as np
import pytest

from hybrid_hwr.cli import main
from hybrid_hwr.data import load_image, read_split, sample_dir
from hybrid_hwr.decode import Recognizer
from hybrid_hwr.errors import HwrError
from hybrid_hwr.metrics import score_corpus
from hybrid_hwr.model import MODEL_FILE, load_model, save_model
from hybrid_hwr.train import TrainConfig, train_gmm_hmm

N_LINES = 24


@pytest.fixture(scope="module")
def sample_lines():
    return read_split(sample_dir() / "train.tsv")[:N_LINES]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, sample_lines):
    """A GMM-HMM trained on 24 real lines: 1 -> 2 -> 4 -> 8 Gaussians, 3 iterations each."""
    out = tmp_path_factory.mktemp("model")
    config = TrainConfig(states=6, mixtures=8, iterations=3)
    model = train_gmm_hmm(sample_lines, out, config, log=lambda message: None)
    return out, model


def test_schedule_splits_up_to_the_requested_mixtures():
    assert TrainConfig(mixtures=8, iterations=2).schedule() == [1, 1, 2, 2, 4, 4, 8, 8]
    assert TrainConfig(mixtures=3, iterations=1).schedule() == [1, 2, 3]


def test_embedded_em_never_lowers_the_training_likelihood(trained):
    _, model = trained
    records = model.history["iterations"]
    assert [r["mixtures"] for r in records] == TrainConfig(mixtures=8, iterations=3).schedule()
    for before, after in zip(records, records[1:]):
        # the E-step likelihood of iteration i+1 is that of the parameters re-estimated at i
        assert after["train_loglik_per_frame"] >= before["train_loglik_per_frame"] - 1e-6
    assert records[-1]["train_loglik_per_frame"] > records[0]["train_loglik_per_frame"] + 10
    assert all(r["failed_lines"] == 0 for r in records)


def test_model_recognises_its_training_lines_far_better_than_chance(trained, sample_lines):
    out, _ = trained
    recognizer = Recognizer(load_model(out))
    refs = {line.id: line.text for line in sample_lines}
    hyps = {line.id: recognizer.decode_image(load_image(line.image_path)).text for line in sample_lines}
    score = score_corpus(refs, hyps)
    # Chance (or an empty output) is 100% CER; a model that learnt the characters is far below.
    assert score.cer < 0.6, score.cer


def test_model_directory_round_trip(trained, tmp_path):
    out, model = trained
    copy = save_model(load_model(out), tmp_path / "copy")
    again = load_model(copy)
    feats, _ = again.features(load_image(sample_dir() / "lines" / f"{read_split(sample_dir() / 'train.tsv')[0].id}.png"))
    np.testing.assert_array_equal(again.log_likelihoods(feats), model.log_likelihoods(feats))
    assert again.alphabet == model.alphabet
    assert again.frontend.to_dict() == model.frontend.to_dict()
    assert len(list(copy.glob("arrays-*.npz"))) == 1


@pytest.mark.parametrize("damage", ["garbage_json", "truncated_arrays", "future_version", "missing_arrays",
                                    "wrong_shapes"])
def test_corrupt_model_gives_one_clear_error(trained, tmp_path, damage, capsys):
    out, model = trained
    bad = save_model(load_model(out), tmp_path / "bad")
    description = json.loads((bad / MODEL_FILE).read_text())
    arrays = bad / description["arrays_file"]
    if damage == "garbage_json":
        (bad / MODEL_FILE).write_text("{not json")
    elif damage == "truncated_arrays":
        arrays.write_bytes(arrays.read_bytes()[:1000])
    elif damage == "future_version":
        description["format_version"] = 99
        (bad / MODEL_FILE).write_text(json.dumps(description))
    elif damage == "missing_arrays":
        arrays.unlink()
    elif damage == "wrong_shapes":
        description["topology"]["n_states"] = 3
        (bad / MODEL_FILE).write_text(json.dumps(description))
    with pytest.raises(HwrError):
        load_model(bad)
    image = sample_dir() / "lines" / f"{read_split(sample_dir() / 'test.tsv')[0].id}.png"
    assert main(["decode", "--model", str(bad), str(image)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("hybrid-hwr: error: model ") and err.count("\n") == 1
    assert "Traceback" not in err


def test_resume_continues_an_interrupted_run_to_the_same_model(tmp_path, sample_lines):
    lines = sample_lines[:6]
    config = TrainConfig(states=4, mixtures=2, iterations=2)
    whole = train_gmm_hmm(lines, tmp_path / "whole", config, log=lambda m: None)

    class Interrupt(Exception):
        pass

    def stop_after_second(message):
        if message.startswith("iteration 2/"):
            raise Interrupt

    with pytest.raises(Interrupt):
        train_gmm_hmm(lines, tmp_path / "cut", config, log=stop_after_second)
    saved = load_model(tmp_path / "cut")
    assert len(saved.history["iterations"]) == 2   # the checkpoint holds every finished iteration
    resumed = train_gmm_hmm(lines, tmp_path / "cut", TrainConfig(), resume=True, log=lambda m: None)
    assert len(resumed.history["iterations"]) == 4
    np.testing.assert_allclose(resumed.emission.means, whole.emission.means, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(resumed.transitions.log_self, whole.transitions.log_self, rtol=1e-9)


def test_align_cli_writes_spans_inside_the_image(trained, tmp_path):
    out, _ = trained
    data = tmp_path / "data"
    (data / "lines").mkdir(parents=True)
    lines = read_split(sample_dir() / "train.tsv")[:2]
    with open(data / "two.tsv", "w", encoding="utf-8") as f:
        for line in lines:
            f.write(f"{line.id}\t{line.text}\n")
            (data / "lines" / f"{line.id}.png").write_bytes(line.image_path.read_bytes())
    assert main(["align", "--model", str(out), str(data / "two.tsv"), "-o", str(tmp_path / "ali")]) == 0
    records = [json.loads(r) for r in (tmp_path / "ali" / "alignments.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [line.id for line in lines]
    for record, line in zip(records, lines):
        width = load_image(line.image_path).shape[1]
        assert [w["text"] for w in record["words"]] == line.text.split()
        starts = [c["first_frame"] for c in record["chars"]]
        assert starts == sorted(starts)
        assert all(-10 <= c["x_start"] <= c["x_end"] <= width + 10 for c in record["chars"])
    with np.load(tmp_path / "ali" / "states.npz") as states:
        assert sorted(states.files) == sorted(line.id for line in lines)


def test_prior_scale_is_refused_for_gmm_models(trained):
    from hybrid_hwr.demo import DecoderSettings

    _, model = trained
    with pytest.raises(HwrError, match="hybrid MLP models only; this model has gmm emissions"):
        DecoderSettings(prior_scale=0.5).recognizer(model)


def test_hybrid_mlp_decodes_its_training_lines_better_than_its_gmm(trained, sample_lines, tmp_path):
    from hybrid_hwr.train import train_mlp_hmm

    gmm_dir, _ = trained
    params = dict(hidden_layers=(256,), context=4, max_epochs=10, patience=10, seed=0)
    train_mlp_hmm(sample_lines, gmm_dir, tmp_path / "mlp", valid_lines=sample_lines, mlp_params=params,
                  log=lambda m: None)
    hybrid = load_model(tmp_path / "mlp")   # saved, checked and loaded like a GMM model
    assert hybrid.emission_type == "mlp"
    assert hybrid.history["rounds"][0]["best_valid_fer"] < 0.5
    refs = {line.id: line.text for line in sample_lines}
    rates = {}
    for name, model in (("gmm", load_model(gmm_dir)), ("mlp", hybrid)):
        recognizer = Recognizer(model)
        hyps = {line.id: recognizer.decode_image(load_image(line.image_path)).text for line in sample_lines}
        rates[name] = score_corpus(refs, hyps).cer
    assert rates["mlp"] < rates["gmm"] - 0.05, rates

    # a hybrid can itself give the targets: one more realignment round from the saved network
    messages = []
    train_mlp_hmm(sample_lines, tmp_path / "mlp", tmp_path / "realigned", valid_lines=sample_lines,
                  mlp_params={**params, "max_epochs": 4}, log=messages.append)
    assert "aligning the training lines with the initial MLP-HMM" in messages
    realigned = load_model(tmp_path / "realigned")
    assert realigned.history["init_model"] == str(tmp_path / "mlp")
    assert realigned.history["rounds"][0]["best_valid_fer"] < 0.5


def test_a_hybrid_stopped_by_its_budget_resumes_where_it_stopped(trained, sample_lines, tmp_path):
    from hybrid_hwr.train import train_mlp_hmm

    gmm_dir, _ = trained
    params = dict(hidden_layers=(64,), context=2, max_epochs=2, patience=10, seed=0)
    quiet = lambda m: None  # noqa: E731
    train_mlp_hmm(sample_lines, gmm_dir, tmp_path / "mlp", valid_lines=sample_lines, mlp_params=params, log=quiet)
    first = load_model(tmp_path / "mlp")
    messages = []
    train_mlp_hmm(sample_lines, gmm_dir, tmp_path / "mlp", valid_lines=sample_lines,
                  mlp_params={**params, "max_epochs": 5, "dropout": 0.5}, resume=True, log=messages.append)
    resumed = load_model(tmp_path / "mlp")
    epochs = resumed.emission.history_
    assert [r["epoch"] for r in epochs] == [1, 2, 3, 4, 5]
    assert epochs[:2] == first.emission.history_            # the saved epochs are kept as they were
    assert epochs[2]["learning_rate"] == first.emission.history_[-1]["next_learning_rate"]
    assert resumed.emission.dropout == 0.0                  # the saved network's settings, not the new ones
    assert resumed.history["rounds"][0]["epochs"] == 5
    assert resumed.history["total_seconds"] >= first.history["total_seconds"] + sum(r["seconds"] for r in epochs[2:])
    assert resumed.emission.get_params()["warm_start"] is False   # a later fit of the saved network starts afresh
    assert any("resuming the MLP training" in m and "after epoch 2" in m for m in messages)
    assert min(r["valid_fer"] for r in epochs) <= min(r["valid_fer"] for r in first.emission.history_)
    # the saved epochs are those an uninterrupted run of 5 epochs begins with
    train_mlp_hmm(sample_lines, gmm_dir, tmp_path / "whole", valid_lines=sample_lines,
                  mlp_params={**params, "max_epochs": 5}, log=quiet)
    whole = load_model(tmp_path / "whole").emission.history_
    assert whole[:2] == [{**r, "seconds": w["seconds"], "train_frames_per_second": w["train_frames_per_second"]}
                         for r, w in zip(epochs[:2], whole[:2])]

    # nothing saved yet: --resume starts afresh; a run that had converged adds no epoch
    train_mlp_hmm(sample_lines, gmm_dir, tmp_path / "new", valid_lines=sample_lines, mlp_params=params,
                  resume=True, log=quiet)
    assert len(load_model(tmp_path / "new").emission.history_) == 2
    stalled = load_model(tmp_path / "new")
    stalled.emission.patience = 2   # the saved run's last two epochs did not improve: newbob had stopped it
    for r in stalled.emission.history_:
        r["improved"] = False
    save_model(stalled, tmp_path / "new")
    messages = []
    train_mlp_hmm(sample_lines, gmm_dir, tmp_path / "new", valid_lines=sample_lines,
                  mlp_params={**params, "max_epochs": 9}, resume=True, log=messages.append)
    assert len(load_model(tmp_path / "new").emission.history_) == 2
    assert any("no epoch to add" in m for m in messages)
    messages = []
    train_mlp_hmm(sample_lines, gmm_dir, tmp_path / "mlp", valid_lines=sample_lines, mlp_params=params,
                  resume=True, log=messages.append)
    assert any("no epoch to add: 5 epochs already trained (at most 2 in all)" in m for m in messages)

    # refused: a GMM-HMM's folder, another network, targets from a model with another front end
    with pytest.raises(HwrError, match="holds a GMM-HMM, not a hybrid"):
        train_mlp_hmm(sample_lines, gmm_dir, gmm_dir, mlp_params=params, resume=True, log=quiet)
    with pytest.raises(HwrError, match=r"holds another network \(hidden_layers \[32\] \(saved: \[64\]\)"):
        train_mlp_hmm(sample_lines, gmm_dir, tmp_path / "mlp", mlp_params={**params, "hidden_layers": (32,)},
                      resume=True, log=quiet)
    other = load_model(gmm_dir)
    other.frontend = dataclasses.replace(other.frontend,
                                         features=dataclasses.replace(other.frontend.features, shift=2))
    save_model(other, tmp_path / "other")
    with pytest.raises(HwrError, match="trained on the alignments of another model"):
        train_mlp_hmm(sample_lines, tmp_path / "other", tmp_path / "mlp", mlp_params=params, resume=True, log=quiet)
