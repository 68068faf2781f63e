"""Objectives by name: the per-image IWAE and Rényi bounds against the ELBO, hand computations and
their known orderings; meanfield's Monte Carlo fallback; option errors; a short real training run."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from conftest import small_config

from pyro_vae.components.objectives import OBJECTIVES, log_weights
from pyro_vae.errors import UserError
from pyro_vae.model import build_vae

Z = 3


def build(prior="standard-normal", guide="gaussian", seed=0, **overrides):
    values = dict(prior=prior, guide=guide, latent_dim=Z, hidden_dim=32)
    if prior in ("vamp", "mixture"):
        values["prior_options"] = {"components": 5}
    values.update(overrides)
    pyro.set_rng_seed(seed)
    return build_vae(small_config(**values))


def loss_with_seed(vae, objective, x, seed, num_particles=1, **options):
    pyro.set_rng_seed(seed)
    with torch.no_grad():
        return float(OBJECTIVES[objective](num_particles, **options).differentiable_loss(vae.model, vae.guide, x))


pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def batch(mnist_small):
    return torch.bernoulli(mnist_small.train_x[:16], generator=torch.Generator().manual_seed(0))


COMBOS = [("standard-normal", "gaussian"), ("vamp", "iaf"), ("flow", "full-rank"), ("mixture", "delta"), ("gaussian", "iaf")]


@pytest.mark.parametrize("prior,guide", [("standard-normal", "gaussian"), ("vamp", "iaf"), ("flow", "full-rank")])
@pytest.mark.parametrize("alpha", [0.0, 0.5])
@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_our_multi_sample_bounds_equal_pyros_renyi_elbo(prior, guide, alpha, beta, batch):
    """Pyro's RenyiELBO keeps plates that enclose every sample site out of its log-mean-exp, so on this
    model (every site in the data plate) it is the per-image bound too: same draws, same number."""
    vae = build(prior, guide, beta=beta)
    ours = loss_with_seed(vae, "renyi", batch, 3, num_particles=7, alpha=alpha)
    pyro.set_rng_seed(3)
    theirs = pyro.infer.RenyiELBO(alpha=alpha, num_particles=7, vectorize_particles=True, max_plate_nesting=1)
    assert ours == pytest.approx(theirs.loss(vae.model, vae.guide, batch), rel=1e-6)


@pytest.mark.parametrize("prior,guide", COMBOS)
@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_iwae_with_one_particle_is_the_trace_elbo(prior, guide, beta, batch):
    vae = build(prior, guide, beta=beta)
    for seed in (0, 1):
        iwae = loss_with_seed(vae, "iwae", batch, seed)
        trace = loss_with_seed(vae, "trace", batch, seed)
        assert iwae == pytest.approx(trace, rel=1e-5, abs=1e-3)
    assert loss_with_seed(vae, "iwae", batch, 0) != loss_with_seed(vae, "iwae", batch, 1) or guide == "delta"


@pytest.mark.parametrize("prior,guide", COMBOS[:3])
def test_renyi_endpoints_are_iwae_and_the_elbo(prior, guide, batch):
    vae = build(prior, guide)
    k = 6
    assert loss_with_seed(vae, "renyi", batch, 3, k, alpha=0.0) == pytest.approx(loss_with_seed(vae, "iwae", batch, 3, k), rel=1e-6)
    # alpha = 1 is the ELBO: the vectorised Trace_ELBO with the same particles
    elbo = loss_with_seed(vae, "trace", batch, 3, k)
    assert loss_with_seed(vae, "renyi", batch, 3, k, alpha=1.0) == pytest.approx(elbo, rel=1e-5)
    assert loss_with_seed(vae, "renyi", batch, 3, k, alpha=0.9999) == pytest.approx(elbo, abs=0.05 * len(batch))
    # For the same draws the bound falls as alpha grows (a power mean of the weights), so the loss rises.
    losses = [loss_with_seed(vae, "renyi", batch, 3, k, alpha=a) for a in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert all(a <= b + 1e-3 for a, b in zip(losses, losses[1:])), losses
    assert losses[0] < losses[-1] - 0.1  # and really differs: not all particles weigh the same


def test_iwae_is_the_per_image_log_mean_weight_computed_by_hand(batch):
    """log w_ik = log p(x_i | z_ik) + log p(z_ik) - log q(z_ik | x_i) with z_ik the guide's draws;
    the bound is sum_i log (1/K) sum_k w_ik (not Pyro's batch-level RenyiELBO)."""
    vae = build("mixture", "gaussian")
    k = 7
    pyro.set_rng_seed(11)
    with torch.no_grad():
        lw = log_weights(vae.model, vae.guide, batch, k)
        pyro.set_rng_seed(11)
        q = vae.encoder_guide(batch)
        z = q.rsample((k,))  # the same draws the particle plate makes: (K, B, Z)
        by_hand = vae.likelihood.distribution(vae.decoder(z)).log_prob(batch) + vae.prior().log_prob(z) - q.log_prob(z)
    assert lw.shape == (k, len(batch))
    assert torch.allclose(lw, by_hand, rtol=1e-5, atol=1e-3)
    iwae = loss_with_seed(vae, "iwae", batch, 11, k)
    assert iwae == pytest.approx(-float((by_hand.logsumexp(0) - math.log(k)).sum()), rel=1e-5)
    batch_level = -float(by_hand.sum(1).logsumexp(0) - math.log(k))  # what pyro.infer.RenyiELBO(alpha=0) computes
    assert abs(iwae - batch_level) > 1.0


def test_beta_weights_the_latent_terms_of_the_weights(batch):
    full, half = build(beta=1.0), build(beta=0.5)
    pyro.set_rng_seed(2)
    with torch.no_grad():
        lw_full = log_weights(full.model, full.guide, batch, 4)
        pyro.set_rng_seed(2)
        lw_half = log_weights(half.model, half.guide, batch, 4)
        pyro.set_rng_seed(2)
        q = full.encoder_guide(batch)
        z = q.rsample((4,))
        latent = full.prior().log_prob(z) - q.log_prob(z)
    assert torch.allclose(lw_full - lw_half, 0.5 * latent, atol=1e-3)


def test_delta_guide_bounds_do_not_depend_on_particles(batch):
    """All particles of a point mass coincide, so every bound is the ELBO; beta=0 leaves the reconstruction."""
    ae = build(guide="delta", beta=0.0)
    with torch.no_grad():
        bce = torch.nn.functional.binary_cross_entropy_with_logits(ae.decoder(ae.encode(batch)[0]), batch, reduction="sum")
    for objective, k in (("iwae", 1), ("iwae", 9), ("renyi", 9), ("trace", 1)):
        assert loss_with_seed(ae, objective, batch, 0, k) == pytest.approx(float(bce), rel=1e-5)


@pytest.mark.parametrize("prior,guide", [("mixture", "gaussian"), ("flow", "iaf"), ("vamp", "full-rank"),
                                         ("standard-normal", "full-rank"), ("standard-normal", "iaf")])
def test_meanfield_falls_back_to_monte_carlo_without_an_analytic_kl(prior, guide, batch):
    vae = build(prior, guide)
    for k in (1, 3):
        assert loss_with_seed(vae, "meanfield", batch, 4, k) == pytest.approx(loss_with_seed(vae, "trace", batch, 4, k), rel=1e-5)


def test_meanfield_uses_the_analytic_kl_where_there_is_one(batch):
    vae = build("gaussian", "gaussian")
    with torch.no_grad():
        vae.prior.loc.fill_(0.3)
    meanfield = loss_with_seed(vae, "meanfield", batch, 4)
    assert meanfield != pytest.approx(loss_with_seed(vae, "trace", batch, 4), rel=1e-6)
    assert meanfield == pytest.approx(loss_with_seed(vae, "trace", batch, 4, 2000), rel=2e-3)


@pytest.mark.parametrize("name,options,match", [
    ("iwae", {"alpha": 0.5}, "objective 'iwae' takes no options"),
    ("renyi", {"alfa": 0.5}, "unknown option 'alfa' for objective 'renyi'.*valid options: alpha"),
    ("renyi", {"alpha": -0.5}, "alpha must be 0 or more"),
    ("renyi", {"alpha": "half"}, "alpha must be a number"),
    ("renyi", {"alpha": float("nan")}, "alpha must be a number"),
    ("trace", {"particles": 3}, "objective 'trace' takes no options"),
])
def test_bad_objective_options_are_user_errors(name, options, match):
    with pytest.raises(UserError, match=match):
        OBJECTIVES[name](2, **options)


def test_multi_sample_bounds_refuse_what_they_cannot_score():
    x = torch.zeros(4, 2)

    def model(x):
        scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))  # global: no per-image weight
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(torch.zeros(2), scale[..., None]).to_event(1), obs=x)

    def guide(x):
        pyro.sample("scale", dist.LogNormal(0.0, 1.0))

    with pytest.raises(UserError, match="site 'scale'.*inside the data plate"):
        OBJECTIVES["iwae"](3).differentiable_loss(model, guide, x)

    def discrete_model(x):
        with pyro.plate("data", len(x)):
            c = pyro.sample("c", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(c[..., None], 1.0).to_event(1), obs=x)

    def discrete_guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("c", dist.Bernoulli(0.3))

    with pytest.raises(UserError, match="cannot be reparametrised.*use objective trace or meanfield"):
        OBJECTIVES["renyi"](3).differentiable_loss(discrete_model, discrete_guide, x)


