"""What feeding an epoch costs the Trainer: waiting for the epoch's binarised images (drawn in the
background during the previous epoch), and gathering its batches by index."""

from __future__ import annotations

import time
from collections.abc import Iterator

import torch

from pyro_vae.bench.timers import sync
from pyro_vae.training.batches import epoch_order


def batches(observed: torch.Tensor, order: torch.Tensor, size: int) -> Iterator[torch.Tensor]:
    for start in range(0, len(order), size):
        yield observed[order[start : start + size]]


def batching_epoch(trainer) -> tuple[float, float, float]:
    """(seconds the Trainer's last epoch waited for its inputs, seconds of one binarisation draw made
    on the spot (off the critical path when drawn ahead), seconds of the epoch's batch gathers)."""
    device, epoch = trainer.device, trainer.epoch + 1
    sync(device)
    t0 = time.perf_counter()
    observed = trainer.inputs.draw(epoch)
    order = epoch_order(len(trainer.train_x), trainer.cfg.seed, epoch, device)
    sync(device)
    t1 = time.perf_counter()
    for _ in batches(observed, order, trainer.cfg.batch_size):
        pass
    sync(device)
    return trainer.input_seconds, t1 - t0, time.perf_counter() - t1


def dataloader_epoch(trainer) -> float:
    """Seconds for one epoch of a torch DataLoader (shuffle, batch_size) over the same binarised tensor."""
    from torch.utils.data import DataLoader, TensorDataset

    cfg = trainer.cfg
    observed = trainer.inputs.draw(trainer.epoch + 1)
    loader = DataLoader(TensorDataset(observed), batch_size=cfg.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(cfg.seed))
    started = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - started
