"""log p(x) estimators against closed forms (linear-Gaussian models) and on a small trained MNIST VAE."""

import math

import numpy as np
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pyro_vae.config import TrainConfig
from pyro_vae.data import BINARIZATIONS
from pyro_vae.evaluation import estimators as E
from pyro_vae.model import build_vae


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # On a shared 2-core machine two OpenMP threads stall each other on small ops (10-100x slower);
    # the numbers do not depend on it.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- a linear-Gaussian stand-in
# z ~ prior, x | z ~ N(W z + b, sigma^2 I): log p(x) = log N(x; W m + b, W S W^T + sigma^2 I) for a
# N(m, S) prior, and the posterior is Gaussian in closed form.


class NormalLikelihood:
    def __init__(self, sigma):
        self.sigma = sigma

    def distribution(self, logits):
        return dist.Normal(logits, self.sigma).to_event(1)

    def mean(self, logits):
        return logits


class GaussianPrior(nn.Module):
    def __init__(self, loc, cov):
        super().__init__()
        self.register_buffer("loc", loc)
        self.register_buffer("cov", cov)

    def forward(self):
        return dist.MultivariateNormal(self.loc, self.cov)


class PosteriorGuide(nn.Module):
    """The exact posterior with its covariance scaled by broaden^2 (1: exact)."""

    deterministic = False

    def __init__(self, model, broaden=1.0):
        super().__init__()
        self._model = [model]  # not a submodule: no cycle
        self.broaden = broaden

    def params(self, x):
        m = self._model[0]
        w, b, s2 = m.decoder.weight, m.decoder.bias, m.likelihood.sigma**2
        prec0 = torch.linalg.inv(m.prior.cov)
        cov = torch.linalg.inv(prec0 + w.T @ w / s2)
        mean = ((x - b) @ w / s2 + m.prior.loc @ prec0) @ cov
        return mean, cov * self.broaden**2

    def forward(self, x):
        mean, cov = self.params(x)
        return dist.MultivariateNormal(mean, cov.expand(len(x), -1, -1))

    def encode(self, x):
        mean, cov = self.params(x)
        return mean, cov.diagonal().sqrt().expand_as(mean)


