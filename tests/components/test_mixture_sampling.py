"""Mixture priors draw a component, then only from it: the same distribution as drawing every
component and picking one (torch's MixtureSameFamily), checked against the closed-form moments."""

from __future__ import annotations

import pyro.distributions as dist
import torch

from pyro_vae.components.priors import DiagonalMixture, GaussianMixture, UniformMixture


def _moments(weights, locs, scales):
    mean = (weights[:, None] * locs).sum(0)
    second = (weights[:, None] * (scales**2 + locs**2)).sum(0)
    return mean, second - mean**2


def test_a_gaussian_mixture_draws_from_its_closed_form_moments():
    torch.manual_seed(0)
    weights = torch.tensor([0.6, 0.3, 0.1])
    locs, scales = torch.tensor([[-3.0, 0.0], [2.0, 1.0], [0.0, 6.0]]), torch.tensor([[0.5, 1.0], [1.0, 0.2], [2.0, 0.5]])
    mixture = DiagonalMixture(dist.Categorical(probs=weights), dist.Normal(locs, scales).to_event(1))
    z = mixture.sample((200_000,))
    mean, var = _moments(weights, locs, scales)
    assert z.shape == (200_000, 2)
    assert torch.allclose(z.mean(0), mean, atol=0.03) and torch.allclose(z.var(0), var, rtol=0.02)
    # Which component a draw came from: the nearest of these well-separated means, at the mixture's weights.
    near = (z[:, None, :] - locs).norm(dim=-1).argmin(-1)
    assert torch.allclose(torch.bincount(near, minlength=3) / len(z), weights, atol=0.02)
    x = torch.randn(5, 2)  # the density is torch's own
    reference = dist.MixtureSameFamily(dist.Categorical(probs=weights), dist.Normal(locs, scales).to_event(1))
    assert torch.allclose(mixture.log_prob(x), reference.log_prob(x))


def test_the_mixture_prior_and_the_vamp_mixture_draw_from_their_components():
    torch.manual_seed(1)
    prior = GaussianMixture(3, components=4)()
    assert isinstance(prior, DiagonalMixture) and prior.sample((7, 2)).shape == (7, 2, 3)
    locs, scales = torch.randn(4, 3) * 3, torch.rand(4, 3) + 0.2
    uniform = UniformMixture(dist.Normal(locs, scales).to_event(1))  # the VampPrior's p(z), equal weights
    z = uniform.sample((200_000,))
    mean, var = _moments(torch.full((4,), 0.25), locs, scales)
    assert torch.allclose(z.mean(0), mean, atol=0.03) and torch.allclose(z.var(0), var, rtol=0.03)
