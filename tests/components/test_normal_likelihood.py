"""The Normal likelihood: the squared-error autoencoder's, and the Generative Deep Learning book's
VAE loss (r_loss_factor x pixel MSE + KL) stated as an ELBO."""

import json
import math

import pytest
import torch
from conftest import small_config

from pyro_vae.components.likelihoods import (
    build_likelihood,
    normal_log_constant,
    normal_scale,
    scale_of_r_loss_factor,
)
from pyro_vae.errors import UserError


def test_its_negative_log_density_is_r_loss_factor_times_pixel_mse_plus_a_constant():
    torch.manual_seed(0)
    x, logits = torch.rand(6, 784), 3 * torch.randn(6, 784)  # grey values: no binarised data needed
    for r in (1000.0, 1.0, 250.0):
        likelihood = build_likelihood("normal", {"r_loss_factor": r})
        nll = -likelihood.distribution(logits.double()).log_prob(x.double())
        mse = ((x.double() - torch.sigmoid(logits.double())) ** 2).mean(1)
        assert torch.allclose(nll, r * mse + normal_log_constant(scale_of_r_loss_factor(r)), rtol=0, atol=1e-9)
    assert scale_of_r_loss_factor(1000) == pytest.approx(0.6261, abs=1e-4)  # sqrt(784 / 2000)
    assert torch.equal(likelihood.mean(logits), torch.sigmoid(logits))


def test_the_scale_is_stated_once_either_way():
    assert normal_scale() == normal_scale(r_loss_factor=1000) == build_likelihood("normal", {}).record["scale"]
    assert normal_scale(scale=0.1) == 0.1
    assert normal_scale(scale=math.sqrt(784 / 2000), r_loss_factor=1000) == pytest.approx(0.6261, abs=1e-4)
    for options, message in (({"scale": 0.0}, "scale must be positive"), ({"r_loss_factor": -5}, "must be positive"),
                             ({"scale": 0.5, "r_loss_factor": 1000}, "disagree"), ({"scale": "big"}, "must be a number"),
                             ({"sigma": 1}, "unknown option 'sigma' for likelihood 'normal'")):
        with pytest.raises(UserError, match=message):
            build_likelihood("normal", options)
    with pytest.raises(UserError, match="takes no options"):
        build_likelihood("bernoulli", {"scale": 1})


def test_a_book_vae_trains_on_grey_images_and_records_its_scale(tmp_path, one_thread):
    from pyro_vae.training import runs
    from pyro_vae.training.trainer import train

    cfg = small_config(likelihood="normal", likelihood_options={"r_loss_factor": 1000}, binarize="none",
                       epochs=3, train_limit=1000, lr=2e-3)
    run = train(cfg, tmp_path / "vae", progress=False, log=lambda m: None)
    record = json.loads((run / runs.CONFIG).read_text())
    assert record["config"]["likelihood_options"] == {"r_loss_factor": 1000}
    assert record["likelihood"] == {"name": "normal", "scale": pytest.approx(0.6261, abs=1e-4), "r_loss_factor": 1000.0,
                                    "scale_from": "sqrt(784 / (2 r_loss_factor))"}
    curve = [m["test_elbo"] for m in runs.read_metrics(run)]
    assert curve[-1] > curve[0]  # the bound rises
    # A Normal density at scale 0.63 on [0, 1] pixels: -784 log(0.63 sqrt(2 pi)) = -353 nats at a perfect mean,
    # less 1000 x the pixel MSE (about 0.1 for the mean image, less for a decoder) and the KL.
    assert -470 < curve[-1] < -normal_log_constant(0.6261)
