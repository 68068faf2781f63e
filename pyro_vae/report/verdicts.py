"""The claims of a study as report blocks: the verdicts at a glance, and a section per pair of variants.

Every number a verdict rests on is in its table: the estimate, its 95% interval, the p-value (Holm-
adjusted for secondary tests), the seeds, and the seeds dropped for lack of a partner.
"""

from __future__ import annotations

import math
from itertools import groupby

from pyro_vae.evaluation.metrics import flat_metrics, metric, requirements_met
from pyro_vae.report.document import (
    Block,
    Bullets,
    Cell,
    Heading,
    Inline,
    Paragraph,
    Table,
)
from pyro_vae.report.tables import DASH, counted, fmt_pm, fmt_signed
from pyro_vae.study.claims import CLAIM_RULE, Claim, Row
from pyro_vae.study.statistics import FAILS, HOLDS, INCONCLUSIVE, NOT_JUDGED

__all__ = ["glance_blocks", "claim_blocks", "claim_inputs", "fmt_p", "primary_text", "interval_text"]


def claim_inputs(results: list[dict]) -> tuple[dict, dict, dict]:
    """From results.json rows: every metric's values per variant, the same keyed by seed (what the
    claims pair), and each variant's context (classes, test codes, latent size, requirements met)."""
    from pyro_vae.data import DATASETS

    variants = list(dict.fromkeys(r["variant"] for r in results))
    values: dict[str, dict[str, list[float]]] = {v: {} for v in variants}
    seeded: dict[str, dict[str, dict[int, float]]] = {v: {} for v in variants}
    for r in results:
        for m, x in flat_metrics(r).items():
            values[r["variant"]].setdefault(m, []).append(x)
            seeded[r["variant"]].setdefault(m, {})[r["seed"]] = x
    context = {}
    for v in variants:
        own = [r for r in results if r["variant"] == v]
        context[v] = {"n_classes": len(DATASETS[own[0]["config"]["dataset"]].class_names),
                      "n_codes": own[0]["data"].get("test_count"), "latent_dim": own[0]["config"]["latent_dim"],
                      "met": set.intersection(*(requirements_met(r["config"], r["evaluation"]) for r in own))}
    return values, seeded, context


def fmt_p(p: float) -> str:
    if not isinstance(p, (int, float)) or math.isnan(p):
        return DASH
    return "< 0.001" if p < 1e-3 else f"{p:.3f}"


def interval_text(row: Row) -> str:
    t = row.test
    if math.isnan(t.low):
        return DASH
    return f"[{fmt_signed(t.low)}, {fmt_signed(t.high)}]"


def _against(row: Row, claim: Claim) -> str:
    if row.spec.against == "target":
        return f"target {row.target:.4g} ± {row.spec.tolerance:g}"
    return f"{claim.baseline}, paired by seed" + (f"; predicted {row.spec.expect}" if row.spec.expect else "")


def _improvement(row: Row) -> str:
    return f"change in the predicted direction, {row.spec.expect}" if row.spec.expect else "improvement"


def primary_text(claim: Claim) -> str:
    """The primary test in one sentence: what was tested, the estimate, interval, p and seeds."""
    row = claim.rows[0]
    t = row.test
    what = (f"{metric(row.spec.metric).label} of {claim.candidate} against "
            + (f"its target {row.target:.4g} ± {row.spec.tolerance:g} (mean − target)"
               if row.spec.against == "target" else f"{claim.baseline} ({_improvement(row)}, paired by seed)"))
    if claim.verdict == NOT_JUDGED:
        return f"primary test {what}: not judged, {claim.reason}"
    dropped = (f"; seed{'s' * (len(t.dropped) != 1)} {', '.join(map(str, t.dropped))} present on one side only, dropped"
               if t.dropped else "")
    return (f"primary test {what}: {fmt_signed(t.estimate)}, 95% interval {interval_text(row)}, p {fmt_p(t.p)}, "
            f"{counted(t.n, 'seed')}{dropped}")


# What each outcome says about the claim, in words.
MEANING = {
    HOLDS: "the measurements support the claim",
    FAILS: "the measurements contradict the claim: here it is wrong",
    INCONCLUSIVE: "the measurements cannot tell either way at this number of seeds: neither shown nor refuted",
    NOT_JUDGED: "not tested",
}


