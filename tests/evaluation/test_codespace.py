"""The claims' direct measures on tiny real models (1,000 real MNIST images, a few epochs), and the
evaluation's samplers."""

import numpy as np
import pytest
import torch
from conftest import small_config

from pyro_vae.evaluation.evaluate import (
    EvalSettings,
    _box_codes,
    _pairs,
    evaluate_run,
    manifold_axis,
)
from pyro_vae.evaluation.holes import Hull
from pyro_vae.evaluation.metrics import REFERENCE_SAMPLERS, SAMPLERS, sample_key

SETTINGS = EvalSettings(num_samples=20, generated=200, pairs=100, likelihood_images=100, hole_codes=300,
                        hole_mass_draws=2000, perturb_images=100, null_draws=50, mmd_codes=200, bootstrap=20)


def test_pairs_are_exactly_n_and_of_the_asked_kind():
    labels = torch.arange(10).repeat_interleave(50)  # ten classes: one draw in ten is same-class
    gen = torch.Generator().manual_seed(0)
    for same in (True, False):
        a, b = _pairs(labels, 1000, same, gen)
        assert len(a) == len(b) == 1000 and (a != b).all()
        assert ((labels[a] == labels[b]) == same).all()
    with pytest.raises(ValueError, match="different-class"):
        _pairs(torch.zeros(20, dtype=torch.long), 10, False, gen)


def test_box_codes_fill_the_codes_box_and_the_manifold_axis_follows_the_guide():
    codes = torch.tensor([[-1.0, 2.0], [3.0, 5.0], [0.0, 3.0]])
    box = _box_codes(codes, 5000, torch.Generator().manual_seed(0))
    low, high = box.min(0).values, box.max(0).values
    assert (low >= torch.tensor([-1.0, 2.0])).all() and (high <= torch.tensor([3.0, 5.0])).all()
    assert torch.allclose(low, torch.tensor([-1.0, 2.0]), atol=0.01) and torch.allclose(high, torch.tensor([3.0, 5.0]), atol=0.01)
    spread = torch.linspace(-4, 4, 1001)[:, None].repeat(1, 2)
    assert manifold_axis(spread, deterministic=True)[[0, -1]] == pytest.approx([-3.92, 3.92], abs=0.01)
    assert manifold_axis(spread, deterministic=False)[[0, -1]] == pytest.approx([-1.881, 1.881], abs=0.01)  # N(0,1) 3%, 97%


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, one_thread):
    from pyro_vae.training.trainer import train

    out = {}
    for name, kw in (("AE", dict(guide="delta", beta=0.0)), ("VAE", dict(guide="gaussian"))):
        run = train(small_config(epochs=5, **kw), tmp_path_factory.mktemp(name), force=True, progress=False,
                    log=lambda m: None)
        out[name] = (evaluate_run(run, SETTINGS, log=lambda m: None), dict(np.load(run / "evaluation.npz")))
    return out


@pytest.mark.slow
def test_reference_rows_anchor_sample_quality(evaluated):
    for name, (result, _) in evaluated.items():
        for sampler in SAMPLERS:
            assert 0 <= result[sample_key(sampler, "precision")] <= 1, (name, sampler)
        assert set(REFERENCE_SAMPLERS) <= set(SAMPLERS)
        assert result["real_precision"] > 0.8 and result["real_fid"] < 20  # real vs real: near perfect
        assert result["recon_fid"] > result["real_fid"] and result["recon_precision"] < result["real_precision"]
    assert evaluated["AE"][0]["real_fid"] == evaluated["VAE"][0]["real_fid"]  # the models share the reference


