"""Claims as data: what a study's [claims.NAME] tables say, checked when the file is read, and judged.

    [claims.centre]
    title = "Centred and bounded: {candidate}'s codes sit like N(0, I) samples, {baseline}'s do not"
    text = "Codes are posterior means of the test images."
    metrics = ["mean_norm", "gaussian_kl", "share_in_95"]
    baseline = "AE"        # optional: default the [compare] table's baseline and candidate
    candidate = "VAE"
    baseline_samplers = { prior = ["prior", "box"] }   # optional, see ClaimSpec

Each metric is judged by :func:`compare_metric` on the per-seed values, and the claim's verdict
combines them by :data:`CLAIM_RULE`.
"""

from __future__ import annotations

import math
import string
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from pyro_vae.errors import UserError
from pyro_vae.evaluation.metrics import METRICS, SAMPLERS, direction, sample_key
from pyro_vae.study.statistics import (
    BETTER,
    MIN_SEEDS,
    SAME,
    UNJUDGED,
    WORSE,
    badness,
    compare_metric,
    summarize,
)

__all__ = ["ClaimSpec", "Claim", "parse_claims", "judge_claims", "claim_verdict", "missing_runs_note", "CLAIM_RULE",
           "HOLDS", "PARTLY", "FAILS", "NOT_JUDGED"]

HOLDS, PARTLY, FAILS, NOT_JUDGED = "holds", "holds partly", "does not hold", "not judged"

CLAIM_RULE = (
    f"Rule: each metric is '{BETTER}' when the candidate's mean beats the baseline's by more than twice the "
    f"standard error of the difference, sqrt(s_b²/n_b + s_c²/n_c) over seeds, '{WORSE}' when it trails by as "
    f"much, '{SAME}' otherwise ('{UNJUDGED}' with fewer than {MIN_SEEDS} seeds per variant). "
    f"A claim '{HOLDS}' when every one of its metrics is {BETTER}; it '{PARTLY}' when at least one is "
    f"{BETTER} and none is {WORSE}; it '{FAILS}' when none is {BETTER} or any is {WORSE}; it is "
    f"'{NOT_JUDGED}' when no metric could be judged."
)


def claim_verdict(verdicts: Sequence[str]) -> str:
    """Combine per-metric verdicts into a claim verdict by :data:`CLAIM_RULE`."""
    judged = [v for v in verdicts if v != UNJUDGED]
    if not judged:
        return NOT_JUDGED
    if WORSE in judged or BETTER not in judged:
        return FAILS
    if all(v == BETTER for v in verdicts):
        return HOLDS
    return PARTLY


@dataclass
class ClaimSpec:
    """One claim of a study file, its variants resolved.

    ``baseline_samplers`` maps a sampler of the candidate's metrics to the baseline's samplers
    to choose from: e.g. {"prior": ["prior", "box"]} measures the baseline's images by the
    better (per metric, by mean) of its prior draws and its uniform box draws, because an
    autoencoder has no prior worth sampling. Other metrics use the same key on both sides.
    """
    key: str
    title: str
    text: str
    metrics: list[str]
    baseline: str
    candidate: str
    baseline_samplers: dict[str, list[str]] = field(default_factory=dict)

    def baseline_options(self, key: str) -> list[str]:
        """The baseline's metric keys that may stand against the candidate's ``key``."""
        m = METRICS[key]
        alternatives = self.baseline_samplers.get(m.sampler) if m.sampler else None
        return [sample_key(s, m.quality) for s in alternatives] if alternatives else [key]


_KEYS = {"title", "text", "metrics", "baseline", "candidate", "baseline_samplers"}
_PLACEHOLDERS = {"baseline", "candidate"}


def _check_text(text, where: str) -> str:
    if not isinstance(text, str):
        raise UserError(f"{where} must be a string, got {text!r}")
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as e:
        raise UserError(f"{where} is not a valid template ({e}); write braces as {{{{ and }}}}") from None
    if names - _PLACEHOLDERS:
        raise UserError(f"{where} names {{{sorted(names - _PLACEHOLDERS)[0]}}}; only {{baseline}} and {{candidate}} "
                        "are filled in")
    return text


def _check_samplers(value, where: str) -> list[str]:
    samplers = [value] if isinstance(value, str) else value
    if not isinstance(samplers, list) or not samplers or any(s not in SAMPLERS for s in samplers):
        raise UserError(f"{where} must name sampler(s) among {', '.join(SAMPLERS)}, got {value!r}")
    return list(samplers)


