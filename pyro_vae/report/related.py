"""This study's verdicts beside a related study's (the study file's [related] table): each claim both
state, judged for the other study from its report's results.json by its own study file's rules."""

from __future__ import annotations

from pathlib import Path

from pyro_vae.evaluation.metrics import metric
from pyro_vae.io import read_json
from pyro_vae.report.document import Block, Cell, Heading, Paragraph, Table
from pyro_vae.report.tables import DASH, counted, fmt_pm, fmt_signed
from pyro_vae.report.verdicts import claim_inputs, interval_text
from pyro_vae.study.claims import Claim, judge_claims
from pyro_vae.study.statistics import NOT_JUDGED, summarize

__all__ = ["related_blocks"]


def _primary(claim: Claim | None) -> list:
    if claim is None:
        return ["not stated", DASH, DASH]
    row = claim.rows[0]
    shown = claim.verdict != NOT_JUDGED
    return [Cell(claim.verdict, shown), metric(row.spec.metric).label,
            f"{fmt_signed(row.test.estimate)} {interval_text(row)}, {counted(row.test.n, 'seed')}" if shown else claim.reason]


def _metrics_table(shown: list[str], here: dict, there: dict, other: str) -> list[Block]:
    if not shown:
        return []
    variants = list(dict.fromkeys([*here, *there]))
    rows = [[metric(m).label, *(fmt_pm(summarize(side[v][m])) if m in side.get(v, {}) else DASH
                                for v in variants for side in (here, there))] for m in shown]
    return [Table(["metric", *(f"{v} {where}" for v in variants for where in ("here", f"in {other}"))], rows,
                  numeric=tuple(range(1, 1 + 2 * len(variants))),
                  caption="mean ± sd over seeds; —: not measured for that variant")]


def related_blocks(related: dict, claims: list[Claim], values: dict) -> list[Block]:
    """Nothing for a study without a [related] table; a warning where its files are not on this machine."""
    if not related:
        return []
    from pyro_vae.study.spec import Study

    study_file, results_file = Path(related["study"]), Path(related["results"])
    missing = [str(p) for p in (study_file, results_file) if not p.is_file()]
    if missing:
        return [Heading(2, "Against a related study"),
                Paragraph(f"The [related] study's {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not on this "
                          "machine, so its verdicts are not set beside these.", "warning")]
    other = Study.load(study_file)
    results = read_json(results_file)
    theirs_values, seeded, context = claim_inputs(results)
    theirs = {c.key: c for c in judge_claims(other.claim_specs(), seeded, context)}
    rows = []
    for i, claim in enumerate(claims, 1):
        mine, their = _primary(claim), _primary(theirs.get(claim.key))
        same = "—" if theirs.get(claim.key) is None else ("same" if claim.verdict == theirs[claim.key].verdict else "differs")
        rows.append([f"{i}. {claim.title}", *mine, *their, same])
    seeds = sorted({r["seed"] for r in results})
    return [
        Heading(2, f"Against the study {other.name}"),
        Paragraph(f"{other.title} ({study_file.name}; its {counted(len(results), 'run')}, seeds "
                  f"{', '.join(map(str, seeds))}, from {results_file}). Its claims are judged here from those values by its "
                  "own study file's rules, each beside this study's claim of the same name."),
        Table(["claim", "here", "primary metric here", "estimate, 95% interval here", f"in {other.name}",
               f"primary metric in {other.name}", f"estimate, 95% interval in {other.name}", "verdicts"], rows,
              caption="estimate: the primary test's (positive favours the candidate; for a target test, the mean minus the "
                      "target), with its 95% interval and the seeds it rests on"),
        *_metrics_table(related.get("metrics", []), values, theirs_values, other.name),
        Paragraph(related["why"]),
    ]