# ---------------------------------------------------------------------------------------------
# A real, short training run: VampPrior + IAF guide with the IWAE objective


@pytest.fixture(scope="module")
def trained(mnist_small):
    gen = torch.Generator().manual_seed(0)
    train_x = torch.bernoulli(mnist_small.train_x[:1000], generator=gen)
    test_x = torch.bernoulli(mnist_small.test_x[:300], generator=gen)
    vae = build("vamp", "iaf", seed=0, hidden_dim=64, latent_dim=2, prior_options={"components": 10}, guide_options={"hidden_dim": 32})
    objective = OBJECTIVES["iwae"](3)
    before = loss_with_seed(vae, "iwae", test_x, 99, 3) / len(test_x)
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    order = torch.Generator().manual_seed(1)
    pseudo_before = vae.prior.pseudo_logits.detach().clone()
    for step in range(250):
        idx = torch.randint(len(train_x), (100,), generator=order)
        loss = objective.differentiable_loss(vae.model, vae.guide, train_x[idx])
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = loss_with_seed(vae, "iwae", test_x, 99, 3) / len(test_x)
    return vae, test_x, before, after, pseudo_before


def test_training_vamp_iaf_with_iwae_lowers_the_held_out_loss(trained):
    vae, _, before, after, pseudo_before = trained
    assert before > 450 and after < before - 150, (before, after)
    assert not torch.allclose(vae.prior.pseudo_logits, pseudo_before)  # the prior itself learned


def test_iwae_bound_grows_with_particles_on_average(trained):
    vae, test_x, _, _, _ = trained
    x = test_x[:50]
    bounds = {k: sum(-loss_with_seed(vae, "iwae", x, 1000 + r, k) for r in range(12)) / (12 * len(x)) for k in (1, 5, 50)}
    assert bounds[1] <= bounds[5] + 0.05 and bounds[5] <= bounds[50] + 0.05, bounds
    assert bounds[50] > bounds[1] + 0.1, bounds  # a real gain, not equal bounds
    # and stays below the bound with many more particles, closer to log p(x)
    assert bounds[50] <= -loss_with_seed(vae, "iwae", x, 7, 500) / len(x) + 0.05