def _parse_claim(name: str, table, variants: Sequence[str], compare: dict, source: str) -> ClaimSpec:
    where = f"[claims.{name}] of {source}"
    if not isinstance(table, dict):
        raise UserError(f"{where} must be a table with title, text and metrics")
    if set(table) - _KEYS:
        raise UserError(f"unknown key(s) {', '.join(sorted(set(table) - _KEYS))} in {where}; "
                        f"valid: {', '.join(sorted(_KEYS))}")
    if "title" not in table:
        raise UserError(f"{where} has no title")
    metrics = table.get("metrics")
    if not isinstance(metrics, list) or not metrics:
        raise UserError(f"{where} needs metrics = [...], a non-empty list of metric keys")
    for key in metrics:
        if key not in METRICS:
            raise UserError(f"unknown metric {key!r} in {where}; known: {', '.join(METRICS)}")
        if METRICS[key].better is None:
            raise UserError(f"metric {key!r} in {where} has no better side (it is bookkeeping) and cannot be judged")
    sides = {}
    for role in ("baseline", "candidate"):
        variant = table.get(role, compare.get(role))
        if variant is None:
            raise UserError(f"{where} names no {role}; add {role} = \"VARIANT\" to it or a [compare] table")
        if variant not in variants:
            raise UserError(f"{role} {variant!r} in {where} is not a variant; variants: {', '.join(variants)}")
        sides[role] = variant
    if sides["baseline"] == sides["candidate"]:
        raise UserError(f"{where} compares {sides['baseline']!r} with itself; name two different variants")
    choices = table.get("baseline_samplers", {})
    if not isinstance(choices, dict):
        raise UserError(f"baseline_samplers in {where} must be a table like {{ prior = [\"prior\", \"box\"] }}")
    used = {METRICS[k].sampler for k in metrics}
    for sampler in choices:
        if sampler not in used:
            raise UserError(f"baseline_samplers in {where} names {sampler!r}, which none of the claim's metrics uses; "
                            f"their samplers: {', '.join(sorted(s for s in used if s)) or 'none'}")
    return ClaimSpec(name, _check_text(table["title"], f"title of {where}"),
                     _check_text(table.get("text", ""), f"text of {where}"), list(metrics),
                     sides["baseline"], sides["candidate"],
                     {s: _check_samplers(a, f"baseline_samplers.{s} in {where}") for s, a in choices.items()})


def parse_claims(tables: dict, variants: Sequence[str], compare: dict, source: str) -> list[ClaimSpec]:
    """The [claims.NAME] tables of a study file, in file order; a one-line UserError for any mistake."""
    if not isinstance(tables, dict):
        raise UserError(f"claims in {source} must be [claims.NAME] tables")
    return [_parse_claim(name, table, variants, compare, source) for name, table in tables.items()]


@dataclass
class Claim:
    key: str
    title: str
    explanation: str
    verdict: str
    rows: list[dict]  # one per metric: metric, baseline_metric, baseline/candidate summaries, comparison
    baseline: str
    candidate: str
    note: str = ""  # why the claim is not judged yet (runs it needs that have not finished)


def missing_runs_note(spec: ClaimSpec, runs: dict[str, tuple[int, int]]) -> str:
    """"" when both sides of the claim have all their planned runs, else what is missing.

    ``runs[variant]`` is (finished, planned). A verdict on fewer runs than the study plans would rest
    on a sample the claim was not designed for, so it waits for them."""
    short = [f"{v} {runs[v][0]} of {runs[v][1]}" for v in (spec.baseline, spec.candidate) if v in runs and runs[v][0] < runs[v][1]]
    return f"waiting for runs: {', '.join(short)} finished" if short else ""


def _judge(spec: ClaimSpec, values: dict[str, dict[str, list[float]]], context: dict[str, dict],
           runs: dict[str, tuple[int, int]]) -> Claim:
    baseline, candidate = spec.baseline, spec.candidate
    waiting = missing_runs_note(spec, runs)

    def direction_of(variant: str, key: str):
        ctx = context.get(variant, {})
        return direction(key, ctx.get("n_classes", 10), ctx.get("n_codes"), ctx.get("latent_dim"))

    def best_of(options: Sequence[str]) -> str:
        present = [m for m in options if m in values.get(baseline, {})]
        if not present:
            return options[0]
        better, target = direction_of(baseline, present[0])
        scores = [float(np.mean(badness(values[baseline][m], better, target)) if values[baseline][m] else math.inf)
                  for m in present]
        return present[int(np.nanargmin(scores))] if not all(math.isnan(s) for s in scores) else present[0]

    rows = []
    for metric_c in spec.metrics:
        options = spec.baseline_options(metric_c)
        metric_b = best_of(options) if len(options) > 1 else options[0]
        vb, vc = values.get(baseline, {}).get(metric_b), values.get(candidate, {}).get(metric_c)
        better, target = direction_of(candidate, metric_c)
        if vb is None or vc is None or better is None:  # e.g. max_radius without the code count its target needs
            continue
        _, target_b = direction_of(baseline, metric_b)
        judged = compare_metric(vb, vc, better, target, target_b)
        if waiting:
            judged.update(verdict=UNJUDGED, reason=waiting)
        rows.append({"metric": metric_c, "baseline_metric": metric_b, "better": better, "target": target,
                     "baseline": summarize(vb), "candidate": summarize(vc), **judged})
    names = {"baseline": baseline, "candidate": candidate}
    return Claim(spec.key, spec.title.format(**names), spec.text.format(**names),
                 claim_verdict([r["verdict"] for r in rows]), rows, baseline, candidate, waiting)


def judge_claims(specs: Sequence[ClaimSpec], values: dict[str, dict[str, list[float]]],
                 context: dict[str, dict] | None = None, runs: dict[str, tuple[int, int]] | None = None) -> list[Claim]:
    """Judge each claim from per-seed values.

    ``values[variant][metric]`` lists one value per seed; ``context[variant]`` may give
    ``n_classes``, ``n_codes`` and ``latent_dim`` (for the label-entropy and max-radius targets);
    ``runs[variant]`` (finished, planned) leaves a claim not judged while a side lacks runs.
    """
    return [_judge(spec, values, context or {}, runs or {}) for spec in specs]
