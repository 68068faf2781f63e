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
`vae.encode(x)` (posterior mean and scale). Nothing else about priors, guides or networks is assumed;
a Bernoulli-with-logits likelihood is recognised and scored with a faster, exact formula.

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

__all__ = ["elbo_per_image", "importance_log_likelihood", "grid_log_likelihood", "active_units", "summarise"]

# Rough cap on the bytes of the largest intermediate (decoder logits of one chunk, or one block of
# image-by-grid scores). Temporaries come to a few times this, so peak memory stays well under 1 GB.
CHUNK_BYTES = 128 * 2**20
PARETO_K_LIMIT = 0.7
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
    devices = [device] if device.type == "cuda" else []
    try:
        if hasattr(vae, "eval"):
            vae.eval()
        with torch.no_grad(), torch.random.fork_rng(devices=devices, device_type=device.type):
            if seed is not None:
                torch.manual_seed(seed)
            yield
    finally:
        for m, training in modes:
            m.training = training


def _prepare(vae, x: torch.Tensor) -> tuple[torch.Tensor, torch.device]:
    x = torch.as_tensor(x)
    if x.ndim != 2:
        raise ValueError(f"x must be a batch of flattened images (N, D); got shape {tuple(x.shape)}")
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


def _loglik_fn(vae) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """(x (B, D), logits (..., B, D)) -> log p(x|z) (..., B)."""
    if _bernoulli_logits(vae):
        def bernoulli(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
            return (logits * x).sum(-1) - F.softplus(logits).sum(-1)

        return bernoulli
    return lambda x, logits: vae.likelihood.distribution(logits).log_prob(x)


def _loglik_matrix(vae, x: torch.Tensor, logits: torch.Tensor, bernoulli: bool | None = None) -> torch.Tensor:
    """log p(x_i | z_g) for every image i (x: (N, D)) and code g (logits: (G, D)) -> (N, G).

    Bernoulli: one matmul, x @ l^T - sum_j softplus(l_gj). Otherwise: broadcast log_prob, blocked
    over images so the (block, G, D) intermediate stays bounded.
    """
    if bernoulli is None:
        bernoulli = _bernoulli_logits(vae)
    if bernoulli:
        return torch.addmm(-F.softplus(logits).sum(-1), x, logits.T)
    dist = vae.likelihood.distribution(logits)
    step = max(1, CHUNK_BYTES // max(1, logits.numel() * logits.element_size()))
    return torch.cat([dist.log_prob(x[i : i + step, None, :]) for i in range(0, len(x), step)])


def _as_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


# ---------------------------------------------------------------------------------------------
# Importance sampling and the ELBO


def _default_batches(n: int, k: int, d_x: int, elem: int, batch_size: int | None, chunk: int | None) -> tuple[int, int]:
    codes = max(1, CHUNK_BYTES // (d_x * elem))  # decoded codes per chunk
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
    batch_size * chunk codes (by default sized to keep the logits near CHUNK_BYTES). Numbers depend
    on seed, batch_size and chunk (the order of the random draws), nothing else.
    """
    _check_stochastic_guide(vae, "importance sampling")
    if num_samples < 1:
        raise ValueError(f"num_samples must be at least 1, got {num_samples}")
    x, device = _prepare(vae, x)
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
    _check_stochastic_guide(vae, "the ELBO")
    if num_samples < 1:
        raise ValueError(f"num_samples must be at least 1, got {num_samples}")
    x, device = _prepare(vae, x)
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

    Sums f_i(z) = p(x_i|z) p(z) over rectangles of nodes for sets of images, keeping per image the
    running log-sum, the posterior's first two moments (in node units, about a reference point) and
    the bounding box of the nodes holding a non-negligible share of its posterior mass.
    """

    def __init__(self, vae, prior, x, bernoulli: bool, origin: torch.Tensor, h: float, na: int, nb: int, prune: float):
        self.vae, self.prior, self.x, self.bernoulli = vae, prior, x, bernoulli
        self.origin, self.h, self.na, self.nb = origin, h, na, nb
        self.log_prune = math.log(prune)
        n = len(x)
        f64 = dict(dtype=torch.float64)
        self.m = torch.full((n,), -math.inf, **f64)  # running max of the log-integrand
        self.s = torch.zeros(n, **f64)  # sum exp(log f - m), and its first/second moments in a, b
        self.mom = torch.zeros(n, 4, **f64)  # sum w (a - ra), (a - ra)^2, (b - rb), (b - rb)^2
        self.ref = torch.zeros(n, 2, **f64)  # per-image reference point (ra, rb) of the moments
        self.sig = torch.zeros(n, 4, dtype=torch.long)  # [a_lo, a_hi, b_lo, b_hi] of significant nodes
        self.sig[:, 0::2], self.sig[:, 1::2] = 2**62, -1
        self.points = self.pairs = 0

    def score(self, imgs: torch.Tensor, a0: int, a1: int, b0: int, b1: int, ref_log_px: torch.Tensor | None) -> None:
        """Add nodes [a0, a1] x [b0, b1] to images `imgs` (CPU long). A node is significant for image i
        if its share f_i h^2 / p(x_i) exceeds `prune`, judged against ref_log_px (or, when None,
        against these very nodes' sum, which must then be the image's whole integral)."""
        x, dev, dt = self.x, self.x.device, self.x.dtype
        ta, tb = a1 - a0 + 1, b1 - b0 + 1
        aa = torch.arange(a0, a1 + 1, dtype=torch.float64)
        bb = torch.arange(b0, b1 + 1, dtype=torch.float64)
        ab = torch.stack(torch.meshgrid(aa, bb, indexing="ij"), -1).reshape(-1, 2)
        z = (self.origin + self.h * ab).to(device=dev, dtype=dt)
        logits = self.vae.decoder(z)
        log_prior = self.prior.log_prob(z)
        if self.bernoulli:
            const = log_prior - F.softplus(logits).sum(-1)
        self.points += len(z)
        ca = torch.arange(ta, device=dev, dtype=dt) - (ta - 1) / 2  # node units about the tile centre
        cb = torch.arange(tb, device=dev, dtype=dt) - (tb - 1) / 2
        centre = torch.tensor([a0 + (ta - 1) / 2, b0 + (tb - 1) / 2], dtype=torch.float64)
        ia, ib = torch.arange(ta, device=dev), torch.arange(tb, device=dev)
        block = max(1, CHUNK_BYTES // (4 * len(z) * (1 if self.bernoulli else x.shape[1])))
        for start in range(0, len(imgs), block):
            idx = imgs[start : start + block]
            xs = x[idx.to(dev)]
            if self.bernoulli:
                scores = torch.addmm(const, xs, logits.T)
            else:
                scores = _loglik_matrix(self.vae, xs, logits, False) + log_prior
            self.pairs += scores.numel()
            m = scores.amax(1)
            e = torch.exp(scores - m[:, None]).view(len(idx), ta, tb)
            pa, pb = e.sum(2), e.sum(1)
            s = pa.sum(1)
            stats = torch.stack([pa @ ca, pa @ ca**2, pb @ cb, pb @ cb**2], 1)
            if ref_log_px is None:
                threshold = m + torch.log(s) + self.log_prune
            else:
                threshold = (ref_log_px[idx] - 2 * math.log(self.h) + self.log_prune).to(dev, dt)
            sig = (scores > threshold[:, None]).view(len(idx), ta, tb)
            sa, sb = sig.any(2), sig.any(1)
            big = 2**62
            found = torch.stack([
                torch.where(sa, ia, big).amin(1) + a0, torch.where(sa, ia, -1 - a0).amax(1) + a0,
                torch.where(sb, ib, big).amin(1) + b0, torch.where(sb, ib, -1 - b0).amax(1) + b0,
            ], 1).cpu()
            self._merge(idx, m.double().cpu(), s.double().cpu(), stats.double().cpu(), centre, found)

    def _merge(self, idx, m, s, stats, centre, found) -> None:
        # Shift the tile's moments from its centre to each image's reference point, then rescale
        # both sums to the larger running maximum and add.
        d = centre - self.ref[idx]  # (n, 2)
        da, db = d[:, 0], d[:, 1]
        shifted = torch.stack([
            stats[:, 0] + s * da, stats[:, 1] + 2 * da * stats[:, 0] + s * da**2,
            stats[:, 2] + s * db, stats[:, 3] + 2 * db * stats[:, 2] + s * db**2,
        ], 1)
        m_old = self.m[idx]
        m_new = torch.maximum(m_old, m)
        f_old = torch.exp(m_old - m_new).nan_to_num(0.0)
        f_new = torch.exp(m - m_new).nan_to_num(0.0)
        self.m[idx] = m_new
        self.s[idx] = self.s[idx] * f_old + s * f_new
        self.mom[idx] = self.mom[idx] * f_old[:, None] + shifted * f_new[:, None]
        old = self.sig[idx]
        self.sig[idx] = torch.stack([torch.minimum(old[:, 0], found[:, 0]), torch.maximum(old[:, 1], found[:, 1]),
                                     torch.minimum(old[:, 2], found[:, 2]), torch.maximum(old[:, 3], found[:, 3])], 1)

    def results(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """log p(x) estimate, posterior mean (code units), posterior sd (node units), significant box."""
        s = self.s[idx]
        log_px = self.m[idx] + torch.log(s) + 2 * math.log(self.h)
        mom = self.mom[idx] / s[:, None]
        mean_ab = self.ref[idx] + mom[:, 0::2]
        sd = (mom[:, 1::2] - mom[:, 0::2] ** 2).clamp_min(0).sqrt()
        return log_px, self.origin + self.h * mean_ab, sd, self.sig[idx]


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
                        max_points: int = 2**23, prune: float = 1e-12, min_sd_cells: float = 1.0, min_level: int = 2,
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
    matrix product (Bernoulli likelihood: x @ logits^T - sum softplus(logits); other likelihoods a
    batched log_prob).

    An image has converged when a halving moved its log p(x) by less than `tol` nats, its mass
    stayed inside the nodes summed, and the grid resolves its posterior (posterior sd >=
    min_sd_cells * h on both axes); so the mean log p(x) also moved by less than tol. Raises
    ValueError unless the codes are 2-D.

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
        bernoulli = _bernoulli_logits(vae)
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
            quad = _Quadrature(vae, prior, x, bernoulli, origin, h, na, nb, prune)
            quad.ref[active] = torch.as_tensor((boxes[:, 0::2] + boxes[:, 1::2]) / 2, dtype=torch.float64)
            if level == 0:
                # The whole (coarse) grid at once, so each image's mass shares are exact here.
                quad.score(active, 0, na, 0, nb, None)
                n_tiles = 1
                region = boxes.copy()
            else:
                n_tb = nb // tile + 1
                tile_ids, rows = _tile_pairs(boxes, tile, n_tb)
                cuts = np.flatnonzero(np.diff(tile_ids)) + 1
                starts = np.concatenate([[0], cuts])
                ends = np.concatenate([cuts, [len(tile_ids)]])
                n_tiles = len(starts)
                rows_t = torch.as_tensor(rows)
                for s, e in zip(starts.tolist(), ends.tolist()):
                    ta, tb = divmod(int(tile_ids[s]), n_tb)
                    a0, b0 = ta * tile, tb * tile
                    quad.score(active[rows_t[s:e]], a0, min(na, a0 + tile - 1), b0, min(nb, b0 + tile - 1), log_px)
                # The nodes each image was summed over: its box rounded out to whole tiles.
                region = np.stack([boxes[:, 0] // tile * tile, np.minimum(na, boxes[:, 1] // tile * tile + tile - 1),
                                   boxes[:, 2] // tile * tile, np.minimum(nb, boxes[:, 3] // tile * tile + tile - 1)], 1)
            new_px, mean_z, sd_cells, sig = quad.results(active)
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
            grow = 1 + np.maximum(2, np.maximum(sig[:, 1] - sig[:, 0], sig[:, 3] - sig[:, 2]) // 2)[:, None] * touch
            boxes = np.stack([sig[:, 0] - grow[:, 0], sig[:, 1] + grow[:, 1], sig[:, 2] - grow[:, 2], sig[:, 3] + grow[:, 3]], 1)
            active = active[torch.as_tensor(keep)]
            boxes = boxes * 2
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
        out["pareto_k_median"] = float(np.median(importance["pareto_k"]))
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
