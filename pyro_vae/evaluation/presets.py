"""Evaluation presets: named sets of [evaluation] values (only the standard library, so the command
line can name them in its help without loading torch)."""

from __future__ import annotations

# `--quick`: a first look at a run, its settings stated wherever its numbers are shown. Fewer importance
# samples and images for log p(x) (the bound is looser: K = 100 against 1000), fewer generated images
# (FID rises as fewer are scored), fewer bootstrap rounds (a wider interval) and training codes.
QUICK = {"num_samples": 100, "likelihood_images": 500, "generated": 1000, "pairs": 500, "bootstrap": 20,
         "train_codes": 10000, "hole_codes": 2000, "hole_mass_draws": 10000, "null_draws": 100}


def quick(evaluation: dict) -> dict:
    """An [evaluation] table with the quick preset over it; where the table asks for less already, its value."""
    values = dict(evaluation)
    for key, value in QUICK.items():
        values[key] = value if values.get(key) is None else min(values[key], value)
    return values
