"""Priors, guides and likelihoods swapped by name: every allowed combination trains, shapes and
densities are right, disallowed combinations and bad options are UserErrors."""

import itertools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from conftest import small_config

from pyro_vae.components.guides import GUIDES
from pyro_vae.components.likelihoods import (
    LIKELIHOODS,
    ContinuousBernoulli,
    continuous_bernoulli_log_norm,
)
from pyro_vae.components.objectives import OBJECTIVES
from pyro_vae.components.priors import PRIORS
from pyro_vae.errors import UserError
from pyro_vae.model import build_vae

Z = 3
DISALLOWED = {("vamp", "delta")}
ALLOWED = [(p, g) for p, g in itertools.product(PRIORS.names(), GUIDES.names()) if (p, g) not in DISALLOWED]
# Small components keep the matrix fast; the defaults are exercised by the CLI and shape tests.
FAST_PRIOR_OPTIONS = {"vamp": {"components": 6}, "mixture": {"components": 4}}


def config(prior="standard-normal", guide="gaussian", **overrides):
    values = dict(prior=prior, guide=guide, latent_dim=Z, hidden_dim=32, prior_options=dict(FAST_PRIOR_OPTIONS.get(prior, {})))
    values.update(overrides)
    return small_config(**values)


def build(prior="standard-normal", guide="gaussian", seed=0, **overrides):
    pyro.set_rng_seed(seed)
    return build_vae(config(prior, guide, **overrides))


pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def grey(mnist_small):
    return mnist_small.train_x[:16].clone()


@pytest.fixture(scope="module")
def batch(grey):
    return torch.bernoulli(grey, generator=torch.Generator().manual_seed(0))


def test_registries_hold_the_new_components():
    assert {"standard-normal", "gaussian", "mixture", "vamp", "flow"} <= set(PRIORS.names())
    assert {"gaussian", "delta", "full-rank", "iaf"} <= set(GUIDES.names())
    assert {"bernoulli", "continuous-bernoulli"} <= set(LIKELIHOODS.names())
    assert {"trace", "meanfield", "iwae", "renyi"} <= set(OBJECTIVES.names())


@pytest.mark.parametrize("prior,guide", ALLOWED)
def test_every_allowed_combination_trains_with_every_objective(prior, guide, batch):
    """Finite loss with each objective (2 particles), and a gradient reaching every parameter."""
    for objective in OBJECTIVES.names():
        vae = build(prior, guide)
        loss = OBJECTIVES[objective](2).differentiable_loss(vae.model, vae.guide, batch)
        assert loss.shape == () and torch.isfinite(loss), (objective, loss)
        assert 100 * len(batch) < loss.item() < 2000 * len(batch)  # summed over images: ~550 nats each at init
        loss.backward()
        dead = [n for n, p in vae.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.any()]
        assert not dead, f"{objective}: no gradient reaches {dead}"
        if prior != "standard-normal":
            assert any(n.startswith("prior.") for n, _ in vae.named_parameters())  # learnable priors are trained


@pytest.mark.parametrize("prior,guide", sorted(DISALLOWED))
def test_disallowed_combinations_are_user_errors(prior, guide):
    with pytest.raises(UserError, match=f"prior '{prior}'.*guide '{guide}'") as err:
        build(prior, guide)
    assert "\n" not in str(err.value) and "use guide" in str(err.value)


@pytest.mark.parametrize("kind,name,options,match", [
    ("prior", "mixture", {"componentz": 3}, "unknown option 'componentz' for prior 'mixture'.*valid options: components"),
    ("prior", "standard-normal", {"components": 3}, "takes no options"),
    ("prior", "mixture", {"components": 0}, "components must be a whole number of at least 1"),
    ("prior", "vamp", {"components": "ten"}, "components must be a whole number"),
    ("prior", "flow", {"steps": 1.5}, "steps must be a whole number"),
    ("prior", "flow", {"transform": "planar"}, "transform must be one of affine, spline"),
    ("prior", "flow", {"hidden_dim": 2}, "at least the latent size"),
    ("guide", "iaf", {"stepz": 2}, "unknown option 'stepz' for guide 'iaf'"),
    ("guide", "iaf", {"encode_samples": 1}, "encode_samples must be a whole number of at least 2"),
    ("guide", "full-rank", {"steps": 2}, "guide 'full-rank' takes no options"),
])
def test_bad_options_are_user_errors(kind, name, options, match):
    with pytest.raises(UserError, match=match):
        build(**{kind: name, f"{kind}_options": options})


