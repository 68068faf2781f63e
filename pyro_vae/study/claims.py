"""Claims as data: what a study's [claims.NAME] tables say, checked when the file is read, and judged.

    [claims.centre]
    title = "Centred and bounded: {candidate}'s codes sit like N(0, I) samples"
    text = "Codes are posterior means of the test images."
    primary = { metric = "share_in_95", against = "target", tolerance = 0.02 }   # declared in advance
    secondary = ["gaussian_kl", "mean_norm"]      # against the baseline; Holm-corrected
    baseline = "AE"        # optional: default the [compare] table's baseline and candidate
    candidate = "VAE"
    min_seeds = 3          # optional: fewer paired seeds and the claim is not judged

A test is a metric key (the candidate against the baseline, paired by seed) or a table
{ metric, against = "baseline" | "target", tolerance } (the candidate's values against the
metric's ideal value), or { metric, expect = "lower" | "higher" } (against the baseline, the direction
the claim predicts: needed for a metric with no better side, such as I(x; z), whose expected direction
is the claim itself, e.g. a larger beta lowers it). The claim's verdict is its primary test's outcome
(pyro_vae.study.statistics); the secondary tests are shown with Holm-adjusted p-values, and each
primary's p-value is also Holm-adjusted across the study's claims (Claim.p_holm, Claim.verdict_holm).
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from pyro_vae.config import check_value
from pyro_vae.errors import UserError
from pyro_vae.evaluation.metrics import METRICS, direction, metric, ranked
from pyro_vae.study.statistics import (
    ALPHA,
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    METHOD,
    NOT_JUDGED,
    Judgement,
    Summary,
    against_target,
    compare,
    decide,
    holm,
    summarize,
)

__all__ = ["ClaimTest", "ClaimSpec", "Claim", "parse_claims", "judge_claims", "CLAIM_RULE", "MIN_SEEDS",
           "HOLDS", "FAILS", "INCONCLUSIVE", "NOT_JUDGED"]

MIN_SEEDS = 3  # paired seeds a claim needs by default: with 2, Student's t has one degree of freedom

CLAIM_RULE = (
    f"Rule: each claim names one primary metric in advance; its outcome is the claim's verdict. A comparison pairs "
    f"seed s of the baseline with seed s of the candidate (seeds on one side only are dropped and named) and tests the "
    f"mean improvement in the metric's better direction (for a target: in distance to the target): the claim "
    f"'{HOLDS}' when the 95% interval lies above 0, '{FAILS}' when it lies below 0, and is '{INCONCLUSIVE}' "
    f"otherwise: no clear difference is not a refutation. A test against a target holds when the interval of the "
    f"candidate's mean lies inside target ± tolerance and fails when it lies outside. Intervals and p-values: "
    f"{METHOD}. Secondary metrics are decided at p < {ALPHA:g} after Holm's correction over the claim's secondary "
    f"tests; they inform, they do not change the verdict. A study judges several primaries, so each verdict is also "
    f"stated at its primary p-value Holm-adjusted across the study's claims (whether it survives). A claim with fewer seeds than it needs, or whose metric is "
    f"not comparable between the two variants, is '{NOT_JUDGED}', with the reason."
)

AGAINST = ("baseline", "target")
EXPECT = ("lower", "higher")


@dataclass(frozen=True)
class ClaimTest:
    metric: str
    against: str = "baseline"  # "baseline": candidate vs baseline, paired by seed; "target": vs the ideal value
    tolerance: float = 0.0  # target tests: how far from the target still counts as on it
    expect: str | None = None  # baseline tests: the direction the claim predicts (None: the metric's better side)


@dataclass
class ClaimSpec:
    """One claim of a study file, its variants resolved (baseline is None when every test is a target test)."""
    key: str
    title: str
    text: str
    primary: ClaimTest
    secondary: list[ClaimTest]
    baseline: str | None
    candidate: str
    min_seeds: int = MIN_SEEDS

    @property
    def tests(self) -> list[ClaimTest]:
        return [self.primary] + self.secondary


_KEYS = {"title", "text", "primary", "secondary", "baseline", "candidate", "min_seeds"}
_REMOVED = {
    "metrics": "metrics was replaced: name one primary = \"KEY\" declared in advance and secondary = [...] "
               "(corrected for multiplicity)",
    "baseline_samplers": "baseline_samplers was removed: giving the baseline the better of two samplers, chosen on "
                         "the seeds it is tested on, favours it; both sides are now measured by the same metric "
                         "(name e.g. box_fid itself)",
}
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


def _parse_test(entry, where: str) -> ClaimTest:
    table = {"metric": entry} if isinstance(entry, str) else entry
    if not isinstance(table, dict) or set(table) - {"metric", "against", "tolerance", "expect"} or "metric" not in table:
        raise UserError(f"{where} must be a metric key or a table {{ metric = \"KEY\", against = \"target\", "
                        f"tolerance = 0.02 }} or {{ metric = \"KEY\", expect = \"lower\" }}, got {entry!r}")
    key = check_value(f"metric in {where}", table["metric"], str)
    against = check_value(f"against in {where}", table.get("against", "baseline"), str)
    expect = check_value(f"expect in {where}", table.get("expect"), str, optional=True)
    if key not in METRICS:
        raise UserError(f"unknown metric {key!r} in {where}; known: {', '.join(METRICS)}")
    if expect is not None and expect not in EXPECT:
        raise UserError(f"expect = {expect!r} in {where} must be one of {', '.join(EXPECT)}")
    if expect is not None and against != "baseline":
        raise UserError(f"expect in {where} applies only to a test against the baseline")
    if METRICS[key].better is None and expect is None:
        raise UserError(f"metric {key!r} in {where} has no better side and cannot be judged as it is; state the "
                        f"direction the claim predicts, {{ metric = \"{key}\", expect = \"lower\" }} or \"higher\"")
    if against not in AGAINST:
        raise UserError(f"against = {against!r} in {where} must be one of {', '.join(AGAINST)}")
    if against == "target" and METRICS[key].better != "target":
        raise UserError(f"metric {key!r} in {where} has no target value (it is {METRICS[key].better}-is-better); "
                        f"test it against the baseline")
    tolerance = table.get("tolerance")
    if against == "target" and tolerance is None:
        raise UserError(f"{where} tests {key!r} against its target and needs tolerance = a number >= 0, declared "
                        f"in advance (how far from the target still counts as on it)")
    check_value(f"tolerance in {where}", tolerance, float, 0, optional=True)
    if against == "baseline" and tolerance is not None:
        raise UserError(f"tolerance in {where} applies only to against = \"target\"")
    return ClaimTest(key, against, float(tolerance or 0.0), expect)


def _parse_claim(name: str, table, variants: Sequence[str], compare_table: dict, source: str) -> ClaimSpec:
    where = f"[claims.{name}] of {source}"
    if not isinstance(table, dict):
        raise UserError(f"{where} must be a table with title, text, primary and secondary")
    for key, why in _REMOVED.items():
        if key in table:
            raise UserError(f"{why}; in {where}")
    if set(table) - _KEYS:
        raise UserError(f"unknown key(s) {', '.join(sorted(set(table) - _KEYS))} in {where}; "
                        f"valid: {', '.join(sorted(_KEYS))}")
    if "title" not in table:
        raise UserError(f"{where} has no title")
    if "primary" not in table:
        raise UserError(f"{where} needs primary = \"KEY\": the one metric, declared in advance, that decides it")
    primary = _parse_test(table["primary"], f"primary of {where}")
    secondary = table.get("secondary", [])
    if not isinstance(secondary, list):
        raise UserError(f"secondary in {where} must be a list of metric keys or tables")
    tests = [primary] + [_parse_test(t, f"secondary of {where}") for t in secondary]
    if len(set(tests)) != len(tests):
        raise UserError(f"{where} states one test twice; name each metric once per comparison")
    min_seeds = table.get("min_seeds", MIN_SEEDS)
    if not isinstance(min_seeds, int) or isinstance(min_seeds, bool) or min_seeds < 2:
        raise UserError(f"min_seeds in {where} must be a whole number >= 2 (a t interval needs two seeds)")
    roles = ["candidate"] + (["baseline"] if any(t.against == "baseline" for t in tests) else [])
    sides = {"baseline": None}
    for role in roles:
        variant = table.get(role, compare_table.get(role))
        if variant is None:
            raise UserError(f"{where} names no {role}; add {role} = \"VARIANT\" to it or a [compare] table")
        check_value(f"{role} in {where} (a variant's name)", variant, str)
        if variant not in variants:
            raise UserError(f"{role} {variant!r} in {where} is not a variant; variants: {', '.join(variants)}")
        sides[role] = variant
    if sides["baseline"] == sides["candidate"]:
        raise UserError(f"{where} compares {sides['baseline']!r} with itself; name two different variants")
    return ClaimSpec(name, _check_text(table["title"], f"title of {where}"),
                     _check_text(table.get("text", ""), f"text of {where}"), tests[0], tests[1:],
                     sides["baseline"], sides["candidate"], min_seeds)


def parse_claims(tables: dict, variants: Sequence[str], compare: dict, source: str) -> list[ClaimSpec]:
    """The [claims.NAME] tables of a study file, in file order; a one-line UserError for any mistake."""
    if not isinstance(tables, dict):
        raise UserError(f"claims in {source} must be [claims.NAME] tables")
    return [_parse_claim(name, table, variants, compare, source) for name, table in tables.items()]


@dataclass
class Row:
    """One test of a claim, judged."""
    role: str  # "primary" or "secondary"
    spec: ClaimTest
    better: str | None
    target: float | None  # the candidate's target (its own context)
    baseline: Summary | None
    candidate: Summary
    test: Judgement
    p_holm: float = float("nan")  # secondary tests only
    outcome: str = NOT_JUDGED


@dataclass
class Claim:
    key: str
    title: str
    explanation: str
    verdict: str  # the primary test's outcome
    rows: list[Row]
    baseline: str | None
    candidate: str
    reason: str = ""  # why the verdict is "not judged"
    n: int = 0  # seeds the verdict rests on
    secondary: dict[str, int] = field(default_factory=dict)  # outcome -> count
    p_holm: float = float("nan")  # the primary's p-value, Holm-adjusted across the study's primaries
    verdict_holm: str = NOT_JUDGED  # the primary's outcome at that adjusted p (does the verdict survive?)


Values = Mapping[str, Mapping[str, Mapping[int, float]]]  # variant -> metric -> seed -> value


def _not_comparable(spec: ClaimTest, sides: list[str], context: Mapping[str, dict]) -> str:
    for variant in sides:
        if not ranked(spec.metric, context.get(variant, {}).get("met")):
            return f"{variant}'s {metric(spec.metric).label} is not comparable ({metric(spec.metric).caveat})"
    return ""


def _run_test(spec: ClaimTest, claim: ClaimSpec, values: Values, context: Mapping[str, dict], role: str) -> Row:
    def side(variant):
        ctx = context.get(variant, {})
        data = values.get(variant, {}).get(spec.metric, {})
        if spec.expect:
            return data, (spec.expect, None)
        return data, direction(spec.metric, ctx.get("n_classes", 10), ctx.get("n_codes"), ctx.get("latent_dim"))

    cand, (better, target) = side(claim.candidate)
    sides = [claim.candidate] + ([claim.baseline] if spec.against == "baseline" else [])
    base, (_, target_b) = side(claim.baseline) if spec.against == "baseline" else ({}, (None, None))
    reason = _not_comparable(spec, sides, context)
    if not reason and any(not values.get(v, {}).get(spec.metric) for v in sides):
        reason = "no values for " + " and ".join(v for v in sides if not values.get(v, {}).get(spec.metric))
    if not reason and better is None:
        reason = f"{metric(spec.metric).label} has no target without the code count and size"
    if reason:
        test = Judgement("target" if spec.against == "target" else "comparison", NOT_JUDGED, 0, reason=reason)
    elif spec.against == "target":
        test = against_target(cand, target, spec.tolerance, claim.min_seeds)
    else:
        test = compare(base, cand, better, target_b, target, claim.min_seeds)
    return Row(role, spec, better, target, summarize(base) if spec.against == "baseline" else None,
               summarize(cand), test, outcome=test.outcome)


def _judge(spec: ClaimSpec, values: Values, context: Mapping[str, dict]) -> Claim:
    rows = [_run_test(t, spec, values, context, "primary" if i == 0 else "secondary") for i, t in enumerate(spec.tests)]
    secondary = rows[1:]
    for row, p in zip(secondary, holm([r.test.p if r.test.outcome != NOT_JUDGED else float("nan") for r in secondary])):
        row.p_holm = p
        if row.test.outcome != NOT_JUDGED:
            row.outcome = decide(row.test, p)
    names = {"baseline": spec.baseline, "candidate": spec.candidate}
    primary = rows[0].test
    counts = {o: sum(r.outcome == o for r in secondary) for o in (HOLDS, FAILS, INCONCLUSIVE, NOT_JUDGED)}
    return Claim(spec.key, spec.title.format(**names), spec.text.format(**names), primary.outcome, rows,
                 spec.baseline, spec.candidate, primary.reason if primary.outcome == NOT_JUDGED else "", primary.n,
                 {o: n for o, n in counts.items() if n})


def judge_claims(specs: Sequence[ClaimSpec], values: Values, context: Mapping[str, dict] | None = None) -> list[Claim]:
    """Judge each claim from per-seed values.

    ``values[variant][metric]`` maps each seed to its value; ``context[variant]`` may give
    ``n_classes``, ``n_codes`` and ``latent_dim`` (for data-dependent targets) and ``met``, the
    names in metrics.REQUIREMENTS the variant meets (a metric it may not be ranked on is not judged).
    """
    claims = [_judge(spec, values, context or {}) for spec in specs]
    # A study judges several primaries: each verdict is also stated at its p Holm-adjusted across them.
    judged = [c.verdict != NOT_JUDGED for c in claims]
    for claim, ok, p in zip(claims, judged, holm([c.rows[0].test.p if ok else float("nan") for c, ok in zip(claims, judged)])):
        claim.p_holm = p
        claim.verdict_holm = decide(claim.rows[0].test, p) if ok else NOT_JUDGED
    return claims
