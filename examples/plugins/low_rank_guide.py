"""A guide: q(z | x) = Normal(mean(x), D(x) + U(x) U(x)^T), a diagonal plus a rank-`rank` covariance,
between the diagonal and the full-rank guide in cost.

Contract (GuideContract): constructed as GUIDE(z_dim, make_encoder, **options); make_encoder(out_dim)
builds the configured network from (N, 784) to (N, out_dim). Calling it on a batch returns q(z | x)
with batch shape (N,) and event shape (z_dim,); encode(x) returns the posterior mean and the marginal
scale of each axis, (N, z_dim) each; the attribute `deterministic` is False.
"""

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn.functional import softplus

from pyro_vae import register_guide


@register_guide("low-rank")
class LowRankGuide(nn.Module):
    deterministic = False

    def __init__(self, z_dim: int, make_encoder, *, rank: int = 1):
        super().__init__()
        if not (isinstance(rank, int) and rank >= 1):
            raise ValueError(f"rank must be a whole number of at least 1, got {rank!r}")
        self.z_dim, self.rank = z_dim, rank
        self.encoder = make_encoder(z_dim * (2 + rank))

    def _parts(self, x: torch.Tensor):
        features = self.encoder(x)
        loc, raw_diag, factor = features.split([self.z_dim, self.z_dim, self.z_dim * self.rank], dim=-1)
        return loc, factor.reshape(*x.shape[:-1], self.z_dim, self.rank), softplus(raw_diag) + 1e-4

    def forward(self, x: torch.Tensor) -> dist.Distribution:
        return dist.LowRankMultivariateNormal(*self._parts(x))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, factor, diag = self._parts(x)
        return loc, (diag + factor.pow(2).sum(-1)).sqrt()
