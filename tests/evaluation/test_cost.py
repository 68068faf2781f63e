"""What an evaluation will cost, said before it starts: kept per kind, estimated from what was kept."""

import json

import pytest
from conftest import small_config

from pyro_vae.evaluation import cost
from pyro_vae.evaluation.evaluate import EvalSettings


@pytest.fixture
def cache(monkeypatch, tmp_path):
    monkeypatch.setenv("PYRO_VAE_CACHE", str(tmp_path))
    return tmp_path / "timings" / cost.FILE


def test_the_kind_is_what_decides_the_time():
    cfg, settings = small_config(), EvalSettings()
    key = cost.kind(cfg, settings, 300, 1000)
    assert key == cost.kind(small_config(), EvalSettings(), 300, 1000)
    assert key == cost.kind(small_config(seed=5, lr=1e-4), settings, 300, 1000)  # seeds and rates cost nothing
    others = {cost.kind(cfg, EvalSettings(num_samples=100), 300, 1000), cost.kind(cfg, settings, 300, 60000),
              cost.kind(small_config(latent_dim=10), settings, 300, 1000), cost.kind(small_config(network="conv"), settings, 300, 1000)}
    assert key not in others and len(others) == 4


def test_no_estimate_until_the_kind_was_timed_then_the_sum(cache):
    settings = EvalSettings(num_samples=50, likelihood_images=100)
    a, b = cost.kind(small_config(), settings, 300, 1000), cost.kind(small_config(latent_dim=3), settings, 300, 1000)
    assert cost.estimate([a, b]) is None
    first = cost.announce(["AE seed 0", "VAE seed 0"], [a, b], settings)
    assert first.startswith("evaluating 2 runs (AE seed 0, VAE seed 0): log p(x) with K = 50 on the first 100 test images")
    assert "no estimate yet" in first
    cost.remember(a, 30.0)
    assert cost.estimate([a, b]) is None  # one of them is still unknown: no guess
    cost.remember(b, 90.0)
    cost.remember(b, 150.0)  # the mean of the last time and this one
    assert cost.estimate([a, b]) == pytest.approx(30 + 120)
    assert "about 2.5 min (as long as the same evaluations took here before)" in cost.announce(["a", "b"], [a, b], settings)
    assert json.loads(cache.read_text()) == {a: 30.0, b: 120.0}


def test_a_damaged_record_costs_the_estimate_only(cache):
    cache.parent.mkdir(parents=True)
    cache.write_text("{not json")
    key = cost.kind(small_config(), EvalSettings(), 300, 1000)
    assert cost.estimate([key]) is None
    cost.remember(key, 12.0)  # and is replaced
    assert cost.estimate([key]) == 12.0


def test_the_record_keeps_the_newest_kinds_only(cache):
    for i in range(cost.KEPT + 5):
        cost.remember(f"k{i}", float(i))
    kept = json.loads(cache.read_text())
    assert len(kept) == cost.KEPT and "k0" not in kept and kept[f"k{cost.KEPT + 4}"] == cost.KEPT + 4


def test_an_unwritable_cache_costs_the_estimate_not_the_evaluation(monkeypatch, tmp_path, capsys):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("PYRO_VAE_CACHE", str(blocked))
    key = cost.kind(small_config(), EvalSettings(), 300, 1000)
    cost.remember(key, 5.0)  # no error
    assert "was not kept for later estimates" in capsys.readouterr().err
    assert cost.estimate([key]) is None
