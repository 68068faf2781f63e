"""Amortized guides q(z | x), chosen by name.

A guide owns an encoder network and turns its features into a distribution over z with batch
shape (B,) and event shape (z_dim,). `encode` gives the posterior mean and scale (zeros for a
deterministic guide): the codes studies use, never a sample. For guides that are not diagonal
Gaussians the scale is the marginal standard deviation of each axis.

Options come from `guide_options` in the config and are keyword-only arguments of the guide's
constructor (see options.py).
"""

from __future__ import annotations

from typing import Callable

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from torch import nn
from torch.nn.functional import softplus

from pyro_vae.errors import UserError
from pyro_vae.io import seeded
from pyro_vae.registry import GuideContract, Registry, int_option

# Constructor signature: (z_dim, make_encoder, **options) -> nn.Module, where
# make_encoder(out_dim) builds the configured encoder network.
GUIDES: Registry[type[GuideContract]] = Registry("guide")
EncoderFactory = Callable[[int], nn.Module]

MIN_SCALE = 1e-4  # keeps log q finite when an encoder drives a scale towards zero


# ---------------------------------------------------------------------------------------------
# Guides


@GUIDES.register("gaussian")
class GaussianGuide(nn.Module):
    """Diagonal Normal(mean(x), scale(x))."""

    deterministic = False

    def __init__(self, z_dim: int, make_encoder: EncoderFactory):
        super().__init__()
        self.z_dim = z_dim
        self.encoder = make_encoder(2 * z_dim)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, raw_scale = self.encoder(x).split(self.z_dim, dim=-1)
        return loc, softplus(raw_scale) + MIN_SCALE

    def forward(self, x: torch.Tensor) -> dist.Distribution:
        return dist.Normal(*self.encode(x)).to_event(1)


@GUIDES.register("delta")
class DeltaGuide(nn.Module):
    """A point mass at enc(x): the deterministic autoencoder as a guide."""

    deterministic = True

    def __init__(self, z_dim: int, make_encoder: EncoderFactory):
        super().__init__()
        self.encoder = make_encoder(z_dim)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc = self.encoder(x)
        return loc, torch.zeros_like(loc)

    def forward(self, x: torch.Tensor) -> dist.Distribution:
        return dist.Delta(self.encoder(x), event_dim=1)


@GUIDES.register("full-rank")
class FullRankGuide(nn.Module):
    """MultivariateNormal(mean(x), L(x) L(x)^T) with an amortized Cholesky factor L.

    The encoder gives z_dim means, z_dim raw diagonal entries and z_dim (z_dim - 1) / 2 strictly
    lower entries. The diagonal is softplus(raw) + MIN_SCALE, as the `gaussian` guide's scale, so
    with zero lower entries the two guides coincide (and the diagonal stays positive without the
    overflow exp() risks).
    """

    deterministic = False

    def __init__(self, z_dim: int, make_encoder: EncoderFactory):
        super().__init__()
        self.z_dim = z_dim
        self.n_lower = z_dim * (z_dim - 1) // 2
        self.encoder = make_encoder(2 * z_dim + self.n_lower)
        rows, cols = torch.tril_indices(z_dim, z_dim, offset=-1)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)

    def loc_and_scale_tril(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, raw_diag, lower = self.encoder(x).split([self.z_dim, self.z_dim, self.n_lower], dim=-1)
        tril = torch.diag_embed(softplus(raw_diag) + MIN_SCALE)
        if self.n_lower:
            off = lower.new_zeros(tril.shape)
            off[..., self.rows, self.cols] = lower
            tril = tril + off
        return loc, tril

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, tril = self.loc_and_scale_tril(x)
        return loc, tril.pow(2).sum(-1).sqrt()  # sqrt(diag(L L^T)): the marginal standard deviations

    def forward(self, x: torch.Tensor) -> dist.Distribution:
        loc, tril = self.loc_and_scale_tril(x)
        return dist.MultivariateNormal(loc, scale_tril=tril)


@GUIDES.register("iaf")
class IAFGuide(nn.Module):
    """A diagonal Gaussian pushed through `steps` inverse autoregressive flow steps conditioned on x.

    The encoder gives the base mean, raw scale and a context vector h(x) of `context_dim` features;
    each step is Pyro's conditional affine autoregressive transform whose autoregressive network
    (hidden layers of `hidden_dim`) also reads h(x). Sampling is one pass per step and the density
    of a guide sample comes from the transform's cache, so training is as cheap as a plain IAF.

    `encode` returns the mean and marginal standard deviation of the *flowed* q(z | x), estimated
    by Monte Carlo from `encode_samples` draws under a fixed seed (the global RNG is left as it
    was), so codes are deterministic; their Monte Carlo error is about scale / sqrt(encode_samples).
    """

    deterministic = False
    ENCODE_SEED = 20_240_601

    def __init__(
        self, z_dim: int, make_encoder: EncoderFactory, *, steps: int = 2, context_dim: int = 16,
        hidden_dim: int | None = None, encode_samples: int = 128,
    ):
        super().__init__()
        where = "guide 'iaf'"
        self.z_dim = z_dim
        self.steps = int_option(where, "steps", steps, 1)
        self.context_dim = int_option(where, "context_dim", context_dim, 1)
        hidden = max(64, 4 * z_dim) if hidden_dim is None else int_option(where, "hidden_dim", hidden_dim, 1)
        if hidden < z_dim:
            raise UserError(f"{where} option hidden_dim must be at least the latent size {z_dim} (autoregressive masks), got {hidden}")
        self.encode_samples = int_option(where, "encode_samples", encode_samples, 2)
        self.encoder = make_encoder(2 * z_dim + self.context_dim)
        # Each step draws its own random variable order (seeded by the run's seed, kept in state_dict).
        self.flows = nn.ModuleList(
            T.conditional_affine_autoregressive(z_dim, self.context_dim, hidden_dims=[hidden, hidden]) for _ in range(self.steps)
        )

    def forward(self, x: torch.Tensor) -> dist.Distribution:
        loc, raw_scale, context = self.encoder(x).split([self.z_dim, self.z_dim, self.context_dim], dim=-1)
        base = dist.Normal(loc, softplus(raw_scale) + MIN_SCALE).to_event(1)
        return dist.TransformedDistribution(base, [flow.condition(context) for flow in self.flows])

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with seeded(self.ENCODE_SEED, x.device):
            z = self(x).rsample((self.encode_samples,))
        return z.mean(0), z.std(0)
