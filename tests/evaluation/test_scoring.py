"""How images are scored against decoder logits: the fast Bernoulli formula and the matrix products
against the likelihood's own log_prob."""

import torch
import torch.nn.functional as F
from estimator_models import LinearGaussian

from pyro_vae.config import TrainConfig
from pyro_vae.evaluation import scoring as S
from pyro_vae.model import build_vae


def test_bernoulli_scores_match_log_prob():
    vae = build_vae(TrainConfig())
    torch.manual_seed(0)
    with torch.no_grad():
        logits = vae.decoder(torch.randn(37, 2) * 3) * 5  # include large |logits|
    binary = torch.bernoulli(torch.rand(11, 784))
    grey = torch.rand(11, 784)
    for x in (binary, grey):
        want = vae.likelihood.distribution(logits[None]).log_prob(x[:, None, :])
        got = S.loglik_matrix(vae, x, logits)
        assert S.bernoulli_logits(vae)
        assert torch.allclose(got, want, rtol=1e-5, atol=2e-3)
        fn = S.loglik_fn(vae)
        assert torch.allclose(fn(x, logits[:11]), vae.likelihood.distribution(logits[:11]).log_prob(x), atol=2e-3)
    extreme = torch.tensor([[-200.0, -90.0, -20.0, 0.0, 1e-3, 20.0, 90.0, 200.0] * 98])
    assert torch.allclose(S.softplus_sum(extreme), F.softplus(extreme.double()).sum(-1).float(), rtol=1e-6)


def test_normal_likelihood_is_not_mistaken_for_bernoulli():
    assert not S.bernoulli_logits(LinearGaussian())
    assert S.scoring_mode(LinearGaussian()) == "generic"  # log N(x; l, s) has an x^2 term
