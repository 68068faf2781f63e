import pyro
import pyro.distributions as dist
import pytest
import torch
from conftest import small_config
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from pyro_vae.components.likelihoods import Likelihood
from pyro_vae.components.objectives import OBJECTIVES
from pyro_vae.model import build_vae


@pytest.fixture
def batch(mnist_small):
    return torch.bernoulli(mnist_small.train_x[:64], generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("network", ["mlp", "conv"])
def test_shapes(network, batch):
    pyro.set_rng_seed(0)
    vae = build_vae(small_config(network=network, latent_dim=3))
    mean, scale = vae.encode(batch)
    assert mean.shape == scale.shape == (64, 3) and (scale > 0).all()
    images = vae.decode(mean)
    assert images.shape == (64, 784) and ((images > 0) & (images < 1)).all()
    # particle dims pass through the decoder
    assert vae.decoder(torch.randn(5, 7, 3)).shape == (5, 7, 784)
    assert vae.sample_prior(10).shape == (10, 3)
    tr = pyro.poutine.trace(vae.model).get_trace(batch)
    assert tr.nodes["z"]["value"].shape == (64, 3) and tr.nodes["x"]["fn"].event_shape == (784,)


def test_meanfield_equals_trace_in_expectation(batch):
    pyro.set_rng_seed(0)
    vae = build_vae(small_config())
    x = batch[:16]
    many = 4000
    with torch.no_grad():
        trace = OBJECTIVES["trace"](many).differentiable_loss(vae.model, vae.guide, x)
        meanfield = OBJECTIVES["meanfield"](many).differentiable_loss(vae.model, vae.guide, x)
    # per-image values near 550 nats; MC error of the trace ELBO with 4000 particles is ~0.05 per image
    assert abs(float(trace - meanfield)) / 16 < 0.3
    assert float(meanfield) / 16 > 100  # a real loss, not zero


def test_analytic_kl_matches_closed_form(batch):
    """With the likelihood switched off, the meanfield loss is exactly KL(q || N(0, I))."""
    pyro.set_rng_seed(0)
    vae = build_vae(small_config(latent_dim=4))
    vae.likelihood = Likelihood(lambda logits: dist.Bernoulli(logits=logits).to_event(1).mask(False), torch.sigmoid)
    with torch.no_grad():
        kl = TraceMeanField_ELBO().differentiable_loss(vae.model, vae.guide, batch)
        mu, s = vae.encode(batch)
    closed = 0.5 * (mu**2 + s**2 - 1 - 2 * torch.log(s)).sum()
    assert torch.allclose(kl, closed, rtol=1e-5)
    vae.beta = 0.25
    with torch.no_grad():
        assert torch.allclose(TraceMeanField_ELBO().differentiable_loss(vae.model, vae.guide, batch), 0.25 * closed, rtol=1e-5)


def test_delta_guide_losses_have_closed_forms(batch):
    pyro.set_rng_seed(0)
    ae = build_vae(small_config(guide="delta", beta=0.0))
    with torch.no_grad():
        codes, scale = ae.encode(batch)
        logits = ae.decoder(codes)
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch, reduction="sum")
        assert (scale == 0).all()
        # plain AE: the loss is the reconstruction error alone
        assert torch.allclose(Trace_ELBO().differentiable_loss(ae.model, ae.guide, batch), bce, rtol=1e-5)
        # MAP-AE: plus -log N(z; 0, I)
        ae.beta = 1.0
        neg_log_prior = -dist.Normal(0, 1).log_prob(codes).sum()
        assert torch.allclose(Trace_ELBO().differentiable_loss(ae.model, ae.guide, batch), bce + neg_log_prior, rtol=1e-5)


def test_deterministic_guide_gives_identical_codes(batch):
    pyro.set_rng_seed(0)
    ae = build_vae(small_config(guide="delta"))
    assert torch.equal(ae.encode(batch)[0], ae.encode(batch)[0])
    tr1 = pyro.poutine.trace(ae.guide).get_trace(batch)
    tr2 = pyro.poutine.trace(ae.guide).get_trace(batch)
    assert torch.equal(tr1.nodes["z"]["value"], tr2.nodes["z"]["value"])
