"""Wall-clock timing that waits for the device, and the median/spread summary of repeated timings."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def sync(device) -> None:
    # CUDA kernels run asynchronously: without a sync the clock stops before the work does.
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device) -> tuple[float, object]:
    sync(device)
    started = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - started, out


def repeat(fn: Callable[[], object], device, times: int, log: Callable[[str], None], label: str) -> tuple[list[float], object]:
    """`times` timings of fn, and its last result."""
    seconds, result = [], None
    for r in range(times):
        log(f"{label} ({r + 1}/{times})")
        s, result = timed(fn, device)
        seconds.append(s)
    return seconds, result


def summary(values: list[float]) -> dict:
    """Median and spread (min, max, interquartile range where there are enough values)."""
    values = [float(v) for v in values]
    out = {"values": values, "median": statistics.median(values), "min": min(values), "max": max(values)}
    if len(values) >= 4:
        q = statistics.quantiles(values, n=4)
        out["q1"], out["q3"] = q[0], q[2]
    return out


def project_epochs(trainer, epochs: int) -> None:
    """What `pyro-vae train` runs per epoch, minus the test ELBO and the checkpoint (Trainer.fit's own steps)."""
    for _ in range(epochs):
        trainer.train_epoch(progress=False)
        trainer.epoch += 1
