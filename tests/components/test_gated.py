"""The `gated-mlp` network (gated hidden units, h = (W1 x + b1) * sigmoid(W2 x + b2), as in Tomczak &
Welling's VampPrior code) and the VampPrior's hardtanh pseudo-inputs: shapes, leading dims, the gate
against a hand computation, options refused, and a tiny real training run that writes its metrics."""

import json
import math

import pyro
import pytest
import torch
from conftest import small_config

from pyro_vae.components.networks import NETWORKS, GatedDense, build_network, gated_layers, output_bias
from pyro_vae.components.priors import PRIORS
from pyro_vae.errors import UserError
from pyro_vae.model import build_vae

pytestmark = pytest.mark.usefixtures("one_thread")


def test_gated_mlp_is_registered_with_its_options():
    assert "gated-mlp" in NETWORKS.names()
    net = build_network("gated-mlp", {"hidden": [300, 300], "init": "he"})
    encoder, decoder = net.encoder(80, 400), net.decoder(40, 400)
    gated = [m for m in encoder.modules() if isinstance(m, GatedDense)]
    assert [(g.h.in_features, g.h.out_features) for g in gated] == [(784, 300), (300, 300)]
    assert [(g.h.in_features, g.h.out_features) for g in decoder.modules() if isinstance(g, GatedDense)] == [(40, 300), (300, 300)]
    assert output_bias(decoder) is decoder[-1].bias  # the logits' bias: output_bias = "data-mean" finds it


@pytest.mark.parametrize("lead", [(), (5,), (3, 4)])
def test_shapes_and_leading_dims_pass_through(lead):
    torch.manual_seed(0)
    net = build_network("gated-mlp", {"hidden": [16, 8]})
    encoder, decoder = net.encoder(6, 400), net.decoder(3, 400)
    x = torch.rand(*lead, 7, 784)
    z = torch.randn(*lead, 7, 3)
    assert encoder(x).shape == (*lead, 7, 6)
    assert decoder(z).shape == (*lead, 7, 784)
    flat = encoder(x.reshape(-1, 784)).reshape(*lead, 7, 6)
    assert torch.allclose(encoder(x), flat, atol=1e-6)  # leading dims do not mix images


def test_default_width_is_hidden_dim():
    net = build_network("gated-mlp", {})
    encoder = net.encoder(4, 12)
    assert [m.h.out_features for m in encoder.modules() if isinstance(m, GatedDense)] == [12]


def test_gate_formula_by_hand():
    layer = GatedDense(2, 1)
    with torch.no_grad():
        layer.h.weight.copy_(torch.tensor([[1.0, -2.0]]))
        layer.h.bias.copy_(torch.tensor([0.5]))
        layer.g.weight.copy_(torch.tensor([[0.3, 0.7]]))
        layer.g.bias.copy_(torch.tensor([-1.0]))
    x = torch.tensor([[2.0, 1.0]])
    # (1*2 - 2*1 + 0.5) * sigmoid(0.3*2 + 0.7*1 - 1) = 0.5 * sigmoid(0.3)
    expected = 0.5 / (1 + math.exp(-0.3))
    assert layer(x).item() == pytest.approx(expected, abs=1e-6)
    relu = GatedDense(2, 1, "relu")
    relu.load_state_dict(layer.state_dict())
    assert relu(torch.tensor([[0.0, 1.0]])).item() == 0.0  # relu(-2 + 0.5) = 0: the activation is on h only
    assert layer(torch.tensor([[0.0, 1.0]])).item() == pytest.approx(-1.5 / (1 + math.exp(-(-0.3))), abs=1e-6)


def test_he_init_scales_weights_by_fan_in():
    torch.manual_seed(0)
    body = gated_layers([784, 300, 80], init="he")
    std = body[0].h.weight.std().item()
    assert std == pytest.approx(math.sqrt(2 / 784), rel=0.05)
    assert body[-1].weight.std().item() == pytest.approx(math.sqrt(2 / 300), rel=0.1)


@pytest.mark.parametrize("options", [{"hidden": [0]}, {"hidden": "300"}, {"activation": "swish"}, {"init": "xavier"},
                                     {"width": 3}])
def test_bad_options_are_user_errors(options):
    with pytest.raises(UserError):
        build_network("gated-mlp", options)


def test_vamp_hardtanh_pseudo_inputs_as_the_authors():
    torch.manual_seed(0)
    vae = build_vae(small_config(network="gated-mlp", network_options={"hidden": [16, 16]}, latent_dim=3,
                                 prior="vamp", prior_options={"components": 7, "pseudo_inputs": "hardtanh"}))
    prior = vae.prior
    assert prior.pseudo_means.shape == (7, 784)
    assert prior.pseudo_means.mean().item() == pytest.approx(0.05, abs=0.002)
    assert prior.pseudo_means.std().item() == pytest.approx(0.01, rel=0.1)
    with torch.no_grad():
        prior.pseudo_means[0, :3] = torch.tensor([-0.5, 0.4, 1.7])
    u = prior.pseudo_inputs()
    assert u[0, :3].tolist() == pytest.approx([0.0, 0.4, 1.0])
    # p(z) = (1/K) sum_k q(z | u_k), the equal-weight mixture of the guide's posteriors at the pseudo-inputs
    z = torch.randn(5, 3)
    by_hand = torch.logsumexp(vae.encoder_guide(u).log_prob(z[:, None, :]), dim=-1) - math.log(7)
    assert torch.allclose(prior().log_prob(z), by_hand, atol=1e-5)
    u.sum().backward()  # pixels inside (0, 1) pass gradient to their parameter
    assert prior.pseudo_means.grad[0, 1] == 1.0 and prior.pseudo_means.grad[0, 0] == 0.0
    with pytest.raises(UserError):
        PRIORS["vamp"](3, vae.encoder_guide, components=2, pseudo_inputs="tanh")


def test_tiny_training_with_gated_units_lowers_the_loss_and_writes_metrics(tmp_path):
    from pyro_vae.training.trainer import train

    pyro.set_rng_seed(0)
    cfg = small_config(network="gated-mlp", network_options={"hidden": [64, 64], "init": "he"}, latent_dim=4,
                       prior="vamp", prior_options={"components": 10, "pseudo_inputs": "hardtanh"},
                       train_limit=300, test_limit=100, epochs=2, batch_size=50, lr=5e-4, beta_warmup_epochs=2,
                       binarize="dynamic")
    run = train(cfg, tmp_path / "run", progress=False, log=lambda *a, **k: None)
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert [line["epoch"] for line in lines] == [1, 2]
    assert [line["beta"] for line in lines] == [0.5, 1.0]  # the KL warm-up: beta = epoch / beta_warmup_epochs
    assert all(math.isfinite(line["test_elbo"]) for line in lines)
    assert lines[-1]["test_elbo"] > lines[0]["test_elbo"]  # the held-out bound rose: the loss fell
