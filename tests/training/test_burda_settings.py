"""The settings Burda et al.'s setup needs, as configuration: MLP widths and activation, the decoder's
output bias from the training mean, learning-rate schedules, held-out validation images."""

import pytest
import torch
from conftest import small_config
from torch import nn

from pyro_vae.components.networks import NETWORKS, Network, build_network, output_bias
from pyro_vae.components.schedules import SCHEDULES, budget_stage_lengths, burda_epochs
from pyro_vae.config import TrainConfig
from pyro_vae.data import load_data
from pyro_vae.errors import UserError
from pyro_vae.model import build_vae
from pyro_vae.training import runs
from pyro_vae.training.trainer import Trainer, check, resume, train


def quiet(msg):
    pass


def test_mlp_widths_and_activation_make_burdas_network():
    network = build_network("mlp", {"hidden": [200, 200], "activation": "tanh"})
    encoder, decoder = network.encoder(100, 400), network.decoder(50, 400)
    linear = [m for m in encoder if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(784, 200), (200, 200), (200, 100)]
    assert [(m.in_features, m.out_features) for m in decoder if isinstance(m, nn.Linear)] == [(50, 200), (200, 200), (200, 784)]
    assert sum(isinstance(m, nn.Tanh) for m in encoder) == 2 and not any(isinstance(m, nn.ReLU) for m in encoder)
    assert decoder(torch.zeros(3, 7, 50)).shape == (3, 7, 784)  # particle dims pass through
    # No options: one hidden layer of hidden_dim with ReLU, the network every committed run was trained with.
    plain = build_network("mlp", {}).encoder(4, 32)
    assert [type(m) for m in plain] == [nn.Linear, nn.ReLU, nn.Linear] and plain[0].out_features == 32


@pytest.mark.parametrize("options, problem", [
    ({"hidden": []}, "list of layer widths"), ({"hidden": [200, 0]}, "list of layer widths"),
    ({"hidden": 200}, "list of layer widths"), ({"activation": "swish"}, "unknown activation 'swish'"),
    ({"depth": 2}, "unknown option 'depth' for network 'mlp'"),
])
def test_bad_network_options_are_one_line_errors(options, problem):
    with pytest.raises(UserError, match=problem):
        build_network("mlp", options)


def test_a_network_value_takes_no_options():
    NETWORKS.register("fixed-test-net")(Network(lambda o, h: nn.Linear(784, o), lambda z, h: nn.Linear(z, 784)))
    try:
        assert isinstance(build_network("fixed-test-net", {}), Network)
        with pytest.raises(UserError, match="takes no options"):
            build_network("fixed-test-net", {"hidden": [3]})
    finally:
        NETWORKS.unregister("fixed-test-net")


def test_output_bias_from_the_training_mean(mnist_small):
    cfg = small_config(output_bias="data-mean", network_options={"hidden": [32, 32], "activation": "tanh"})
    data = load_data(cfg)
    trainer = Trainer(cfg, "unused", data, quiet)
    mean = data.train_x.double().mean(0).clamp(1e-3, 1 - 1e-3)
    bias = output_bias(trainer.vae.decoder)
    assert bias is trainer.vae.decoder[-1].bias
    torch.testing.assert_close(torch.sigmoid(bias.double()), mean, atol=1e-6, rtol=0)
    # The default keeps the layer's own initialisation (small values, nowhere near the logit of ~0 border pixels).
    default = Trainer(small_config(network_options={"hidden": [32, 32]}), "unused", data, quiet)
    assert output_bias(default.vae.decoder).abs().max() < 1


def test_output_bias_data_mean_needs_a_per_pixel_bias():
    with pytest.raises(UserError, match="network 'conv' has none"):
        check(small_config(network="conv", output_bias="data-mean"))
    with pytest.raises(UserError, match="unknown output-bias 'median'"):
        small_config(output_bias="median").validate()


def test_burda_schedule_is_the_papers():
    factor = SCHEDULES["burda"]()
    assert burda_epochs() == 3280  # 1 + 3 + ... + 3^7
    starts = [1, 2, 5, 14, 41, 122, 365, 1094]  # first epoch of stages 1..8
    for i, start in enumerate(starts):
        assert factor(start, 3280) == pytest.approx(10 ** (-i / 7))
        if i:
            assert factor(start - 1, 3280) == pytest.approx(10 ** (-(i - 1) / 7))
    assert factor(5000, 3280) == pytest.approx(10 ** (-1))  # past the end: the last rate
    short = SCHEDULES["burda"](stages=8, scale=0.04)
    assert burda_epochs(8, 0.04) == 133 and short(133, 133) == pytest.approx(0.1) and short(46, 133) == pytest.approx(10 ** (-6 / 7))