def test_options_are_used_and_hyphens_accepted():
    vae = build("mixture", "iaf", prior_options={"components": 7}, guide_options={"steps": 3, "context-dim": 5})
    assert vae.prior.locs.shape == (7, Z) and vae.prior.logits.shape == (7,)
    assert len(vae.encoder_guide.flows) == 3 and vae.encoder_guide.context_dim == 5
    flow = build("flow", prior_options={"steps": 4, "transform": "spline"})
    assert len(flow.prior.flows) == 4 and type(flow.prior.flows[0]).__name__ == "SplineAutoregressive"
    vamp = build("vamp", prior_options={})
    assert vamp.prior.pseudo_logits.shape == (50, 784)  # default K


@pytest.mark.parametrize("prior,guide", [(p, "gaussian") for p in PRIORS.names()] + [("vamp", "full-rank"), ("vamp", "iaf")])
def test_prior_shapes(prior, guide):
    vae = build(prior, guide)
    p = vae.prior()
    assert p.event_shape == (Z,) and p.batch_shape == ()
    assert vae.sample_prior(7).shape == (7, Z)
    codes = torch.randn(5, 4, Z)
    lp = p.log_prob(codes)
    assert lp.shape == (5, 4) and torch.isfinite(lp).all()
    # The model's plate broadcasts the prior over the images (and particles).
    assert p.expand((4,)).log_prob(codes).shape == (5, 4)


@pytest.mark.parametrize("guide", GUIDES.names())
def test_guide_shapes(guide, batch):
    vae = build(guide=guide)
    q = vae.encoder_guide(batch)
    assert q.batch_shape == (len(batch),) and q.event_shape == (Z,)
    assert q.rsample((3,)).shape == (3, len(batch), Z)
    mean, scale = vae.encode(batch)
    assert mean.shape == scale.shape == (len(batch), Z)
    assert (scale == 0).all() if vae.encoder_guide.deterministic else (scale > 0).all()
    tr = pyro.poutine.trace(vae.model).get_trace(batch)
    assert tr.nodes["z"]["value"].shape == (len(batch), Z)


def test_learned_gaussian_prior_starts_as_standard_normal():
    z = torch.randn(50, Z) * 3
    learned = build("gaussian").prior()
    standard = build("standard-normal").prior()
    assert torch.allclose(learned.log_prob(z), standard.log_prob(z), atol=1e-6)
    assert torch.allclose(learned.log_prob(z), dist.Normal(0.0, 1.0).log_prob(z).sum(-1), atol=1e-5)


def test_mixture_prior_log_prob_is_the_logsumexp_of_weighted_components():
    prior = build("mixture", prior_options={"components": 5}).prior
    with torch.no_grad():
        prior.logits.normal_()
        prior.log_scales.uniform_(-1, 0.5)
    z = torch.randn(40, Z) * 2
    weights = torch.log_softmax(prior.logits.detach(), 0)
    by_hand = torch.stack([
        weights[k] + dist.Normal(prior.locs[k], prior.log_scales[k].exp()).log_prob(z).sum(-1) for k in range(5)
    ]).logsumexp(0)
    assert torch.allclose(prior().log_prob(z), by_hand, atol=1e-5)


@pytest.mark.parametrize("guide", ["gaussian", "full-rank", "iaf"])
def test_vamp_prior_is_the_uniform_mixture_of_the_guide_at_pseudo_inputs(guide):
    vae = build("vamp", guide, prior_options={"components": 4})
    z = torch.randn(6, 10, Z)
    u = vae.prior.pseudo_inputs()
    assert u.shape == (4, 784) and ((u > 0) & (u < 1)).all()
    # One component at a time through the guide itself (its own conditioning, no broadcasting tricks).
    each = torch.stack([vae.encoder_guide(u[k : k + 1]).log_prob(z.unsqueeze(-2)).squeeze(-1) for k in range(4)])
    by_hand = each.logsumexp(0) - math.log(4)
    assert torch.allclose(vae.prior().log_prob(z), by_hand, atol=1e-4)
    assert not [n for n in vae.state_dict() if n.startswith("prior.") and "encoder" in n]  # the guide is saved once


@pytest.mark.parametrize("prior,guide", [("standard-normal", "gaussian"), ("gaussian", "gaussian"), ("mixture", "gaussian"),
                                         ("flow", "gaussian"), ("vamp", "gaussian"), ("vamp", "iaf")])
