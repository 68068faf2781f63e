"""The aggregate posterior q(z) and KL(q(z) || p(z)): closed forms, the floor of a hole-free mixture, and a
grid that has not converged refused."""

import math

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from pyro_vae.evaluation.aggregate import aggregate_kl, mixture_log_density


def _log_standard_normal(z):
    return -0.5 * (z**2).sum(1) - 0.5 * z.shape[1] * math.log(2 * math.pi)


def test_mixture_density_is_the_aggregate_posterior():
    rng = np.random.default_rng(0)
    means, scales = rng.standard_normal((3, 2)), rng.uniform(0.3, 1.0, (3, 2))
    z = rng.standard_normal((50, 2))
    exact = np.log(np.mean([multivariate_normal(m, np.diag(s**2)).pdf(z) for m, s in zip(means, scales)], 0))
    assert mixture_log_density(z, means, scales) == pytest.approx(exact, rel=1e-9)


@pytest.mark.parametrize("dim", [2, 3])  # grid quadrature in 2-D, Monte Carlo above
def test_elbo_surgery_on_posteriors_with_known_information(dim):
    s, m = 0.3, 0.5
    # Every image has the same posterior: no information, and q(z) is that posterior.
    same = aggregate_kl(np.full((100, dim), m), np.full((100, dim), s), _log_standard_normal, samples=4000)
    kl = 0.5 * dim * (s**2 + m**2 - 1 - 2 * math.log(s))
    assert same["mutual_information"] == pytest.approx(0.0, abs=0.02)
    assert same["aggregate_kl"] == pytest.approx(kl, abs=0.03) and same["avg_kl"] == pytest.approx(kl, abs=0.03)
    if dim == 2:  # the grid is exact, and says how it got there
        assert same["aggregate_kl"] == pytest.approx(kl, abs=1e-3) and same["grid_converged"]
        assert same["grid_mass"] == pytest.approx(1.0, abs=1e-6)
    # Two well-separated groups of images: the code tells which group, log 2 nats.
    means = np.zeros((100, dim))
    means[50:, 0] = 3.0
    means[:50, 0] = -3.0
    two = aggregate_kl(means, np.full((100, dim), s), _log_standard_normal, samples=4000)
    assert two["mutual_information"] == pytest.approx(math.log(2), abs=0.03)
    assert two["avg_kl"] == pytest.approx(two["mutual_information"] + two["aggregate_kl"], abs=1e-9)


def _ideal(n, s, seed=0):
    """n posteriors of sd s whose aggregate is exactly N(0, I)."""
    return np.random.default_rng(seed).standard_normal((n, 2)) * math.sqrt(1 - s * s), np.full((n, 2), s)


def test_a_hole_free_aggregate_converges_to_zero_with_every_posterior():
    """The old ELBO surgery used 2,000 posteriors: on a hole-free q(z) of narrow posteriors that alone reads
    tenths of a nat. With all 60,000 the estimator's floor is near 0."""
    values = {n: aggregate_kl(*_ideal(n, 0.054), _log_standard_normal)["aggregate_kl"] for n in (2000, 60000)}
    assert values[2000] > 0.1 and 0 <= values[60000] < 0.02


def test_a_shifted_aggregate_is_measured():
    # Every posterior moved by 0.45 along one axis: KL(q || p) rises by 0.45^2 / 2 = 0.101 over the floor.
    means, scales = _ideal(60000, 0.054)
    floor = aggregate_kl(means, scales, _log_standard_normal)["aggregate_kl"]
    shifted = aggregate_kl(means + [0.45, 0.0], scales, _log_standard_normal)["aggregate_kl"]
    assert shifted - floor == pytest.approx(0.45**2 / 2, abs=0.01)


def test_an_unconverged_grid_is_refused_not_reported():
    # Several grids are integrated and halved; none settles to 1e-12 nats within 512 cells per axis.
    means, scales = _ideal(500, 0.05)
    found = aggregate_kl(means, scales, _log_standard_normal, tol=1e-12, max_cells=512)
    assert not found["grid_converged"] and "did not converge" in found["refused"]
    assert all(math.isnan(found[k]) for k in ("aggregate_kl", "avg_kl", "mutual_information"))
    assert aggregate_kl(means, scales, _log_standard_normal, max_cells=512)["grid_converged"]  # the default tol: it does
