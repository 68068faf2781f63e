"""The study report: numbers, verdicts computed from them, and figures, as Markdown and HTML.

    build_report("runs/ae_vs_vae", "runs/ae_vs_vae/report")

evaluates every run of the study that lacks an evaluation (never retraining one), then writes into
the report folder

    results.json   one object per run: config, data provenance, versions, final bounds, every metric
    results.csv    one row per run, one column per scalar metric and key config field
    figures/*.png  the figures, variants side by side on shared scales
    report.md      the report, figures linked by relative path
    report.html    the same report, self-contained (inline CSS, figures as data: URIs)

The content is built once as a list of blocks (headings, paragraphs, lists, tables, figures) and
rendered to both formats. The verdicts on the study's claims are computed from the per-seed
numbers by :func:`compare_metric` and :func:`claim_verdict`, which are pure functions.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from scipy.stats import chi2

from pyro_vae import plots
from pyro_vae.errors import UserError
from pyro_vae.evaluation.evaluate import EVALUATION_ARRAYS, evaluate_run
from pyro_vae.io import atomic_write_bytes
from pyro_vae.study.runner import Study, collect, evaluate_study
from pyro_vae.training import runs

__all__ = [
    "build_report", "compare_metric", "claim_verdict", "judge_claims", "metric_direction",
    "expected_max_radius", "summarize", "render_markdown", "render_html",
    "Heading", "Paragraph", "Bullets", "Table", "Cell", "Figure", "FigureRow",
]

CONFIG_COLUMNS = ["dataset", "guide", "prior", "likelihood", "objective", "num_particles", "beta",
                  "beta_warmup_epochs", "latent_dim", "network", "hidden_dim", "epochs", "batch_size", "lr",
                  "binarize", "train_limit", "test_limit", "split_seed"]
PARETO_WARN = 0.1  # share of images with Pareto k > 0.7 above which the IS estimate is flagged
MIN_SEEDS = 2  # seeds per variant needed before a difference is judged
DASH = "—"

BETTER, WORSE, SAME, UNJUDGED = "better", "worse", "no clear difference", "not judged"
HOLDS, PARTLY, FAILS, NOT_JUDGED = "holds", "holds partly", "does not hold", "not judged"


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# =============================================================================================
# Metric vocabulary: readable names and which way is better


LABELS = {
    "test_elbo": "test ELBO", "log_px_is": "log p(x) IS", "log_px_exact": "log p(x) exact",
    "gap_exact_minus_elbo": "gap exact − ELBO", "gap_exact_minus_is": "gap exact − IS",
    "pareto_k_share_above_0_7": "share Pareto k > 0.7", "pareto_k_median": "median Pareto k",
    "recon_bce": "recon BCE", "final_train_elbo": "final train bound", "final_test_elbo": "final test bound",
    "mean_norm": "‖mean code‖", "gaussian_kl": "Gaussian KL to N(0,I)", "share_in_95": "share in 95% ball",
    "max_abs_skewness": "max |skewness|", "max_radius": "max radius",
    "spread_ratio": "spread ratio", "spread_cv": "spread CV", "silhouette": "silhouette",
    "white_spread_ratio": "whitened spread ratio", "white_spread_cv": "whitened spread CV",
    "white_silhouette": "whitened silhouette", "active_units": "active units",
    "classifier_accuracy": "classifier test accuracy", "eval_seconds": "evaluation seconds",
    "train_seconds": "training seconds", "epochs_trained": "epochs trained", "grid_points": "grid points",
}
_SAMPLERS = {"prior": "prior", "box": "box", "mid_same": "midpoint same-class", "mid_diff": "midpoint diff-class"}
_QUALITY = {"fid": "FID", "confidence": "confidence", "label_entropy": "label entropy", "class_coverage": "class coverage"}


def label(name: str) -> str:
    if name in LABELS:
        return LABELS[name]
    for prefix, sampler in _SAMPLERS.items():
        for key, q in _QUALITY.items():
            if name == f"{prefix}_{key}":
                return f"{sampler} {q}"
    return name.replace("_", " ")


def expected_max_radius(n_codes: int, latent_dim: int) -> float:
    """Median of the largest norm among n_codes draws from N(0, I_d): where max_radius should sit."""
    return float(math.sqrt(chi2.ppf(0.5 ** (1.0 / max(int(n_codes), 1)), latent_dim)))


def metric_direction(name: str, n_classes: int = 10, n_codes: int | None = None,
                     latent_dim: int | None = None) -> tuple[str | None, float | None]:
    """("lower" | "higher" | "target" | None, target value) for a metric name."""
    lower = {"recon_bce", "gap_exact_minus_elbo", "pareto_k_share_above_0_7", "pareto_k_median", "mean_norm",
             "gaussian_kl", "max_abs_skewness", "spread_ratio", "spread_cv", "white_spread_ratio", "white_spread_cv"}
    higher = {"test_elbo", "log_px_is", "log_px_exact", "silhouette", "white_silhouette"}
    if name in lower:
        return "lower", None
    if name in higher or name == "active_units":
        return "higher", None
    if name == "share_in_95":
        return "target", 0.95
    if name == "gap_exact_minus_is":
        return "target", 0.0
    if name == "max_radius" and n_codes and latent_dim:
        return "target", expected_max_radius(n_codes, latent_dim)
    for prefix in _SAMPLERS:
        if name.startswith(prefix + "_"):
            key = name[len(prefix) + 1:]
            if key == "fid":
                return "lower", None
            if key in ("confidence", "class_coverage"):
                return "higher", None
            if key == "label_entropy":
                return "target", math.log(n_classes)
    return None, None


def _direction_text(better: str | None, target: float | None) -> str:
    if better == "target":
        return f"closer to {target:.4g}"
    return {"lower": "lower", "higher": "higher"}.get(better, "")


# =============================================================================================
# Numbers: summaries and verdicts (pure functions)


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


def _badness(values: Sequence[float], better: str, target: float | None) -> np.ndarray:
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
    b, c = _badness(baseline, better, tb), _badness(candidate, better, target)
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
class Claim:
    key: str
    title: str
    explanation: str
    verdict: str
    rows: list[dict]  # one per metric: metric, sampler, baseline/candidate summaries, comparison


def judge_claims(values: dict[str, dict[str, list[float]]], baseline: str, candidate: str,
                 context: dict[str, dict] | None = None) -> list[Claim]:
    """The three claims of an AE-vs-VAE study, judged from per-seed values.

    ``values[variant][metric]`` lists one value per seed; ``context[variant]`` may give
    ``n_classes``, ``n_codes`` and ``latent_dim`` (for the label-entropy and max-radius targets).
    Claim 1 compares the candidate's prior samples with the better (by mean, per metric) of the
    baseline's prior and box samples, and midpoints with midpoints.
    """
    context = context or {}

    def direction(variant: str, metric: str):
        ctx = context.get(variant, {})
        return metric_direction(metric, ctx.get("n_classes", 10), ctx.get("n_codes"), ctx.get("latent_dim"))

    def row(metric_c: str, metric_b: str) -> dict | None:
        vb, vc = values.get(baseline, {}).get(metric_b), values.get(candidate, {}).get(metric_c)
        if vb is None or vc is None:
            return None
        better, target = direction(candidate, metric_c)
        _, target_b = direction(baseline, metric_b)
        if better is None:  # e.g. max_radius without the code count its target needs
            return None
        result = compare_metric(vb, vc, better, target, target_b)
        return {"metric": metric_c, "baseline_metric": metric_b, "better": better, "target": target,
                "baseline": summarize(vb), "candidate": summarize(vc), **result}

    def best_of(metric: str, options: Sequence[str]) -> str:
        present = [m for m in options if m in values.get(baseline, {})]
        if not present:
            return options[0]
        better, target = direction(baseline, present[0])
        scores = [float(np.mean(_badness(values[baseline][m], better, target)) if values[baseline][m] else math.inf)
                  for m in present]
        return present[int(np.nanargmin(scores))] if not all(math.isnan(s) for s in scores) else present[0]

    claims = []
    quality = []
    for q in ("fid", "confidence", "label_entropy"):
        quality.append(row(f"prior_{q}", best_of(q, [f"prior_{q}", f"box_{q}"])))
    for mid in ("mid_same", "mid_diff"):
        for q in ("fid", "confidence"):
            quality.append(row(f"{mid}_{q}", f"{mid}_{q}"))
    claims.append(("holes", f"No holes: random codes decode to good images for {candidate}, not for {baseline}",
                   f"{candidate}'s codes drawn from its prior against the better of {baseline}'s prior draws and "
                   f"uniform draws over the box its codes occupy (its fairest sampler), chosen per metric; and the "
                   f"decodes of midpoints between encoded test images of the same and of different classes. "
                   f"Images are scored by a classifier trained on the real training split.", quality))
    centre = [row(m, m) for m in ("mean_norm", "gaussian_kl", "share_in_95", "max_abs_skewness", "max_radius")]
    claims.append(("centre", f"Centred and bounded: {candidate}'s codes sit like N(0, I) samples, {baseline}'s do not",
                   "Codes are posterior means of the test images. share_in_95 should be 0.95; max_radius should be "
                   "near the median largest norm of as many N(0, I) draws.", centre))
    spread = [row(m, m) for m in ("white_spread_ratio", "white_spread_cv", "spread_ratio", "spread_cv", "silhouette")]
    claims.append(("spread", f"Even spread: {candidate} spreads the classes more evenly than {baseline}",
                   "Spread of a class = RMS distance of its codes to the class centre. The whitened versions are "
                   "computed after mapping the codes to identity covariance, so no model wins by shrinking or "
                   "stretching its space.", spread))
    out = []
    for key, title, explanation, rows in claims:
        rows = [r for r in rows if r is not None]
        out.append(Claim(key, title, explanation, claim_verdict([r["verdict"] for r in rows]), rows))
    return out


# =============================================================================================
# Document model, rendered to Markdown and HTML

Inline = str | list  # a string, or a list of str and (style, text) pairs with style "b", "i" or "code"


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Paragraph:
    content: Inline
    kind: str = "text"  # "text", "note", "warning", "verdict"


@dataclass
class Bullets:
    items: list[Inline]


@dataclass
class Cell:
    text: str
    bold: bool = False


@dataclass
class Table:
    header: list[str]
    rows: list[list[Cell | str]]
    caption: str | None = None
    numeric: Sequence[int] = ()  # indices of right-aligned (number) columns


@dataclass
class Figure:
    path: str  # relative to the report folder
    caption: str


@dataclass
class FigureRow:
    figures: list[Figure]
    caption: str | None = None


Block = Heading | Paragraph | Bullets | Table | Figure | FigureRow

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#~])")


def _md_escape(text: str) -> str:
    return _MD_SPECIAL.sub(r"\\\1", str(text)).replace("\n", " ")


def _spans(content: Inline) -> list[tuple[str, str]]:
    if isinstance(content, str):
        return [("", content)]
    return [("", part) if isinstance(part, str) else (part[0], part[1]) for part in content]


def _md_inline(content: Inline) -> str:
    out = []
    for style, text in _spans(content):
        if style == "code":
            ticks = "``" if "`" in text else "`"
            out.append(f"{ticks}{text}{ticks}")
        elif style == "b":
            out.append(f"**{_md_escape(text)}**")
        elif style == "i":
            out.append(f"*{_md_escape(text)}*")
        else:
            out.append(_md_escape(text))
    return "".join(out)


def _html_inline(content: Inline) -> str:
    tags = {"code": "code", "b": "strong", "i": "em"}
    out = []
    for style, text in _spans(content):
        escaped = html.escape(str(text))
        out.append(f"<{tags[style]}>{escaped}</{tags[style]}>" if style in tags else escaped)
    return "".join(out)


def _cell(c: Cell | str) -> Cell:
    return c if isinstance(c, Cell) else Cell(str(c))


def render_markdown(blocks: Sequence[Block]) -> str:
    lines: list[str] = []
    prefix = {"note": "> **Note.** ", "warning": "> **⚠ Warning.** ", "verdict": "> "}
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + _md_escape(block.text), ""]
        elif isinstance(block, Paragraph):
            lines += [prefix.get(block.kind, "") + _md_inline(block.content), ""]
        elif isinstance(block, Bullets):
            lines += [f"- {_md_inline(item)}" for item in block.items] + [""]
        elif isinstance(block, Table):
            if block.caption:
                lines += [f"*{_md_escape(block.caption)}*", ""]
            lines.append("| " + " | ".join(_md_escape(h) for h in block.header) + " |")
            lines.append("|" + "|".join("---:" if i in block.numeric else "---" for i in range(len(block.header))) + "|")
            for r in block.rows:
                cells = [_cell(c) for c in r]
                lines.append("| " + " | ".join(f"**{_md_escape(c.text)}**" if c.bold else _md_escape(c.text) for c in cells) + " |")
            lines.append("")
        elif isinstance(block, (Figure, FigureRow)):
            figures = block.figures if isinstance(block, FigureRow) else [block]
            lines.append(" ".join(f"![{_md_escape(f.caption)}]({f.path})" for f in figures))
            lines += ["", f"*{_md_escape(block.caption if isinstance(block, FigureRow) and block.caption else figures[0].caption)}*", ""]
        else:
            raise TypeError(f"unknown block {type(block).__name__}")
    return "\n".join(lines).rstrip() + "\n"


_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1200px; margin: 2em auto;
       padding: 0 1.5em; color: #1b1b1b; line-height: 1.5; }
h1 { border-bottom: 2px solid #333; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: .15em; margin-top: 2em; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: .6em 0 1.4em; font-size: 0.88em; }
th, td { border: 1px solid #d0d0d0; padding: .25em .6em; }
th { background: #f2f2f2; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
caption { caption-side: top; text-align: left; font-style: italic; padding-bottom: .3em; }
tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1em 0 1.8em; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
.row { display: flex; flex-wrap: wrap; gap: .8em; align-items: flex-start; }
.row img { max-width: 360px; }
figcaption { font-size: .9em; color: #444; font-style: italic; }
code { background: #f4f4f4; padding: 0 .2em; border-radius: 3px; }
p.note { background: #eef5ff; border-left: 4px solid #4a7bd0; padding: .4em .8em; }
p.warning { background: #fff3e6; border-left: 4px solid #e07b00; padding: .4em .8em; }
p.verdict { background: #f3f8ee; border-left: 4px solid #4d9a2a; padding: .4em .8em; }
"""


def render_html(blocks: Sequence[Block], title: str, figure_root: Path) -> str:
    """A self-contained page: inline CSS, figures embedded as base64 data URIs from figure_root."""

    def img(f: Figure) -> str:
        data = base64.b64encode((figure_root / f.path).read_bytes()).decode("ascii")
        return f'<img src="data:image/png;base64,{data}" alt="{html.escape(f.caption)}">'

    body = []
    for block in blocks:
        if isinstance(block, Heading):
            level = min(max(block.level, 1), 6)
            body.append(f"<h{level}>{html.escape(block.text)}</h{level}>")
        elif isinstance(block, Paragraph):
            cls = f' class="{block.kind}"' if block.kind != "text" else ""
            lead = {"note": "<strong>Note.</strong> ", "warning": "<strong>⚠ Warning.</strong> "}.get(block.kind, "")
            body.append(f"<p{cls}>{lead}{_html_inline(block.content)}</p>")
        elif isinstance(block, Bullets):
            body.append("<ul>" + "".join(f"<li>{_html_inline(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Table):
            parts = ['<div class="scroll"><table>']
            if block.caption:
                parts.append(f"<caption>{html.escape(block.caption)}</caption>")
            parts.append("<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in block.header) + "</tr></thead><tbody>")
            for r in block.rows:
                tds = []
                for i, c in enumerate(_cell(c) for c in r):
                    text = f"<strong>{html.escape(c.text)}</strong>" if c.bold else html.escape(c.text)
                    tds.append(f'<td class="num">{text}</td>' if i in block.numeric else f"<td>{text}</td>")
                parts.append("<tr>" + "".join(tds) + "</tr>")
            parts.append("</tbody></table></div>")
            body.append("".join(parts))
        elif isinstance(block, Figure):
            body.append(f"<figure>{img(block)}<figcaption>{html.escape(block.caption)}</figcaption></figure>")
        elif isinstance(block, FigureRow):
            inner = "".join(f"<div>{img(f)}</div>" for f in block.figures)
            caption = f"<figcaption>{html.escape(block.caption)}</figcaption>" if block.caption else ""
            body.append(f'<figure><div class="row">{inner}</div>{caption}</figure>')
        else:
            raise TypeError(f"unknown block {type(block).__name__}")
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


# =============================================================================================
# Formatting numbers


def _fmt(x: Any) -> str:
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


def _fmt_pm(s: Summary | None) -> str:
    """mean ± sd with the mean rounded to the sd's second significant digit."""
    if s is None or s.n == 0:
        return DASH
    if s.n == 1 or not math.isfinite(s.std) or s.std == 0 or not math.isfinite(s.mean):
        return _fmt(s.mean)
    decimals = min(max(0, 1 - math.floor(math.log10(s.std))), 6)
    if abs(s.mean) >= 1e5:
        return f"{_fmt(s.mean)} ± {s.std:.2g}".replace("-", "−")
    return f"{s.mean:.{decimals}f} ± {s.std:.{decimals}f}".replace("-", "−")


def _fmt_signed(x: float) -> str:
    if not isinstance(x, (int, float)) or math.isnan(x):
        return DASH
    return ("+" if x > 0 else "") + _fmt(x)


def _best(summaries: dict[str, Summary | None], better: str | None, target: float | None) -> set[str]:
    """Variants with the best mean (direction-aware); empty unless at least two have a value."""
    if better is None:
        return set()
    scores = {}
    for v, s in summaries.items():
        if s is not None and s.n and not math.isnan(s.mean):
            scores[v] = float(_badness([s.mean], better, target)[0])
    if len(scores) < 2:
        return set()
    best = min(scores.values())
    return {v for v, sc in scores.items() if sc == best}


# =============================================================================================
# Rows: from the run folders to flat numbers


def _scalar(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _json_safe(obj: Any) -> Any:
    """Non-finite floats as the strings "inf", "-inf", "nan" (strict JSON has no such numbers)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
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


def flat_metrics(result: dict) -> dict[str, float]:
    """Every scalar number of a results.json entry: evaluation metrics, final bounds, seconds."""
    out = {k: float(v) for k, v in result["evaluation"].items() if _scalar(v)}
    if "pareto_k_share_above_0_7" in out and not math.isfinite(out.get("pareto_k_median", math.nan)):
        out["pareto_k_share_above_0_7"] = math.nan  # no k was fitted (too few samples): untested, not 0
    for key in ("final_train_elbo", "final_test_elbo", "train_seconds"):
        if _scalar(result.get(key)):
            out[key] = float(result[key])
    return out


_GROUPS = [
    ("Likelihood and bounds", ["test_elbo", "log_px_is", "log_px_exact", "gap_exact_minus_elbo", "gap_exact_minus_is",
                               "pareto_k_share_above_0_7", "pareto_k_median", "recon_bce", "final_train_elbo",
                               "final_test_elbo"]),
    ("Centre and bounds", ["mean_norm", "gaussian_kl", "share_in_95", "max_abs_skewness", "max_radius"]),
    ("Class spread", ["spread_ratio", "spread_cv", "silhouette", "white_spread_ratio", "white_spread_cv",
                      "white_silhouette"]),
    ("Sample quality", [f"{s}_{q}" for s in _SAMPLERS for q in _QUALITY]),
]


def _ordered_metrics(names: Sequence[str]) -> list[tuple[str, list[str]]]:
    names = list(dict.fromkeys(names))
    groups, seen = [], set()
    for title, members in _GROUPS:
        present = [m for m in members if m in names]
        if title == "Likelihood and bounds":
            present += [m for m in ("active_units",) if m in names and m not in present]
        seen.update(present)
        if present:
            groups.append((title, present))
    rest = [m for m in names if m not in seen]
    if rest:
        groups.append(("Bookkeeping", rest))
    return groups


def _csv_text(results: list[dict], metric_names: list[str]) -> str:
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


def _write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


# =============================================================================================
# Figures


def _figures(study: Study, runs_dir: Path, out_dir: Path, results: list[dict], values: dict,
             class_names: Sequence[str], log: Callable[[str], None]) -> dict[str, Figure | list[Figure]]:
    """Save the figures under out_dir/figures; returns name -> Figure block (paths relative)."""
    fig_dir = out_dir / "figures"
    seed = study.seeds[0]
    variants = list(study.variants)
    arrays, configs = {}, {}
    for v in variants:
        path = study.run_dir(runs_dir, v, seed) / EVALUATION_ARRAYS
        with np.load(path) as npz:
            arrays[v] = {k: npz[k] for k in npz.files}
        configs[v] = next(r["config"] for r in results if r["variant"] == v and r["seed"] == seed)
    made: dict[str, Figure | list[Figure]] = {}

    def save(name: str, fig, *caption: str) -> Figure:
        # save(name, fig, caption) or save(name, fig, suptitle, caption): spread_bars' own title would
        # collide with its "mean ± sd over n seeds" note, so those get a figure title instead.
        if len(caption) == 2:
            fig.suptitle(caption[0])
        caption = caption[-1]
        plots.save_figure(fig, fig_dir / f"{name}.png")
        return Figure(f"figures/{name}.png", caption)

    def attempt(name: str, make: Callable[[], Any]) -> None:
        try:
            result = make()
        except (ValueError, KeyError, IndexError, np.linalg.LinAlgError) as e:  # one bad figure must not sink the report
            log(f"report: skipped figure {name} ({type(e).__name__}: {e})")
            return
        if result is not None:
            made[name] = result

    labels = {v: arrays[v]["labels"] for v in variants}
    codes = {v: arrays[v]["codes"] for v in variants}
    two_d = [v for v in variants if codes[v].shape[1] >= 2]
    attempt("codes", lambda: save("codes", plots.code_scatter(
        {v: codes[v] for v in two_d}, {v: labels[v] for v in two_d}, class_names=class_names,
        title=f"Test-image codes (posterior means), seed {seed}; dashed: 1, 2, 3 σ of N(0, I)"),
        f"Codes of the test images (seed {seed}), coloured by class, with the 1-2-3 σ circles of N(0, I); "
        "same axes for every variant.") if two_d else None)
    attempt("prior_samples", lambda: save("prior_samples", plots.image_grid(
        {v: arrays[v]["prior_images"] for v in variants}, ncols=8, title=f"Decoded draws from each model's prior, seed {seed}"),
        "Images decoded from codes drawn from each model's prior (N(0, I) unless a learned prior is named; a β = 0 "
        "autoencoder never trained with it)."))
    attempt("box_samples", lambda: save("box_samples", plots.image_grid(
        {v: arrays[v]["box_images"] for v in variants}, ncols=8, title=f"Decoded uniform draws over the box the codes occupy, seed {seed}"),
        "Images decoded from codes drawn uniformly over the bounding box of each model's test codes: how one samples a plain AE."))
    manifold_vs = [v for v in variants if "manifold" in arrays[v]]
    if manifold_vs:
        attempt("manifold", lambda: save("manifold", plots.manifold(
            {v: arrays[v]["manifold"] for v in manifold_vs}, grid_size=len(arrays[manifold_vs[0]]["manifold_axis"]),
            axis_values={v: arrays[v]["manifold_axis"] for v in manifold_vs},
            title=f"Decoded code grid, seed {seed}"),
            "Decoded regular grid of codes: normal quantiles (3%–97%) for probabilistic guides, the 1st–99th "
            "percentile range of the codes for deterministic ones (tick labels give the code values)."))
    originals = arrays[variants[0]]["originals"]
    same_originals = all(np.array_equal(arrays[v]["originals"], originals) for v in variants)
    attempt("reconstructions", lambda: save("reconstructions", plots.reconstructions(
        originals, {v: arrays[v]["reconstructions"] for v in variants}, title=f"Reconstructions of the same test images, seed {seed}"),
        "Top row: binarised test images; below: each variant's reconstruction (Bernoulli means) of them."
        + ("" if same_originals else " Note: the variants binarise the test images differently; the top row is the first variant's.")))
    spreads = {v: np.array([r["evaluation"]["class_spread"] for r in results if r["variant"] == v]) for v in variants}
    white = {v: np.array([r["evaluation"]["white_class_spread"] for r in results if r["variant"] == v]) for v in variants}
    n_seeds = len(study.seeds)
    attempt("class_spread", lambda: save("class_spread", plots.spread_bars(
        spreads, class_names=class_names, title="", ylabel="RMS distance to class centre"), "Per-class spread of the codes (raw code units)",
        f"Per-class spread (RMS distance of a class's codes to its centre), mean ± sd over {n_seeds} seed(s). Raw units differ "
        "between variants; compare the shape across classes, and the whitened figure for scale-free spreads."))
    attempt("class_spread_whitened", lambda: save("class_spread_whitened", plots.spread_bars(
        white, class_names=class_names, title="", ylabel="whitened RMS distance"), "Per-class spread after whitening the codes (scale-free)",
        "The same after whitening each variant's codes to identity covariance: no variant can look even by shrinking its space."))
    curves = {v: [r["training_curve"] for r in results if r["variant"] == v] for v in variants}
    attempt("training_curves", lambda: save("training_curves", plots.training_curves(
        curves, ylabel="objective bound (nats / image)", title="Training curves (each variant's own, β-scaled objective)"),
        "Train and test value of each variant's training objective per epoch (band: min–max over seeds). Bounds of "
        "different objectives (β = 0 drops the prior's terms) are not comparable across variants."))
    attempt("marginals", lambda: save("marginals", plots.marginal_densities(
        codes, title=f"Marginal densities of the codes (ArviZ KDE) against N(0, 1), seed {seed}"),
        "Kernel density of each code axis against the N(0, 1) density (dashed), same x range for every variant."))
    learned = [v for v in variants if configs[v].get("prior") != "standard-normal" and "prior_log_density" in arrays[v]]
    priors = []
    for v in learned:
        def make(v=v):
            return save(f"prior_density_{v}", plots.prior_density(
                codes[v], labels[v], arrays[v]["prior_log_density"], arrays[v]["prior_extent"], class_names=class_names,
                title=f"{v}: learned prior ({configs[v]['prior']}) under its codes, seed {seed}"),
                f"{v}: log density of the learned {configs[v]['prior']} prior, with the test codes on top.")
        before = len(made)
        attempt(f"prior_density_{v}", make)
        if len(made) > before:
            priors.append(made.pop(f"prior_density_{v}"))
    if priors:
        made["prior_density"] = priors
    headline = [m for m in ("prior_fid", "prior_confidence", "gaussian_kl", "share_in_95", "white_spread_cv",
                            "log_px_exact" if any("log_px_exact" in values[v] for v in variants) else "log_px_is")
                if any(m in values[v] for v in variants)]
    bars = []
    for m in headline:
        def make(m=m):
            present = {v: values[v][m] for v in variants if m in values[v]}
            better, target = metric_direction(m)
            style = "point" if m.startswith("log_px") or m == "test_elbo" else "bar"
            fig = plots.metric_bars(present, title=f"{label(m)} ({_direction_text(better, target)} is better)"
                                    if better != "target" else f"{label(m)} (target {target:.4g})", style=style,
                                    ylabel="nats / image" if m.startswith("log_px") else "")
            if target is not None:
                fig.axes[0].axhline(target, color="C3", linestyle="--", linewidth=1.0)
            return save(f"metric_{m}", fig, label(m))
        before = len(made)
        attempt(f"metric_{m}", make)
        if len(made) > before:
            bars.append(made.pop(f"metric_{m}"))
    if bars:
        made["metric_bars"] = bars
    return made


# =============================================================================================
# The report


def _setup_blocks(study: Study, results: list[dict], values: dict) -> list[Block]:
    first = results[0]
    cfg, data, versions = first["config"], first["data"], first["versions"]
    blocks: list[Block] = [Heading(2, "Setup")]
    origin = data.get("origin", "?")
    origin_text = {"--data-dir": "the folder given with --data-dir", "PYRO_VAE_DATA": "the folder in $PYRO_VAE_DATA",
                   "cache": "the per-user cache", "download": "a fresh torchvision download",
                   "embedded": "THE SMALL SAMPLE EMBEDDED IN THE PACKAGE"}.get(origin, origin)
    if origin == "embedded":
        blocks.append(Paragraph("The data is the MNIST sample shipped inside pyro-vae, not data supplied by the user: "
                                + data.get("note", "") + ". Every number below comes from it.", "warning"))
    if len({json.dumps(r["data"], sort_keys=True) for r in results}) > 1:
        blocks.append(Paragraph("The runs did not all see the same data (provenance differs between run folders); "
                                "see results.json.", "warning"))
    files = [f"{key.split('_')[0]} file {Path(d['images']).name} (sha256 {d['images_sha256'][:12]}…, {d['count']:,} images)"
             for key, d in data.items() if key.endswith("_file") and isinstance(d, dict) and "images" in d]
    evaluation = study.eval_settings()
    accuracy = summarize([r["evaluation"].get("classifier_accuracy") for r in results])
    wall = sum(r["train_seconds"] + float(r["evaluation"].get("eval_seconds", 0.0)) for r in results)
    shared = {k: cfg[k] for k in cfg if all(r["config"].get(k) == cfg[k] for r in results) and k != "seed"}
    items: list[Inline] = [
        ["Data: ", ("b", cfg["dataset"]), f" from {origin_text} ({data.get('raw_dir', '?')})."],
        ["Split: " + str(data.get("split", "?")) + "; used "
         + f"{data.get('train_count', '?'):,} training and {data.get('test_count', '?'):,} test images"
         + (f" (limits: train {cfg['train_limit']}, test {cfg['test_limit']})" if cfg.get("train_limit") or cfg.get("test_limit") else "")
         + "."] + ([" Files: " + "; ".join(files) + "."] if files else []),
        [f"Binarisation: {cfg['binarize']} "
         + {"dynamic": "(a fresh Bernoulli draw of every training image each epoch; one fixed draw of the test images)",
            "fixed": "(one seeded Bernoulli draw of the training images; one fixed draw of the test images)",
            "none": "(grey values used as Bernoulli means)"}.get(cfg["binarize"], "") + "."],
        [f"Network: {cfg['network']} encoder/decoder, hidden width {cfg['hidden_dim']}; latent size "
         + "/".join(str(d) for d in dict.fromkeys(r["config"]["latent_dim"] for r in results))
         + f"; likelihood {cfg['likelihood']}."],
        [f"Training: {'/'.join(str(e) for e in dict.fromkeys(r['config']['epochs'] for r in results))} epoch(s), batch size "
         f"{cfg['batch_size']}, Adam lr {cfg['lr']:g}, objective "
         + "/".join(dict.fromkeys(r["config"]["objective"] for r in results))
         + f" with {cfg['num_particles']} particle(s); seeds {', '.join(map(str, study.seeds))}."],
        [f"Evaluation: codes are posterior means of the test images; log p(x) by importance sampling with K = "
         f"{evaluation.num_samples} samples per image (PSIS diagnostics), exact 2-D quadrature to {evaluation.grid_tol:g} nats; "
         + (f"likelihoods on the first {evaluation.likelihood_images} test images; " if evaluation.likelihood_images else "")
         + f"{evaluation.generated} generated images per sampler, {evaluation.pairs} pairs per midpoint kind, eval seed {evaluation.seed}."],
        [f"Sample-quality classifier: a small CNN trained on the same training split; test accuracy {_fmt(accuracy.mean)}"
         + (" (it scores every generated image; FID is computed on its penultimate features against the real test images)."
            if accuracy.n else ".")],
        ["Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items())
         + ("" if len({json.dumps(r["versions"], sort_keys=True) for r in results}) == 1 else
            " (runs differ in versions; see results.json)") + "."],
        [f"Compute: {wall / 60:.1f} min ({wall:.0f} s) in total over the {len(results)} runs (sum of the epoch times and the latest evaluation times)."],
    ]
    blocks.append(Bullets(items))
    differing = [k for k in CONFIG_COLUMNS + ["guide_options", "prior_options", "objective_options"]
                 if k not in shared and k != "seed"]
    header = ["variant"] + (differing or ["guide", "prior", "beta"])
    rows = []
    for v in study.variants:
        c = next(r["config"] for r in results if r["variant"] == v)
        rows.append([v] + [json.dumps(c.get(k)) if isinstance(c.get(k), dict) else _fmt(c.get(k)) if _scalar(c.get(k))
                           else str(c.get(k)) for k in header[1:]])
    blocks.append(Table(header, rows, caption="What distinguishes the variants"))
    return blocks


def _claim_blocks(claims: list[Claim], baseline: str, candidate: str) -> list[Block]:
    blocks: list[Block] = [Heading(2, f"Claims: {candidate} (candidate) against {baseline} (baseline)"),
                           Paragraph(CLAIM_RULE, "note")]
    for i, claim in enumerate(claims, 1):
        blocks.append(Heading(3, f"Claim {i}. {claim.title}"))
        counts = {k: sum(r["verdict"] == k for r in claim.rows) for k in (BETTER, SAME, WORSE, UNJUDGED)}
        summary = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
        blocks.append(Paragraph([("b", f"Verdict: the claim {claim.verdict}"), f" ({summary or 'no metric available'})."], "verdict"))
        blocks.append(Paragraph(claim.explanation))
        rows = []
        for r in claim.rows:
            sampler = "" if r["baseline_metric"] == r["metric"] else f" ({label(r['baseline_metric']).split(' ')[0]} sampling)"
            rows.append([label(r["metric"]), _direction_text(r["better"], r["target"]),
                         _fmt_pm(r["baseline"]) + sampler, _fmt_pm(r["candidate"]),
                         _fmt_signed(r["improvement"]), _fmt(r["threshold"]), Cell(r["verdict"], r["verdict"] in (BETTER, WORSE))])
        blocks.append(Table(["metric", "better", f"{baseline} (mean ± sd)", f"{candidate} (mean ± sd)",
                             "improvement", "2 × SE", "verdict"], rows, numeric=(2, 3, 4, 5),
                            caption="improvement = how much closer to ideal the candidate's mean is (in the metric's units; "
                                    "for targets, in distance to the target)"))
    return blocks


def _comparison_table(variants: list[str], values: dict, context: dict) -> tuple[Table | None, list[Block]]:
    columns = ["test_elbo", "log_px_is", "log_px_exact", "gap_exact_minus_elbo", "gap_exact_minus_is",
               "pareto_k_share_above_0_7", "recon_bce", "gaussian_kl", "share_in_95", "white_spread_ratio",
               "white_spread_cv", "silhouette", "prior_fid", "prior_confidence", "prior_label_entropy", "box_fid"]
    columns.append("active_units")  # latent sizes above 2
    columns = [c for c in columns if any(c in values[v] for v in variants)]
    if not columns:
        return None, []
    summaries = {c: {v: summarize(values[v][c]) if c in values[v] else None for v in variants} for c in columns}
    ctx = context[variants[0]]
    best = {c: _best(summaries[c], *metric_direction(c, ctx["n_classes"], ctx["n_codes"], ctx["latent_dim"])) for c in columns}
    rows = [[v, str(len(values[v].get("recon_bce", values[v].get(columns[0], []))))]
            + [Cell(_fmt_pm(summaries[c][v]), v in best[c]) for c in columns] for v in variants]
    def head(c: str) -> str:
        better, target = metric_direction(c, ctx["n_classes"], ctx["n_codes"], ctx["latent_dim"])
        arrow = {"higher": " ↑", "lower": " ↓"}.get(better, f" → {target:.4g}" if better == "target" else "")
        return label(c) + arrow

    header = ["variant", "seeds"] + [head(c) for c in columns]
    warnings = []
    for v in variants:
        s = summaries.get("pareto_k_share_above_0_7", {}).get(v)
        if s is not None and s.n and s.mean > PARETO_WARN:
            warnings.append(Paragraph(
                f"{v}: {s.mean:.0%} of the test images have a PSIS Pareto k above 0.7 (mean over seeds), so the "
                f"importance-sampling estimate log p(x) IS is untrustworthy for them"
                + (" (use the exact 2-D value)." if "log_px_exact" in values[v] else "; treat it as a rough lower bound."),
                "warning"))
    for v in variants:
        if "log_px_is" in values[v] and not summarize(values[v].get("pareto_k_median", [])).n:
            warnings.append(Paragraph(
                f"{v}: no PSIS Pareto k could be fitted (too few importance samples per image; ArviZ needs at least "
                f"25), so the share of images with k > 0.7 is untested, not zero; the IS estimate is unchecked.",
                "warning"))
    table = Table(header, rows, numeric=range(1, len(header)),
                  caption="Mean ± sd over seeds; bold: best in the column (↑ higher, ↓ lower, → closer to the value); "
                          f"{DASH}: not defined for that variant (no ELBO or IS estimate for deterministic guides).")
    return table, warnings


def _all_metrics_tables(variants: list[str], values: dict, context: dict) -> list[Block]:
    names = [m for v in variants for m in values[v]]
    ctx = context[variants[0]]
    blocks: list[Block] = []
    for title, members in _ordered_metrics(names):
        rows = []
        for m in members:
            summaries = {v: summarize(values[v][m]) if m in values[v] else None for v in variants}
            better, target = metric_direction(m, ctx["n_classes"], ctx["n_codes"], ctx["latent_dim"])
            best = _best(summaries, better, target) if title != "Bookkeeping" else set()
            rows.append([label(m), m, _direction_text(better, target)]
                        + [Cell(_fmt_pm(summaries[v]), v in best) for v in variants])
        blocks.append(Table(["metric", "key (results.csv)", "better"] + variants, rows, caption=title,
                            numeric=range(3, 3 + len(variants))))
    return blocks


def build_report(runs_dir: str | Path, out_dir: str | Path, log: Callable[[str], None] = _stderr) -> Path:
    """Evaluate what lacks an evaluation (never retraining), then write the report; returns report.html."""
    runs_dir, out_dir = Path(runs_dir), Path(out_dir)
    study = Study.from_runs_dir(runs_dir)
    for variant, seed in study.cells():
        run = study.run_dir(runs_dir, variant, seed)
        if not runs.is_complete(run):
            raise UserError(f"{run} is missing or unfinished; train it first (pyro-vae study ... --out {runs_dir})")
    evaluate_study(study, runs_dir, log)
    for variant, seed in study.cells():  # evaluation.json without its arrays: evaluate that run again
        run = study.run_dir(runs_dir, variant, seed)
        if not (run / EVALUATION_ARRAYS).exists():
            log(f"{run} lacks {EVALUATION_ARRAYS}; evaluating it again")
            evaluate_run(run, study.eval_settings(), log=log)
    rows = collect(study, runs_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir} exists and is not a folder; choose another --out for the report")
    out_dir.mkdir(parents=True, exist_ok=True)
    log(f"report for study {study.name}: {len(rows)} runs -> {out_dir}")

    results = [result_row(r) for r in rows]
    variants = list(study.variants)
    values: dict[str, dict[str, list[float]]] = {v: {} for v in variants}
    for r in results:
        for m, x in flat_metrics(r).items():
            values[r["variant"]].setdefault(m, []).append(x)
    metric_names = [m for _, ms in _ordered_metrics([m for v in variants for m in values[v]]) for m in ms]
    _write_text(out_dir / "results.json", json.dumps(_json_safe(results), indent=2) + "\n")
    _write_text(out_dir / "results.csv", _csv_text(results, metric_names))

    from pyro_vae.data import DATASETS

    dataset = results[0]["config"]["dataset"]
    class_names = list(DATASETS[dataset].class_names)
    context = {v: {"n_classes": len(class_names),
                   "n_codes": next(r["data"].get("test_count") for r in results if r["variant"] == v),
                   "latent_dim": next(r["config"]["latent_dim"] for r in results if r["variant"] == v)} for v in variants}

    log("report: drawing figures")
    figures = _figures(study, runs_dir, out_dir, results, values, class_names, log)

    blocks: list[Block] = [Heading(1, study.title)]
    if study.description:
        blocks.append(Paragraph(" ".join(study.description.split())))
    blocks.append(Paragraph(f"Study {study.name}: {len(variants)} variants ({', '.join(variants)}) × "
                            f"{len(study.seeds)} seeds, runs in {runs_dir}. Every number is computed from the run "
                            "folders; results.json and results.csv next to this report hold the per-run values."))
    compare = study.compare
    claims = None
    if compare.get("baseline") and compare.get("candidate"):
        claims = judge_claims(values, compare["baseline"], compare["candidate"], context)
        blocks.append(Heading(2, "Verdicts at a glance"))
        blocks.append(Bullets([[f"Claim {i} ({c.title}): ", ("b", c.verdict)] for i, c in enumerate(claims, 1)]))
        if len(study.seeds) < MIN_SEEDS:
            blocks.append(Paragraph(f"With {len(study.seeds)} seed per variant no difference can be judged against seed-to-seed "
                                    f"variation; run at least {MIN_SEEDS} seeds for verdicts.", "warning"))
    else:
        blocks.append(Paragraph("The study has no [compare] table naming a baseline and a candidate, so no claim is judged; "
                                "the tables and figures below compare all variants.", "note"))
    blocks += _setup_blocks(study, results, values)

    blocks.append(Heading(2, "All variants compared"))
    table, warnings = _comparison_table(variants, values, context)
    if table:
        blocks.append(table)
    blocks += warnings
    if "metric_bars" in figures:
        blocks.append(FigureRow(figures["metric_bars"], "Headline metrics: bars are means over seeds, error bars the sample sd, "
                                                        "dots the seeds; red dashed lines mark ideal values."))
    if claims:
        blocks += _claim_blocks(claims, compare["baseline"], compare["candidate"])

    blocks.append(Heading(2, "Figures"))
    sections = [("codes", "Code spaces"), ("marginals", None), ("prior_density", None), ("prior_samples", "Generation"),
                ("box_samples", None), ("manifold", None), ("reconstructions", "Reconstruction"),
                ("class_spread", "Class spread"), ("class_spread_whitened", None), ("training_curves", "Training")]
    for name, heading in sections:
        if heading:
            blocks.append(Heading(3, heading))
        item = figures.get(name)
        if isinstance(item, list):
            blocks += item
        elif item is not None:
            blocks.append(item)

    blocks.append(Heading(2, "All metrics (mean ± sd over seeds)"))
    blocks.append(Paragraph("Bold: best variant for metrics with a direction. The final train/test bound is the training "
                            "objective's value per image (β-scaled), comparable only between variants with the same objective."))
    blocks += _all_metrics_tables(variants, values, context)

    _write_text(out_dir / "report.md", render_markdown(blocks))
    html_path = out_dir / "report.html"
    _write_text(html_path, render_html(blocks, study.title, out_dir))
    log(f"report written: {html_path} (and report.md, results.json, results.csv, figures/)")
    return html_path
