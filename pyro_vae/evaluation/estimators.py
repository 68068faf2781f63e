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
  quadrature on a regular grid of codes, refined until it stops moving.
* :func:`active_units` -- Burda et al.'s count of latent dimensions whose posterior mean varies
  over images (Var_x E_q[z_j] > threshold).

The model interface used: `vae.prior()` (distribution over z, event (d,)), `vae.encoder_guide(x)`
(q(z|x), batch (B,), event (d,)), `vae.encoder_guide.deterministic`, `vae.decoder(z)` (logits,
leading dims pass through), `vae.likelihood.distribution(logits)` (event dim 1 over pixels) and
`vae.encode(x)` (posterior mean and scale). Nothing else about priors, guides or networks is assumed.
A Bernoulli-with-logits likelihood is recognised and scored with a faster, exact formula, and the
grid scores any likelihood affine in x (e.g. the continuous Bernoulli) with matrix products.

All functions run under torch.no_grad in eval mode (restored afterwards), on the model's device,
and return CPU tensors. Random draws come from a forked RNG seeded with `seed`, so the same seed and
the same batch settings give identical numbers without disturbing the caller's RNG.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from pyro_vae.io import seeded

__all__ = ["elbo_per_image", "importance_log_likelihood", "grid_log_likelihood", "active_units", "summarise"]

# Rough cap on the bytes of the largest intermediates (logits and broadcast log_probs of likelihoods
# other than Bernoulli). Temporaries come to a few times this, so peak memory stays well under 1 GB.
CHUNK_BYTES = 128 * 2**20
# Logits per importance-sampling chunk: small enough to stay in cache (on a 2-core Xeon, 4 MB
# chunks ran ~1.2x faster than 16 MB and ~1.6x faster than 128 MB ones), big enough that Python
# overhead stays small.
IS_CHUNK_BYTES = 4 * 2**20
PARETO_K_LIMIT = 0.7
_DILATE = 2  # grid: cells added around each image's significant nodes at the next level
MIN_PSIS_SAMPLES = 25  # below this ArviZ's PSIS has too few tail draws to fit (it returns inf)
FLAT_LOG_WEIGHTS = 1e-4  # nats: log-weights spanning less than this are equal (IS is exact there)


# ---------------------------------------------------------------------------------------------
# Plumbing


def _device_dtype(vae, x: torch.Tensor) -> tuple[torch.device, torch.dtype]:
    for p in vae.parameters():
        return p.device, p.dtype if p.is_floating_point() else torch.get_default_dtype()
    return x.device, x.dtype if x.is_floating_point() else torch.get_default_dtype()


@contextlib.contextmanager
def _evaluating(vae, device: torch.device, seed: int | None):
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


def _prepare(vae, x: torch.Tensor) -> tuple[torch.Tensor, torch.device]:
    x = torch.as_tensor(x)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"x must be a non-empty batch of flattened images (N, D); got shape {tuple(x.shape)}")
    device, dtype = _device_dtype(vae, x)
    return x.to(device=device, dtype=dtype), device


def _check_stochastic_guide(vae, what: str) -> None:
    if getattr(vae.encoder_guide, "deterministic", False):
        raise ValueError(
            f"{what} is undefined for a deterministic (delta) guide: q(z|x) is a point mass with no density "
            "to weight by; use grid_log_likelihood (2-D codes) for such a model's log p(x)"
        )


def _bernoulli_logits(vae) -> bool:
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


def _softplus_sum(logits: torch.Tensor) -> torch.Tensor:
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