def test_burda_budget_keeps_every_stage_and_adds_up_to_the_budget():
    assert budget_stage_lengths(8, 100, 8) == [8, 8, 8, 8, 9, 11, 16, 32]  # the first full-data burda_iwae run
    assert budget_stage_lengths(8, 140, 16) == [16, 16, 16, 16, 16, 17, 19, 24]  # studies/burda_iwae.toml
    for stages, epochs, least in ((8, 133, 1), (8, 200, 12), (5, 37, 3), (3, 3, 1)):
        lengths = budget_stage_lengths(stages, epochs, least)
        assert sum(lengths) == epochs and min(lengths) >= least and lengths == sorted(lengths)
    # Beyond the floor, in proportion to Burda's 3^(i-1).
    assert budget_stage_lengths(8, 3288, 1) == [2, 4, 10, 28, 82, 244, 730, 2188]
    factor = SCHEDULES["burda"](stages=8, epochs=100, min_epochs=8)
    assert [factor(e, 100) for e in (1, 8, 9, 33, 42, 68, 69, 100)] == pytest.approx(
        [1, 1, 10 ** (-1 / 7), 10 ** (-4 / 7), 10 ** (-5 / 7), 10 ** (-6 / 7), 10 ** (-7 / 7), 0.1])
    with pytest.raises(UserError, match="scale .* or epochs .*not both"):
        SCHEDULES["burda"](scale=0.04, epochs=100)
    with pytest.raises(UserError, match="epochs must be a whole number of at least 64"):
        SCHEDULES["burda"](epochs=50, min_epochs=8)


def test_step_and_cosine_schedules():
    step = SCHEDULES["step"](every=3, gamma=0.5)
    assert [step(e, 9) for e in range(1, 8)] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25]
    cosine = SCHEDULES["cosine"](floor=0.1)
    assert cosine(1, 11) == pytest.approx(1.0) and cosine(11, 11) == pytest.approx(0.1)
    assert cosine(6, 11) == pytest.approx(0.1 + 0.9 * 0.5)
    with pytest.raises(UserError, match="unknown option 'stage'"):
        TrainConfig.from_dict({"lr_schedule": "burda", "lr_schedule_options": {"stage": 3}}).validate()
    with pytest.raises(UserError, match="every must be a whole number"):
        TrainConfig.from_dict({"lr_schedule": "step", "lr_schedule_options": {"every": 0}}).validate()


def test_a_run_trains_on_its_schedule_and_resumes_on_it(tmp_path):
    cfg = small_config(epochs=4, lr=2e-3, lr_schedule="step", lr_schedule_options={"every": 2, "gamma": 0.5})
    straight = train(cfg, tmp_path / "straight", progress=False, log=quiet)
    lrs = [m["lr"] for m in runs.read_metrics(straight)]
    assert lrs == pytest.approx([2e-3, 2e-3, 1e-3, 1e-3])
    cfg.epochs = 3
    split = train(cfg, tmp_path / "split", progress=False, log=quiet)
    resume(split, epochs=4, progress=False, log=quiet)
    assert [m["lr"] for m in runs.read_metrics(split)] == pytest.approx(lrs)
    a = torch.load(straight / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(split / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_validation_images_are_held_out_of_training(tmp_path):
    plain = load_data(small_config())
    cfg = small_config(validation=100, epochs=2)
    data = load_data(cfg)
    assert len(data.valid_x) == 100 and len(data.train_x) == len(plain.train_x) - 100
    # Exactly a partition of the same training images, chosen by the split seed, the same every time.
    rows = lambda t: {bytes(r.numpy().tobytes()) for r in t}
    assert rows(data.train_x) | rows(data.valid_x) == rows(plain.train_x) and not rows(data.train_x) & rows(data.valid_x)
    assert torch.equal(load_data(cfg).valid_x, data.valid_x)
    assert data.provenance["validation_count"] == 100 and "validation_count" not in plain.provenance
    run = train(cfg, tmp_path / "run", progress=False, log=quiet)
    metrics = runs.read_metrics(run)
    assert all(-400 < m["valid_elbo"] < -80 for m in metrics) and metrics[1]["valid_elbo"] > metrics[0]["valid_elbo"]
    with pytest.raises(UserError, match="validation asks for 1000 of the 1000 training images"):
        load_data(small_config(validation=1000))


def test_burdas_model_builds_with_the_k_sample_objectives():
    for objective, k in (("trace", 5), ("iwae", 5)):
        cfg = TrainConfig.from_dict({"latent_dim": 50, "network_options": {"hidden": [200, 200], "activation": "tanh"},
                                     "objective": objective, "num_particles": k}).validate()
        vae = build_vae(check(cfg))
        n = sum(p.numel() for p in vae.parameters())
        # encoder 784-200-200-100 and decoder 50-200-200-784, weights and biases
        expected = (784 * 200 + 200) + (200 * 200 + 200) + (200 * 100 + 100) + (50 * 200 + 200) + (200 * 200 + 200) + (200 * 784 + 784)
        assert n == expected
