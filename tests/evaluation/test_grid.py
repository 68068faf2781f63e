"""The exact 2-D quadrature against closed forms (linear-Gaussian models), a brute-force dense grid
and the importance-sampling estimate, on stand-ins and on a small trained MNIST VAE."""

import math

import pytest
import torch
from estimator_models import (
    LinearGaussian,
    MixturePriorModel,
    trained_grid,
    trained_mnist_vae,
)

from pyro_vae.config import TrainConfig
from pyro_vae.evaluation import estimators as E
from pyro_vae.evaluation import grid as G
from pyro_vae.evaluation import scoring as S
from pyro_vae.model import build_vae

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- closed forms


@pytest.mark.parametrize("loc, cov", [
    (None, None),
    (torch.tensor([1.0, -0.5]), torch.tensor([[2.0, 0.6], [0.6, 0.5]])),
])
def test_grid_matches_closed_form(loc, cov):
    model = LinearGaussian(loc=loc, cov=cov, seed=3)
    x = model.data(300)
    exact = model.marginal().log_prob(x)
    g = G.grid_log_likelihood(model, x, tol=0.01)
    assert g["converged"]
    assert float((g["log_px"] - exact).abs().max()) < 0.01
    assert g["mean_log_px"] == pytest.approx(float(exact.mean()), abs=1e-3)
    mean, cov_post = model.encoder_guide.params(x)
    assert torch.allclose(g["posterior_mean"].float(), mean, atol=1e-3)
    assert torch.allclose(g["posterior_sd"].float(), cov_post.diagonal().sqrt().expand_as(mean), atol=1e-3)


def test_grid_handles_a_bimodal_mixture_prior():
    model = MixturePriorModel(sigma=0.5, seed=2)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        z = model.prior().sample((200,))
        x = model.decoder(z).detach() + 0.5 * torch.randn(200, 5)
    g = G.grid_log_likelihood(model, x, tol=0.01)
    assert g["converged"]
    assert float((g["log_px"] - model.log_px(x)).abs().max()) < 0.01


def test_grid_and_is_agree_with_each_other_on_closed_form():
    model = LinearGaussian(broaden=1.5, seed=4)
    x = model.data(100)
    g = G.grid_log_likelihood(model, x)
    r = E.importance_log_likelihood(model, x, num_samples=1000)
    assert abs(g["mean_log_px"] - r["mean_log_px"]) < 0.01



def test_continuous_bernoulli_is_scored_by_matmul_exactly(monkeypatch):
    vae = build_vae(TrainConfig(likelihood="continuous-bernoulli"))
    assert S.scoring_mode(vae) == "affine"
    torch.manual_seed(0)
    with torch.no_grad():
        logits = vae.decoder(torch.randn(23, 2) * 3) * 5
    x = torch.rand(9, 784)
    want = vae.likelihood.distribution(logits[None]).log_prob(x[:, None, :])
    assert torch.allclose(S.loglik_matrix(vae, x, logits), want, rtol=1e-5, atol=5e-3)
    fast = G.grid_log_likelihood(vae, x, tol=0.01)
    monkeypatch.setattr(G, "scoring_mode", lambda vae: "generic")  # plain log_prob, pair by pair
    slow = G.grid_log_likelihood(vae, x, tol=0.01)
    assert torch.allclose(fast["log_px"], slow["log_px"], atol=1e-3)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return trained_mnist_vae(tmp_path_factory)


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    return trained_grid(tmp_path_factory)


def test_grid_converges(trained, grid):
    vae, x = trained
    assert grid["converged"] and bool(grid["image_converged"].all())
    assert float(grid["last_change"].abs().max()) < 0.01
    last = grid["trace"][-1]
    assert abs(last["change_of_mean"]) < 0.01
    assert [t["level"] for t in grid["trace"]] == list(range(len(grid["trace"])))
    assert grid["grid_points"] > 0 and grid["pairs"] > 0
    assert grid["spacing"] < grid["start_spacing"]
    lo1, hi1, lo2, hi2 = grid["extent"]
    assert lo1 < hi1 and lo2 < hi2
    # A looser tolerance stops earlier and still agrees within it.
    loose = G.grid_log_likelihood(vae, x, tol=0.1)
    assert abs(loose["mean_log_px"] - grid["mean_log_px"]) < 0.1
    assert loose["grid_points"] <= grid["grid_points"]


def test_grid_agrees_with_a_brute_force_dense_grid(trained, grid):
    vae, x = trained
    idx = torch.arange(0, 300, 60)
    prior = vae.prior()
    for i in idx.tolist():
        # A plain dense grid over +-10 posterior sds at a quarter of the smallest sd.
        mean, sd = grid["posterior_mean"][i], grid["posterior_sd"][i]
        h = float(sd.min()) / 4
        axes = [torch.arange(float(m - 10 * s), float(m + 10 * s), h) for m, s in zip(mean, sd)]
        z = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2).float()
        with torch.no_grad():
            logp = vae.likelihood.distribution(vae.decoder(z)).log_prob(x[i]) + prior.log_prob(z)
        brute = float(torch.logsumexp(logp.double(), 0)) + 2 * math.log(h)
        assert float(grid["log_px"][i]) == pytest.approx(brute, abs=0.02)



def test_grid_needs_2d_codes_but_no_guide():
    x = torch.bernoulli(torch.full((4, 784), 0.2))
    with pytest.raises(ValueError, match="2-D"):
        G.grid_log_likelihood(build_vae(TrainConfig(latent_dim=3)), x)
    # The exact integral needs no guide: it works for the delta-guide model too.
    g = G.grid_log_likelihood(build_vae(TrainConfig(guide="delta")), x, tol=0.05)
    assert torch.isfinite(g["log_px"]).all()


def test_estimators_reexport_the_grid():
    assert E.grid_log_likelihood is G.grid_log_likelihood


def test_same_numbers_twice(trained):
    vae, x = trained
    xs = x[:50]
    g1, g2 = G.grid_log_likelihood(vae, xs[:20]), G.grid_log_likelihood(vae, xs[:20])
    assert torch.equal(g1["log_px"], g2["log_px"])
