"""Amortized guides q(z | x), chosen by name.

A guide owns an encoder network and turns its features into a distribution over z with batch
shape (B,) and event shape (z_dim,). `encode` gives the posterior mean and scale (zeros for a
deterministic guide): the codes studies use, never a sample.
"""

from __future__ import annotations

from typing import Callable

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn.functional import softplus

from .registry import Registry

# Constructor signature: (z_dim, make_encoder, **options) -> nn.Module, where
# make_encoder(out_dim) builds the configured encoder network.
GUIDES: Registry = Registry("guide")
EncoderFactory = Callable[[int], nn.Module]

MIN_SCALE = 1e-4  # keeps log q finite when an encoder drives a scale towards zero


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
