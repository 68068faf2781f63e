"""Classifier used to score generated images, trained on a small slice of real images (Fashion-MNIST
where the complete data is present, else the MNIST sample shipped in the package)."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA_ROOT, SLICE_DATASET

from pyro_vae.evaluation import classifier as clf
from pyro_vae.evaluation.classifier import (
    FEATURE_DIM,
    Classifier,
    classifier_features,
    load_or_train_classifier,
    sample_quality,
    train_classifier,
)

N_TRAIN, N_TEST = 3000, 2000
FAST = dict(epochs=4, progress=False)
KEY = f"{SLICE_DATASET}-small"


@pytest.fixture(scope="module")
def data():
    """(train_x, train_y, test_x, test_y): 3,000 training and 2,000 test images in [0, 1]."""
    from pyro_vae import data as datasets

    d = datasets.load(SLICE_DATASET, DATA_ROOT, train_limit=N_TRAIN, test_limit=N_TEST)
    assert (len(d.train_x), len(d.test_x)) == (N_TRAIN, N_TEST)
    return d.train_x, d.train_y, d.test_x, d.test_y


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("classifier-cache")


@pytest.fixture(scope="module")
def trained(data, cache_dir):
    return load_or_train_classifier(cache_dir, KEY, *data, **FAST)


def test_training_beats_chance_and_writes_cache(trained, cache_dir):
    model, info = trained
    assert info["test_accuracy"] > 0.6  # chance is 0.1; ~0.8 expected from 3k images
    assert info["cached"] is False
    assert info["key"] == KEY
    assert Path(info["path"]) == cache_dir / f"classifier-{KEY}.pt"
    assert Path(info["path"]).exists()
    # Atomic write leaves no temp files behind.
    assert [p.name for p in cache_dir.iterdir()] == [f"classifier-{KEY}.pt"]
    assert not model.training


def test_cache_round_trips_without_retraining(trained, data, cache_dir, monkeypatch):
    model, info = trained

    def no_training(*args, **kwargs):
        raise AssertionError("classifier was retrained despite a cache file")

    monkeypatch.setattr(clf, "train_classifier", no_training)
    loaded, info2 = load_or_train_classifier(cache_dir, KEY, *data, **FAST)
    assert info2["cached"] is True
    assert info2["test_accuracy"] == info["test_accuracy"]
    test_x = data[2][:200]
    with torch.no_grad():
        torch.testing.assert_close(loaded(test_x), model(test_x))


def test_stale_cache_is_retrained(data, tmp_path):
    small = [t[:300] for t in data]
    path = tmp_path / "classifier-old.pt"
    torch.save({"state_dict": {}, "test_accuracy": 1.0, "key": "old", "arch_version": -1}, path)
    _, info = load_or_train_classifier(tmp_path, "old", *small, epochs=1, progress=False)
    assert info["cached"] is False
    assert info["test_accuracy"] < 1.0
    assert torch.load(path, weights_only=True)["arch_version"] == clf.ARCH_VERSION


def test_training_is_deterministic_and_leaves_global_rng_alone(data):
    small = [t[:500] for t in data]
    state = torch.get_rng_state()
    m1, acc1 = train_classifier(*small, epochs=1, seed=3, progress=False)
    assert torch.equal(torch.get_rng_state(), state)
    m2, acc2 = train_classifier(*small, epochs=1, seed=3, progress=False)
    assert acc1 == acc2
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)


def test_output_shapes(trained, data):
    model, _ = trained
    x = data[2][:7]
    with torch.no_grad():
        assert model(x).shape == (7, 10)
        assert model.features(x).shape == (7, FEATURE_DIM)
    # Numpy and (N, 28, 28) inputs are accepted by the batched helpers.
    feats = classifier_features(model, x.numpy().reshape(7, 28, 28))
    assert feats.shape == (7, FEATURE_DIM) and feats.dtype == np.float64


def test_sample_quality_real_vs_grey(trained, data):
    model, _ = trained
    test_x = data[2]
    # Reference features from one half of the test slice, scored images from the other.
    real_feats = classifier_features(model, test_x[:1000])
    real = sample_quality(model, test_x[1000:], real_feats)
    grey = sample_quality(model, torch.full((500, 784), 0.5), real_feats)

    assert real["confidence"] > 0.65  # ~0.75 from a 3k-image, 4-epoch classifier
    assert real["confidence"] > grey["confidence"] + 0.3
    assert real["label_entropy"] == pytest.approx(math.log(10), abs=0.15)
    assert real["class_coverage"] == 1.0 and real["n_classes_predicted"] == 10
    assert sum(real["class_histogram"]) == pytest.approx(1.0)

    # Identical images all get one label.
    assert grey["n_classes_predicted"] == 1 and grey["class_coverage"] == pytest.approx(0.1)
    assert grey["label_entropy"] == pytest.approx(0.0, abs=1e-12)
    assert np.isfinite(grey["fid"])
    assert grey["fid"] > 10 * real["fid"]


def test_bad_inputs_raise(data, cache_dir):
    model = Classifier()
    with pytest.raises(ValueError, match="784"):
        classifier_features(model, torch.zeros(3, 100))
    with pytest.raises(ValueError, match="uint8"):
        classifier_features(model, torch.zeros(3, 784, dtype=torch.uint8))
    with pytest.raises(ValueError, match="labels"):
        train_classifier(data[0][:10], data[1][:9], data[2], data[3], epochs=1, progress=False)
    with pytest.raises(ValueError, match="key"):
        load_or_train_classifier(cache_dir, "../escape", *data, **FAST)


@pytest.mark.parametrize("damage, said", [
    (lambda path: path.write_bytes(b"not a torch file at all"), "is damaged"),
    (lambda path: torch.save({}, path), ""),  # no version: stale, trained again without a word
    (lambda path: torch.save({"state_dict": {"head.weight": torch.zeros(1)}, "test_accuracy": 1.0, "key": "bad",
                              "arch_version": clf.ARCH_VERSION}, path), "is damaged"),
], ids=["garbage", "empty-dict", "wrong-shapes"])
def test_a_damaged_cache_is_trained_again_and_replaced(data, tmp_path, damage, said, capsys):
    small = [t[:300] for t in data]
    path = tmp_path / "classifier-bad.pt"
    damage(path)
    _, info = load_or_train_classifier(tmp_path, "bad", *small, epochs=1, progress=False)
    assert info["cached"] is False and said in capsys.readouterr().err
    blob = torch.load(path, weights_only=True)
    assert blob["key"] == "bad" and blob["arch_version"] == clf.ARCH_VERSION
    assert load_or_train_classifier(tmp_path, "bad", *small, epochs=1, progress=False)[1]["cached"] is True