@pytest.mark.slow
def test_hole_measures_on_real_models(evaluated):
    for name, (result, arrays) in evaluated.items():
        z = arrays["hole_codes"]
        assert len(z) <= SETTINGS.hole_codes
        assert (arrays["hole_distance"] >= 0).all()
        assert arrays["hole_band_precision"].shape == arrays["hole_band_reencode"].shape == (10,)
        assert np.all(np.diff(arrays["hole_band_distance"]) >= 0)  # tenths ordered by distance
        assert result["far_band_distance"] > result["near_band_distance"]
        assert result["far_precision_drop"] == pytest.approx(arrays["hole_band_precision"][0] - arrays["hole_band_precision"][-1])
        assert result["far_reencode_rise"] == pytest.approx(arrays["hole_band_reencode"][-1] - arrays["hole_band_reencode"][0])
        assert arrays["perturb_precision"].shape == (len(SETTINGS.perturb_eps),)
        assert arrays["perturb_reencode"][0] == pytest.approx(1.0)  # eps = 0: the reconstructions themselves
        assert arrays["perturb_reencode"][-1] > 1.0  # codes pushed 2 spreads away no longer re-encode to themselves
        assert 0 <= result["hole_mass_fitted"] <= 1 and 0 < result["hole_share_inside_hull"] <= 1
        assert result["hole_resolution_fitted"] > 0
        # Every training image's code is used (the old measures took 2,000), with the smaller counts beside it.
        assert result["train_codes_used"] == 1000
        for key in ("far_precision_drop", "hole_mass_fitted"):
            assert list(result["convergence"][key]) == ["1000"]  # the table's smaller counts exceed 1,000 codes
        assert result["logdet_spread_sd_low"] <= result["logdet_spread_sd_high"]
        assert set(result["null_ranges"]) >= {"share_in_95", "mardia_skewness", "sampled_share_in_95"}
        assert arrays["sampled_codes"].shape == arrays["codes"].shape
        assert 0 < result["mid_same_fid_ratio"] < 10 and result["log_px_grid_converged"]
    ae, vae = evaluated["AE"][0], evaluated["VAE"][0]
    ae_arrays, vae_arrays = evaluated["AE"][1], evaluated["VAE"][1]
    assert (vae_arrays["hole_source"] == 1).any()  # the VAE's recipe includes its prior; the AE (beta = 0) has none
    assert np.array_equal(ae_arrays["sampled_codes"], ae_arrays["codes"])  # a delta guide's draw is its code
    assert not np.array_equal(vae_arrays["sampled_codes"], vae_arrays["codes"])
    assert vae["sampled_share_in_95"] != vae["share_in_95"] and ae["sampled_share_in_95"] == ae["share_in_95"]
    assert "hole_mass_prior" in vae and "hole_mass_prior" not in ae
    assert "mutual_information" in vae and "mutual_information" not in ae
    assert 0 < vae["mutual_information"] <= np.log(1000) + 1e-6
    assert vae["grid_converged"] and vae["aggregate_kl"] >= vae["aggregate_kl_floor"] > 0
    assert list(vae["convergence"]["aggregate_kl"]) == ["1000"]
    # The AE's codes are far from N(0, I): a Gaussian fitted to them is a better prior for its decoder.
    assert ae["log_px_exact_fitted"] > ae["log_px_exact"]
    assert ae["null_p_share_in_95"] < 0.05


@pytest.mark.slow
def test_hole_codes_lie_in_the_training_codes_hull(evaluated, tmp_path_factory):
    # Recompute the training codes as the evaluation did and check the recipe's codes against them.
    result, arrays = evaluated["AE"]
    from pyro_vae.evaluation.codespace import _train_codes
    from pyro_vae.training.runs import load_run

    run = load_run(result["run"])
    _, _, seen = _train_codes(run, run.data(), SETTINGS.train_codes, SETTINGS.seed)
    assert Hull(seen).contains(arrays["hole_codes"]).all()


@pytest.mark.slow
def test_an_unconverged_exact_grid_is_recorded_and_refused(evaluated, tmp_path, monkeypatch):
    """The quadrature's converged flag was once dropped, so a grid stopped at its limits was reported as exact."""
    import shutil

    from pyro_vae.evaluation import codespace, evaluate, grid

    real = grid.grid_log_likelihood

    def stopped_early(*args, **kwargs):  # the real quadrature, as if it had hit max_points first
        return {**real(*args, **kwargs), "converged": False}

    monkeypatch.setattr(evaluate, "grid_log_likelihood", stopped_early)
    monkeypatch.setattr(codespace, "grid_log_likelihood", stopped_early)
    for name in ("AE", "VAE"):
        run = tmp_path / name
        shutil.copytree(evaluated[name][0]["run"], run)
        messages = []
        result = evaluate_run(run, SETTINGS, log=messages.append)
        assert result["log_px_grid_converged"] is False and np.isnan(result["log_px_exact"]), name
        assert np.isnan(result["log_px_exact_fitted"]) and any("did not converge" in m for m in messages), name
        assert evaluated[name][0]["log_px_grid_converged"] is True and np.isfinite(evaluated[name][0]["log_px_exact"])
    # The VAE's KL grid is another quadrature, with its own flag: it converged, and says so under its own name.
    assert result["grid_converged"] is True and np.isfinite(result["aggregate_kl"])
