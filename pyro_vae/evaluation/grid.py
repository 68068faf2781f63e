"""Exact log p(x) for a model with 2-D codes, by quadrature on a regular grid of codes; and the
regular code grids the evaluation decodes and scores for its figures.

Units and conventions are those of :mod:`pyro_vae.evaluation.estimators` (nats per image, no_grad,
eval mode, CPU results, seeded draws).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from pyro_vae.evaluation.scoring import (
    CHUNK_BYTES,
    evaluating,
    linear_terms,
    loglik_matrix,
    prepare,
    scoring_mode,
)

__all__ = ["grid_log_likelihood", "manifold_codes", "density_grid_points", "check_extent"]

_DILATE = 2  # cells added around each image's significant nodes at the next level


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
            weights, const = linear_terms(self.vae, self.mode, logits)
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
                scores = loglik_matrix(self.vae, xs, logits, "generic") + log_prior
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
    x, device = prepare(vae, x)
    n = len(x)
    if tol <= 0:
        raise ValueError(f"tol must be positive, got {tol}")
    started = time.perf_counter()
    with evaluating(vae, device, seed):
        prior = vae.prior()
        if len(prior.event_shape) != 1 or prior.event_shape[0] != 2:
            raise ValueError(
                f"grid_log_likelihood integrates over 2-D codes only; this model's codes have event shape "
                f"{tuple(prior.event_shape)} (use importance_log_likelihood)"
            )
        mode = scoring_mode(vae)
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
# Regular code grids (numpy), shared by the evaluation and the figures


def manifold_codes(axis_values: Any) -> np.ndarray:
    """(G*G, 2) codes of a regular grid, in the order :func:`pyro_vae.plots.manifold` draws them.

    Code k = i*G + j is ``(axis_values[j], axis_values[i])``: j walks along
    z1 (left to right), i along z2 (drawn bottom to top).
    """
    v = np.asarray(axis_values.detach().cpu() if isinstance(axis_values, torch.Tensor) else axis_values,
                   dtype=float).reshape(-1)
    if v.size < 1:
        raise ValueError("manifold_codes: axis_values is empty")
    g1, g2 = np.meshgrid(v, v)
    return np.stack([g1.ravel(), g2.ravel()], axis=1)


def density_grid_points(extent: Sequence[float], grid_size: int) -> np.ndarray:
    """(G*G, 2) points of a regular grid over ``extent = (xmin, xmax, ymin, ymax)``.

    Evaluate the log density at these points and ``reshape(G, G)`` the result
    to get the array :func:`pyro_vae.plots.prior_density` expects (row i is y = ys[i],
    column j is x = xs[j], ys increasing).
    """
    x0, x1, y0, y1 = check_extent(extent, "density_grid_points")
    if int(grid_size) < 2:
        raise ValueError(f"density_grid_points: grid_size must be >= 2, got {grid_size}")
    xs = np.linspace(x0, x1, int(grid_size))
    ys = np.linspace(y0, y1, int(grid_size))
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


def check_extent(extent: Any, fn: str) -> tuple[float, float, float, float]:
    """``extent`` as four floats (xmin, xmax, ymin, ymax), or ValueError naming ``fn``."""
    try:
        e = tuple(float(v) for v in extent)
    except TypeError:
        raise ValueError(f"{fn}: extent must be (xmin, xmax, ymin, ymax), got {extent!r}") from None
    if len(e) != 4 or not all(math.isfinite(v) for v in e) or e[0] >= e[1] or e[2] >= e[3]:
        raise ValueError(f"{fn}: extent must be finite (xmin, xmax, ymin, ymax) with "
                         f"xmin < xmax and ymin < ymax, got {extent!r}")
    return e
