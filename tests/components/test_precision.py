"""--precision bf16: the networks compute in bfloat16 under torch.autocast, the loss and the optimiser
state stay in float32, and the weights are the float32 run's in name and type."""

import pytest
import torch
from conftest import small_config

from pyro_vae.config import TrainConfig
from pyro_vae.errors import UserError
from pyro_vae.model import build_vae
from pyro_vae.training.trainer import build_objective


@pytest.mark.parametrize("network", ["mlp", "conv"])
def test_bf16_computes_the_same_loss_closely_and_keeps_float32_outside_the_networks(network):
    x = torch.rand(16, 784).bernoulli()
    losses, states = {}, {}
    for precision in ("float32", "bf16"):
        torch.manual_seed(0)
        cfg = TrainConfig(network=network, precision=precision).validate()
        vae = build_vae(cfg)
        logits = vae.decoder(torch.randn(4, 2))
        assert logits.dtype == torch.float32  # the likelihood is scored in float32
        torch.manual_seed(1)
        loss = build_objective(cfg).differentiable_loss(vae.model, vae.guide, x)
        assert loss.dtype == torch.float32
        loss.backward()
        assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in vae.parameters())
        losses[precision], states[precision] = float(loss), vae.state_dict()
    assert states["bf16"].keys() == states["float32"].keys()  # one checkpoint layout for both
    assert all(torch.equal(states["bf16"][k], states["float32"][k]) for k in states["bf16"])  # same seeded weights
    # bfloat16 keeps 8 bits of mantissa: about 0.4% per product, far less over a sum of 784 pixels' terms.
    assert losses["bf16"] == pytest.approx(losses["float32"], rel=2e-3)
    assert losses["bf16"] != losses["float32"]  # it did compute in bfloat16


def test_a_bf16_run_trains(tmp_path, one_thread):
    from pyro_vae.training import runs
    from pyro_vae.training.trainer import train

    run = train(small_config(precision="bf16", epochs=3, lr=2e-3), tmp_path / "bf16", progress=False, log=lambda m: None)
    curve = [m["test_elbo"] for m in runs.read_metrics(run)]
    assert curve[-1] > curve[0] + 5 and -260 < curve[-1] < -140


def test_an_unknown_precision_is_a_one_line_error():
    with pytest.raises(UserError, match="unknown precision 'fp8'; choose one of: float32, bf16"):
        TrainConfig(precision="fp8").validate()
