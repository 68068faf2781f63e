"""Live curves: TensorBoard event files in RUN_DIR/tensorboard/, written at the end of each epoch.

    pyro-vae train ... --tensorboard --out runs/vae     (then open TensorBoard with its logdir at runs/)

Per epoch: the train and test bound (the objective's, per image), the reconstruction and KL terms
of the ELBO on the test images and on a fixed slice of the training images, beta, the learning rate
and the epoch time; every IMAGE_EVERY epochs (and the last) a grid of decoded prior draws and one of
test images above their reconstructions. Nothing here runs inside the training loop, and its noise
comes from its own seeded stream, so a run's numbers are the same with and without it.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import torch

from pyro_vae.errors import UserError
from pyro_vae.io import seeded

FOLDER = "tensorboard"
IMAGE_EVERY = 5
TERM_IMAGES = 2000  # images per split the terms are measured on (the first ones: the same every epoch)
SHOWN = 8  # reconstructions shown (and 8 x 8 prior draws)
_STREAM = 104729  # the terms' and draws' own seed offset


def require():
    """torch's SummaryWriter class, or a one-line error, before anything is trained, when the optional
    extra is missing. The writer runs on TensorBoard's own TensorFlow stub: by default TensorBoard imports
    a TensorFlow it finds installed (pyro-vae[keras] installs one), and TensorFlow loaded into a torch
    training process crashes it (a segmentation fault in the first epoch here). TensorBoard's switch for
    that is a module named tensorboard.compat.notf; registering it changes nothing else in the process."""
    sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("--tensorboard needs the tensorboard package: pip install 'pyro-vae[tensorboard]' "
                        "(or pip install tensorboard)") from None
    return SummaryWriter


@torch.no_grad()
def elbo_terms(vae, x: torch.Tensor, seed: int) -> dict[str, float]:
    """Per image, one posterior draw each: the reconstruction term -log p(x | z) and the KL term
    log q(z | x) - log p(z) (for a point-mass guide q's term is 0: the KL is -log p(z))."""
    with seeded(seed):
        q = vae.encoder_guide(x)
        z = q.sample()
        recon = -vae.likelihood.distribution(vae.decoder(z)).log_prob(x)
        kl = q.log_prob(z) - vae.prior().log_prob(z)
    return {"reconstruction": float(recon.mean()), "kl": float(kl.mean())}


def _tiles(images: torch.Tensor, ncols: int) -> torch.Tensor:
    """(N, 784) in [0, 1] -> one (1, H, W) image of 28 x 28 tiles with 2-pixel gaps."""
    n = len(images)
    rows = -(-n // ncols)
    grid = torch.ones(rows * 30 + 2, ncols * 30 + 2)
    for i, image in enumerate(images.clamp(0, 1).reshape(n, 28, 28)):
        r, c = divmod(i, ncols)
        grid[2 + 30 * r : 30 * r + 30, 2 + 30 * c : 30 * c + 30] = image
    return grid.unsqueeze(0)


class EpochBoard:
    """One run's event writer; `epoch(trainer, line)` is called after each epoch's checkpoint."""

    def __init__(self, run: Path, train_x: torch.Tensor, test_obs: torch.Tensor, binarization, seed: int, first_epoch: int):
        SummaryWriter = require()
        # purge_step drops events of epochs after the checkpoint (a crash between the two on resume)
        self.writer = SummaryWriter(str(Path(run) / FOLDER), purge_step=first_epoch + 1)
        self.seed = seed
        self.train_obs = binarization.test(train_x[:TERM_IMAGES], seed + 1)
        self.test_obs = test_obs[:TERM_IMAGES]

    def epoch(self, trainer, line: dict) -> None:
        step, vae, w = line["epoch"], trainer.vae, self.writer
        w.add_scalar("bound/train", line["train_elbo"], step)
        w.add_scalar("bound/test", line["test_elbo"], step)
        for split, x in (("train", self.train_obs), ("test", self.test_obs)):
            for term, value in elbo_terms(vae, x, self.seed + _STREAM + step).items():
                w.add_scalar(f"{term}/{split}", value, step)
        w.add_scalar("train/beta", line["beta"], step)
        w.add_scalar("train/learning_rate", trainer.optimizer.param_groups[0]["lr"], step)
        w.add_scalar("train/epoch_seconds", line["epoch_seconds"], step)
        if step % IMAGE_EVERY == 0 or step == 1 or step == trainer.cfg.epochs or trainer.stopped:
            with seeded(self.seed + _STREAM), torch.no_grad():
                samples = vae.decode(vae.sample_prior(SHOWN * SHOWN))
            originals = self.test_obs[:SHOWN]
            w.add_image("images/prior_samples", _tiles(samples.cpu(), SHOWN), step)
            w.add_image("images/reconstructions", _tiles(torch.cat([originals, vae.decode(vae.encode(originals)[0])]).cpu(), SHOWN), step)
        w.flush()

    def close(self) -> None:
        self.writer.close()
