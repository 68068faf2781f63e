"""Per-seed numbers to summaries, paired differences, intervals, p-values and outcomes (pure functions).

Two tests, one decision rule. A *comparison* pairs seed s of the baseline with seed s of the
candidate (the seeds share the data, the test binarisation and the evaluation draws), turns each
value into a badness (lower is better) and tests the mean improvement badness_b - badness_c against
0. A *target test* takes one variant's per-seed values and tests their mean against the metric's
ideal value (0.95 for the share of codes in the 95% ball of N(0, I)) within a tolerance declared in
advance. Both use Student's t on the per-seed numbers (scipy.stats.t), a 95% interval, and say
``holds``, ``fails``, ``inconclusive`` or ``not judged``:

    comparison: holds when the interval lies above 0, fails when it lies below 0
    target:     holds when the interval lies inside target ± tolerance, fails when it lies outside

The p-value shown is the smallest level at which the outcome would be decided (for a comparison:
the two-sided paired-t p-value), so Holm's step-down (:func:`holm`) applies to it unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
from scipy import stats

__all__ = ["Summary", "summarize", "badness", "Judgement", "paired_improvements", "t_test", "compare", "against_target",
           "holm", "decide", "ALPHA", "HOLDS", "FAILS", "INCONCLUSIVE", "NOT_JUDGED", "OUTCOMES", "METHOD"]

ALPHA = 0.05  # 95% intervals; a decision needs p < ALPHA (Holm-adjusted for secondary metrics)
HOLDS, FAILS, INCONCLUSIVE, NOT_JUDGED = "holds", "fails", "inconclusive", "not judged"
OUTCOMES = (HOLDS, FAILS, INCONCLUSIVE, NOT_JUDGED)
METHOD = "Student's t over seeds (paired by seed for comparisons), 95% interval"


@dataclass
class Summary:
    values: list[float]
    mean: float
    std: float
    n: int


def summarize(values: Sequence[float] | Mapping[int, float]) -> Summary:
    """Mean and sample std (ddof=1, 0 for one value) over the non-NaN values; infinities propagate."""
    values = list(values.values()) if isinstance(values, Mapping) else values
    v = np.asarray([float(x) for x in values if x is not None], dtype=float)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return Summary([], math.nan, math.nan, 0)
    with np.errstate(invalid="ignore"):
        mean = float(v.mean())
        std = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return Summary([float(x) for x in v], mean, std, int(v.size))


def badness(values: Sequence[float], better: str, target: float | None) -> np.ndarray:
    """The values turned so that lower is better: as they are, negated, or distance to target."""
    v = np.asarray([float(x) for x in values], dtype=float)
    if better == "lower":
        return v
    if better == "higher":
        return -v
    if better == "target":
        return np.abs(v - float(target))
    raise ValueError(f"unknown direction {better!r}; use 'lower', 'higher' or 'target'")


@dataclass
class Judgement:
    """One test's result. ``estimate`` is the mean improvement (comparison) or mean minus target."""
    kind: str  # "comparison" or "target"
    outcome: str
    n: int  # seeds the test rests on (pairs for a comparison)
    estimate: float = math.nan
    low: float = math.nan
    high: float = math.nan
    p: float = math.nan
    tolerance: float = 0.0
    reason: str = ""
    dropped: list[int] = field(default_factory=list)  # seeds present on one side only


def _finite(values: Mapping[int, float]) -> dict[int, float]:
    return {s: float(x) for s, x in values.items() if x is not None and not math.isnan(float(x))}


def paired_improvements(baseline: Mapping[int, float], candidate: Mapping[int, float], better: str,
                        baseline_target: float | None = None, candidate_target: float | None = None
                        ) -> tuple[dict[int, float], list[int]]:
    """{seed: badness_b - badness_c} over the seeds both sides have (NaN counts as missing), and the
    seeds only one side has. Positive: the candidate is better on that seed."""
    b, c = _finite(baseline), _finite(candidate)
    seeds = sorted(set(b) & set(c))
    dropped = sorted(set(b) ^ set(c))
    bb = badness([b[s] for s in seeds], better, baseline_target)
    bc = badness([c[s] for s in seeds], better, candidate_target)
    with np.errstate(invalid="ignore"):
        return {s: float(x) for s, x in zip(seeds, bb - bc)}, dropped


def decide(test: Judgement, p: float | None = None) -> str:
    """The outcome of a judged test at p (its own, or a Holm-adjusted one): decided when p < ALPHA."""
    p = test.p if p is None else p
    if not p < ALPHA:
        return INCONCLUSIVE
    if test.kind == "comparison":
        return HOLDS if test.estimate > 0 else FAILS
    return HOLDS if abs(test.estimate) < test.tolerance else FAILS


def t_test(samples: Sequence[float], kind: str, tolerance: float = 0.0, min_n: int = 2) -> Judgement:
    """Student's t on samples whose mean is tested against 0 (comparison) or within ±tolerance (target)."""
    x = np.asarray(samples, dtype=float)
    n = int(x.size)
    if n < max(min_n, 2):
        return Judgement(kind, NOT_JUDGED, n, tolerance=tolerance,
                    reason=f"rests on {n} seed{'s' * (n != 1)}; needs at least {max(min_n, 2)}")
    if not np.isfinite(x).all():  # e.g. a collapsed code space: an infinite KL has no mean, spread or interval
        which = "every seed" if (np.isposinf(x).all() or np.isneginf(x).all()) else "some seeds"
        return Judgement(kind, NOT_JUDGED, n, float(x[0]) if which == "every seed" else math.nan, tolerance=tolerance,
                         reason=f"infinite on {which}: no interval, so no p-value")
    m, df = float(x.mean()), n - 1
    # A floor on the standard error: seeds that agree to the last bit are no proof of a difference.
    se = max(float(x.std(ddof=1)) / math.sqrt(n), 1e-12 * (1.0 + abs(m)))
    q = float(stats.t.ppf(1 - ALPHA / 2, df))
    if kind == "comparison":
        p = float(2 * stats.t.sf(abs(m) / se, df))
    else:  # decided inside the band (holds) or outside it (fails), whichever needs the lower level
        p_in = 2 * stats.t.sf((tolerance - abs(m)) / se, df) if tolerance > 0 else 1.0
        p_out = 2 * stats.t.sf((abs(m) - tolerance) / se, df)
        p = float(min(p_in, p_out, 1.0))
    test = Judgement(kind, INCONCLUSIVE, n, m, m - q * se, m + q * se, min(p, 1.0), tolerance)
    test.outcome = decide(test)
    return test


def compare(baseline: Mapping[int, float], candidate: Mapping[int, float], better: str,
            baseline_target: float | None = None, candidate_target: float | None = None, min_n: int = 2) -> Judgement:
    """Candidate against baseline on one metric, paired by seed (see the module docstring)."""
    diffs, dropped = paired_improvements(baseline, candidate, better, baseline_target, candidate_target)
    test = t_test(list(diffs.values()), "comparison", min_n=min_n)
    test.dropped = dropped
    return test


def against_target(values: Mapping[int, float], target: float, tolerance: float, min_n: int = 2) -> Judgement:
    """One variant's per-seed values against the metric's target value, within ±tolerance."""
    x = _finite(values)
    return t_test([v - target for v in x.values()], "target", tolerance, min_n)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order; NaN (untested) stays NaN and is not counted."""
    indexed = [(p, i) for i, p in enumerate(pvalues) if not math.isnan(p)]
    m = len(indexed)
    out = [math.nan] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(indexed)):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out
