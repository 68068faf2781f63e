"""How the Trainer feeds an epoch (binarise, shuffle, gather by index), and its cost on its own.

`epoch_inputs` restates the first lines of Trainer.train_epoch because the Trainer has no method
that returns an epoch's observations and order; the reference loop and the batching timer share
this one copy so that both feed exactly what the Trainer feeds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import torch

from pyro_vae.bench.timers import sync


def epoch_inputs(binarization, train_x: torch.Tensor, seed: int, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(observed images, order) of one epoch, drawn from the same seeds as Trainer.train_epoch."""
    observed = binarization.train(train_x, seed, epoch)
    order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return observed, order.to(train_x.device)


def batches(observed: torch.Tensor, order: torch.Tensor, size: int) -> Iterator[torch.Tensor]:
    for start in range(0, len(order), size):
        yield observed[order[start : start + size]]


def batching_epoch(trainer) -> tuple[float, float]:
    """(binarise + order seconds, gather seconds) of the Trainer's next epoch's batching, on its own."""
    device = trainer.device
    sync(device)
    t0 = time.perf_counter()
    observed, order = epoch_inputs(trainer.binarization, trainer.train_x, trainer.cfg.seed, trainer.epoch + 1)
    sync(device)
    t1 = time.perf_counter()
    for _ in batches(observed, order, trainer.cfg.batch_size):
        pass
    sync(device)
    return t1 - t0, time.perf_counter() - t1


def dataloader_epoch(trainer) -> float:
    """Seconds for one epoch of a torch DataLoader (shuffle, batch_size) over the same binarised tensor."""
    from torch.utils.data import DataLoader, TensorDataset

    cfg = trainer.cfg
    observed = trainer.binarization.train(trainer.train_x, cfg.seed, trainer.epoch + 1)
    loader = DataLoader(TensorDataset(observed), batch_size=cfg.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(cfg.seed))
    started = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - started
