"""The report's convergence tables: every number that depends on how many training codes went into it,
shown at each count (evaluation.json's "convergence"), so a reader sees that the judged value, at all
the codes, has stopped moving.
"""

from __future__ import annotations

import math

from pyro_vae.evaluation.metrics import metric
from pyro_vae.report.document import Block, Heading, Paragraph, Table
from pyro_vae.report.tables import DASH, fmt_pm
from pyro_vae.study.statistics import summarize

__all__ = ["convergence_blocks", "CONVERGED"]

CONVERGED = 0.1  # the last step may move a number by at most this share of its value to count as converged
FLOOR = 0.05  # ...or of this, for numbers near zero (shares of mass, nats), where a relative change means little


def _counts(results: list[dict], key: str) -> list[int]:
    return sorted({int(n) for r in results for n in r["evaluation"].get("convergence", {}).get(key, {})})


def _moved(per_count: dict[int, float]) -> float | None:
    """|value at all codes - value at the next smaller count|, relative to max(|value|, FLOOR)."""
    counts = sorted(per_count)
    if len(counts) < 2 or not all(math.isfinite(per_count[n]) for n in counts[-2:]):
        return None
    last, before = per_count[counts[-1]], per_count[counts[-2]]
    return abs(last - before) / max(abs(last), FLOOR)


def convergence_blocks(results: list[dict], variants: list[str]) -> list[Block]:
    keys = list(dict.fromkeys(k for r in results for k in r["evaluation"].get("convergence", {})))
    if not keys:
        return []
    blocks: list[Block] = [Heading(2, "Convergence in the number of training codes"), Paragraph(
        "Each number below depends on how many training codes (one posterior draw per training image, or the "
        "posteriors themselves for KL(q(z) ‖ p(z))) went into it. It is computed on nested seeded subsets and on "
        "all of them; the value at all the codes is the one reported and judged. 'moved' is the last step's change "
        f"relative to the value (or to {FLOOR:g}, for values nearer zero); a number that moved by more than "
        f"{CONVERGED:.0%} there is marked not converged.",
        "note")]
    for key in keys:
        counts = _counts(results, key)
        rows, unconverged = [], []
        for v in variants:
            runs = [r["evaluation"].get("convergence", {}).get(key, {}) for r in results if r["variant"] == v]
            if not any(runs):
                continue
            by_count = {n: summarize([float(run[str(n)]) for run in runs if str(n) in run]) for n in counts}
            means = {n: s.mean for n, s in by_count.items() if s.n}
            moved = _moved(means)
            if moved is not None and moved > CONVERGED:
                unconverged.append(v)
            rows.append([v] + [fmt_pm(by_count[n]) if by_count[n].n else DASH for n in counts]
                        + [DASH if moved is None else f"{moved:.1%}"])
        if rows:
            caption = (f"{metric(key).label}, mean ± sd over seeds at each count of training codes"
                       + (f"; not converged: {', '.join(unconverged)}" if unconverged else "; converged for every variant"))
            blocks.append(Table(["variant"] + [f"N = {n:,}" for n in counts] + ["moved"], rows,
                                numeric=tuple(range(1, len(counts) + 2)), caption=caption))
    return blocks
