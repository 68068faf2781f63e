"""Estimators of how well a trained VAE models data: log p(x) and its bounds, and active units.

Units: everything is in nats per image. log p(x) of binarised MNIST is a negative number (about
-130 to -200 for small models); a larger (less negative) value is a better model. Evaluation is
always unscaled: the model's `beta` never enters (beta only weights the training objective).

* :func:`elbo_per_image` -- the standard ELBO (beta = 1), E_q[log p(x|z) + log p(z) - log q(z|x)],
  by Monte Carlo with the guide (analytic KL where torch knows it).
* :func:`importance_log_likelihood` -- the importance-weighted estimate of log p(x) with the guide
  as proposal (Burda et al. 2015): log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x). It is a stochastic
  lower bound that rises with K towards log p(x); PSIS Pareto-k (Vehtari et al. 2024) of each
  image's weights tells whether K is enough (k > 0.7: the estimate is unreliable).
* :func:`grid_log_likelihood` -- for 2-D codes, the exact log p(x) = log int p(x|z) p(z) dz by
  quadrature on a regular grid of codes, refined until it stops moving (defined in
  :mod:`pyro_vae.evaluation.grid`, importable from here with the other estimators).
* :func:`active_units` -- Burda et al.'s count of latent dimensions whose posterior mean varies
  over images (Var_x E_q[z_j] > threshold).

The model interface used: `vae.prior()` (distribution over z, event (d,)), `vae.encoder_guide(x)`
(q(z|x), batch (B,), event (d,)), `vae.encoder_guide.deterministic`, `vae.decoder(z)` (logits,
leading dims pass through), `vae.likelihood.distribution(logits)` (event dim 1 over pixels) and
`vae.encode(x)` (posterior mean and scale). Nothing else about priors, guides or networks is assumed.
A Bernoulli-with-logits likelihood is recognised and scored with a faster, exact formula
(:mod:`pyro_vae.evaluation.scoring`).

All functions run under torch.no_grad in eval mode (restored afterwards), on the model's device,
and return CPU tensors. Random draws come from a forked RNG seeded with `seed`, so the same seed and
the same batch settings give identical numbers without disturbing the caller's RNG.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Callable

import numpy as np
import pyro
import torch

from pyro_vae.components.objectives import log_weights
from pyro_vae.evaluation.grid import grid_log_likelihood
from pyro_vae.evaluation.scoring import evaluating, loglik_fn, prepare

__all__ = ["elbo_per_image", "importance_log_likelihood", "grid_log_likelihood", "active_units"]

# bench/run.py looks the estimators' likelihood formula up under this name.
_loglik_fn = loglik_fn

# Logits per importance-sampling chunk: small enough to stay in cache (on a 2-core Xeon, 4 MB
# chunks ran ~1.2x faster than 16 MB and ~1.6x faster than 128 MB ones), big enough that Python
# overhead stays small.
IS_CHUNK_BYTES = 4 * 2**20
# Codes per Pyro trace of importance sampling (their z and log-weights, not their logits, which are
# decoded IS_CHUNK_BYTES at a time inside the trace): one trace per image cost ~2-4 ms of Pyro's
# bookkeeping, 20-45% over the decoder's arithmetic for a 2-D MLP VAE at K = 1000.
IS_TRACE_BYTES = 16 * 2**20
PARETO_K_LIMIT = 0.7
MIN_PSIS_SAMPLES = 25  # below this ArviZ's PSIS has too few tail draws to fit (it returns inf)
FLAT_LOG_WEIGHTS = 1e-4  # nats: log-weights spanning less than this are equal (IS is exact there)


# ---------------------------------------------------------------------------------------------
# Plumbing


def _check_stochastic_guide(vae, what: str) -> None:
    if getattr(vae.encoder_guide, "deterministic", False):
        raise ValueError(
            f"{what} is undefined for a deterministic (delta) guide: q(z|x) is a point mass with no density "
            "to weight by; use grid_log_likelihood (2-D codes) for such a model's log p(x)"
        )


def _as_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _guided_batches(vae, x: torch.Tensor, batch_size: int):
    """(first row, images, q(z|x)) for each run of `batch_size` images."""
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size]
        yield i, xb, vae.encoder_guide(xb)


def _unscaled_program(vae, prior, loglik, q, slice_codes: int | None = None):
    """The VAE's model and guide as Pyro programs for a batch whose q(z|x) is given, without beta
    (evaluation is unscaled) and with log p(x|z) scored by `loglik` (the fast formula where there is one).
    With `slice_codes`, the model decodes its codes that many at a time (cache-sized logits), so one
    trace can hold many images' particles: Pyro's bookkeeping runs once per trace, not per slice."""

    def decoded_loglik(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if slice_codes is None or z.dim() < 3:
            return loglik(x, vae.decoder(z))
        per = max(1, slice_codes // max(1, z.shape[-2]))  # particles per slice, all the batch's images
        return torch.cat([loglik(x, vae.decoder(z[j : j + per])) for j in range(0, z.shape[0], per)])

    def model(x: torch.Tensor) -> None:
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", prior)
            pyro.factor("x", decoded_loglik(x, z))

    def guide(x: torch.Tensor) -> None:
        with pyro.plate("data", len(x)):
            pyro.sample("z", q)

    return model, guide


# ---------------------------------------------------------------------------------------------
# Importance sampling and the ELBO


def _trace_batches(vae, n: int, k: int, batch_size: int | None, chunk: int | None) -> tuple[int, int]:
    """(images, particles) per importance-sampling trace: by default every particle of as many images
    as keep the trace's codes near IS_TRACE_BYTES (at most 1,000 images: the encoder's batch)."""
    codes = max(1, IS_TRACE_BYTES // (4 * vae.prior().event_shape[0]))
    if batch_size is None:
        batch_size = max(1, min(n, 1000, codes // max(1, min(k, chunk or k))))
    if chunk is None:
        chunk = max(1, min(k, codes // batch_size))
    if batch_size < 1 or chunk < 1:
        raise ValueError(f"batch_size and chunk must be positive, got {batch_size} and {chunk}")
    return batch_size, chunk


def _default_batches(n: int, k: int, d_x: int, elem: int, batch_size: int | None, chunk: int | None) -> tuple[int, int]:
    codes = max(1, IS_CHUNK_BYTES // (d_x * elem))  # decoded codes per chunk
    if batch_size is None:
        batch_size = max(1, min(n, codes // max(1, min(k, chunk or k))))
    if chunk is None:
        chunk = max(1, min(k, codes // batch_size))
    if batch_size < 1 or chunk < 1:
        raise ValueError(f"batch_size and chunk must be positive, got {batch_size} and {chunk}")
    return batch_size, chunk



@torch.no_grad()
def log_importance_weights(vae, x: torch.Tensor, num_samples: int = 1000, batch_size: int | None = None,
                           chunk: int | None = None, seed: int = 0,
                           progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """log w_ik = log p(x_i|z_ik) + log p(z_ik) - log q(z_ik|x_i), z_ik ~ q(z|x_i): a (N, K) CPU tensor.

    The weights are the training objectives' (:func:`pyro_vae.components.objectives.log_weights`),
    of the model and guide without beta. Images go `batch_size` at a time and their K draws `chunk`
    at a time, one Pyro trace holding batch_size * chunk codes (by default their codes fill about
    IS_TRACE_BYTES); inside it they are decoded IS_CHUNK_BYTES of logits at a time. Numbers depend on
    seed, batch_size and chunk (the order of the random draws), nothing else. `progress`, if given, is called with the images done after each batch.
    """
    x, device = _prepare_sampling(vae, x, num_samples, "importance sampling")
    n, k_total = len(x), int(num_samples)
    batch_size, chunk = _trace_batches(vae, n, k_total, batch_size, chunk)
    slice_codes = max(1, IS_CHUNK_BYTES // (x.shape[1] * x.element_size()))
    out = torch.empty(n, k_total, dtype=x.dtype)
    with evaluating(vae, device, seed):
        prior, loglik = vae.prior(), loglik_fn(vae)
        for i, xb, q in _guided_batches(vae, x, batch_size):
            if isinstance(q, torch.distributions.Independent) and type(q.base_dist).__name__ == "Delta":
                raise ValueError("importance sampling is undefined for a point-mass (Delta) guide")
            model, guide = _unscaled_program(vae, prior, loglik, q, slice_codes)
            for j in range(0, k_total, chunk):
                k = min(chunk, k_total - j)
                out[i : i + len(xb), j : j + k] = log_weights(model, guide, xb, k).T.to("cpu", out.dtype)
            if progress is not None:
                progress(i + len(xb))
    return out


def pareto_k(log_weights: torch.Tensor | np.ndarray) -> np.ndarray:
    """PSIS Pareto-k of each row's importance weights (ArviZ `psislw`, reff=1, all rows in one call).

    Rows whose log-weights span less than FLAT_LOG_WEIGHTS nats are equal weights (the proposal is
    the posterior): there is no tail to fit and k is reported as -inf. With fewer than
    MIN_PSIS_SAMPLES draws the fit is impossible and k is NaN.
    """
    import arviz as az

    lw = np.asarray(_as_numpy(log_weights) if isinstance(log_weights, torch.Tensor) else log_weights, dtype=np.float64)
    if lw.ndim != 2:
        raise ValueError(f"log_weights must be (N, K), got shape {lw.shape}")
    if lw.shape[1] < MIN_PSIS_SAMPLES:
        return np.full(lw.shape[0], np.nan)
    flat = (lw.max(1) - lw.min(1)) < FLAT_LOG_WEIGHTS
    k = np.full(lw.shape[0], -np.inf)
    if (~flat).any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ArviZ warns about large k itself; we report k
            _, k_rest = az.psislw(lw[~flat], reff=1.0)
        k[~flat] = np.asarray(k_rest, dtype=np.float64)
    return k



def _prepare_sampling(vae, x: torch.Tensor, num_samples: int, what: str):
    """Checks shared by the guide-sampling estimators, then the images on the model's device."""
    _check_stochastic_guide(vae, what)
    if num_samples < 1:
        raise ValueError(f"num_samples must be at least 1, got {num_samples}")
    return prepare(vae, x)



