"""Numbers into text: formatting, results.json/results.csv, and the report's metric tables.

What a table shows about a metric (its label, which way is better, its group, whether it is a
headline) comes from :mod:`pyro_vae.evaluation.metrics`; nothing here names a metric except the
Pareto-k warnings, which are about that diagnostic.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import fields
from typing import Any, Sequence

from pyro_vae.config import TrainConfig
from pyro_vae.io import counted  # noqa: F401  (the report's modules take it from here)
from pyro_vae.evaluation.estimators import PARETO_K_LIMIT
from pyro_vae.evaluation.metrics import (
    GROUPS,
    METRICS,
    direction,
    flat_metrics,
    metric,
    ranked,
)
from pyro_vae.report.document import Block, Cell, Paragraph, Table
from pyro_vae.study.statistics import Summary, badness, summarize

__all__ = ["CONFIG_COLUMNS", "CONFIG_EXCLUDED", "VARIANT_COLUMNS", "PARETO_WARN", "DASH", "counted", "fmt", "fmt_pm",
           "fmt_signed", "fmt_value", "direction_text", "json_safe", "result_row", "ordered_metrics", "csv_text",
           "comparison_table", "all_metrics_tables", "nan_warnings"]

PARETO_WARN = 0.1  # share of images with Pareto k above the threshold beyond which the IS estimate is flagged
DASH = "—"

# TrainConfig fields without a results.csv column, and why. Every other field gets one, in field order.
CONFIG_EXCLUDED = {
    "seed": "results.csv has its own seed column, next to the variant",
    "data_dir": "a path on the machine that trained; the report's data section gives origin and file hashes",
    "device": "where a run trained, not what it trained",
    "guide_options": "a table, not a CSV cell: shown as JSON in the report's variants table (VARIANT_COLUMNS)",
    "likelihood_options": "as guide_options",
    "prior_options": "as guide_options",
    "objective_options": "as guide_options",
}
CONFIG_COLUMNS = [f.name for f in fields(TrainConfig) if f.name not in CONFIG_EXCLUDED]
# What may distinguish variants in the report's "What distinguishes the variants" table.
VARIANT_COLUMNS = CONFIG_COLUMNS + [k for k in CONFIG_EXCLUDED if k.endswith("_options")]


# ---------------------------------------------------------------------------------------------
# Formatting numbers


def fmt(x: Any) -> str:
    if x is None:
        return DASH
    if isinstance(x, bool) or isinstance(x, str):
        return str(x)
    x = float(x)
    if math.isnan(x):
        return DASH
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    if x == 0:
        return "0"
    if x == round(x) and abs(x) < 1e5:
        return str(int(x)).replace("-", "−")
    a = abs(x)
    if a >= 1e5 or a < 1e-3:
        return f"{x:.3g}".replace("-", "−")
    decimals = max(0, 3 - math.floor(math.log10(a)))
    return f"{x:.{decimals}f}".replace("-", "−")


def fmt_pm(s: Summary | None) -> str:
    """mean ± sd with the mean rounded to the sd's second significant digit."""
    if s is None or s.n == 0:
        return DASH
    if s.n == 1 or not math.isfinite(s.std) or s.std == 0 or not math.isfinite(s.mean):
        return fmt(s.mean)
    decimals = min(max(0, 1 - math.floor(math.log10(s.std))), 6)
    if abs(s.mean) >= 1e5:
        return f"{fmt(s.mean)} ± {s.std:.2g}".replace("-", "−")
    return f"{s.mean:.{decimals}f} ± {s.std:.{decimals}f}".replace("-", "−")


def fmt_signed(x: float) -> str:
    if not isinstance(x, (int, float)) or math.isnan(x):
        return DASH
    return ("+" if x > 0 else "") + fmt(x)


def fmt_value(v: Any) -> str:
    """A config value in a table cell."""
    if isinstance(v, dict):
        return json.dumps(v)
    return fmt(v) if _scalar(v) else str(v)


def direction_text(better: str | None, target: float | None) -> str:
    if better == "target":
        return f"closer to {target:.4g}"
    return {"lower": "lower", "higher": "higher"}.get(better, "")


def _best(summaries: dict[str, Summary | None], directions: dict[str, tuple[str | None, float | None]],
          rankable: set[str] | None = None) -> set[str]:
    """Variants with the best mean, each judged by its own direction and target; empty unless at least two
    rankable variants have a value."""
    scores = {}
    for v, s in summaries.items():
        better, target = directions[v]
        if better is not None and s is not None and s.n and not math.isnan(s.mean) and (rankable is None or v in rankable):
            scores[v] = float(badness([s.mean], better, target)[0])
    if len(scores) < 2:
        return set()
    best = min(scores.values())
    return {v for v, sc in scores.items() if sc == best}


