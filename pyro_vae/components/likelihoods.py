"""Observation models p(x | z) from decoder logits, chosen by name.

`LIKELIHOODS[name]` is a Likelihood, or a factory called with the likelihood's options (the
`likelihood_options` table) that returns one, as networks are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import pyro.distributions as dist
import torch
from torch.nn.functional import softplus

from pyro_vae.errors import UserError
from pyro_vae.registry import Registry, float_option


@dataclass(frozen=True)
class Likelihood:
    distribution: Callable[[torch.Tensor], dist.Distribution]  # logits (..., 784) -> event dim 1
    mean: Callable[[torch.Tensor], torch.Tensor]  # logits -> expected image
    record: dict | None = None  # what config.json keeps of it beside its options (e.g. a scale converted from them)


LIKELIHOODS: Registry[Likelihood] = Registry("likelihood")
PIXELS = 784


def build_likelihood(name: str, options: dict) -> Likelihood:
    """The likelihood `name` with its options: a registered Likelihood value takes none."""
    return LIKELIHOODS.build(name, options, Likelihood)

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


# ---------------------------------------------------------------------------------------------
# Normal with a fixed scale around the decoder's sigmoid output: the squared-error autoencoders'
# likelihood. The Generative Deep Learning book's VAE loss, r_loss_factor x the mean over the 784
# pixels of (x - mean)^2, plus the KL, is this ELBO's negative up to a constant: the Normal's
# -log p(x | z) = sum (x - mean)^2 / (2 scale^2) + 784 log(scale sqrt(2 pi)), the same loss when
# 1 / (2 scale^2) = r_loss_factor / 784, i.e. scale = sqrt(784 / (2 r_loss_factor)) (0.626 at 1000).


def scale_of_r_loss_factor(r_loss_factor: float) -> float:
    return math.sqrt(PIXELS / (2 * r_loss_factor))


def normal_log_constant(scale: float) -> float:
    """What -log p(x | z) adds to the squared-error term: 784 log(scale sqrt(2 pi))."""
    return PIXELS * math.log(scale * math.sqrt(2 * math.pi))


def normal_scale(scale: float | None = None, r_loss_factor: float | None = None) -> float:
    """The Normal's scale from one of its two statements (the default: the book's r_loss_factor 1000)."""
    if scale is not None and r_loss_factor is not None:
        scale_from_r = scale_of_r_loss_factor(float_option("likelihood normal", "r_loss_factor", r_loss_factor, 1e-12))
        if not math.isclose(float_option("likelihood normal", "scale", scale, 1e-12), scale_from_r, rel_tol=1e-6):
            raise UserError(f"likelihood normal: scale {scale} and r_loss_factor {r_loss_factor} disagree (that factor "
                            f"means scale {scale_from_r:.6g}); give one of them")
        return scale_from_r
    if scale is not None:
        value = float_option("likelihood normal", "scale", scale)
        if not value > 0:
            raise UserError(f"likelihood normal option scale must be positive, got {scale!r}")
        return value
    factor = 1000.0 if r_loss_factor is None else float_option("likelihood normal", "r_loss_factor", r_loss_factor)
    if not factor > 0:
        raise UserError(f"likelihood normal option r_loss_factor must be positive, got {r_loss_factor!r}")
    return scale_of_r_loss_factor(factor)


@LIKELIHOODS.register("normal")
def normal(*, scale: float | None = None, r_loss_factor: float | None = None) -> Likelihood:
    """Normal(sigmoid(logits), scale) per pixel, for grey values (binarize "none"); its bound is a
    density, not comparable to a Bernoulli one. State the scale, or the book's r_loss_factor."""
    sd = normal_scale(scale, r_loss_factor)
    record = {"scale": sd} if r_loss_factor is None else {"scale": sd, "r_loss_factor": float(r_loss_factor),
                                                           "scale_from": "sqrt(784 / (2 r_loss_factor))"}
    return Likelihood(lambda logits: dist.Normal(torch.sigmoid(logits), sd, validate_args=False).to_event(1), torch.sigmoid,
                      record)
