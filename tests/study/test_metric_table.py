"""The one metric table against what a real tiny study produces: no metric without an entry, and back."""

from __future__ import annotations

import pytest

from pyro_vae.evaluation.metrics import (
    GROUPS,
    METRICS,
    REQUIREMENTS,
    SAMPLERS,
    direction,
    expected_keys,
    flat_metrics,
    metric,
)
from pyro_vae.report.tables import result_row
from pyro_vae.study.runner import Study, collect, run_study

# One run of each kind the table's requirements tell apart: deterministic 2-D, probabilistic 2-D and 10-D.
STUDY = {
    "name": "kinds", "seeds": [0],
    "base": {"dataset": "mnist", "epochs": 1, "train_limit": 300, "test_limit": 200, "batch_size": 100},
    "variants": {"AE": {"guide": "delta", "beta": 0.0}, "VAE": {"guide": "gaussian"},
                 "VAE-10d": {"guide": "gaussian", "latent_dim": 10}},
    "evaluation": {"num_samples": 30, "generated": 100, "pairs": 50, "likelihood_images": 50},
}


@pytest.fixture(scope="module")
def flat(tmp_path_factory, one_thread) -> dict[str, tuple[dict, dict]]:
    """variant -> (the run's results.json entry, its flat metrics)."""
    runs_dir = tmp_path_factory.mktemp("kinds") / "runs"
    study = Study.from_dict(STUDY, "kinds.toml")
    run_study(study, runs_dir, progress=False, log=lambda m: None)
    rows = [result_row(r) for r in collect(study, runs_dir)]
    return {r["variant"]: (r, flat_metrics(r)) for r in rows}


def test_every_metric_a_run_produces_is_in_the_table(flat):
    for variant, (_, numbers) in flat.items():
        assert set(numbers) <= set(METRICS), (variant, sorted(set(numbers) - set(METRICS)))


def test_the_table_says_which_metrics_each_kind_of_run_has(flat):
    for variant, (result, numbers) in flat.items():
        assert set(numbers) == expected_keys(result["config"], result["evaluation"]), variant
    assert set().union(*(set(n) for _, n in flat.values())) == set(METRICS)  # no entry the evaluation never makes


def test_table_entries_are_complete_and_consistent():
    for key, m in METRICS.items():
        assert m.key == key and m.label and m.group in GROUPS, key
        assert set(m.requires) <= set(REQUIREMENTS), key
        assert (m.better == "target") == (m.target is not None), key
        assert m.stands_in_for is None or m.stands_in_for in METRICS, key
        assert (m.sampler is None) == (m.quality is None) and (m.sampler is None or m.sampler in SAMPLERS), key
    assert {m.group for m in METRICS.values()} == set(GROUPS)
    headline = [m.headline for m in METRICS.values() if m.headline]
    assert len(headline) == len(set(headline)), "two headline columns share a position"
    assert direction("max_radius") == (None, None) and direction("max_radius", n_codes=2000, latent_dim=2)[0] == "target"
    assert direction("prior_label_entropy", n_classes=10) == ("target", pytest.approx(2.302585))
    assert metric("someone_elses_metric").label == "someone elses metric"  # a plugin's number is still shown
