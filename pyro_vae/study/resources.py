"""What one run of a study asks of a Ray cluster: the study file's `[resources]` table.

    [resources]
    cpus = 1       # CPU cores per run (also its torch threads)
    gpus = 0.25    # a share of a GPU: four small runs share one
"""

from __future__ import annotations

from pyro_vae.errors import UserError

RESOURCES = {"cpus": 1, "gpus": 0}  # name -> default


def check_resources(values: dict, source: str) -> dict:
    unknown = set(values) - set(RESOURCES)
    if unknown:
        raise UserError(f"unknown resource(s) {', '.join(sorted(unknown))} in {source}; valid: {', '.join(RESOURCES)}")
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (name == "cpus" and value == 0):
            raise UserError(f"{name} in {source} must be a number above 0 (gpus may be 0), got {value!r}")
    return values
