"""hybrid-hwr ensemble: one model whose scores are the mean of several hybrids' scaled likelihoods.

The second network is the bundled default model's with its weights perturbed (a planted
"other seed"), so the two score the bundled lines differently.
"""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest

from hybrid_hwr import cli
from hybrid_hwr.data import read_split, sample_dir
from hybrid_hwr.decode import DecoderSettings, default_model_dir
from hybrid_hwr.errors import HwrError
from hybrid_hwr.mlp import MlpEmission, MlpEnsemble
from hybrid_hwr.model import MODEL_FILE, ensemble_model, load_model, save_model

N_LINES = 2


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    root = tmp_path_factory.mktemp("ensemble")
    default = load_model(default_model_dir())
    other = copy.deepcopy(default)
    rng = np.random.default_rng(3)
    for W in other.emission.weights_:
        W += (0.05 * W.std() * rng.normal(size=W.shape)).astype(np.float32)
    log_priors = other.emission.log_priors_ + 0.1 * rng.normal(size=other.emission.n_states)
    other.emission.log_priors_ = log_priors - np.log(np.exp(log_priors).sum())
    save_model(other, root / "other")
    return default_model_dir(), root / "other", root


def emission_file(model, out, *extra):
    assert cli.main(["emissions", "--model", str(model), "--limit", str(N_LINES), *extra,
                     str(sample_dir() / "test.tsv"), "-o", str(out)]) == 0
    with np.load(out) as npz:
        return {name: npz[name].astype(np.float64) for name in npz.files if not name.startswith("__")}


def test_ensemble_scores_are_the_mean_of_the_networks_scores(members, tmp_path, capsys):
    first, second, _ = members
    out = tmp_path / "ens"
    assert cli.main(["ensemble", str(first), str(second), "-o", str(out)]) == 0
    assert "wrote an ensemble of 2 networks" in capsys.readouterr().out
    a = emission_file(first, tmp_path / "a.npz")
    b = emission_file(second, tmp_path / "b.npz")
    both = emission_file(out, tmp_path / "ab.npz")
    assert a.keys() == both.keys() and len(both) == N_LINES
    for name in both:
        assert not np.allclose(a[name], b[name], atol=1e-2)      # the planted network differs
        np.testing.assert_allclose(both[name], (a[name] + b[name]) / 2, atol=1e-4)

    # one prior scale for every network: --prior-scale moves all of them
    a = emission_file(first, tmp_path / "a5.npz", "--prior-scale", "0.5")
    b = emission_file(second, tmp_path / "b5.npz", "--prior-scale", "0.5")
    both = emission_file(out, tmp_path / "ab5.npz", "--prior-scale", "0.5")
    for name in both:
        np.testing.assert_allclose(both[name], (a[name] + b[name]) / 2, atol=1e-4)


def test_an_ensemble_of_one_network_twice_decodes_as_the_network(members, tmp_path):
    first, _, _ = members
    out = tmp_path / "twice"
    assert cli.main(["ensemble", str(first), str(first), "-o", str(out)]) == 0
    model = load_model(out)
    assert isinstance(model.emission, MlpEnsemble) and len(model.emission.members) == 2
    assert model.emission_type == "mlp"
    lines = read_split(sample_dir() / "test.tsv", limit=N_LINES)
    texts = {}
    for name, directory in (("alone", first), ("twice", out)):
        hyp = tmp_path / f"{name}.tsv"
        assert cli.main(["decode", "--model", str(directory), "--limit", str(N_LINES), str(sample_dir() / "test.tsv"),
                         "-o", str(hyp)]) == 0
        texts[name] = hyp.read_text(encoding="utf-8")
    assert texts["alone"] == texts["twice"] and len(texts["alone"].splitlines()) == len(lines)


def test_the_ensemble_directory_carries_the_first_models_decoding_settings_and_files(members, tmp_path):
    first, second, _ = members
    out = tmp_path / "ens"
    assert cli.main(["ensemble", str(first), str(second), "-o", str(out)]) == 0
    source, copied = DecoderSettings.load(first), DecoderSettings.load(out)
    assert copied.lm_weight == source.lm_weight and copied.unk_penalty == source.unk_penalty
    for key in ("lexicon", "lm", "char_lm"):
        path = getattr(copied, key)
        assert path.parent == out and path.read_bytes() == getattr(source, key).read_bytes()
    # an ensemble given as a member adds its networks
    assert cli.main(["ensemble", str(out), str(first), "-o", str(tmp_path / "three")]) == 0
    assert len(load_model(tmp_path / "three").emission.members) == 3


def test_networks_of_another_hmm_and_bad_requests_are_one_error(members, tmp_path, capsys):
    from hybrid_hwr.data import Alphabet
    from hybrid_hwr.features import FrontEnd, Normalizer
    from hybrid_hwr.hmm import HmmTopology, Transitions
    from hybrid_hwr.model import HwrModel

    first, second, _ = members
    rng = np.random.default_rng(0)
    alphabet = Alphabet.from_texts(["ab a"])
    topology = HmmTopology(alphabet.symbols, n_states=2)
    feats = [rng.normal(size=(20, 56)).astype(np.float32) for _ in range(3)]
    targets = [rng.integers(0, topology.n_emitting, size=20) for _ in feats]
    mlp = MlpEmission(hidden_layers=(4,), context=1, max_epochs=1).fit(feats, targets, n_states=topology.n_emitting)
    save_model(HwrModel(alphabet, FrontEnd(), Normalizer().fit(feats), topology, Transitions(topology), mlp),
               tmp_path / "tiny")

    def refused(args, message):
        assert cli.main(["ensemble", *map(str, args)]) == 1
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err

    refused([first, tmp_path / "tiny", "-o", tmp_path / "x"], "its alphabet is not the one of")
    refused([first, "-o", tmp_path / "x"], "at least 2 models")
    refused([first, second, "-o", second], "is one of the models")
    refused([first, tmp_path / "missing", "-o", tmp_path / "x"], "not a directory")
    assert not (tmp_path / "x").exists()

    # a damaged description is one error when the ensemble is loaded
    assert cli.main(["ensemble", str(first), str(second), "-o", str(tmp_path / "ens")]) == 0
    description = json.loads((tmp_path / "ens" / MODEL_FILE).read_text())
    description["emission_meta"]["members"][1]["layer_sizes"][1] += 1
    (tmp_path / "ens" / MODEL_FILE).write_text(json.dumps(description))
    with pytest.raises(HwrError, match="ensemble network 2: layer sizes"):
        load_model(tmp_path / "ens")
    with pytest.raises(HwrError, match="at least 2 models"):
        ensemble_model([load_model(first)])


def test_a_resumed_training_refuses_an_ensemble(members, tmp_path, capsys):
    first, second, _ = members
    out = tmp_path / "ens"
    assert cli.main(["ensemble", str(first), str(second), "-o", str(out)]) == 0
    shutil.rmtree(out / "tune", ignore_errors=True)
    args = ["train", "--emission", "mlp", "--init-model", str(first), "--train", str(sample_dir() / "train.tsv"),
            "--limit", "2", "--hidden", "4", "--epochs", "1", "--resume", "-o", str(out)]
    assert cli.main(args) == 1
    assert "holds an ensemble of networks" in capsys.readouterr().err