# ---------------------------------------------------------------------------------------------
# Rows: from the run folders to results.json and results.csv


def _scalar(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def json_safe(obj: Any) -> Any:
    """Non-finite floats as the strings "inf", "-inf", "nan" (strict JSON has no such numbers)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def result_row(row: dict) -> dict:
    """One results.json entry from one `collect` row."""
    metrics = row["metrics"]
    last = metrics[-1] if metrics else {}
    return {
        "variant": row["variant"], "seed": row["seed"], "run": row["run"], "config": row["config"],
        "data": row["data"], "versions": row["versions"],
        "final_train_elbo": last.get("train_elbo"), "final_test_elbo": last.get("test_elbo"),
        "train_seconds": float(sum(m.get("epoch_seconds", 0.0) for m in metrics)),
        "evaluation": row["evaluation"], "training_curve": metrics,
    }


def ordered_metrics(names: Sequence[str]) -> list[tuple[str, list[str]]]:
    """(group, keys) in the metric table's order; keys the table lacks go last, as bookkeeping."""
    names = list(dict.fromkeys(names))
    known = [k for k in METRICS if k in names] + [k for k in names if k not in METRICS]
    groups = [(g, [k for k in known if metric(k).group == g]) for g in GROUPS]
    return [(g, keys) for g, keys in groups if keys]


def csv_text(results: list[dict], metric_names: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    extra = ["data_origin", "train_count", "test_count"]
    writer.writerow(["variant", "seed", "run"] + CONFIG_COLUMNS + extra + metric_names)
    for r in results:
        flat = flat_metrics(r)
        cfg, data = r["config"], r["data"]
        writer.writerow([r["variant"], r["seed"], r["run"]]
                        + ["" if cfg.get(k) is None else cfg.get(k) for k in CONFIG_COLUMNS]
                        + [data.get("origin", ""), data.get("train_count", ""), data.get("test_count", "")]
                        + [repr(flat[m]) if m in flat else "" for m in metric_names])
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# The metric tables of the report


def _directions(key: str, variants: list[str], context: dict) -> dict[str, tuple[str | None, float | None]]:
    """Each variant's own direction and target (a 10-D variant's max-radius target is not a 2-D one's)."""
    return {v: direction(key, context[v]["n_classes"], context[v]["n_codes"], context[v]["latent_dim"]) for v in variants}


def _shared(directions: dict) -> tuple[str | None, float | None] | None:
    """The direction all variants share, or None when their targets differ."""
    distinct = set(directions.values())
    return next(iter(distinct)) if len(distinct) == 1 else None


def _head(key: str, directions: dict) -> str:
    shared = _shared(directions)
    if shared is None:
        return metric(key).label + " → own target"
    better, target = shared
    return metric(key).label + {"higher": " ↑", "lower": " ↓"}.get(better, f" → {target:.4g}" if better == "target" else "")


def _cells(key: str, variants: list[str], values: dict, context: dict) -> tuple[list[Cell], list[str]]:
    """One cell per variant (bold: best among the variants it may be ranked on) and the caveat notes."""
    directions = _directions(key, variants, context)
    summaries = {v: summarize(values[v][key]) if key in values[v] else None for v in variants}
    rankable = {v for v in variants if ranked(key, context[v].get("met"))}
    best = _best(summaries, directions, rankable)
    own_target = _shared(directions) is None
    cells, notes = [], []
    for v in variants:
        text = fmt_pm(summaries[v])
        if own_target and directions[v][0] == "target" and summaries[v] is not None:
            text += f" (→ {directions[v][1]:.4g})"
        nans = sum(math.isnan(x) for x in values[v].get(key, []))
        if nans:  # left out of the mean: say so in the cell (nan_warnings names the runs)
            text += f" (nan in {nans} of {counted(len(values[v][key]), 'seed')})"
        if summaries[v] is not None and v not in rankable:
            text += " †"
            notes.append(f"† {metric(key).label} of {v}: {metric(key).caveat}.")
        cells.append(Cell(text, v in best))
    return cells, notes


def _pareto_warnings(variants: list[str], values: dict) -> list[Block]:
    """Flag the IS estimate by the share of images whose Pareto k passes the sample-size threshold
    min(1 - 1/log10 K, 0.7) (evaluations made before it was recorded: by the share above 0.7)."""
    warnings = []
    for v in variants:
        share = summarize(values[v].get("pareto_k_share_above_threshold", []))
        threshold = summarize(values[v].get("pareto_k_threshold", [])).mean
        if not share.n:
            share, threshold = summarize(values[v].get("pareto_k_share_above_0_7", [])), PARETO_K_LIMIT
        if share.n and share.mean > PARETO_WARN:
            warnings.append(Paragraph(
                f"{v}: {share.mean:.0%} of the test images have a PSIS Pareto k above {threshold:.2f} (the threshold "
                f"min(1 − 1/log10 K, 0.7) for K importance samples; mean over seeds), so the importance-sampling "
                f"estimate log p(x) IS is untrustworthy for them"
                + (" (use the exact 2-D value)." if "log_px_exact" in values[v] else "; treat it as a rough lower bound."),
                "warning"))
    for v in variants:
        if "log_px_is" in values[v] and not summarize(values[v].get("pareto_k_median", [])).n:
            warnings.append(Paragraph(
                f"{v}: no PSIS Pareto k could be fitted (too few importance samples per image; ArviZ needs at least "
                f"25), so the share of images with k above the threshold is untested, not zero; the IS estimate is "
                f"unchecked.", "warning"))
    return warnings


def nan_warnings(results: list[dict]) -> list[Block]:
    """A warning naming each run whose value of a metric is nan while other runs of its variant have
    one: that variant's mean, sd and tests rest on fewer seeds than it has."""
    rows: dict[tuple[str, str], list[tuple[dict, float]]] = {}
    for r in results:
        for key, x in flat_metrics(r).items():
            rows.setdefault((r["variant"], key), []).append((r, x))
    lost: dict[str, list[str]] = {}  # run -> the labels of its nan metrics
    for (variant, key), values in rows.items():
        if any(not math.isnan(x) for _, x in values):
            for r, x in values:
                if math.isnan(x):
                    lost.setdefault(f"{variant} seed {r['seed']} ({r['run']})", []).append(f"{metric(key).label} ({key})")
    if not lost:
        return []
    return [Paragraph("Not a number (nan), so left out of the means, sds, tests and figures, which rest on the variant's other seeds "
                      "(the cells say how many): " + "; ".join(f"{run}: {', '.join(keys)}" for run, keys in lost.items())
                      + ". A nan in metrics.jsonl is an epoch whose bound diverged; in evaluation.json, a number that "
                      "could not be computed for that run.", "warning")]


def _notes(notes: list[str]) -> list[Block]:
    return [Paragraph(" ".join(dict.fromkeys(notes)), "note")] if notes else []


def comparison_table(variants: list[str], values: dict, context: dict) -> tuple[Table | None, list[Block]]:
    """The headline metrics of every variant side by side, and warnings about the IS estimates."""
    headline = sorted((m for m in METRICS.values() if m.headline), key=lambda m: m.headline)
    columns = [m.key for m in headline if any(m.key in values[v] for v in variants)]
    if not columns:
        return None, []
    cells, notes = {}, []
    for c in columns:
        cells[c], more = _cells(c, variants, values, context)
        notes += more
    rows = [[v, str(max(map(len, values[v].values())))]  # runs of the variant: one value per run and metric
            + [cells[c][i] for c in columns] for i, v in enumerate(variants)]
    header = ["variant", "seeds"] + [_head(c, _directions(c, variants, context)) for c in columns]
    table = Table(header, rows, numeric=range(1, len(header)),
                  caption="Mean ± sd over seeds; bold: best in the column (↑ higher, ↓ lower, → closer to the value; "
                          "\"own target\": each variant's, in brackets); † shown, not ranked (see the note); "
                          f"{DASH}: not defined for that variant (no ELBO or IS estimate for deterministic guides).")
    return table, _notes(notes) + _pareto_warnings(variants, values)


def all_metrics_tables(variants: list[str], values: dict, context: dict) -> list[Block]:
    """One table per metric group: every number of every variant, with its results.csv key."""
    blocks: list[Block] = []
    notes: list[str] = []
    for title, members in ordered_metrics([m for v in variants for m in values[v]]):
        rows = []
        for m in members:
            cells, more = _cells(m, variants, values, context)
            notes += more
            shared = _shared(_directions(m, variants, context))
            rows.append([metric(m).label, m, direction_text(*shared) if shared else "closer to each variant's target"]
                        + cells)
        blocks.append(Table(["metric", "key (results.csv)", "better"] + variants, rows, caption=title,
                            numeric=range(3, 3 + len(variants))))
    return blocks + _notes(notes)
