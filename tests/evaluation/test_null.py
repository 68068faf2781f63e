"""Claim 2's null: N(0, I) codes pass at about the nominal rate, shifted or skewed codes fail."""

import math

import numpy as np
import pytest

from pyro_vae.evaluation.latent import centre_metrics
from pyro_vae.evaluation.null import (
    NULL_STATISTICS,
    mardia,
    mmd_standard_normal,
    mmd_test,
    null_statistics,
    null_test,
)


def test_batched_statistics_agree_with_centre_metrics():
    codes = np.random.default_rng(0).standard_normal((300, 3)) * [1, 2, 0.5] + [0.2, 0, 1]
    ours, theirs = null_statistics(codes), centre_metrics(codes)
    for key in NULL_STATISTICS[:5]:
        assert ours[key] == pytest.approx(theirs[key], rel=1e-10), key


def test_mardia_is_affine_invariant_and_sees_skew():
    rng = np.random.default_rng(0)
    gauss = rng.standard_normal((5000, 2))
    b1, b2 = mardia(gauss)
    assert b1 < 0.01 and b2 == pytest.approx(8.0, abs=0.3)  # 0 and d(d+2) for a Gaussian
    mixed = gauss @ np.array([[2.0, 1.0], [0.0, 0.3]]) + 5.0
    assert mardia(mixed) == pytest.approx((b1, b2), rel=1e-8)  # no axis or rotation chosen
    assert mardia(rng.exponential(size=(5000, 2)))[0] > 1.0


def test_null_tests_reject_at_about_the_nominal_rate():
    rng = np.random.default_rng(1)
    p = np.array([list(null_test(rng.standard_normal((200, 2)), draws=99, seed=7)[1].values()) for _ in range(30)])
    assert 0.01 <= (p < 0.05).mean() <= 0.12  # 210 tests at 5%
    mmd_p = np.array([mmd_test(rng.standard_normal((200, 2)), draws=99, seed=3)[1] for _ in range(30)])
    assert (mmd_p < 0.05).mean() <= 0.2


def test_shifted_scaled_and_skewed_codes_fail_their_tests():
    rng = np.random.default_rng(2)
    n = 500
    shifted = null_test(rng.standard_normal((n, 2)) + [0.4, 0.0], draws=99)[1]
    assert shifted["mean_norm"] < 0.05 and shifted["gaussian_kl"] < 0.05
    wide = null_test(1.5 * rng.standard_normal((n, 2)), draws=99)[1]
    assert wide["share_in_95"] < 0.05 and wide["max_radius"] < 0.05
    skewed = null_test(rng.exponential(size=(n, 2)) - 1.0, draws=99)
    assert skewed[1]["mardia_skewness"] < 0.05 and skewed[1]["mardia_kurtosis"] < 0.05
    low, high = skewed[2]["share_in_95"]
    assert low < 0.95 < high  # the null's 95% range of each statistic
    assert mmd_test(rng.standard_normal((n, 2)) + [0.4, 0.0], draws=99)[1] < 0.05


def test_mmd_to_the_standard_normal_is_about_zero_for_its_draws():
    rng = np.random.default_rng(0)
    assert abs(mmd_standard_normal(rng.standard_normal((2000, 2)))) < 2e-3
    assert mmd_standard_normal(rng.standard_normal((2000, 2)) * 2) > 0.05