def _loglik_fn(vae) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """(x (B, D), logits (..., B, D)) -> log p(x|z) (..., B)."""
    if _bernoulli_logits(vae):
        def bernoulli(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
            return (logits * x).sum(-1) - _softplus_sum(logits)

        return bernoulli
    return lambda x, logits: vae.likelihood.distribution(logits).log_prob(x)


def _affine_in_x(vae) -> bool:
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


def _scoring(vae) -> str:
    """How images are scored against many codes: 'bernoulli' (x . l - sum softplus l), 'affine'
    (x . a(l) + sum b(l) from the likelihood's own per-pixel log_prob) or 'generic' (log_prob)."""
    if _bernoulli_logits(vae):
        return "bernoulli"
    return "affine" if _affine_in_x(vae) else "generic"


def _linear_terms(vae, mode: str, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(A (G, D), c (G,)) with log p(x|z_g) = x @ A[g] + c[g], for the 'bernoulli' and 'affine' modes."""
    if mode == "bernoulli":
        return logits, -_softplus_sum(logits)
    base = vae.likelihood.distribution(logits).base_dist
    zero = base.log_prob(torch.zeros_like(logits))
    return base.log_prob(torch.ones_like(logits)) - zero, zero.sum(-1)


def _loglik_matrix(vae, x: torch.Tensor, logits: torch.Tensor, mode: str | None = None) -> torch.Tensor:
    """log p(x_i | z_g) for every image i (x: (N, D)) and code g (logits: (G, D)) -> (N, G).

    Bernoulli and other likelihoods affine in x: one matmul, x @ A^T + c. Otherwise: broadcast
    log_prob, blocked over images so the (block, G, D) intermediate stays bounded.
    """
    mode = mode or _scoring(vae)
    if mode != "generic":
        a, c = _linear_terms(vae, mode, logits)
        return torch.addmm(c, x, a.T)
    dist = vae.likelihood.distribution(logits)
    step = max(1, CHUNK_BYTES // max(1, logits.numel() * logits.element_size()))
    return torch.cat([dist.log_prob(x[i : i + step, None, :]) for i in range(0, len(x), step)])


def _as_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


# ---------------------------------------------------------------------------------------------
# Importance sampling and the ELBO


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
                           chunk: int | None = None, seed: int = 0) -> torch.Tensor:
    """log w_ik = log p(x_i|z_ik) + log p(z_ik) - log q(z_ik|x_i), z_ik ~ q(z|x_i): a (N, K) CPU tensor.

    Images go `batch_size` at a time and their K draws `chunk` at a time, so one chunk decodes
    batch_size * chunk codes (by default sized to keep the logits near IS_CHUNK_BYTES). Numbers depend
    on seed, batch_size and chunk (the order of the random draws), nothing else.
    """
    x, device = _prepare_sampling(vae, x, num_samples, "importance sampling")
    n, k_total = len(x), int(num_samples)
    batch_size, chunk = _default_batches(n, k_total, x.shape[1], x.element_size(), batch_size, chunk)
    out = torch.empty(n, k_total, dtype=x.dtype)
    with _evaluating(vae, device, seed):
        prior = vae.prior()
        loglik = _loglik_fn(vae)
        for i in range(0, n, batch_size):
            xb = x[i : i + batch_size]
            q = vae.encoder_guide(xb)
            if isinstance(q, torch.distributions.Independent) and type(q.base_dist).__name__ == "Delta":
                raise ValueError("importance sampling is undefined for a point-mass (Delta) guide")
            for j in range(0, k_total, chunk):
                k = min(chunk, k_total - j)
                z = q.sample((k,))  # (k, B, d)
                lw = loglik(xb, vae.decoder(z)) + prior.log_prob(z) - q.log_prob(z)  # (k, B)
                out[i : i + len(xb), j : j + k] = lw.T.to("cpu", out.dtype)
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
    return _prepare(vae, x)


def importance_log_likelihood(vae, x: torch.Tensor, num_samples: int = 1000, batch_size: int | None = None,
                              chunk: int | None = None, seed: int = 0, psis: bool = True) -> dict:
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
    batch_size, chunk = _default_batches(n, num_samples, xt.shape[-1], 4, batch_size, chunk)
    lw = log_importance_weights(vae, xt, num_samples, batch_size, chunk, seed)
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
    with _evaluating(vae, device, seed):
        prior = vae.prior()
        loglik = _loglik_fn(vae)
        for i in range(0, n, batch_size):
            xb = x[i : i + batch_size]
            q = vae.encoder_guide(xb)
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
# Exact log p(x) for 2-D codes by quadrature


def _code_box(vae, x: torch.Tensor, prior, prior_samples: int, posterior_width: float, margin: float,
              batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A box holding the prior's bulk and every image's posterior: (lo, hi), each (2,), float64 CPU."""
    z = prior.sample((prior_samples,)).double().cpu()
    lo, hi = z.min(0).values, z.max(0).values
    for i in range(0, len(x), batch_size):
        mean, scale = (t.double().cpu() for t in vae.encode(x[i : i + batch_size]))
        lo = torch.minimum(lo, (mean - posterior_width * scale).min(0).values)
        hi = torch.maximum(hi, (mean + posterior_width * scale).max(0).values)
    width = hi - lo
    return lo - margin * width, hi + margin * width


class _Quadrature:
    """One level of the grid: spacing h, nodes origin + h * (a, b) for 0 <= a <= na, 0 <= b <= nb.

    Sums f_i(z) = p(x_i|z) p(z) over rectangles of nodes for sets of images. Each rectangle leaves,
    per image, its log-sum (as max + log sum exp), the posterior's first two moments along a and b
    (node units about the rectangle's centre) and the bounding box of the nodes holding a
    non-negligible share of the image's posterior mass; `results` combines them per image.
    """

    def __init__(self, vae, prior, x, mode: str, origin: torch.Tensor, h: float, prune: float):
        self.vae, self.prior, self.x, self.mode = vae, prior, x, mode
        self.linear = mode != "generic"
        self.origin, self.h = origin, h
        self.log_prune = math.log(prune)
        self.parts: list[tuple] = []
        self.points = self.pairs = 0
        self._axes: dict = {}

    def _axis(self, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if size not in self._axes:
            dev, dt = self.x.device, self.x.dtype
            c = torch.arange(size, device=dev, dtype=dt) - (size - 1) / 2
            self._axes[size] = (torch.stack([c, c**2], 1), torch.arange(size, device=dev))
        return self._axes[size]

    def score(self, imgs: torch.Tensor, a0: int, a1: int, b0: int, b1: int, ref_log_px: torch.Tensor | None) -> None:
        """Add nodes [a0, a1] x [b0, b1] for images `imgs` (long, on x's device). A node is significant
        for image i if its share f_i h^2 / p(x_i) exceeds `prune`, judged against ref_log_px (on x's
        device), or when that is None against these very nodes' sum (then the image's whole integral)."""
        x, dev, dt, h = self.x, self.x.device, self.x.dtype, self.h
        ta, tb = a1 - a0 + 1, b1 - b0 + 1
        za = self.origin[0] + h * torch.arange(a0, a1 + 1, dtype=torch.float64)
        zb = self.origin[1] + h * torch.arange(b0, b1 + 1, dtype=torch.float64)
        z = torch.cartesian_prod(za, zb).to(device=dev, dtype=dt)
        logits = self.vae.decoder(z)
        log_prior = self.prior.log_prob(z)
        if self.linear:
            weights, const = _linear_terms(self.vae, self.mode, logits)
            const = const + log_prior
        self.points += len(z)
        (ca, ia), (cb, ib) = self._axis(ta), self._axis(tb)
        centre = torch.tensor([a0 + (ta - 1) / 2, b0 + (tb - 1) / 2], dtype=torch.float64, device=dev)
        # Image blocks whose score matrix stays near cache size (or, for other likelihoods, whose
        # broadcast log_prob stays bounded).
        block = max(1, (4 * 2**20 if self.linear else CHUNK_BYTES // x.shape[1]) // (4 * len(z)))
        for start in range(0, len(imgs), block):
            idx = imgs[start : start + block]
            xs = x.index_select(0, idx)
            if self.linear:
                scores = torch.addmm(const, xs, weights.T)
            else:
                scores = _loglik_matrix(self.vae, xs, logits, "generic") + log_prior
            self.pairs += scores.numel()
            m = scores.amax(1)
            # In place: f_i / max_node f_i, floored at e^-80 (no subnormals, which are ~20x slower;
            # a node at e^-80 of the peak changes nothing).
            e = scores.sub_(m[:, None]).clamp_min_(-80).exp_().view(len(idx), ta, tb)
            pa, pb = e.sum(2), e.sum(1)
            s = pa.sum(1)
            # A node is significant if its share f_i h^2 / p(x_i) > prune, i.e. e > threshold.
            if ref_log_px is None:
                threshold = s * math.exp(self.log_prune)
            else:
                threshold = torch.exp(ref_log_px[idx] - 2 * math.log(h) + self.log_prune - m.double()).to(dt)
            # Rows and columns of the rectangle holding such a node (judged on their sums: a box
            # larger by a hair, for two fewer passes over e).
            sa, sb = pa > threshold[:, None], pb > threshold[:, None]
            big = 2**62
            found = torch.stack([
                torch.where(sa, ia, big).amin(1) + a0, torch.where(sa, ia, -1 - a0).amax(1) + a0,
                torch.where(sb, ib, big).amin(1) + b0, torch.where(sb, ib, -1 - b0).amax(1) + b0,
            ], 1)
            self.parts.append((idx, m, s, pa @ ca, pb @ cb, centre, found))

    def results(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per image of 0..n-1 (NaN / empty box where never scored): log p(x) estimate, posterior
        mean (code units), posterior sd (node units), box of significant nodes. float64 / long, CPU."""
        dev = self.x.device
        idx = torch.cat([p[0] for p in self.parts])
        m = torch.cat([p[1] for p in self.parts]).double()
        s = torch.cat([p[2] for p in self.parts]).double()
        mom_a = torch.cat([p[3] for p in self.parts]).double()  # sum e (a - ca), sum e (a - ca)^2
        mom_b = torch.cat([p[4] for p in self.parts]).double()
        centre = torch.cat([p[5].expand(len(p[0]), 2) for p in self.parts])
        found = torch.cat([p[6] for p in self.parts])
        # Moments about each image's first rectangle's centre (a reference near its posterior).
        first = torch.full((n,), len(idx), dtype=torch.long, device=dev).scatter_reduce(
            0, idx, torch.arange(len(idx), device=dev), "amin")
        ref = centre[first.clamp_max(len(idx) - 1)][idx]
        d = centre - ref
        da, db = d[:, 0], d[:, 1]
        moments = torch.stack([
            mom_a[:, 0] + s * da, mom_a[:, 1] + 2 * da * mom_a[:, 0] + s * da**2,
            mom_b[:, 0] + s * db, mom_b[:, 1] + 2 * db * mom_b[:, 0] + s * db**2,
        ], 1)
        top = torch.full((n,), -math.inf, dtype=torch.float64, device=dev).scatter_reduce(0, idx, m, "amax")
        w = torch.exp(m - top[idx]).nan_to_num(0.0)
        total = torch.zeros(n, dtype=torch.float64, device=dev).index_add_(0, idx, s * w)
        mom = torch.zeros(n, 4, dtype=torch.float64, device=dev).index_add_(0, idx, moments * w[:, None])
        log_px = top + torch.log(total) + 2 * math.log(self.h)
        mom = mom / total[:, None]
        ref_n = centre[first.clamp_max(len(idx) - 1)]
        mean_ab = ref_n + mom[:, 0::2]
        sd = (mom[:, 1::2] - mom[:, 0::2] ** 2).clamp_min(0).sqrt()
        box = torch.empty(n, 4, dtype=torch.long, device=dev)
        box[:, 0::2], box[:, 1::2] = 2**62, -1
        for col, how in ((0, "amin"), (1, "amax"), (2, "amin"), (3, "amax")):
            box[:, col] = box[:, col].scatter_reduce(0, idx, found[:, col], how)
        return log_px.cpu(), (self.origin + self.h * mean_ab.cpu()), sd.cpu(), box.cpu()


def _tile_pairs(boxes: np.ndarray, tile: int, n_tb: int) -> tuple[np.ndarray, np.ndarray]:
    """(tile id, row of boxes) for every tile each box [a_lo, a_hi, b_lo, b_hi] touches, sorted by tile."""
    ta0, ta1, tb0, tb1 = boxes[:, 0] // tile, boxes[:, 1] // tile, boxes[:, 2] // tile, boxes[:, 3] // tile
    na_t, nb_t = ta1 - ta0 + 1, tb1 - tb0 + 1
    count = na_t * nb_t
    row = np.repeat(np.arange(len(boxes)), count)
    k = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)  # index within the box's tiles
    ta = ta0[row] + k // nb_t[row]
    tb = tb0[row] + k % nb_t[row]
    tile_id = ta * n_tb + tb
    order = np.argsort(tile_id, kind="stable")
    return tile_id[order], row[order]


def grid_log_likelihood(vae, x: torch.Tensor, tol: float = 0.01, start_cells: int = 32, max_levels: int = 12,
                        max_points: int = 2**23, prune: float = 1e-12, min_sd_cells: float = 1.5, min_level: int = 2,
                        tile: int = 16,
                        prior_samples: int = 20000, posterior_width: float = 8.0, margin: float = 0.1,
                        seed: int = 0) -> dict:
    """Exact log p(x) = log int p(x|z) p(z) dz per image for a model with 2-D codes, by quadrature.

    The integrand f_i(z) = p(x_i|z) p(z) is summed over the nodes of a regular grid of spacing h and
    multiplied by the cell area h^2 (the trapezoid rule; the integrand is negligible at the edge of
    the region summed, so edge weights do not matter, and for a smooth peaked integrand the rule's
    error falls like exp(-2 pi^2 sd^2 / h^2) once h nears the posterior's standard deviation sd).

    Grid: a box holding the prior's bulk (the range of `prior_samples` seeded draws) and every
    image's guide posterior (encoded mean +- posterior_width scales), widened by `margin` of its
    width per side, with `start_cells` cells along its longer side. Level 0 scores every image
    against every node of that grid. Each further level halves h (the grids nest) for the images not
    yet converged, over each image's own box: the nodes where its posterior mass (the node's share
    f_i h^2 / p(x_i)) exceeded `prune` on the coarser grid, dilated by one coarse cell and grown
    further (and the grid widened if need be) wherever that mass reached the edge of the nodes
    summed. The grid is cut into tiles of `tile` x `tile` nodes; each tile some box touches is
    decoded once per level, and all images whose boxes touch it are scored against it with one
    matrix product (Bernoulli likelihood: x @ logits^T - sum softplus(logits); other likelihoods
    affine in x, such as the continuous Bernoulli: x @ a(logits)^T + sum b(logits) from the
    likelihood's own per-pixel log_prob at x = 0 and 1; any other: a batched log_prob).

    An image has converged when, at level `min_level` or later, a halving moved its log p(x) by less
    than `tol` nats, its mass stayed inside the nodes summed, and the grid resolves its posterior
    (posterior sd >= min_sd_cells * h on both axes; a single small change on a grid coarser than
    the posterior can be a coincidence); so the mean log p(x) also moved by less than tol. Decoder
    kinks (ReLU) make the integrand only piecewise smooth, so an image's error can approach tol
    (on a 2-D MNIST model, 3 of 10,000 images were off by 0.013-0.015 nats against a 10x stricter
    run; the mean by 2e-5). Raises ValueError unless the codes are 2-D.

    Returns a dict:
      log_px          (N,) tensor, nats per image (negative)
      mean_log_px     float
      converged       bool, every image converged (False: stopped at max_levels / max_points, warned)
      image_converged (N,) bool tensor;  levels: (N,) long tensor, the halvings each image took
      last_change     (N,) float64 tensor, each image's change at its last halving (nats)
      posterior_mean, posterior_sd  (N, 2) float64 tensors, moments of the exact p(z|x) on the grid
      grid_points     codes decoded in all levels;  pairs: image-code scores computed
      spacing         the finest h used;  start_spacing: h of level 0
      grid_size       [nodes along z1, nodes along z2] of the finest level's full grid
      extent          [z1_lo, z1_hi, z2_lo, z2_hi] of the grid's box
      trace           one dict per level: level, spacing, images (scored), tiles, grid_points
                      (decoded), pairs, mean_log_px (all images), change_of_mean, max_abs_change
                      (over the images scored), converged (images so far), seconds
      seconds         total wall time
    """
    x, device = _prepare(vae, x)
    n = len(x)
    if tol <= 0:
        raise ValueError(f"tol must be positive, got {tol}")
    started = time.perf_counter()
    with _evaluating(vae, device, seed):
        prior = vae.prior()
        if len(prior.event_shape) != 1 or prior.event_shape[0] != 2:
            raise ValueError(
                f"grid_log_likelihood integrates over 2-D codes only; this model's codes have event shape "
                f"{tuple(prior.event_shape)} (use importance_log_likelihood)"
            )
        mode = _scoring(vae)
        lo, hi = _code_box(vae, x, prior, prior_samples, posterior_width, margin, 2000)
        h = h0 = float((hi - lo).max()) / int(start_cells)
        na, nb = (max(1, int(math.ceil(float(w) / h))) for w in (hi - lo))
        origin = lo.clone()

        log_px = torch.full((n,), -math.inf, dtype=torch.float64)
        last_change = torch.full((n,), math.nan, dtype=torch.float64)
        post_mean = torch.full((n, 2), math.nan, dtype=torch.float64)
        post_sd = torch.full((n, 2), math.nan, dtype=torch.float64)
        levels = torch.zeros(n, dtype=torch.long)
        done = torch.zeros(n, dtype=torch.bool)
        active = torch.arange(n)
        boxes = np.tile(np.array([0, na, 0, nb], dtype=np.int64), (n, 1))  # per active image, this level
        trace: list[dict] = []
        total_points = total_pairs = 0
        stopped = None

        for level in range(max_levels + 1):
            t0 = time.perf_counter()
            quad = _Quadrature(vae, prior, x, mode, origin, h, prune)
            active_dev = active.to(device)
            if level == 0:
                # The whole (coarse) grid at once, so each image's mass shares are exact here.
                quad.score(active_dev, 0, na, 0, nb, None)
                n_tiles = 1
                region = boxes.copy()
            else:
                n_tb = nb // tile + 1
                tile_ids, rows = _tile_pairs(boxes, tile, n_tb)
                cuts = np.flatnonzero(np.diff(tile_ids)) + 1
                starts = np.concatenate([[0], cuts])
                ends = np.concatenate([cuts, [len(tile_ids)]])
                n_tiles = len(starts)
                # Each tile is cut down to the bounding box of the boxes touching it.
                ta, tb = np.divmod(tile_ids[starts], n_tb)
                sub = boxes[rows]
                a_lo = np.maximum(ta * tile, np.minimum.reduceat(sub[:, 0], starts))
                a_hi = np.minimum(np.minimum(na, ta * tile + tile - 1), np.maximum.reduceat(sub[:, 1], starts))
                b_lo = np.maximum(tb * tile, np.minimum.reduceat(sub[:, 2], starts))
                b_hi = np.minimum(np.minimum(nb, tb * tile + tile - 1), np.maximum.reduceat(sub[:, 3], starts))
                imgs = active_dev[torch.as_tensor(rows, device=device)]
                ref = log_px.to(device)
                for k, (s, e) in enumerate(zip(starts.tolist(), ends.tolist())):
                    quad.score(imgs[s:e], int(a_lo[k]), int(a_hi[k]), int(b_lo[k]), int(b_hi[k]), ref)
                # Every node of an image's box was summed (and maybe some beyond it).
                region = boxes.copy()
            new_px, mean_z, sd_cells, sig = (t[active] for t in quad.results(n))
            total_points += quad.points
            total_pairs += quad.pairs

            change = new_px - log_px[active]
            if level > 0:
                last_change[active] = change
            log_px[active] = new_px
            post_mean[active], post_sd[active] = mean_z, sd_cells * h
            levels[active] = level
            sig = sig.numpy()
            finite = torch.isfinite(new_px).numpy() & (sig[:, 1] >= sig[:, 0]) & (sig[:, 3] >= sig[:, 2])
            sig = np.where(finite[:, None], sig, region)
            touch = np.stack([sig[:, 0] <= region[:, 0], sig[:, 1] >= region[:, 1],
                              sig[:, 2] <= region[:, 2], sig[:, 3] >= region[:, 3]], 1)
            resolved = (sd_cells.min(1).values >= min_sd_cells).numpy()
            ok = ~touch.any(1) & resolved & (change.abs() < tol).numpy() if level >= max(1, min_level) else np.zeros(len(active), bool)
            ok |= ~finite  # nothing to refine (log p(x) is -inf or NaN): report as is
            done[active[torch.as_tensor(ok)]] = True
            mean_now = float(log_px.mean())
            trace.append({
                "level": level, "spacing": h, "images": int(len(active)), "tiles": n_tiles,
                "grid_points": quad.points, "pairs": quad.pairs, "mean_log_px": mean_now,
                "change_of_mean": mean_now - trace[-1]["mean_log_px"] if trace else math.nan,
                "max_abs_change": float(change.abs().max()) if level > 0 else math.nan,
                "converged": int(done.sum()), "seconds": time.perf_counter() - t0,
            })
            keep = ~ok
            if not keep.any():
                break
            if level == max_levels:
                stopped = f"max_levels={max_levels}"
                break
            if total_points >= max_points:
                stopped = f"max_points={max_points}"
                break
            # Next boxes: the significant nodes plus one cell, plus half their width more on sides
            # where the mass reached the edge of the nodes summed; then halve the spacing (node a of
            # this level is node 2a of the next) and widen the grid if a box left it.
            sig, touch = sig[keep], touch[keep]
            grow = np.maximum(2, np.maximum(sig[:, 1] - sig[:, 0], sig[:, 3] - sig[:, 2]) // 2)[:, None] * touch
            pad = _DILATE + 2 * grow  # in cells of the next level
            boxes = np.stack([2 * sig[:, 0] - pad[:, 0], 2 * sig[:, 1] + pad[:, 1], 2 * sig[:, 2] - pad[:, 2], 2 * sig[:, 3] + pad[:, 3]], 1)
            active = active[torch.as_tensor(keep)]
            h, na, nb = h / 2, 2 * na, 2 * nb
            pad_a, pad_b = max(0, -int(boxes[:, 0].min())), max(0, -int(boxes[:, 2].min()))
            na = max(na, int(boxes[:, 1].max())) + pad_a
            nb = max(nb, int(boxes[:, 3].max())) + pad_b
            if pad_a or pad_b:
                origin = origin - h * torch.tensor([pad_a, pad_b], dtype=torch.float64)
                boxes = boxes + np.array([pad_a, pad_a, pad_b, pad_b])

    converged = bool(done.all())
    if not converged:
        worst = float(last_change[~done].abs().max()) if level > 0 else math.nan
        warnings.warn(
            f"grid_log_likelihood: {int((~done).sum())} of {n} images did not converge to tol={tol} nats "
            f"({stopped}); their largest last change was {worst:.3g} nats",
            RuntimeWarning, stacklevel=2,
        )
    extent_hi = origin + h * torch.tensor([na, nb], dtype=torch.float64)
    return {
        "log_px": log_px.to(x.dtype),
        "mean_log_px": float(log_px.mean()),
        "converged": converged,
        "image_converged": done,
        "levels": levels,
        "last_change": last_change,
        "posterior_mean": post_mean,
        "posterior_sd": post_sd,
        "grid_points": total_points,
        "pairs": total_pairs,
        "spacing": h,
        "start_spacing": h0,
        "grid_size": [na + 1, nb + 1],
        "extent": [float(origin[0]), float(extent_hi[0]), float(origin[1]), float(extent_hi[1])],
        "tol": tol,
        "trace": trace,
        "seconds": time.perf_counter() - started,
    }


# ---------------------------------------------------------------------------------------------
# Active units and a summary


def active_units(vae, x: torch.Tensor, threshold: float = 0.01, batch_size: int = 2000) -> dict:
    """Burda et al.'s active units: dimension j is active if Var_x(E_q[z_j | x]) > threshold.

    The posterior means are `vae.encode(x)[0]`; the variance is over images (population, ddof=0).
    Returns variances ((d,) tensor), active ((d,) bool tensor), active_units (int), threshold,
    latent_dim.
    """
    x, device = _prepare(vae, x)
    with _evaluating(vae, device, None):
        means = torch.cat([vae.encode(x[i : i + batch_size])[0] for i in range(0, len(x), batch_size)])
    var = means.double().var(0, correction=0).to("cpu", x.dtype)
    active = var > threshold
    return {"variances": var, "active": active, "active_units": int(active.sum()), "threshold": float(threshold),
            "latent_dim": int(var.numel())}


def summarise(elbo: torch.Tensor | None = None, importance: dict | None = None, grid: dict | None = None,
              units: dict | None = None) -> dict:
    """Flat, JSON-ready means (nats per image) of whatever results are given, and their gaps.

    elbo: elbo_per_image's tensor; importance / grid / units: the dicts of the other functions.
    """
    out: dict = {}
    if elbo is not None:
        out["elbo"] = float(torch.as_tensor(elbo).mean())
    if importance is not None:
        out["log_px_is"] = importance["mean_log_px"]
        out["log_px_is_stderr"] = importance["stderr"]
        out["is_num_samples"] = importance["num_samples"]
        out["pareto_k_share_above_0_7"] = importance["share_k_above_0_7"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # all NaN when PSIS was skipped
            out["pareto_k_median"] = float(np.nanmedian(importance["pareto_k"]))
    if grid is not None:
        out["log_px_exact"] = grid["mean_log_px"]
        out["grid_converged"] = grid["converged"]
        out["grid_points"] = grid["grid_points"]
    if units is not None:
        out["active_units"] = units["active_units"]
    if "log_px_exact" in out:
        for name in ("elbo", "log_px_is"):
            if name in out:
                out[f"gap_exact_minus_{name}"] = out["log_px_exact"] - out[name]
    elif "elbo" in out and "log_px_is" in out:
        out["gap_is_minus_elbo"] = out["log_px_is"] - out["elbo"]
    return out
