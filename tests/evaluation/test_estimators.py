"""log p(x) estimators by sampling (ELBO, importance sampling with PSIS, active units) against closed
forms (linear-Gaussian models) and on a small trained MNIST VAE; the exact grid is in test_grid.py."""

import math

import numpy as np
import pytest
import torch
from estimator_models import LinearGaussian, trained_grid, trained_mnist_vae
from torch import nn

from pyro_vae.components.objectives import log_weights
from pyro_vae.config import TrainConfig
from pyro_vae.evaluation import estimators as E
from pyro_vae.io import seeded
from pyro_vae.model import build_vae


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # On a shared 2-core machine two OpenMP threads stall each other on small ops (10-100x slower);
    # the numbers do not depend on it.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)



# ---------------------------------------------------------------- closed forms


def test_is_with_exact_posterior_is_exact():
    model = LinearGaussian()
    x = model.data(200)
    exact = model.marginal().log_prob(x)
    lw = E.log_importance_weights(model, x, num_samples=50)
    assert lw.shape == (200, 50)
    # Every weight equals p(x): log w = log p(x) exactly, up to float32 rounding.
    assert float((lw - exact[:, None]).abs().max()) < 1e-3
    r = E.importance_log_likelihood(model, x, num_samples=50)
    assert r["log_px"].shape == (200,)
    assert float((r["log_px"] - exact).abs().max()) < 1e-3
    assert r["mean_log_px"] == pytest.approx(float(exact.mean()), abs=1e-4)
    assert np.all(r["pareto_k"] < 0.5)  # -inf: all weights equal, nothing to fit
    assert r["share_k_above_0_7"] == 0.0
    assert torch.allclose(r["ess"], torch.full((200,), 50.0), rtol=1e-3)
    # Any batching gives the same (exact) answer.
    r2 = E.importance_log_likelihood(model, x, num_samples=50, batch_size=7, chunk=13)
    assert float((r2["log_px"] - exact).abs().max()) < 1e-3


def test_is_with_broadened_guide_converges_to_closed_form():
    model = LinearGaussian(broaden=2.0)
    x = model.data(100)
    exact = model.marginal().log_prob(x)
    r = E.importance_log_likelihood(model, x, num_samples=2000)
    err = r["log_px"] - exact
    assert abs(float(err.mean())) < 0.01
    assert float(err.abs().max()) < 0.06
    assert r["share_k_above_0_7"] == 0.0  # a proposal wider than the posterior: bounded weights
    # K = 1 is the ELBO; its gap to log p(x) is KL(q || p(z|x)) = (4 - 1 - log 4) per axis / 2 * 2.
    kl = 0.5 * 2 * (4 - 1 - math.log(4))
    k1 = E.importance_log_likelihood(model, x, num_samples=1)
    assert float((exact - k1["log_px"]).mean()) == pytest.approx(kl, abs=0.3)
    assert float((exact - r["elbo"]).mean()) == pytest.approx(kl, abs=0.05)


def test_elbo_gap_is_the_kl_to_the_posterior():
    model = LinearGaussian(broaden=2.0)
    x = model.data(200)
    exact = model.marginal().log_prob(x)
    kl = 0.5 * 2 * (4 - 1 - math.log(4))
    analytic = E.elbo_per_image(model, x, num_samples=200)
    assert analytic.shape == (200,)
    assert float((exact - analytic).mean()) == pytest.approx(kl, abs=0.02)
    monte_carlo = E.elbo_per_image(model, x, num_samples=200, analytic_kl=False)
    assert float((exact - monte_carlo).mean()) == pytest.approx(kl, abs=0.05)
    # With the exact posterior the ELBO is log p(x).
    exact_guide = LinearGaussian()
    assert float((E.elbo_per_image(exact_guide, x, num_samples=10, analytic_kl=False) - exact).abs().max()) < 1e-3


def test_pareto_k_flags_a_too_narrow_guide():
    model = LinearGaussian(broaden=0.3)
    x = model.data(50)
    r = E.importance_log_likelihood(model, x, num_samples=1000)
    assert r["share_k_above_0_7"] > 0.5
    assert float(np.median(r["pareto_k"])) > 0.7
    exact = model.marginal().log_prob(x)
    assert float((r["log_px"] - exact).mean()) < 0  # a lower bound, and visibly so here



# ---------------------------------------------------------------- a small trained MNIST model


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return trained_mnist_vae(tmp_path_factory)


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    return trained_grid(tmp_path_factory)


def test_bounds_are_ordered_on_trained_model(trained, grid):
    vae, x = trained
    elbo = E.elbo_per_image(vae, x, num_samples=100)
    iw = E.importance_log_likelihood(vae, x, num_samples=500)
    exact = grid["log_px"]
    assert float(elbo.mean()) < iw["mean_log_px"] <= grid["mean_log_px"] + 0.02
    assert -400 < grid["mean_log_px"] < -100  # nats per image, negative
    assert float((elbo > exact).float().mean()) < 0.02  # per image only MC noise can cross
    # Where PSIS trusts the weights (k < 0.5) IS is close to exact; where IS misses badly, PSIS
    # says so (this briefly trained model's guide is often too narrow and off-centre).
    k = torch.as_tensor(iw["pareto_k"])
    miss = iw["log_px"].double() - exact.double()
    assert (k < 0.5).sum() > 20 and abs(float(miss[k < 0.5].mean())) < 0.1
    assert float((k[miss.abs() > 1] > 0.7).float().mean()) > 0.9


