"""What a training epoch is fed: the images as binarised for that epoch, and the order of its batches.

Both depend on (seed, epoch) only, so a resumed run sees what a straight one saw, and the next
epoch's draw can be made in a background thread while this epoch trains without changing a number.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import torch

from pyro_vae.data import Binarization

# One thread draws ahead for every EpochInputs of the process (the draw itself runs without the GIL).
_DRAWER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pyro-vae-binarise")


def epoch_stream(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


def epoch_order(n: int, seed: int, epoch: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The permutation of the n training images that makes epoch `epoch`'s batches."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(epoch_stream(seed, epoch))).to(device)


class EpochInputs:
    """`inputs(epoch)` -> (observed images, order); after each call the next epoch's draw is started
    in the background when the binarisation makes a fresh one per epoch."""

    def __init__(self, binarization: Binarization, x: torch.Tensor, seed: int, last_epoch: int):
        self.binarization, self.x, self.seed, self.last_epoch = binarization, x, seed, last_epoch
        self.ahead: tuple[int, Future] | None = None

    def draw(self, epoch: int) -> torch.Tensor:
        return self.binarization.train(self.x, self.seed, epoch)

    def observed(self, epoch: int) -> torch.Tensor:
        ahead, self.ahead = self.ahead, None
        observed = ahead[1].result() if ahead is not None and ahead[0] == epoch else self.draw(epoch)
        if self.binarization.per_epoch and epoch < self.last_epoch:
            self.ahead = (epoch + 1, _DRAWER.submit(self.draw, epoch + 1))
        return observed

    def __call__(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.observed(epoch), epoch_order(len(self.x), self.seed, epoch, self.x.device)
