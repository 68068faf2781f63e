"""The VAE as a Pyro program: model p(z) p(x | z) and amortized guide q(z | x), built from names."""

from __future__ import annotations

import pyro
import torch
from pyro import poutine
from torch import nn

from pyro_vae.components.guides import GUIDES
from pyro_vae.components.likelihoods import Likelihood, build_likelihood
from pyro_vae.components.networks import build_network, in_precision
from pyro_vae.components.priors import PRIORS
from pyro_vae.errors import UserError


class VAE(nn.Module):
    """Prior, decoder and likelihood make the model; the guide module makes the guide.

    `beta` scales the latent site's log-densities in both model and guide (log p(z) and log q(z)):
    beta=1 is the ELBO, beta=0 drops them (with a delta guide: the plain autoencoder).
    """

    def __init__(self, prior: nn.Module, guide: nn.Module, decoder: nn.Module, likelihood: Likelihood, beta: float = 1.0):
        super().__init__()
        self.prior, self.encoder_guide, self.decoder = prior, guide, decoder
        self.likelihood = likelihood
        self.beta = beta

    def _latent_weight(self):
        # poutine.scale refuses 0; masking is the exact way to drop a site's terms.
        return poutine.mask(mask=False) if self.beta == 0 else poutine.scale(scale=self.beta)

    def model(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            with self._latent_weight():
                z = pyro.sample("z", self.prior())
            pyro.sample("x", self.likelihood.distribution(self.decoder(z)), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            with self._latent_weight():
                pyro.sample("z", self.encoder_guide(x))

    # The API studies use: posterior means as codes, Bernoulli means as images.
    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder_guide.encode(x)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.likelihood.mean(self.decoder(z))

    @torch.no_grad()
    def sample_prior(self, n: int) -> torch.Tensor:
        return self.prior().sample((n,))


def build_vae(cfg) -> VAE:
    """A VAE from a TrainConfig (names and options resolved through the registries)."""
    try:
        return _build_vae(cfg)
    except (MemoryError, RuntimeError) as e:
        if not isinstance(e, MemoryError) and "allocate" not in str(e):
            raise
        raise UserError(f"the model does not fit in memory (hidden-dim {cfg.hidden_dim}, latent-dim {cfg.latent_dim}); "
                        "choose a smaller --hidden-dim or --latent-dim") from None


def _build_vae(cfg) -> VAE:
    network = build_network(cfg.network, cfg.network_options)
    encoder = lambda out_dim: in_precision(network.encoder(out_dim, cfg.hidden_dim), cfg.precision)  # noqa: E731
    guide = GUIDES[cfg.guide](cfg.latent_dim, encoder, **cfg.guide_options)
    prior = PRIORS[cfg.prior](cfg.latent_dim, guide, **cfg.prior_options)
    decoder = in_precision(network.decoder(cfg.latent_dim, cfg.hidden_dim), cfg.precision)
    return VAE(prior, guide, decoder, build_likelihood(cfg.likelihood, cfg.likelihood_options), cfg.beta)
