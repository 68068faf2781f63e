"""Learning-rate schedules, chosen by name: the rate of each epoch as a multiple of the configured lr.

A schedule is built with its options and called as `factor(epoch, epochs)` (epoch counts from 1,
epochs is the run's total): the Trainer sets lr * factor before each epoch, so a resumed run continues
on the same schedule and metrics.jsonl records the rate each epoch used.

    constant            1 throughout
    burda               Burda et al. (2015): stage i = 1..stages lasts round(scale * 3^(i-1)) epochs at
                        10^(-(i-1)/7); stages = 8, scale = 1 is their 3,280-epoch schedule. The budget form,
                        epochs = B (instead of scale), keeps every stage: each gets min_epochs (default 1),
                        the rest of B is shared in proportion to 3^(i-1), and the stages add up to B exactly
    step                multiplied by gamma every `every` epochs
    cosine              from 1 down to `floor` over the run's epochs (half a cosine)
"""

from __future__ import annotations

import math
from itertools import accumulate
from typing import Callable

from pyro_vae.errors import UserError
from pyro_vae.registry import Registry, float_option, int_option

Schedule = Callable[[int, int], float]  # (epoch from 1, total epochs) -> factor of the configured lr

SCHEDULES: Registry[Callable[..., Schedule]] = Registry("lr schedule")


@SCHEDULES.register("constant")
def constant() -> Schedule:
    return lambda epoch, epochs: 1.0


@SCHEDULES.register("burda")
def burda(*, stages: int = 8, scale: float | None = None, epochs: int | None = None, min_epochs: int = 1) -> Schedule:
    where = "lr schedule 'burda'"
    stages = int_option(where, "stages", stages, 1)
    min_epochs = int_option(where, "min_epochs", min_epochs, 1)
    if scale is not None and epochs is not None:
        raise UserError(f"{where}: give scale (Burda's lengths, scaled) or epochs (a budget), not both")
    if epochs is None:
        ends = list(accumulate(_stage_lengths(stages, 1.0 if scale is None else float_option(where, "scale", scale, 1e-9))))
    else:
        epochs = int_option(where, "epochs", epochs, stages * min_epochs)
        ends = list(accumulate(budget_stage_lengths(stages, epochs, min_epochs)))

    def factor(epoch: int, total: int) -> float:
        stage = next((i for i, end in enumerate(ends) if epoch <= end), stages - 1)  # past the end: the last rate
        return 10 ** (-stage / 7)

    return factor


def _stage_lengths(stages: int, scale: float) -> list[int]:
    return [max(1, round(scale * 3**i)) for i in range(stages)]


def budget_stage_lengths(stages: int, epochs: int, min_epochs: int = 1) -> list[int]:
    """Burda's stages within a budget of `epochs`: min_epochs each, the rest shared in proportion to
    3^(i-1) by largest remainders, so the lengths add up to the budget exactly."""
    spare = epochs - stages * min_epochs
    weights = [3**i for i in range(stages)]
    shares = [spare * w / sum(weights) for w in weights]
    lengths = [min_epochs + int(s) for s in shares]
    by_remainder = sorted(range(stages), key=lambda i: (int(shares[i]) - shares[i], -i))
    for i in by_remainder[: epochs - sum(lengths)]:
        lengths[i] += 1
    return lengths


def burda_epochs(stages: int = 8, scale: float = 1.0) -> int:
    """The epochs the burda schedule's stages add up to (3,280 for 8 stages at scale 1)."""
    return sum(_stage_lengths(stages, scale))


@SCHEDULES.register("step")
def step(*, every: int = 30, gamma: float = 0.1) -> Schedule:
    every = int_option("lr schedule 'step'", "every", every, 1)
    gamma = float_option("lr schedule 'step'", "gamma", gamma, 0.0)
    return lambda epoch, epochs: gamma ** ((epoch - 1) // every)


@SCHEDULES.register("cosine")
def cosine(*, floor: float = 0.0) -> Schedule:
    floor = float_option("lr schedule 'cosine'", "floor", floor, 0.0)

    def factor(epoch: int, epochs: int) -> float:
        progress = (epoch - 1) / max(epochs - 1, 1)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor

