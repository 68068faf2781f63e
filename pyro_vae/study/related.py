"""Another study this one's verdicts are held against: the study file's `[related]` table.

    [related]
    study = "ae_vs_vae_gdl.toml"                       # its study file, relative to this one
    results = "../reports/ae_vs_vae_gdl/results.json"  # its report's per-run values, relative to this one
    why = "what differs between the two studies, and what that does to the claims"
    metrics = ["epochs_trained", "mutual_information"]  # optional: shown for each variant in both studies

The report judges the other study's claims from those values by its own study file, and tabulates
the two verdicts of each claim both state (claims are matched by their [claims.NAME] key).
"""

from __future__ import annotations

from pathlib import Path

from pyro_vae.config import check_value
from pyro_vae.errors import UserError

KEYS = {"study", "results", "why"}
OPTIONAL = {"metrics"}


def check_related(table: dict, source: str) -> dict:
    """The table with its paths made absolute (against the study file's folder); {} when absent."""
    where = f"[related] of {source}"
    if not table:
        return {}
    if not KEYS <= set(table) <= KEYS | OPTIONAL:
        raise UserError(f"{where} needs study, results and why (and optionally metrics); got {', '.join(sorted(table))}")
    for key in KEYS:
        check_value(f"{key} in {where}", table[key], str)
    from pyro_vae.evaluation.metrics import METRICS

    shown = table.get("metrics", [])
    if not isinstance(shown, list) or not all(isinstance(m, str) for m in shown):
        raise UserError(f"metrics in {where} must be a list of metric names, got {shown!r}")
    unknown = [m for m in shown if m not in METRICS]
    if unknown:
        raise UserError(f"unknown metric {unknown[0]!r} in {where}; known: {', '.join(METRICS)}")
    folder = Path(source).resolve().parent
    return dict(table, metrics=list(shown), **{key: str((folder / table[key]).resolve()) for key in ("study", "results")})