def glance_blocks(claims: list[Claim]) -> list[Block]:
    items: list[Inline] = []
    for i, c in enumerate(claims, 1):
        rests = f"{c.n} seed{'s' * (c.n != 1)}" if c.verdict != NOT_JUDGED else c.reason
        items.append([f"Claim {i} ({c.title}): ", ("b", c.verdict), f" ({rests}): {MEANING[c.verdict]}; "
                      f"{primary_text(c)}."])
    blocks: list[Block] = [Heading(2, "Verdicts at a glance"), Bullets(items)]
    judged = [(i, c) for i, c in enumerate(claims, 1) if c.verdict != NOT_JUDGED]
    if len(judged) > 1:
        survive = [c for _, c in judged if c.verdict_holm == c.verdict]
        blocks.append(Table(
            ["claim", "verdict", "p", "p (Holm, across the primaries)", "at the Holm p"],
            [[f"{i}. {c.title}", c.verdict, fmt_p(c.rows[0].test.p), fmt_p(c.p_holm),
              Cell(c.verdict_holm, c.verdict_holm in (HOLDS, FAILS))] for i, c in judged],
            numeric=(2, 3),
            caption=f"The study judges {len(judged)} primaries; Holm's step-down adjusts their p-values for that. "
                    f"{len(survive)} of {len(judged)} verdicts survive the adjustment"
                    + ("" if len(survive) == len(judged) else
                       "; the others read 'inconclusive' at the adjusted p (a target test's interval stays the same)")
                    + "."))
    return blocks


def claim_blocks(claims: list[Claim]) -> list[Block]:
    """A section per pair of variants compared (claims of one pair in a row), claims numbered throughout."""
    blocks: list[Block] = []
    numbered = list(enumerate(claims, 1))
    for (baseline, candidate), group in groupby(numbered, key=lambda ic: (ic[1].baseline, ic[1].candidate)):
        against = f" against {baseline} (baseline)" if baseline else " against targets"
        blocks += [Heading(2, f"Claims: {candidate} (candidate){against}"), Paragraph(CLAIM_RULE, "note")]
        blocks += [b for i, claim in group for b in _claim(i, claim)]
    return blocks


def _claim(i: int, claim: Claim) -> list[Block]:
    rows = []
    for r in claim.rows:
        t = r.test
        rows.append([r.role, metric(r.spec.metric).label, _against(r, claim),
                     fmt_pm(r.baseline) if r.baseline is not None else DASH, fmt_pm(r.candidate),
                     fmt_signed(t.estimate), interval_text(r), fmt_p(t.p), fmt_p(r.p_holm), str(t.n),
                     Cell(r.outcome + (f" ({t.reason})" if t.reason else ""), r.outcome in (HOLDS, FAILS))])
    secondary = ", ".join(f"{n} {o}" for o, n in claim.secondary.items())
    verdict: Inline = [("b", f"Verdict: {claim.verdict}"), f" — {primary_text(claim)}."]
    if secondary:
        verdict.append(f" Secondary tests, Holm-corrected: {secondary}.")
    return [
        Heading(3, f"Claim {i}. {claim.title}"),
        Paragraph(verdict, "verdict"),
        Paragraph(claim.explanation),
        Table(["test", "metric", "against", f"{claim.baseline or 'baseline'} (mean ± sd)",
               f"{claim.candidate} (mean ± sd)", "estimate", "95% interval", "p", "p (Holm)", "seeds", "outcome"],
              rows, numeric=(3, 4, 5, 6, 7, 8, 9),
              caption="estimate: for a comparison, the mean over paired seeds of how much closer to ideal the candidate "
                      "is than the baseline (in the metric's units, for a target in distance to it; positive favours "
                      "the candidate); for a target test, the candidate's mean minus the target"
                      + ("; for a test whose direction the claim predicts (\"predicted lower\" or \"higher\"), how far "
                         "the candidate moved from the baseline that way (positive: as predicted)"
                         if any(r.spec.expect for r in claim.rows) else "")),
    ]
