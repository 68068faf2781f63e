"""The aggregate posterior q(z) = mean_i N(z; mu_i, diag s_i^2) of a Gaussian guide over the training
images, and its divergence from the prior: what the KL term of the ELBO shapes.

In 2-D the divergence is a quadrature on a grid, exact up to the grid: a diagonal Gaussian factorises
over the axes, so the mixture's density on an (nx, ny) grid is one matrix product A^T B of the per-axis
densities (components x nx and components x ny), for all components at once. The grid's cells are
halved until KL(q || p) moves less than `tol`; a grid that has not converged within `max_cells`
along an axis is refused (NaN, with the reason), never reported. Above 2-D it is a Monte Carlo average
over draws of q(z), with every component in the density.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

__all__ = ["mixture_log_density", "aggregate_kl", "GRID_REACH"]

_ELEMENTS = 2**22  # points x components per block of the mixture density
_BLOCK = 4096  # components per block of the grid's matrix product
GRID_REACH = 6.0  # the grid covers every posterior to this many sd


def mixture_log_density(points: np.ndarray, means: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """log q(z) for q = the equal-weight mixture of N(means_i, diag scales_i^2): the aggregate posterior
    of a Gaussian guide over the images whose posteriors these are (exact for a diagonal guide)."""
    z, mu, s = (torch.as_tensor(np.asarray(a, dtype=np.float64)) for a in (points, means, scales))
    inv = 1.0 / s**2
    const = -0.5 * (mu**2 * inv).sum(1) - s.log().sum(1) - 0.5 * mu.shape[1] * math.log(2 * math.pi)
    block = max(1, _ELEMENTS // len(mu))
    # -0.5 sum_d (z - mu)^2 / s^2 expanded into matrix products over the components, written into one
    # reused buffer: a fresh (block, components) matrix per block left glibc's heap holding them all
    # (about 8 GB for 20,000 points against 60,000 training codes).
    weights, buffer = (mu * inv).T, torch.empty(min(block, len(z)), len(mu), dtype=torch.float64)
    out = torch.empty(len(z), dtype=torch.float64)
    for start in range(0, len(z), block):
        zb = z[start : start + block]
        logits = torch.addmm(const, zb, weights, out=buffer[: len(zb)]).addmm_(zb**2, inv.T, alpha=-0.5)
        out[start : start + block] = torch.logsumexp(logits, 1)
    return out.numpy() - math.log(len(mu))


def _axis_density(nodes: torch.Tensor, mu: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """(components, nodes): N(node; mu_i, s_i^2) along one axis."""
    return torch.exp(-0.5 * ((nodes[None, :] - mu[:, None]) / s[:, None]) ** 2) / (s[:, None] * math.sqrt(2 * math.pi))


def _grid_density(means: np.ndarray, scales: np.ndarray, h: float) -> tuple[np.ndarray, np.ndarray, float]:
    """q on the nodes of a square grid of step h covering every posterior: (density (nx, ny), nodes (nx*ny, 2), h^2)."""
    lo = (means - GRID_REACH * scales).min(0)
    hi = (means + GRID_REACH * scales).max(0)
    axes = [torch.arange(a, b + h, h, dtype=torch.float64) for a, b in zip(lo, hi)]
    mu, s = torch.as_tensor(means), torch.as_tensor(scales)
    q = torch.zeros(len(axes[0]), len(axes[1]), dtype=torch.float64)
    for i in range(0, len(mu), _BLOCK):
        part = slice(i, i + _BLOCK)
        q += _axis_density(axes[0], mu[part, 0], s[part, 0]).T @ _axis_density(axes[1], mu[part, 1], s[part, 1])
    q /= len(mu)
    nodes = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
    return q.numpy(), nodes.numpy(), h * h


def _grid_integrals(means, scales, log_prior, h) -> tuple[float, float, float]:
    """(E_q log q, E_q log p, the grid's mass of q) at step h."""
    q, nodes, area = _grid_density(means, scales, h)
    q = q.ravel()
    mass = float(q.sum() * area)
    w = q * area / mass  # the edge's sliver of mass restored
    keep = q > 0
    return float((w[keep] * np.log(q[keep] / mass)).sum()), float((w * log_prior(nodes)).sum()), mass


def aggregate_kl(means: np.ndarray, scales: np.ndarray, log_prior: Callable[[np.ndarray], np.ndarray],
                 tol: float = 0.005, max_cells: int = 4096, samples: int = 20000, seed: int = 0) -> dict:
    """ELBO surgery (Hoffman & Johnson 2016): E_x KL(q(z|x) || p(z)) = I(x; z) + KL(q(z) || p(z)).

    Returns avg_kl, aggregate_kl, mutual_information (nats) and, in 2-D, grid_step, grid_cells (the
    larger axis's node count), grid_mass and grid_converged. An unconverged 2-D grid gives NaN for all
    three (each needs an integral over q(z)), and ``refused`` says why.
    """
    means, scales = np.asarray(means, dtype=np.float64), np.asarray(scales, dtype=np.float64)
    d = means.shape[1]
    entropy = float(np.log(scales).sum(1).mean() + 0.5 * d * (1 + math.log(2 * math.pi)))  # E_x H[q(z|x)]
    out: dict = {}
    if d == 2:
        span = float(((means + GRID_REACH * scales).max(0) - (means - GRID_REACH * scales).min(0)).max())
        # Start where the trapezoid rule is already accurate for most posteriors (error ~ exp(-2 pi^2 s^2 / h^2)).
        h = min(float(np.percentile(scales.min(1), 5)), span / 64)
        previous = None
        while True:
            cells = int(span / h) + 1
            if cells > max_cells:
                out.update(grid_converged=False, refused=f"the grid did not converge to {tol:g} nats within "
                                                          f"{max_cells} cells per axis")
                log_q = cross = math.nan
                break
            log_q, cross, mass = _grid_integrals(means, scales, log_prior, h)
            kl = log_q - cross
            if previous is not None and abs(kl - previous) < tol:
                out.update(grid_converged=True, grid_step=h, grid_cells=cells, grid_mass=mass)
                break
            previous, h = kl, h / 2
    else:
        rng = np.random.default_rng(seed)
        pick = rng.integers(len(means), size=samples)
        z = means[pick] + scales[pick] * rng.standard_normal((samples, d))
        log_q, cross = float(mixture_log_density(z, means, scales).mean()), float(log_prior(z).mean())
    out.update(avg_kl=-entropy - cross, aggregate_kl=log_q - cross, mutual_information=-log_q - entropy)
    return out