def importance_log_likelihood(vae, x: torch.Tensor, num_samples: int = 1000, batch_size: int | None = None,
                              chunk: int | None = None, seed: int = 0, psis: bool = True,
                              progress: Callable[[int], None] | None = None) -> dict:
    """Importance-weighted estimate of log p(x) per image, proposal q(z|x) (Burda et al. 2015).

    log p(x) ~= logsumexp_k(log w_k) - log K,   log w = log p(x|z) + log p(z) - log q(z|x).

    Its expectation is a lower bound on log p(x) that rises with K (K = 1 is the ELBO). Raises
    ValueError for a deterministic (delta) guide.

    Returns a dict:
      log_px          (N,) tensor, nats per image (negative)
      mean_log_px     float, the mean over images
      stderr          float, standard error of that mean over images
      elbo            (N,) tensor, the mean of the same K log-weights (an ELBO estimate, beta = 1)
      ess             (N,) tensor, effective sample size (sum w)^2 / sum w^2 of each image's weights
      pareto_k        (N,) numpy array, PSIS k of each image's weights (-inf: all weights equal;
                      NaN: K < 25 or psis=False)
      share_k_above_0_7  float, share of images with k > 0.7 (their estimate is unreliable)
      k_threshold     float, the sample-size-aware threshold min(1 - 1/log10 K, 0.7)
      share_k_above_threshold  float
      num_samples, batch_size, chunk, seed, seconds (the sampling), psis_seconds
    """
    n = len(x)
    started = time.perf_counter()
    xt = torch.as_tensor(x)
    batch_size, chunk = _trace_batches(vae, n, num_samples, batch_size, chunk)
    lw = log_importance_weights(vae, xt, num_samples, batch_size, chunk, seed, progress)
    seconds = time.perf_counter() - started
    log_px = torch.logsumexp(lw, 1) - math.log(num_samples)
    ess = torch.exp(2 * torch.logsumexp(lw, 1) - torch.logsumexp(2 * lw, 1))
    started = time.perf_counter()
    k = pareto_k(lw) if psis else np.full(n, np.nan)
    psis_seconds = time.perf_counter() - started
    threshold = min(1 - 1 / math.log10(num_samples), PARETO_K_LIMIT) if num_samples > 10 else float("nan")
    return {
        "log_px": log_px,
        "mean_log_px": float(log_px.mean()),
        "stderr": float(log_px.std() / math.sqrt(n)) if n > 1 else float("nan"),
        "elbo": lw.mean(1),
        "ess": ess,
        "pareto_k": k,
        "share_k_above_0_7": float(np.mean(k > PARETO_K_LIMIT)) if n else float("nan"),
        "k_threshold": threshold,
        "share_k_above_threshold": float(np.mean(k > threshold)) if n else float("nan"),
        "num_samples": int(num_samples),
        "batch_size": batch_size,
        "chunk": chunk,
        "seed": seed,
        "seconds": seconds,
        "psis_seconds": psis_seconds,
    }


