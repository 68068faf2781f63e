"""Priors over the latent code, chosen by name.

A prior is a module whose call returns a distribution with event shape (z_dim,) and no batch shape;
the model's plate broadcasts it over the images.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

from .registry import Registry

# Constructor signature: (z_dim, guide, **options) -> nn.Module. The guide is passed for priors
# defined through it (VampPrior); others ignore it.
PRIORS: Registry = Registry("prior")


@PRIORS.register("standard-normal")
class StandardNormal(nn.Module):
    def __init__(self, z_dim: int, guide: nn.Module | None = None):
        super().__init__()
        self.register_buffer("loc", torch.zeros(z_dim))
        self.register_buffer("scale", torch.ones(z_dim))

    def forward(self) -> dist.Distribution:
        return dist.Normal(self.loc, self.scale).to_event(1)
