"""Observation models p(x | z) from decoder logits, chosen by name."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import pyro.distributions as dist
import torch
from torch.nn.functional import softplus

from pyro_vae.registry import Registry


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


# ---------------------------------------------------------------------------------------------
# Continuous Bernoulli (Loaiza-Ganem & Cunningham 2019): a proper density on [0, 1] for grey values


def continuous_bernoulli_log_norm(logits: torch.Tensor) -> torch.Tensor:
    """log C(lambda) with lambda = sigmoid(logits), C = 2 artanh(1 - 2 lambda) / (1 - 2 lambda).

    In terms of the logit eta, C = eta / tanh(eta / 2), even in eta, so
    log C = log|eta| + log(1 + e^-|eta|) - log(1 - e^-|eta|), and log 2 + eta^2 / 12 near 0.
    Torch's version goes through sigmoid(eta), which rounds to 1 for eta > ~17 in float32 and
    then gives log C = +inf; decoders reach such logits on always-white pixels.
    """
    a = logits.abs()
    small = a < 1e-3
    safe = torch.where(small, torch.ones_like(a), a)  # keeps the unused branch (and its gradient) finite
    far = torch.log(safe) + softplus(-safe) - torch.log(-torch.expm1(-safe))
    near = math.log(2.0) + logits.pow(2) / 12
    return torch.where(small, near, far)


class ContinuousBernoulli(dist.ContinuousBernoulli):
    """Pyro's ContinuousBernoulli with a log-normaliser that stays finite for any logit."""

    def _cont_bern_log_norm(self) -> torch.Tensor:
        return continuous_bernoulli_log_norm(self.logits)


def continuous_bernoulli_mean(logits: torch.Tensor) -> torch.Tensor:
    """E[x] = sigmoid(eta) / (2 sigmoid(eta) - 1) + 1 / (log(1 - sigmoid(eta)) - log sigmoid(eta)):
    the distribution's mean, which is not sigmoid(eta) (it is pulled towards 1/2)."""
    return ContinuousBernoulli(logits=logits, validate_args=False).mean


# For grey values: binarize "none". With binarised data it still scores {0, 1} pixels correctly,
# but its bound is a density on [0, 1] and not comparable to the Bernoulli one.
LIKELIHOODS.register("continuous-bernoulli")(
    Likelihood(lambda logits: ContinuousBernoulli(logits=logits, validate_args=False).to_event(1), continuous_bernoulli_mean)
)