def elbo_per_image(vae, x: torch.Tensor, num_samples: int = 100, batch_size: int | None = None, seed: int = 0,
                   analytic_kl: bool | None = None) -> torch.Tensor:
    """The ELBO (beta = 1) of each image, nats: E_q[log p(x|z)] - KL(q(z|x) || p(z)), a (N,) CPU tensor.

    The reconstruction term is a Monte Carlo mean over `num_samples` draws from the guide. The KL is
    analytic where torch.distributions knows it for this guide and prior (e.g. diagonal Gaussian
    guide, standard normal prior) and analytic_kl is not False; otherwise it is the Monte Carlo mean
    of log q(z|x) - log p(z) over the same draws. Raises ValueError for a deterministic guide.
    """
    x, device = _prepare_sampling(vae, x, num_samples, "the ELBO")
    n = len(x)
    batch_size, chunk = _default_batches(n, num_samples, x.shape[1], x.element_size(), batch_size, None)
    out = torch.empty(n, dtype=x.dtype)
    with evaluating(vae, device, seed):
        prior, loglik = vae.prior(), loglik_fn(vae)
        for i, xb, q in _guided_batches(vae, x, batch_size):
            kl = None
            if analytic_kl is not False:
                try:
                    kl = torch.distributions.kl_divergence(q, prior)
                except NotImplementedError:
                    if analytic_kl:
                        raise
            total = torch.zeros(len(xb), dtype=x.dtype, device=device)
            for j in range(0, num_samples, chunk):
                z = q.sample((min(chunk, num_samples - j),))
                term = loglik(xb, vae.decoder(z))
                if kl is None:
                    term = term + prior.log_prob(z) - q.log_prob(z)
                total += term.sum(0)
            elbo = total / num_samples - (kl if kl is not None else 0.0)
            out[i : i + len(xb)] = elbo.to("cpu", out.dtype)
    return out


# ---------------------------------------------------------------------------------------------
# Active units and a summary


def active_units(vae, x: torch.Tensor, threshold: float = 0.01, batch_size: int = 2000) -> dict:
    """Burda et al.'s active units: dimension j is active if Var_x(E_q[z_j | x]) > threshold.

    The posterior means are `vae.encode(x)[0]`; the variance is over images (population, ddof=0).
    Returns variances ((d,) tensor), active ((d,) bool tensor), active_units (int), threshold,
    latent_dim.
    """
    x, device = prepare(vae, x)
    with evaluating(vae, device, None):
        means = torch.cat([vae.encode(x[i : i + batch_size])[0] for i in range(0, len(x), batch_size)])
    var = means.double().var(0, correction=0).to("cpu", x.dtype)
    active = var > threshold
    return {"variances": var, "active": active, "active_units": int(active.sum()), "threshold": float(threshold),
            "latent_dim": int(var.numel())}
