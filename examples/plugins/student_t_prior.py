"""A prior: independent Student-t axes (heavier tails than N(0, I), so outlying codes cost less).

Contract (PriorContract): constructed as PRIOR(z_dim, guide, **options) with the options keyword-only;
an nn.Module whose call returns p(z) with batch shape () and event shape (z_dim,).

    pyro-vae train --plugin examples/plugins/student_t_prior.py --prior student-t --prior-option df=5 ...
"""

import pyro.distributions as dist
import torch
from torch import nn

from pyro_vae import register_prior


@register_prior("student-t")
class StudentTPrior(nn.Module):
    def __init__(self, z_dim: int, guide=None, *, df: float = 3.0):
        super().__init__()
        if not df > 0:
            raise ValueError(f"df must be positive, got {df}")
        # buffers, not plain tensors: they follow the model to its device and into the checkpoint
        self.register_buffer("df", torch.tensor(float(df)))
        self.register_buffer("loc", torch.zeros(z_dim))
        self.register_buffer("scale", torch.ones(z_dim))

    def forward(self) -> dist.Distribution:
        return dist.StudentT(self.df, self.loc, self.scale).to_event(1)
