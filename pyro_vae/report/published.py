"""The study's numbers beside a published table (the study file's [published] table): the value per
row, ours over seeds with a 95% interval, the difference, what we trained, and the rows' ordering."""

from __future__ import annotations

import math

from scipy import stats

from pyro_vae.evaluation.metrics import metric
from pyro_vae.report.document import Block, Bullets, Heading, Inline, Paragraph, Table
from pyro_vae.report.tables import counted, fmt, fmt_signed
from pyro_vae.study.statistics import summarize

__all__ = ["published_blocks"]


def _interval(values: list[float]) -> str:
    s = summarize(values)
    if s.n == 0:
        return "—"
    if s.n == 1:
        return f"{fmt(s.mean)} (1 seed, no interval)"
    half = stats.t.ppf(0.975, s.n - 1) * s.std / math.sqrt(s.n)
    return f"{fmt(s.mean)} ± {fmt(half)} (95%, {counted(s.n, 'seed')})"


def published_blocks(published: dict, values: dict[str, dict[str, list[float]]], results: list[dict]) -> list[Block]:
    """The comparison table and the ordering check; nothing for a study without a [published] table."""
    if not published:
        return []
    key, rows = published["metric"], published["values"]
    ours = {v: summarize(values[v].get(key, [])).mean for v in rows if v in values and values[v].get(key)}
    header = ["row", f"published {metric(key).label}", "ours", "ours − published", "epochs", "steps", "active units"]
    table = []
    for row, value in rows.items():
        runs = [r for r in results if r["variant"] == row]
        if not runs:
            table.append([row, fmt(value), "not run here", "—", "—", "—", "—"])
            continue
        epochs = sorted({len(r["training_curve"]) for r in runs})
        steps = sorted({len(r["training_curve"]) * math.ceil(r["data"]["train_count"] / r["config"]["batch_size"]) for r in runs})
        active = values[row].get("active_units", [])
        latent = runs[0]["config"]["latent_dim"]
        table.append([row, fmt(value), _interval(values[row].get(key, [])),
                      fmt_signed(ours[row] - value) if row in ours else "—", "/".join(map(str, epochs)),
                      "/".join(f"{s:,}" for s in steps),
                      f"{fmt(summarize(active).mean)} of {latent}" if active else "—"])
    blocks: list[Block] = [Heading(2, "Against the published numbers"),
                           Paragraph(f"Source: {published['source']}." + (f" {published['note']}" if published.get("note") else "")),
                           Table(header, table, caption=f"{metric(key).label}: published beside ours (mean over seeds)")]
    ran = sorted(ours, key=lambda v: rows[v], reverse=True)  # the published order, best first
    if len(ran) > 1:
        items: list[Inline] = []
        for better, worse in zip(ran[:-1], ran[1:]):
            gap, paper = ours[better] - ours[worse], rows[better] - rows[worse]
            verdict = "same order as the paper" if gap > 0 else ("a tie" if gap == 0 else "the order is reversed")
            items.append([f"{better} − {worse}: ours {fmt_signed(gap)}, published {fmt_signed(paper)} nats ({verdict})."])
        blocks += [Paragraph("The published ordering, adjacent rows (best first), one seed pair at a time unless "
                             "the table above says more seeds:"), Bullets(items)]
    return blocks
