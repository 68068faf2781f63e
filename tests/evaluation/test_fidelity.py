"""k-NN precision: 1 for the real set against itself, about 0 for noise."""

import numpy as np
import pytest

from pyro_vae.evaluation.fidelity import RealManifold


def test_knn_precision_known_answers():
    rng = np.random.default_rng(0)
    real = rng.standard_normal((500, 16))
    manifold = RealManifold(real, k=3)
    assert manifold.precision(real) == 1.0
    assert manifold.precision(rng.standard_normal((500, 16)) + 10.0) == 0.0  # far from every real feature
    assert manifold.precision(rng.standard_normal((500, 16))) > 0.8  # more draws from the same law
    half = manifold.inside(np.concatenate([real[:5], real[:5] + 100.0]))
    assert half.tolist() == [True] * 5 + [False] * 5


def test_knn_radius_grows_with_k_and_rejects_bad_k():
    real = np.random.default_rng(0).standard_normal((200, 4))
    assert (RealManifold(real, 1).radii <= RealManifold(real, 5).radii).all()
    with pytest.raises(ValueError, match="k must be"):
        RealManifold(real, 200)