def test_iwae_bound_rises_with_k(trained):
    vae, x = trained
    means = [E.importance_log_likelihood(vae, x, num_samples=k, seed=1, psis=False)["mean_log_px"] for k in (1, 10, 100)]
    assert means[0] < means[1] < means[2]
    elbo = float(E.elbo_per_image(vae, x, num_samples=50).mean())
    assert means[0] == pytest.approx(elbo, abs=1.0)  # K = 1 is a one-sample ELBO


def test_importance_weights_are_the_training_objectives_weights():
    """One definition of log w: the estimator's are objectives.log_weights of the unscaled VAE, same draws."""
    vae = build_vae(TrainConfig(beta=0.5))
    x = torch.bernoulli(torch.full((6, 784), 0.3), generator=torch.Generator().manual_seed(0))
    lw = E.log_importance_weights(vae, x, num_samples=5, batch_size=6, chunk=5, seed=7)
    vae.beta = 1.0  # evaluation never scales by beta
    with seeded(7), torch.no_grad():
        want = log_weights(vae.model, vae.guide, x, 5)
    assert torch.allclose(lw, want.T, rtol=1e-5, atol=1e-3)


def test_a_trace_decoded_in_slices_gives_the_same_weights(trained, monkeypatch):
    """Many images' particles share one Pyro trace and are decoded a cache-sized slice at a time: the
    slicing changes no number (same draws, same weights), and the default trace holds many images."""
    vae, x = trained
    xs = x[:40]
    whole = E.log_importance_weights(vae, xs, num_samples=30, batch_size=40, chunk=30, seed=2)
    monkeypatch.setattr(E, "IS_CHUNK_BYTES", 7 * 784 * 4)  # 7 codes a slice: 1 particle of 40 images
    sliced = E.log_importance_weights(vae, xs, num_samples=30, batch_size=40, chunk=30, seed=2)
    assert torch.allclose(whole, sliced, rtol=0, atol=1e-4)
    assert E._trace_batches(vae, 10_000, 1000, None, None)[0] >= 100  # images per trace at K = 1000, 2-D codes


def test_delta_guide_raises():
    x = torch.bernoulli(torch.full((4, 784), 0.2))
    delta = build_vae(TrainConfig(guide="delta"))
    with pytest.raises(ValueError, match="deterministic"):
        E.importance_log_likelihood(delta, x, num_samples=10)
    with pytest.raises(ValueError, match="deterministic"):
        E.elbo_per_image(delta, x)


def test_same_seed_same_numbers(trained):
    vae, x = trained
    xs = x[:50]
    state = torch.get_rng_state()
    a = E.importance_log_likelihood(vae, xs, num_samples=64, seed=3)
    b = E.importance_log_likelihood(vae, xs, num_samples=64, seed=3)
    c = E.importance_log_likelihood(vae, xs, num_samples=64, seed=4)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is untouched
    assert torch.equal(a["log_px"], b["log_px"]) and np.array_equal(a["pareto_k"], b["pareto_k"])
    assert not torch.equal(a["log_px"], c["log_px"])
    assert torch.equal(E.elbo_per_image(vae, xs, num_samples=8, seed=3), E.elbo_per_image(vae, xs, num_samples=8, seed=3))


def test_eval_mode_is_restored(trained):
    vae, x = trained
    vae.train()
    E.importance_log_likelihood(vae, x[:5], num_samples=8)
    assert vae.training and all(m.training for m in vae.modules())
    vae.eval()


def test_active_units(trained):
    vae, x = trained
    au = E.active_units(vae, x)
    assert au["latent_dim"] == 2 and au["variances"].shape == (2,)
    assert au["active_units"] == int(au["active"].sum()) == 2  # a trained 2-D VAE uses both axes
    means = vae.encode(x)[0]
    assert torch.allclose(au["variances"], means.var(0, correction=0), rtol=1e-4)

    class OneDeadAxis(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(1))

        def encode(self, x):
            s = x.sum(1, keepdim=True) / 100
            return torch.cat([s, 0.001 * s], 1), torch.ones(len(x), 2)

    au = E.active_units(OneDeadAxis(), x, threshold=0.01)
    assert au["active_units"] == 1 and au["active"].tolist() == [True, False]


def test_elbo_importance_and_exact_likelihood_are_ordered(trained, grid):
    """ELBO <= IS estimate <= exact log p(x) on average (IS within its noise)."""
    vae, x = trained
    elbo = float(E.elbo_per_image(vae, x[:50], num_samples=10).mean())
    iw = E.importance_log_likelihood(vae, x[:50], num_samples=50)["mean_log_px"]
    exact = E.grid_log_likelihood(vae, x[:50])["mean_log_px"]
    assert exact - elbo > exact - iw > -0.05


def test_importance_sampling_reports_its_progress(trained):
    """Long evaluations say how far they are: the images done after each batch, and the log line paced."""
    from pyro_vae.evaluation.evaluate import paced

    model, x = trained
    done = []
    a = E.importance_log_likelihood(model, x[:50], num_samples=20, batch_size=16, seed=3, progress=done.append)
    assert done == [16, 32, 48, 50]
    b = E.importance_log_likelihood(model, x[:50], num_samples=20, batch_size=16, seed=3)
    assert torch.equal(a["log_px"], b["log_px"])  # watching changes no number
    lines = []
    step = paced(lines.append, "importance sampling", 50, every=0.0)
    for n in done:
        step(n)
    assert lines[0].startswith("importance sampling: 16/50 images, about ") and lines[0].endswith(" min left")
    assert len(lines) == 3  # nothing once the work is done
    quiet = []
    step = paced(quiet.append, "importance sampling", 50, every=3600.0)
    step(16)
    assert quiet == []
