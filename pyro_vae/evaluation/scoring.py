"""How the estimators run a model and score images against decoded codes.

Runs: no_grad, eval mode (restored afterwards) and a forked RNG seeded with `seed`, on the model's
device. Scores: log p(x|z) from decoder logits, by the likelihood's own log_prob or, where it is
recognised, a faster exact formula (Bernoulli with logits), and for many images against many codes
by one matrix product wherever log p(x|z) is affine in x (Bernoulli, continuous Bernoulli).
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
import torch.nn.functional as F

from pyro_vae.io import seeded

# Rough cap on the bytes of the largest intermediates (logits and broadcast log_probs of likelihoods
# other than Bernoulli). Temporaries come to a few times this, so peak memory stays well under 1 GB.
CHUNK_BYTES = 128 * 2**20

def _device_dtype(vae, x: torch.Tensor) -> tuple[torch.device, torch.dtype]:
    for p in vae.parameters():
        return p.device, p.dtype if p.is_floating_point() else torch.get_default_dtype()
    return x.device, x.dtype if x.is_floating_point() else torch.get_default_dtype()


@contextlib.contextmanager
def evaluating(vae, device: torch.device, seed: int | None):
    """no_grad + eval mode (restored afterwards) + a forked RNG seeded with `seed`."""
    modes = [(m, m.training) for m in vae.modules()] if hasattr(vae, "modules") else []
    try:
        if hasattr(vae, "eval"):
            vae.eval()
        with torch.no_grad(), seeded(seed, device):
            yield
    finally:
        for m, training in modes:
            m.training = training


def prepare(vae, x: torch.Tensor) -> tuple[torch.Tensor, torch.device]:
    x = torch.as_tensor(x)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"x must be a non-empty batch of flattened images (N, D); got shape {tuple(x.shape)}")
    device, dtype = _device_dtype(vae, x)
    return x.to(device=device, dtype=dtype), device


def bernoulli_logits(vae) -> bool:
    """Whether vae.likelihood.distribution(logits) is Independent(Bernoulli(logits=logits), 1).

    Then log p(x|z) = x . l - sum_j softplus(l_j), exact for binary and grey x alike (Bernoulli
    log_prob with a fractional x is x log s(l) + (1 - x) log s(-l) = x l + log s(-l)).
    """
    probe = torch.linspace(-2.0, 2.0, 6).reshape(2, 3)
    try:
        d = vae.likelihood.distribution(probe)
    except Exception:
        return False
    if not isinstance(d, torch.distributions.Independent) or d.reinterpreted_batch_ndims != 1:
        return False
    base = d.base_dist
    return (
        isinstance(base, torch.distributions.Bernoulli)
        and "logits" in vars(base)
        and base.logits.shape == probe.shape
        and torch.equal(base.logits, probe)
    )


def softplus_sum(logits: torch.Tensor) -> torch.Tensor:
    """sum_j softplus(l_j) over the last axis: the Bernoulli normaliser, -sum_j log sigmoid(-l_j).

    softplus(l) = max(l, 0) + log(1 + exp(-|l|)), and the second terms are summed as the log of
    their product in blocks of 112 factors (each in (1, 2], so a block stays below 2^112, inside
    float32's range): one transcendental per element instead of two, same accuracy as F.softplus.
    """
    if logits.dtype not in (torch.float32, torch.float64):
        return F.softplus(logits).sum(-1)
    relu = logits.clamp_min(0).sum(-1)
    # Clamped so exp never returns a subnormal (those are ~20x slower on x86); 1 + e^-80 == 1 anyway.
    factors = logits.abs().clamp_max_(80).neg_().exp_().add_(1)
    if factors.shape[-1] % 112 == 0:
        return relu + factors.unflatten(-1, (-1, 112)).prod(-1).log_().sum(-1)
    return relu + sum(block.prod(-1).log_() for block in factors.split(112, -1))


def loglik_fn(vae) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """(x (B, D), logits (..., B, D)) -> log p(x|z) (..., B)."""
    if bernoulli_logits(vae):
        def bernoulli(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
            return (logits * x).sum(-1) - softplus_sum(logits)

        return bernoulli
    return lambda x, logits: vae.likelihood.distribution(logits).log_prob(x)


def affine_in_x(vae) -> bool:
    """Whether log p(x|z) = sum_j [x_j a_j(l) + b_j(l)] (affine in each pixel, as for the Bernoulli and
    continuous Bernoulli): checked on probe logits at x = 0, 1/4, 1/2, 1."""
    probe = torch.tensor([[-30.0, -3.0, -0.5, 0.0, 0.7, 4.0, 30.0]])
    try:
        d = vae.likelihood.distribution(probe)
        if not isinstance(d, torch.distributions.Independent) or d.reinterpreted_batch_ndims != 1:
            return False
        lp = {v: d.base_dist.log_prob(torch.full_like(probe, v)).double() for v in (0.0, 0.25, 0.5, 1.0)}
    except Exception:
        return False
    if any(t.shape != probe.shape or not torch.isfinite(t).all() for t in lp.values()):
        return False
    slope = lp[1.0] - lp[0.0]
    return all(torch.allclose(lp[v], lp[0.0] + v * slope, rtol=1e-4, atol=1e-4) for v in (0.25, 0.5))


def scoring_mode(vae) -> str:
    """How images are scored against many codes: 'bernoulli' (x . l - sum softplus l), 'affine'
    (x . a(l) + sum b(l) from the likelihood's own per-pixel log_prob) or 'generic' (log_prob)."""
    if bernoulli_logits(vae):
        return "bernoulli"
    return "affine" if affine_in_x(vae) else "generic"


def linear_terms(vae, mode: str, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(A (G, D), c (G,)) with log p(x|z_g) = x @ A[g] + c[g], for the 'bernoulli' and 'affine' modes."""
    if mode == "bernoulli":
        return logits, -softplus_sum(logits)
    base = vae.likelihood.distribution(logits).base_dist
    zero = base.log_prob(torch.zeros_like(logits))
    return base.log_prob(torch.ones_like(logits)) - zero, zero.sum(-1)


def loglik_matrix(vae, x: torch.Tensor, logits: torch.Tensor, mode: str | None = None) -> torch.Tensor:
    """log p(x_i | z_g) for every image i (x: (N, D)) and code g (logits: (G, D)) -> (N, G).

    Bernoulli and other likelihoods affine in x: one matmul, x @ A^T + c. Otherwise: broadcast
    log_prob, blocked over images so the (block, G, D) intermediate stays bounded.
    """
    mode = mode or scoring_mode(vae)
    if mode != "generic":
        a, c = linear_terms(vae, mode, logits)
        return torch.addmm(c, x, a.T)
    dist = vae.likelihood.distribution(logits)
    step = max(1, CHUNK_BYTES // max(1, logits.numel() * logits.element_size()))
    return torch.cat([dist.log_prob(x[i : i + step, None, :]) for i in range(0, len(x), step)])
