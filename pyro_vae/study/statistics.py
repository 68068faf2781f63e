"""Per-seed numbers to summaries and to a verdict on one metric (pure functions)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["Summary", "summarize", "badness", "compare_metric", "MIN_SEEDS", "BETTER", "WORSE", "SAME", "UNJUDGED"]

MIN_SEEDS = 2  # seeds per variant needed before a difference is judged
BETTER, WORSE, SAME, UNJUDGED = "better", "worse", "no clear difference", "not judged"


@dataclass
class Summary:
    values: list[float]
    mean: float
    std: float
    n: int


def summarize(values: Sequence[float]) -> Summary:
    """Mean and sample std (ddof=1, 0 for one value) over the non-NaN values; infinities propagate."""
    v = np.asarray([float(x) for x in values if x is not None], dtype=float)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return Summary([], math.nan, math.nan, 0)
    with np.errstate(invalid="ignore"):
        mean = float(v.mean())
        std = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return Summary([float(x) for x in v], mean, std, int(v.size))


def badness(values: Sequence[float], better: str, target: float | None) -> np.ndarray:
    """The non-NaN values turned so that lower is better: as they are, negated, or distance to target."""
    v = np.asarray([float(x) for x in values if x is not None], dtype=float)
    v = v[~np.isnan(v)]
    if better == "lower":
        return v
    if better == "higher":
        return -v
    if better == "target":
        return np.abs(v - float(target))
    raise ValueError(f"unknown direction {better!r}; use 'lower', 'higher' or 'target'")


def compare_metric(baseline: Sequence[float], candidate: Sequence[float], better: str,
                   target: float | None = None, baseline_target: float | None = None,
                   min_seeds: int = MIN_SEEDS) -> dict:
    """Judge candidate against baseline on one metric from their per-seed values.

    Each value becomes a "badness" (the value for lower-is-better, minus it for higher-is-better,
    the distance to ``target`` otherwise; ``baseline_target`` if the baseline's target differs).
    The improvement is mean badness of the baseline minus that of the candidate; its standard
    error is sqrt(s_b²/n_b + s_c²/n_c), floored at 1e-6 × (1 + the larger |mean badness|).
    Verdict: "better" when the improvement exceeds 2 standard errors, "worse" when it is below
    minus 2 standard errors, "no clear difference" otherwise, and "not judged" when a side has
    fewer than ``min_seeds`` values (no spread to compare against). An infinite badness (e.g. a
    collapsed code space with infinite KL) on one side only makes that side the worse one.
    """
    tb = target if baseline_target is None else baseline_target
    b, c = badness(baseline, better, tb), badness(candidate, better, target)
    out = {"improvement": math.nan, "threshold": math.nan, "n_baseline": int(b.size), "n_candidate": int(c.size)}
    if b.size < min_seeds or c.size < min_seeds:
        return {**out, "verdict": UNJUDGED, "reason": f"needs at least {min_seeds} seeds per variant"}
    b_inf, c_inf = bool(np.isinf(b).any()), bool(np.isinf(c).any())
    if b_inf or c_inf:
        if b_inf and c_inf:
            return {**out, "verdict": UNJUDGED, "reason": "infinite values on both sides"}
        return {**out, "improvement": math.inf if b_inf else -math.inf,
                "verdict": BETTER if b_inf else WORSE, "reason": "infinite value on one side"}
    mb, mc = float(b.mean()), float(c.mean())
    se = math.sqrt(b.var(ddof=1) / b.size + c.var(ddof=1) / c.size)
    se = max(se, 1e-6 * (1.0 + max(abs(mb), abs(mc))))
    improvement, threshold = mb - mc, 2.0 * se
    verdict = BETTER if improvement > threshold else WORSE if improvement < -threshold else SAME
    return {**out, "improvement": improvement, "threshold": threshold, "verdict": verdict, "reason": ""}
