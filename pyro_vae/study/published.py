"""Published numbers a study is held against: the study file's `[published]` table.

    [published]
    source = "Burda, Grosse & Salakhutdinov (2015), Importance Weighted Autoencoders, Table 1"
    metric = "log_px_is"                          # the metric the numbers are values of
    values = { VAE-1 = -86.76, IWAE-5 = -85.54 }  # variant name -> the published value
    note = "what differs from the paper's setting"   # optional

Rows may name variants the study does not train (a row of the paper not run here); the report shows
them as not run.
"""

from __future__ import annotations

import math

from pyro_vae.config import check_value
from pyro_vae.errors import UserError
from pyro_vae.evaluation.metrics import METRICS

KEYS = {"source", "metric", "values", "note"}


def check_published(table: dict, source: str) -> dict:
    where = f"[published] of {source}"
    if not table:
        return {}
    if set(table) - KEYS or not {"source", "metric", "values"} <= set(table):
        raise UserError(f"{where} needs source, metric and values (and optionally note); got {', '.join(sorted(table))}")
    for key in ("source", "metric", "note"):
        if key in table:
            check_value(f"{key} in {where}", table[key], str)
    if table["metric"] not in METRICS:
        raise UserError(f"unknown metric {table['metric']!r} in {where}; known: {', '.join(METRICS)}")
    values = table["values"]
    if not isinstance(values, dict) or not values or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values.values()):
        raise UserError(f"values in {where} must be a table of variant name = number, got {values!r}")
    return dict(table, values={str(k): float(v) for k, v in values.items()})
