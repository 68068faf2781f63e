"""Observation models p(x | z) from decoder logits, chosen by name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pyro.distributions as dist
import torch

from .registry import Registry


@dataclass(frozen=True)
class Likelihood:
    distribution: Callable[[torch.Tensor], dist.Distribution]  # logits (..., 784) -> event dim 1
    mean: Callable[[torch.Tensor], torch.Tensor]  # logits -> expected image


LIKELIHOODS: Registry[Likelihood] = Registry("likelihood")

# validate_args=False: grey values (binarisation "none") are valid Bernoulli means to score, and
# validation costs time on every step.
LIKELIHOODS.register("bernoulli")(
    Likelihood(lambda logits: dist.Bernoulli(logits=logits, validate_args=False).to_event(1), torch.sigmoid)
)
