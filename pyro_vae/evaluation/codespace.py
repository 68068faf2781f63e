"""A run's code space measured claim by claim: holes (claim 1), the N(0, I) null (claim 2), class
volumes (claim 3), and a likelihood under a prior fitted to the training codes.

:func:`code_space_measures` returns (metrics, arrays): flat numbers for evaluation.json (their rows
are in evaluation/metrics.py) and arrays for evaluation.npz that a report plots. Every model is
measured by the same recipe and sizes (EvalSettings), with its own seeded streams, so adding these
measures changes none of the evaluation's other numbers.

Fidelity of a decoded code is scored twice, each normalised by the same score of the model's own
reconstructions of held-out test images (so decoder blur, which both share, cancels):
- k-NN precision in the classifier's feature space (is the image inside the real images' manifold),
- re-encoding consistency |enc(dec(z)) - z|, in units of the training codes' spread.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import pyro.distributions as dist
import torch
from torch import nn

from pyro_vae.data import BINARIZATIONS, Data
from pyro_vae.evaluation.classifier import classifier_features
from pyro_vae.evaluation.grid import grid_log_likelihood
from pyro_vae.evaluation.holes import (
    code_spread,
    decile_means,
    fit_gaussian,
    hole_mass,
    kde_log_density,
    mixture_log_density,
    neighbour_distance,
    recipe_codes,
)
from pyro_vae.evaluation.latent import logdet_spread
from pyro_vae.evaluation.null import elbo_surgery, mmd_test, null_test
from pyro_vae.model import VAE

__all__ = ["code_space_measures", "FittedPrior"]


class FittedPrior(nn.Module):
    """N(mean, cov) fitted to a model's training codes, in the place of a prior: the prior an AE could
    have had, under which its decoder gets a likelihood."""

    def __init__(self, mean: np.ndarray, cov: np.ndarray):
        super().__init__()
        self.register_buffer("loc", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("cov", torch.as_tensor(cov, dtype=torch.float32))

    def forward(self) -> dist.Distribution:
        return dist.MultivariateNormal(self.loc, covariance_matrix=self.cov)


class _Fidelity:
    """Per-image fidelity of decodes, and the reconstructions' scores that normalise it."""

    def __init__(self, run, scorer, knn_k: int, spread: float):
        self.run, self.scorer, self.spread = run, scorer, spread
        self.manifold = scorer.manifold(knn_k)

    def __call__(self, codes: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(inside the real manifold (N,) bool, re-encoding error (N,) in spreads) of dec(codes)."""
        images = self.run.decode(codes)
        inside = self.manifold.inside(classifier_features(self.scorer.classifier, images))
        error = (self.run.encode(images)[0] - codes).norm(dim=1).double().numpy() / self.spread
        return inside, error


def _ratio(value, reference: float):
    """value / reference, NaN where the reference is 0 (no reconstruction was faithful: nothing to compare)."""
    return value / reference if reference > 0 else value * math.nan


def _train_codes(run, data: Data, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Posterior means and scales of n seeded training images, binarised as test images are."""
    pick = np.sort(np.random.default_rng(seed).permutation(len(data.train_x))[:n])
    x = BINARIZATIONS[run.config.binarize].test(data.train_x[pick], run.config.seed)
    means, scales = run.encode(x)
    return means.double().numpy(), scales.double().numpy()


def _log_prior(vae) -> Callable[[np.ndarray], np.ndarray]:
    def log_p(z: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return vae.prior().log_prob(torch.as_tensor(z, dtype=torch.float32)).double().numpy()
    return log_p


def code_space_measures(run, data: Data, scorer, test_codes: torch.Tensor, labels: torch.Tensor, lx: torch.Tensor,
                        settings) -> tuple[dict, dict]:
    """(metrics, arrays) of the claims' direct measures for a loaded run (see the module's notes)."""
    vae, cfg, s = run.vae, run.config, settings
    deterministic = bool(vae.encoder_guide.deterministic)
    has_prior = cfg.beta > 0  # a prior the model was trained with (beta = 0 drops its terms)
    train, train_scales = _train_codes(run, data, s.train_codes, s.seed)
    spread = code_spread(train)
    log_q = ((lambda z: kde_log_density(z, train)) if deterministic
             else (lambda z: mixture_log_density(z, train, train_scales)))
    fidelity = _Fidelity(run, scorer, s.knn_k, spread)
    metrics: dict = {"code_spread": spread}
    arrays: dict = {}

    # Reference rows: the held-out real half, and the model's reconstructions of it.
    metrics.update(scorer.score_real(s.knn_k))
    held_codes = test_codes[torch.as_tensor(scorer.held_out)]
    metrics.update(scorer.score(run.decode(held_codes), "recon", s.knn_k))
    recon_inside, recon_error = fidelity(held_codes)
    recon_precision, recon_reencode = float(recon_inside.mean()), float(recon_error.mean())
    metrics["recon_reencode"] = recon_reencode

    # Claim 1: codes by the shared recipe, inside the training codes' hull, scored against density.
    prior_sample = (lambda m, seed: run.sample_codes(m, seed).double().numpy()) if has_prior else None
    z, source, share_inside = recipe_codes(train, s.hole_codes, s.seed, prior_sample)
    inside, error = fidelity(torch.as_tensor(z, dtype=torch.float32))
    density, distance = log_q(z), neighbour_distance(train, z)
    precision_curve = _ratio(decile_means(density, inside), recon_precision)
    reencode_curve = _ratio(decile_means(density, error), recon_reencode)
    metrics.update(
        hole_precision=_ratio(float(inside.mean()), recon_precision), hole_reencode=_ratio(float(error.mean()), recon_reencode),
        hole_precision_drop=float(precision_curve[-1] - precision_curve[0]),
        hole_reencode_rise=float(reencode_curve[0] - reencode_curve[-1]),
        hole_share_inside_hull=share_inside, hole_neighbour_distance=float(np.median(distance)))
    arrays.update(hole_codes=z, hole_source=source, hole_log_density=density, hole_inside=inside,
                  hole_reencode=_ratio(error, recon_reencode), hole_distance=distance,
                  hole_decile_precision=precision_curve, hole_decile_reencode=reencode_curve)

    # Hole mass: the share of a reference density's mass where q(z) / p(z) < 0.1.
    mean, cov = fit_gaussian(train)
    rng = np.random.default_rng(s.seed + 2)
    fitted = rng.multivariate_normal(mean, cov, size=s.hole_mass_draws)
    fitted_log_p = dist.MultivariateNormal(torch.as_tensor(mean), covariance_matrix=torch.as_tensor(cov)).log_prob(
        torch.as_tensor(fitted)).numpy()
    metrics["hole_mass_fitted"] = hole_mass(log_q(fitted), fitted_log_p)
    if has_prior:
        prior_draws = run.sample_codes(s.hole_mass_draws, s.seed + 3).double().numpy()
        metrics["hole_mass_prior"] = hole_mass(log_q(prior_draws), _log_prior(vae)(prior_draws))

    # Perturbation: decode(enc(x) + eps * spread), the noise shaped like the codes' covariance.
    base = held_codes[: s.perturb_images].double()
    noise = torch.as_tensor(rng.standard_normal((len(base), train.shape[1])) @ np.linalg.cholesky(cov).T)
    eps = np.asarray(s.perturb_eps, dtype=np.float64)
    curves = [fidelity((base + e * noise).float()) for e in eps]
    base_inside, base_error = fidelity(base.float())
    perturb_precision = _ratio(np.array([c[0].mean() for c in curves]), float(base_inside.mean()))
    perturb_reencode = _ratio(np.array([c[1].mean() for c in curves]), float(base_error.mean()))
    metrics.update(perturb_precision_drop=float(1 - np.interp(1.0, eps, perturb_precision)),
                   perturb_reencode_at_1=float(np.interp(1.0, eps, perturb_reencode)))
    arrays.update(perturb_eps=eps, perturb_precision=perturb_precision, perturb_reencode=perturb_reencode)

    # Claim 2 against its null: each statistic beside simulated N(0, I) sets of the same size.
    codes = test_codes.double().numpy()
    observed, p_values, ranges = null_test(codes, s.null_draws, s.seed)
    metrics.update({f"null_p_{k}": v for k, v in p_values.items()})
    metrics["null_ranges"] = ranges  # not a metric (a dict): the null's 95% range for the report
    metrics.update(mardia_skewness=observed["mardia_skewness"], mardia_kurtosis=observed["mardia_kurtosis"])
    metrics["mmd_normal"], metrics["null_p_mmd_normal"] = mmd_test(codes, s.null_draws, s.seed, s.mmd_codes)
    if not deterministic:
        metrics.update(elbo_surgery(train, train_scales, _log_prior(vae), s.seed, s.surgery_grid))

    # Claim 3: class volumes.
    volumes = logdet_spread(codes, labels.numpy(), s.bootstrap, seed=s.seed)
    metrics.update({k: v for k, v in volumes.items() if k != "class_logdet_spread"})
    arrays["class_logdet_spread"] = np.array(volumes["class_logdet_spread"])

    # A likelihood under the prior the codes suggest (an AE's only fair one).
    if cfg.latent_dim == 2:
        fitted_vae = VAE(FittedPrior(mean, cov), vae.encoder_guide, vae.decoder, vae.likelihood, vae.beta)
        metrics["log_px_exact_fitted"] = float(grid_log_likelihood(fitted_vae, lx, tol=s.grid_tol)["log_px"].mean())
    return metrics, arrays
