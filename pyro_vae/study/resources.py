"""What one run of a study asks of a Ray cluster: the study file's `[resources]` table.

    [resources]
    cpus = 1       # CPU cores per run (also its torch threads)
    gpus = 0.25    # a share of a GPU: four small runs share one
"""

from __future__ import annotations

from pyro_vae.config import check_value
from pyro_vae.errors import UserError

RESOURCES = {"cpus": 1, "gpus": 0}  # name -> default
_ABOVE_ZERO = {"cpus"}  # a run needs some CPU; gpus may be 0


def check_resources(values: dict, source: str) -> dict:
    """The table (or the --cpus-per-run/--gpus-per-run flags) if every value is a finite number, 0 or more
    (cpus above 0); else a one-line UserError."""
    unknown = set(values) - set(RESOURCES)
    if unknown:
        raise UserError(f"unknown resource(s) {', '.join(sorted(unknown))} in {source}; valid: {', '.join(RESOURCES)}")
    for name, value in values.items():
        check_value(f"{name} in {source}", value, float, 0, above=name in _ABOVE_ZERO)
    return values