def test_priors_are_normalised_densities_that_match_their_samples(prior, guide):
    """In 2-D: the density integrates to 1 on a grid and its mean matches the samples' mean, which
    catches a flow used in inconsistent directions for scoring and sampling."""
    pyro.set_rng_seed(1)
    options = {"flow": {"transform": "affine"}, "mixture": {"components": 3}, "vamp": {"components": 3}}.get(prior, {})
    vae = build_vae(config(prior, guide, latent_dim=2, prior_options=options))
    if prior == "gaussian":
        with torch.no_grad():
            vae.prior.loc.copy_(torch.tensor([0.5, -1.0]))
            vae.prior.log_scale.copy_(torch.tensor([-0.3, 0.2]))
    step = 0.04
    axis = torch.arange(-9, 9, step) + step / 2
    grid = torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        p = vae.prior()
        density = p.log_prob(grid).exp()
        mass = float(density.sum() * step**2)
        grid_mean = (density[:, None] * grid).sum(0) * step**2 / mass
        torch.manual_seed(0)
        samples = vae.sample_prior(20000)
    assert abs(mass - 1) < 0.01, mass
    spread = samples.std(0)
    assert ((samples.mean(0) - grid_mean).abs() < 5 * spread / math.sqrt(20000) + 0.01).all(), (samples.mean(0), grid_mean)


def test_flow_prior_parameters_are_saved_and_restored():
    vae = build("flow", prior_options={"steps": 2})
    names = [n for n, _ in vae.named_parameters() if n.startswith("prior.flows.")]
    assert names and all(n in vae.state_dict() for n in names)
    with torch.no_grad():
        for p in vae.prior.parameters():
            p.add_(0.1 * torch.randn_like(p))
    z = torch.randn(20, Z)
    other = build("flow", seed=5, prior_options={"steps": 2})
    assert not torch.allclose(other.prior().log_prob(z), vae.prior().log_prob(z))
    other.load_state_dict(vae.state_dict())
    assert torch.allclose(other.prior().log_prob(z), vae.prior().log_prob(z))


def test_full_rank_guide_covariance_is_positive_definite_and_encode_gives_marginals(batch):
    vae = build(guide="full-rank", latent_dim=4)
    with torch.no_grad():
        q = vae.encoder_guide(batch)
        cov = q.covariance_matrix
        assert cov.shape == (len(batch), 4, 4)
        assert (torch.linalg.eigvalsh(cov) > 0).all()
        assert q.scale_tril.tril(-1).abs().sum() > 0  # really correlated, not diagonal
        mean, std = vae.encode(batch)
    assert torch.allclose(mean, q.mean) and torch.allclose(std, cov.diagonal(dim1=-2, dim2=-1).sqrt(), atol=1e-6)


def test_iaf_guide_scores_its_samples_consistently(batch):
    """log q(z) from the transform cache (the sample itself) equals the one through the inverse flow."""
    vae = build(guide="iaf")
    q = vae.encoder_guide(batch)
    z = q.rsample((4,))
    assert torch.allclose(q.log_prob(z), q.log_prob(z.clone()), atol=1e-4)


def test_iaf_encode_is_the_seeded_monte_carlo_mean_of_the_flowed_posterior(batch):
    vae = build(guide="iaf")
    state = torch.get_rng_state()
    mean, std = vae.encode(batch)
    assert torch.equal(torch.get_rng_state(), state)  # training's RNG is untouched
    again, _ = vae.encode(batch)
    assert torch.equal(mean, again)
    with torch.no_grad():
        many = vae.encoder_guide(batch).sample((20000,))
    tolerance = 5 * many.std(0) / math.sqrt(vae.encoder_guide.encode_samples)
    assert ((mean - many.mean(0)).abs() < tolerance).all()
    assert ((std - many.std(0)).abs() < tolerance).all()
    base_mean = vae.encoder_guide.encoder(batch)[:, :Z]
    assert not torch.allclose(mean, base_mean, atol=1e-2)  # the flow moves the code


# ---------------------------------------------------------------------------------------------
# Likelihoods


def test_continuous_bernoulli_log_prob_matches_the_closed_form():
    for eta, x in [(1.3, 0.3), (-2.0, 0.0), (0.7, 1.0), (4.0, 0.85), (1e-4, 0.6), (-25.0, 0.02)]:
        lam = 1 / (1 + math.exp(-eta))
        norm = 2.0 if abs(1 - 2 * lam) < 1e-9 else 2 * math.atanh(1 - 2 * lam) / (1 - 2 * lam)
        by_hand = x * math.log(lam) + (1 - x) * math.log1p(-lam) + math.log(norm)
        got = LIKELIHOODS["continuous-bernoulli"].distribution(torch.tensor([[eta]])).log_prob(torch.tensor([[x]]))
        assert got.shape == (1,)
        assert abs(float(got) - by_hand) < 1e-4 * max(1, abs(by_hand)), (eta, x, float(got), by_hand)


