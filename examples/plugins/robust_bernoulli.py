"""A likelihood: each pixel is the decoder's Bernoulli draw, flipped to a coin toss with probability
`NOISE` (a model of stray pixels: no single pixel can cost more than -log(NOISE / 2) nats).

Contract (LikelihoodContract): a value with `distribution(logits)`, p(x | z) with event dim 1 over the
784 pixels (log_prob of (N, 784) images has shape (N,)), and `mean(logits)`, the expected image.
"""

import pyro.distributions as dist
import torch

from pyro_vae import register_likelihood
from pyro_vae.components.likelihoods import Likelihood

NOISE = 0.02


def _probs(logits: torch.Tensor) -> torch.Tensor:
    return (1 - NOISE) * torch.sigmoid(logits) + NOISE / 2


register_likelihood("robust-bernoulli")(
    Likelihood(lambda logits: dist.Bernoulli(probs=_probs(logits), validate_args=False).to_event(1), _probs)
)
