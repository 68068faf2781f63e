"""The compiled training loss (CompiledLoss through Trainer): the same training as the eager objective."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import SLICE_DATASET

from pyro_vae.config import TrainConfig
from pyro_vae.errors import DivergedError
from pyro_vae.training.trainer import Trainer


def quiet(msg):
    pass


def slice_config() -> TrainConfig:
    return TrainConfig(dataset=SLICE_DATASET, device="cpu", batch_size=128, train_limit=600, epochs=10**6, seed=0).validate()


@pytest.fixture(scope="module")
def images():
    """600 real training images: Fashion-MNIST where present, else the sample's MNIST."""
    from pyro_vae import data

    return data.load(SLICE_DATASET, train_limit=600, test_limit=60)


def test_compiled_loss_trains_exactly_as_the_eager_objective(images):
    """The compiled training loss follows the eager Trace_ELBO draw for draw, to the same weights."""
    weights = []
    for jit in (True, False):
        trainer = Trainer(slice_config(), Path("<test>"), images, log=quiet, jit=jit)
        for _ in range(2):
            trainer.train_epoch(progress=False)
            trainer.epoch += 1
        assert trainer.jit_active == jit
        weights.append([p.detach().clone() for p in trainer.vae.parameters()])
    for a, b in zip(*weights):
        assert torch.allclose(a, b, rtol=0, atol=1e-6)


def test_a_nan_in_the_compiled_loop_names_its_step_and_epoch(images):
    cfg = slice_config()
    cfg.binarize = "none"
    train_x = images.train_x[:600].clone()
    order = torch.randperm(600, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + 1))
    bad_image = int(order[3 * cfg.batch_size + 5])  # sits in step 4 of epoch 1
    train_x[bad_image, 10] = float("nan")
    trainer = Trainer(cfg, Path("<test>"), replace(images, train_x=train_x), log=quiet)
    with pytest.raises(DivergedError, match="loss became nan at step 4 of epoch 1"):
        trainer.train_epoch(progress=False)
    assert trainer.jit_active
