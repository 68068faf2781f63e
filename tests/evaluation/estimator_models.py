"""Models the estimator and grid tests share: linear-Gaussian stand-ins with closed-form log p(x),
and one small MNIST VAE trained once per session (both test files score it; training it twice
would double their slowest set-up)."""

import math

import pyro.distributions as dist
import torch
from torch import nn

from pyro_vae.config import TrainConfig
from pyro_vae.data import BINARIZATIONS

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


_CACHE: dict = {}


def trained_mnist_vae(tmp_path_factory):
    """(vae, 300 binarised test images) of a 2-D VAE trained for 3 epochs on 3000 MNIST images."""
    if "trained" not in _CACHE:
        from pyro_vae.training.runs import load_run
        from pyro_vae.training.trainer import train

        cfg = TrainConfig(epochs=3, train_limit=3000, test_limit=300, seed=0)
        run = load_run(train(cfg, tmp_path_factory.mktemp("est") / "run", progress=False, log=lambda msg: None))
        data = run.data()
        _CACHE["trained"] = run.vae, BINARIZATIONS[cfg.binarize].test(data.test_x, cfg.seed)[:300]
    return _CACHE["trained"]


def trained_grid(tmp_path_factory):
    """grid_log_likelihood(tol=0.01) of the trained VAE's 300 test images."""
    if "grid" not in _CACHE:
        from pyro_vae.evaluation.grid import grid_log_likelihood

        _CACHE["grid"] = grid_log_likelihood(*trained_mnist_vae(tmp_path_factory), tol=0.01)
    return _CACHE["grid"]