def test_continuous_bernoulli_is_a_normalised_density_with_its_own_mean():
    x = (torch.arange(200000, dtype=torch.float64) + 0.5) / 200000
    for eta in (-6.0, -0.4, 0.0, 0.002, 2.5, 9.0):
        d = ContinuousBernoulli(logits=torch.tensor(eta, dtype=torch.float64), validate_args=False)
        density = d.log_prob(x).exp()
        assert abs(float(density.mean()) - 1) < 1e-4
        mean = float(LIKELIHOODS["continuous-bernoulli"].mean(torch.tensor([eta], dtype=torch.float64)))
        assert abs(mean - float((x * density).mean())) < 1e-4
    assert abs(float(LIKELIHOODS["continuous-bernoulli"].mean(torch.tensor([2.0]))) - torch.sigmoid(torch.tensor(2.0))) > 0.05


def test_continuous_bernoulli_stays_finite_for_saturated_logits():
    """torch's own normaliser goes through sigmoid(eta) == 1.0 and gives +inf from eta ~ 17 in float32."""
    logits = torch.tensor([-80.0, -20.0, 0.0, 17.0, 20.0, 80.0], requires_grad=True)
    lp = ContinuousBernoulli(logits=logits, validate_args=False).log_prob(torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0, 1.0]))
    assert torch.isfinite(lp).all()
    lp.sum().backward()
    assert torch.isfinite(logits.grad).all()
    # log C(eta) ~ log|eta| for large |eta|, log 2 at 0; checked against float64 directly.
    eta = torch.tensor([-80.0, -3.0, -1e-5, 0.0, 5e-4, 0.3, 30.0], dtype=torch.float64)
    direct = torch.log(eta / torch.tanh(eta / 2))
    direct[eta == 0] = math.log(2)
    assert torch.allclose(continuous_bernoulli_log_norm(eta), direct, atol=1e-9)


@pytest.mark.parametrize("prior,guide", [("standard-normal", "gaussian"), ("flow", "iaf")])
def test_continuous_bernoulli_model_on_grey_images(prior, guide, grey):
    vae = build(prior, guide, likelihood="continuous-bernoulli", binarize="none")
    for objective in ("trace", "iwae"):
        loss = OBJECTIVES[objective](2).differentiable_loss(vae.model, vae.guide, grey)
        assert torch.isfinite(loss)
        loss.backward()
    images = vae.decode(vae.encode(grey)[0])
    assert images.shape == grey.shape and ((images > 0) & (images < 1)).all()


@pytest.fixture
def laplace_prior():
    """A prior registered from outside the package, through the public decorator; removed afterwards."""
    import pyro_vae

    @pyro_vae.register_prior("test-laplace")
    class Laplace(torch.nn.Module):
        def __init__(self, z_dim: int, guide=None, *, scale: float = 1.0):
            super().__init__()
            self.register_buffer("loc", torch.zeros(z_dim))
            self.register_buffer("scale", torch.full((z_dim,), float(scale)))

        def forward(self):
            return dist.Laplace(self.loc, self.scale).to_event(1)

    yield Laplace
    PRIORS._entries.pop("test-laplace")


def test_a_prior_registered_through_the_public_api_is_built_by_name_with_checked_options(laplace_prior):
    import pyro_vae

    cfg = small_config(prior="test-laplace", prior_options={"scale": 2.0})
    vae = build_vae(cfg.validate())
    assert isinstance(vae.prior, laplace_prior) and torch.equal(vae.prior.scale, torch.full((2,), 2.0))
    x = torch.bernoulli(torch.full((8, 784), 0.3))
    loss = pyro.infer.Trace_ELBO().differentiable_loss(vae.model, vae.guide, x)
    assert torch.isfinite(loss)
    with pytest.raises(UserError, match="unknown option 'sigma' for prior 'test-laplace'.*valid options: scale"):
        build_vae(small_config(prior="test-laplace", prior_options={"sigma": 2.0}))
    with pytest.raises(ValueError, match="registered twice"):
        pyro_vae.register_prior("test-laplace")(laplace_prior)


def test_a_factory_and_a_value_register_in_the_same_style():
    from pyro_vae.registry import Registry

    table = Registry("widget")

    @table.register("made")
    def make(size: int, *, colour: str = "red"):
        return (size, colour)

    table.register("plain")(("a", "value"))
    assert table["made"](3, colour="blue") == (3, "blue") and table["plain"] == ("a", "value")
    with pytest.raises(UserError, match="unknown option 'color' for widget 'made'"):
        table["made"](3, color="blue")
    with pytest.raises(UserError, match="unknown widget 'other'; choose one of: made, plain"):
        table["other"]
