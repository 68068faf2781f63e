"""Hole measures on code spaces with known answers."""

import math

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from pyro_vae.evaluation.holes import (
    Hull,
    code_spread,
    decile_means,
    hole_mass,
    kde_log_density,
    mixture_log_density,
    neighbour_distance,
    recipe_codes,
)


def test_hull_is_exact_in_2d_and_an_outer_polytope_above():
    square = np.random.default_rng(0).uniform(-1, 1, (400, 2))
    hull = Hull(square)
    assert hull.contains(np.array([[0, 0], [0.9, -0.9], [1.2, 0], [0, -1.5]])).tolist() == [True, True, False, False]
    cube = np.random.default_rng(1).standard_normal((2000, 5))
    hull5 = Hull(cube)
    assert hull5.contains(cube).all()  # an outer approximation keeps every training code
    far = np.zeros((3, 5))
    far[0, 0], far[1] = 9.0, 3.5  # beyond the data along an axis; along the diagonal
    assert hull5.contains(far).tolist() == [False, False, True]


def test_recipe_codes_share_the_recipe_and_stay_inside_the_hull():
    train = np.random.default_rng(0).standard_normal((1000, 2)) * [3.0, 0.5] + [5.0, 0.0]
    z, source, inside = recipe_codes(train, 300, seed=0)
    assert z.shape == (300, 2) and (source == 0).all() and Hull(train).contains(z).all()
    assert 0.8 < inside <= 1.0  # a Gaussian fitted to Gaussian codes mostly lands inside their hull
    prior = lambda m, seed: np.random.default_rng(seed).standard_normal((m, 2)) + [5.0, 0.0]
    z2, source2, _ = recipe_codes(train, 301, seed=0, prior_sample=prior)
    assert len(z2) == 301 and (source2 == 0).sum() == 151 and (source2 == 1).sum() == 150
    again = recipe_codes(train, 301, seed=0, prior_sample=prior)[0]
    assert np.array_equal(z2, again)  # seeded: both sides of a comparison draw alike


def test_neighbour_distance_is_in_units_of_the_spacing():
    grid = np.stack(np.meshgrid(np.arange(10.0), np.arange(10.0)), -1).reshape(-1, 2) * 0.5  # spacing 0.5
    d = neighbour_distance(grid, np.array([[0.0, 0.0], [0.25, 0.0], [-1.0, 0.0]]))
    assert d == pytest.approx([0.0, 0.5, 2.0])
    assert code_spread(grid) == pytest.approx(np.sqrt(np.var(grid[:, 0], ddof=1)))


def test_mixture_density_is_the_aggregate_posterior():
    rng = np.random.default_rng(0)
    means, scales = rng.standard_normal((3, 2)), rng.uniform(0.3, 1.0, (3, 2))
    z = rng.standard_normal((50, 2))
    exact = np.log(np.mean([multivariate_normal(m, np.diag(s**2)).pdf(z) for m, s in zip(means, scales)], 0))
    assert mixture_log_density(z, means, scales) == pytest.approx(exact, rel=1e-9)


def test_hole_mass_of_a_narrow_gaussian_matches_its_closed_form():
    # q = N(0, s^2 I), p = N(0, I) in 2-D: q/p < 0.1 exactly where |z|^2 > r^2, which p holds with mass exp(-r^2/2).
    s = 0.6
    r2 = 2 * (-2 * math.log(s) - math.log(0.1)) / (1 / s**2 - 1)
    z = np.random.default_rng(0).standard_normal((200_000, 2))
    log_q = mixture_log_density(z, np.zeros((1, 2)), np.full((1, 2), s))
    log_p = multivariate_normal(np.zeros(2), np.eye(2)).logpdf(z)
    assert hole_mass(log_q, log_p) == pytest.approx(math.exp(-r2 / 2), abs=0.005)


def test_hole_mass_finds_the_gap_of_a_two_cluster_code_space():
    # Codes in two clusters at +-3 along z1; the fitted Gaussian puts mass in the gap between them.
    rng = np.random.default_rng(0)
    centres, n = np.array([[-3.0, 0.0], [3.0, 0.0]]), 2000
    codes = centres[rng.integers(2, size=n)] + 0.7 * rng.standard_normal((n, 2))
    mean, cov = codes.mean(0), np.cov(codes.T)
    draws = rng.multivariate_normal(mean, cov, 5000)
    log_p = multivariate_normal(mean, cov).logpdf(draws)
    true = hole_mass(mixture_log_density(draws, centres, np.full((2, 2), 0.7)), log_p)
    assert 0.2 < true < 0.5  # a real hole
    # The KDE's smoothing spills some mass into the gap: near the truth, a little below it.
    assert true - 0.08 < hole_mass(kde_log_density(draws, codes), log_p) <= true + 0.02
    one_cluster = 0.7 * rng.standard_normal((n, 2))
    assert hole_mass(kde_log_density(draws, one_cluster), log_p) > true  # (codes elsewhere: all hole)


def test_decile_means_order_by_density():
    density = np.random.default_rng(0).permutation(1000).astype(float)
    curve = decile_means(density, density >= 900)
    assert curve.tolist() == [0.0] * 9 + [1.0]
    assert decile_means(density, density).tolist() == sorted(decile_means(density, density).tolist())
