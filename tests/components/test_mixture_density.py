"""Mixture priors score diagonal Gaussians by matrix products instead of materialising (..., K, D):
the same densities and gradients as the elementwise formula, checked against a float64 reference at
the VampPrior's sizes (500 components, 40 dimensions) and at component scales down to 0.01, where an
expansion in float32 would lose tenths of a nat; also under a plate's expansion, and for components
that are not diagonal (the full-rank guide's), which keep the elementwise path."""

from __future__ import annotations

import math
from pathlib import Path

import pyro.distributions as dist
import pytest
import torch

from pyro_vae.components.priors import DiagonalMixture, UniformMixture, _component_log_probs

K, D = 500, 40


def _reference(value, locs, scales, log_weights):
    """log sum_k w_k N(value; locs_k, diag(scales_k^2)), elementwise in float64."""
    z, m, s = value.double()[..., None, :], locs.double(), scales.double()
    each = (-0.5 * ((z - m) / s) ** 2 - s.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
    return torch.logsumexp(each + log_weights.double(), -1)


def _within_rounding(got, expected):
    """Within 1e-3 nats of the float64 value, beyond what rounding the result to float32 costs (far from
    every component the log-density reaches -5e4, whose float32 spacing is 0.004)."""
    return bool(((got.double() - expected).abs() <= 1e-3 + 2 * 2.0**-24 * expected.abs()).all())


@pytest.fixture
def components():
    g = torch.Generator().manual_seed(0)
    locs = torch.randn(K, D, generator=g) * 2
    scales = torch.exp(torch.empty(K, D).uniform_(math.log(0.01), math.log(2.0), generator=g))
    # codes beside some components (at a few of their scales, the VampPrior's case) and far from all
    near = locs[:64] + scales[:64] * torch.randn(64, D, generator=g)
    return locs, scales, torch.cat([near, torch.randn(64, D, generator=g) * 4])


def test_the_mixture_density_matches_the_elementwise_formula_in_float64(components):
    locs, scales, z = components
    logits = torch.randn(K, generator=torch.Generator().manual_seed(1))
    mixture = DiagonalMixture(dist.Categorical(logits=logits), dist.Normal(locs, scales).to_event(1))
    expected = _reference(z, locs, scales, torch.log_softmax(logits, -1))
    got = mixture.log_prob(z)
    assert got.dtype == torch.float32 and got.shape == (128,)
    assert _within_rounding(got, expected)
    # what a plate does with the prior: expand it over the images; the fast path still applies
    expanded = mixture.expand((128,))
    assert _component_log_probs(expanded.component_distribution, z) is not None
    assert torch.allclose(expanded.log_prob(z), got)
    torch_own = dist.MixtureSameFamily(dist.Categorical(logits=logits), dist.Normal(locs, scales).to_event(1))
    assert torch.allclose(got, torch_own.log_prob(z), rtol=1e-5, atol=1e-2)  # float32 elementwise: rounding only


def test_the_gradients_match_the_elementwise_formula(components):
    locs, scales, z = components
    params = [locs.clone().requires_grad_(), scales.log().clone().requires_grad_(), torch.zeros(K, requires_grad=True)]
    z = z[:32].clone().requires_grad_()

    def grads(log_prob):
        loss = log_prob(z, params[0], params[1].exp(), params[2]).sum()
        return torch.autograd.grad(loss, [z, *params])

    fast = grads(lambda v, m, s, w: DiagonalMixture(dist.Categorical(logits=w), dist.Normal(m, s).to_event(1)).log_prob(v))
    slow = grads(lambda v, m, s, w: _reference(v, m, s, torch.log_softmax(w, -1)).float())
    for a, b in zip(fast, slow):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())


def test_the_vamp_mixture_matches_and_other_families_keep_the_elementwise_path(components):
    locs, scales, z = components
    uniform = UniformMixture(dist.Normal(locs, scales).to_event(1))  # the VampPrior's p(z) under the gaussian guide
    expected = _reference(z, locs, scales, torch.full((K,), -math.log(K)))
    assert _within_rounding(uniform.log_prob(z), expected)
    assert uniform.log_prob(z[None].expand(3, -1, -1)).shape == (3, 128)  # importance samples x images
    # full-rank components (the full-rank guide's posteriors at the pseudo-inputs) are not diagonal
    small = slice(0, 20)
    tril = torch.diag_embed(scales[small, :3])
    tril[:, 2, 0] = 0.3
    full = UniformMixture(dist.MultivariateNormal(locs[small, :3], scale_tril=tril))
    assert _component_log_probs(full.components, z[:, :3]) is None
    each = dist.MultivariateNormal(locs[small, :3], scale_tril=tril).log_prob(z[:, None, :3])
    assert torch.allclose(full.log_prob(z[:, :3]), torch.logsumexp(each, -1) - math.log(20))


def test_an_expanded_mixture_whose_images_differ_keeps_the_elementwise_path():
    locs, scales = torch.randn(2, 4, 3), torch.rand(2, 4, 3) + 0.5  # batch (2, K=4): two different mixtures
    components = dist.Normal(locs, scales).to_event(1)
    assert _component_log_probs(components, torch.randn(2, 3)) is None
    mixture = DiagonalMixture(dist.Categorical(logits=torch.zeros(2, 4)), components)
    z = torch.randn(2, 3)
    expected = torch.stack([_reference(z[i], locs[i], scales[i], torch.full((4,), -math.log(4))) for i in range(2)])
    assert torch.allclose(mixture.log_prob(z).double(), expected, atol=1e-5)


@pytest.mark.parametrize("prior", ["mixture", "vamp"])
def test_the_compiled_training_loss_traces_the_fast_density(prior):
    """A mixture prior trains through the compiled loss (its check against the eager objective passes,
    so it does not fall back) to the eager objective's weights."""
    from conftest import SLICE_DATASET

    from pyro_vae import data
    from pyro_vae.config import TrainConfig
    from pyro_vae.training.trainer import Trainer

    images = data.load(SLICE_DATASET, train_limit=256, test_limit=32)
    cfg = TrainConfig(dataset=SLICE_DATASET, device="cpu", batch_size=64, train_limit=256, epochs=10, seed=0, latent_dim=8,
                      prior=prior, prior_options={"components": 50}, network_options={"hidden": [32]}).validate()
    weights = []
    for jit in (True, False):
        trainer = Trainer(cfg, Path("<test>"), images, log=lambda msg: None, jit=jit)
        trainer.train_epoch(progress=False)
        assert trainer.jit_active == jit
        weights.append([p.detach().clone() for p in trainer.vae.parameters()])
    for a, b in zip(*weights):
        assert torch.allclose(a, b, rtol=0, atol=1e-5)