class LinearGaussian(nn.Module):
    def __init__(self, d_x=5, d_z=2, sigma=0.3, seed=0, loc=None, cov=None, broaden=1.0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.decoder = nn.Linear(d_z, d_x)
        with torch.no_grad():
            self.decoder.weight.copy_(torch.randn(d_x, d_z, generator=g))
            self.decoder.bias.copy_(torch.randn(d_x, generator=g))
        self.likelihood = NormalLikelihood(sigma)
        self.prior = GaussianPrior(torch.zeros(d_z) if loc is None else loc, torch.eye(d_z) if cov is None else cov)
        self.encoder_guide = PosteriorGuide(self, broaden)

    def encode(self, x):
        with torch.no_grad():
            return self.encoder_guide.encode(x)

    def marginal(self):
        w, b = self.decoder.weight.detach(), self.decoder.bias.detach()
        cov = w @ self.prior.cov @ w.T + self.likelihood.sigma**2 * torch.eye(len(b))
        return dist.MultivariateNormal(w @ self.prior.loc + b, cov)

    def data(self, n, seed=1):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return self.marginal().sample((n,))


class MixturePriorModel(LinearGaussian):
    """The same decoder under a two-component Gaussian-mixture prior: bimodal posteriors."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.mix = dict(weights=torch.tensor([0.3, 0.7]), locs=torch.tensor([[-1.5, 1.0], [1.5, -0.5]]),
                        covs=torch.stack([torch.diag(torch.tensor([0.3, 0.5])), torch.tensor([[0.4, 0.1], [0.1, 0.2]])]))
        del self.prior  # a plain callable now, not a module
        self.prior = lambda: dist.MixtureSameFamily(dist.Categorical(self.mix["weights"]),
                                                    dist.MultivariateNormal(self.mix["locs"], self.mix["covs"]))
        self.encoder_guide = BroadGuide()

    def log_px(self, x):
        w, b = self.decoder.weight.detach(), self.decoder.bias.detach()
        eye = self.likelihood.sigma**2 * torch.eye(len(b))
        parts = [math.log(p) + dist.MultivariateNormal(w @ m + b, w @ c @ w.T + eye).log_prob(x)
                 for p, m, c in zip(self.mix["weights"].tolist(), self.mix["locs"], self.mix["covs"])]
        return torch.logsumexp(torch.stack(parts), 0)


class BroadGuide(nn.Module):
    deterministic = False

    def forward(self, x):
        return dist.Normal(torch.zeros(len(x), 2), 2.0).to_event(1)

    def encode(self, x):
        return torch.zeros(len(x), 2), torch.full((len(x), 2), 2.0)


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


@pytest.mark.parametrize("loc, cov", [
    (None, None),
    (torch.tensor([1.0, -0.5]), torch.tensor([[2.0, 0.6], [0.6, 0.5]])),
])
def test_grid_matches_closed_form(loc, cov):
    model = LinearGaussian(loc=loc, cov=cov, seed=3)
    x = model.data(300)
    exact = model.marginal().log_prob(x)
    g = E.grid_log_likelihood(model, x, tol=0.01)
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
    g = E.grid_log_likelihood(model, x, tol=0.01)
    assert g["converged"]
    assert float((g["log_px"] - model.log_px(x)).abs().max()) < 0.01


def test_grid_and_is_agree_with_each_other_on_closed_form():
    model = LinearGaussian(broaden=1.5, seed=4)
    x = model.data(100)
    g = E.grid_log_likelihood(model, x)
    r = E.importance_log_likelihood(model, x, num_samples=1000)
    assert abs(g["mean_log_px"] - r["mean_log_px"]) < 0.01


# ---------------------------------------------------------------- fast Bernoulli scoring


def test_bernoulli_scores_match_log_prob():
    vae = build_vae(TrainConfig())
    torch.manual_seed(0)
    with torch.no_grad():
        logits = vae.decoder(torch.randn(37, 2) * 3) * 5  # include large |logits|
    binary = torch.bernoulli(torch.rand(11, 784))
    grey = torch.rand(11, 784)
    for x in (binary, grey):
        want = vae.likelihood.distribution(logits[None]).log_prob(x[:, None, :])
        got = E._loglik_matrix(vae, x, logits)
        assert E._bernoulli_logits(vae)
        assert torch.allclose(got, want, rtol=1e-5, atol=2e-3)
        fn = E._loglik_fn(vae)
        assert torch.allclose(fn(x, logits[:11]), vae.likelihood.distribution(logits[:11]).log_prob(x), atol=2e-3)
    extreme = torch.tensor([[-200.0, -90.0, -20.0, 0.0, 1e-3, 20.0, 90.0, 200.0] * 98])
    assert torch.allclose(E._softplus_sum(extreme), F.softplus(extreme.double()).sum(-1).float(), rtol=1e-6)


def test_normal_likelihood_is_not_mistaken_for_bernoulli():
    assert not E._bernoulli_logits(LinearGaussian())
    assert E._scoring(LinearGaussian()) == "generic"  # log N(x; l, s) has an x^2 term


def test_continuous_bernoulli_is_scored_by_matmul_exactly(monkeypatch):
    vae = build_vae(TrainConfig(likelihood="continuous-bernoulli"))
    assert E._scoring(vae) == "affine"
    torch.manual_seed(0)
    with torch.no_grad():
        logits = vae.decoder(torch.randn(23, 2) * 3) * 5
    x = torch.rand(9, 784)
    want = vae.likelihood.distribution(logits[None]).log_prob(x[:, None, :])
    assert torch.allclose(E._loglik_matrix(vae, x, logits), want, rtol=1e-5, atol=5e-3)
    fast = E.grid_log_likelihood(vae, x, tol=0.01)
    monkeypatch.setattr(E, "_scoring", lambda vae: "generic")  # plain log_prob, pair by pair
    slow = E.grid_log_likelihood(vae, x, tol=0.01)
    assert torch.allclose(fast["log_px"], slow["log_px"], atol=1e-3)


# ---------------------------------------------------------------- a small trained MNIST model


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from pyro_vae.training.runs import load_run
    from pyro_vae.training.trainer import train

    cfg = TrainConfig(epochs=3, train_limit=3000, test_limit=300, seed=0)
    run = load_run(train(cfg, tmp_path_factory.mktemp("est") / "run", progress=False, log=lambda msg: None))
    data = run.data()
    x = BINARIZATIONS[cfg.binarize].test(data.test_x, cfg.seed)[:300]
    return run.vae, x


@pytest.fixture(scope="module")
def grid(trained):
    vae, x = trained
    return E.grid_log_likelihood(vae, x, tol=0.01)


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
    loose = E.grid_log_likelihood(vae, x, tol=0.1)
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


def test_wrong_latent_dim_and_delta_guide_raise():
    x = torch.bernoulli(torch.full((4, 784), 0.2))
    with pytest.raises(ValueError, match="2-D"):
        E.grid_log_likelihood(build_vae(TrainConfig(latent_dim=3)), x)
    delta = build_vae(TrainConfig(guide="delta"))
    with pytest.raises(ValueError, match="deterministic"):
        E.importance_log_likelihood(delta, x, num_samples=10)
    with pytest.raises(ValueError, match="deterministic"):
        E.elbo_per_image(delta, x)
    # The exact integral needs no guide: it works for the delta-guide model too.
    g = E.grid_log_likelihood(delta, x, tol=0.05)
    assert torch.isfinite(g["log_px"]).all()


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
    g1, g2 = E.grid_log_likelihood(vae, xs[:20]), E.grid_log_likelihood(vae, xs[:20])
    assert torch.equal(g1["log_px"], g2["log_px"])


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


def test_summarise(trained, grid):
    vae, x = trained
    elbo = E.elbo_per_image(vae, x[:50], num_samples=10)
    iw = E.importance_log_likelihood(vae, x[:50], num_samples=50)
    g = E.grid_log_likelihood(vae, x[:50])
    s = E.summarise(elbo=elbo, importance=iw, grid=g, units=E.active_units(vae, x[:50]))
    assert s["gap_exact_minus_elbo"] > s["gap_exact_minus_log_px_is"] > -0.05
    assert all(isinstance(v, (int, float, bool)) for v in s.values())
