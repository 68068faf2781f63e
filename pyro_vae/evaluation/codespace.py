"""A run's code space measured claim by claim: holes (claim 1), the aggregate posterior and the
N(0, I) null (claim 2), class volumes (claim 3), and a likelihood under a prior fitted to the codes.

:func:`code_space_measures` returns (metrics, arrays): flat numbers for evaluation.json (their rows
are in evaluation/metrics.py), tables that are not single numbers (``null_ranges``, ``convergence``)
and arrays for evaluation.npz that a report plots. Every model is measured by the same recipe,
estimators and sizes (EvalSettings), with its own seeded streams, so adding these measures changes
none of the evaluation's other numbers.

The training codes are one draw of q(z|x) per training image (evaluation/holes.py says why); the
aggregate posterior's divergence uses every training image's posterior (evaluation/aggregate.py).
Each number that depends on the count of training codes is also computed on nested subsets of
CONVERGENCE_SIZES codes, for the report's convergence tables.

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
from pyro_vae.evaluation.aggregate import aggregate_kl
from pyro_vae.evaluation.classifier import classifier_features
from pyro_vae.evaluation.grid import grid_log_likelihood
from pyro_vae.evaluation.holes import (
    CONVERGENCE_SIZES,
    CodeIndex,
    Hull,
    band_means,
    code_spread,
    fit_gaussian,
    hole_mass,
    nested_subsets,
    recipe_codes,
)
from pyro_vae.evaluation.latent import logdet_spread
from pyro_vae.evaluation.null import mmd_test, null_test
from pyro_vae.model import VAE

__all__ = ["code_space_measures", "FittedPrior", "DISTANCE_BANDS"]

DISTANCE_BANDS = 10  # recipe codes split into tenths by distance to the nearest training code

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
        if not len(codes):  # no recipe code fell inside a thin hull
            return np.zeros(0, dtype=bool), np.zeros(0)
        images = self.run.decode(codes)
        inside = self.manifold.inside(classifier_features(self.scorer.classifier, images))
        error = (self.run.encode(images)[0] - codes).norm(dim=1).double().numpy() / self.spread
        return inside, error


def _ratio(value, reference: float):
    """value / reference, NaN where the reference is 0 (no reconstruction was faithful: nothing to compare)."""
    return value / reference if reference > 0 else value * math.nan


def _train_codes(run, data: Data, n: int | None, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(posterior means, scales, one posterior draw each) of the training images (n seeded ones, or
    all), binarised as test images are."""
    pick = (np.arange(len(data.train_x)) if n is None or n >= len(data.train_x)
            else np.sort(np.random.default_rng(seed).permutation(len(data.train_x))[:n]))
    x = BINARIZATIONS[run.config.binarize].test(data.train_x[pick], run.config.seed)
    means, scales = run.encode(x)
    drawn = run.sample_posterior(x, seed + 5)
    return means.double().numpy(), scales.double().numpy(), drawn.double().numpy()


def _log_prior(vae) -> Callable[[np.ndarray], np.ndarray]:
    def log_p(z: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return vae.prior().log_prob(torch.as_tensor(z, dtype=torch.float32)).double().numpy()
    return log_p


def _log_gaussian(mean: np.ndarray, cov: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    normal = dist.MultivariateNormal(torch.as_tensor(mean), covariance_matrix=torch.as_tensor(cov))
    return lambda z: normal.log_prob(torch.as_tensor(np.asarray(z, dtype=np.float64))).numpy()


def _fitted_draws(codes: np.ndarray, seed: int) -> tuple[Callable[[int], np.ndarray], Callable[[np.ndarray], np.ndarray]]:
    """Seeded draws from, and the log density of, the Gaussian fitted to the codes (the same standard
    normal numbers for every fit: the convergence table changes one thing at a time)."""
    mean, cov = fit_gaussian(codes)
    cov = cov + 1e-12 * np.eye(len(mean))  # codes on a line still get a density (the hull handles them too)
    chol = np.linalg.cholesky(cov)
    return (lambda m: mean + np.random.default_rng(seed).standard_normal((m, len(mean))) @ chol.T), _log_gaussian(mean, cov)


def _null_metrics(codes: np.ndarray, prefix: str, s) -> tuple[dict, dict]:
    """The N(0, I) null tests of one set of test codes: (metrics, null ranges), keys prefixed."""
    observed, p_values, ranges = null_test(codes, s.null_draws, s.seed)
    metrics = {f"null_p_{prefix}{k}": v for k, v in p_values.items()}
    metrics.update({f"{prefix}{k}": v for k, v in observed.items()})
    metrics[f"{prefix}mmd_normal"], metrics[f"null_p_{prefix}mmd_normal"] = mmd_test(codes, s.null_draws, s.seed, s.mmd_codes)
    return metrics, {f"{prefix}{k}": v for k, v in ranges.items()}


def min_train_codes(latent_dim: int) -> int:
    """Training codes the measures built on them need: a full-rank covariance (more than d + 1 codes) and
    a hull with room inside (at least 10, the least train_codes setting)."""
    return max(10, latent_dim + 2)


def code_space_measures(run, data: Data, scorer, test_codes: torch.Tensor, labels: torch.Tensor, lx: torch.Tensor,
                        settings, test_x: torch.Tensor | None = None, log: Callable[[str], None] = lambda m: None
                        ) -> tuple[dict, dict]:
    """(metrics, arrays) of the claims' direct measures for a loaded run (see the module's notes). With
    fewer training images than :func:`min_train_codes`, the measures built on training codes are left
    out and ``code_space_skipped`` says why; the test codes' measures are still made."""
    s = settings
    metrics: dict = {}
    arrays: dict = {}
    # Reference rows: the held-out real half, and the model's reconstructions of it.
    metrics.update(scorer.score_real(s.knn_k))
    held_codes = test_codes[torch.as_tensor(scorer.held_out)]
    metrics.update(scorer.score(run.decode(held_codes), "recon", s.knn_k))
    count, need = min(len(data.train_x), s.train_codes or len(data.train_x)), min_train_codes(run.config.latent_dim)
    if count >= need:
        convergence = _train_code_measures(run, data, scorer, held_codes, lx, s, metrics, arrays)
    else:
        convergence = {}
        metrics["code_space_skipped"] = (
            f"{count} training code(s), fewer than the {need} that the hull, distance, hole, perturbation and "
            f"aggregate-posterior measures need in {run.config.latent_dim}-D; they are left out")
        log(f"{run.path}: {metrics['code_space_skipped']}")

    # Claim 2 against its null: posterior means, and one posterior draw per test image (q(z)'s own sample).
    codes = test_codes.double().numpy()
    found, ranges = _null_metrics(codes, "", s)
    metrics.update({k: v for k, v in found.items() if k.startswith("null_p_") or k in ("mardia_skewness", "mardia_kurtosis", "mmd_normal")})
    if test_x is not None:
        sampled = run.sample_posterior(test_x, s.seed + 7).double().numpy()
        found_sampled, ranges_sampled = _null_metrics(sampled, "sampled_", s)
        metrics.update(found_sampled)
        ranges.update(ranges_sampled)
        arrays["sampled_codes"] = sampled
    metrics["null_ranges"] = ranges  # not a metric (a dict): the null's 95% range for the report

    # Claim 3: class volumes.
    volumes = logdet_spread(codes, labels.numpy(), s.bootstrap, seed=s.seed)
    metrics.update({k: v for k, v in volumes.items() if k != "class_logdet_spread"})
    arrays["class_logdet_spread"] = np.array(volumes["class_logdet_spread"])
    metrics["convergence"] = convergence  # not a metric (a dict): value at each count of training codes
    return metrics, arrays


def _train_code_measures(run, data: Data, scorer, held_codes: torch.Tensor, lx: torch.Tensor, s,
                         metrics: dict, arrays: dict) -> dict[str, dict[str, float]]:
    """The measures built on the training codes, added to `metrics` and `arrays`; returns the convergence table."""
    vae, cfg = run.vae, run.config
    deterministic = bool(vae.encoder_guide.deterministic)
    has_prior = cfg.beta > 0  # a prior the model was trained with (beta = 0 drops its terms)
    means, scales, seen = _train_codes(run, data, s.train_codes, s.seed)
    spread = code_spread(seen)
    index, hull = CodeIndex(seen), Hull(seen, seed=s.seed)
    subsets = nested_subsets(len(seen), CONVERGENCE_SIZES, s.seed + 4)
    fidelity = _Fidelity(run, scorer, s.knn_k, spread)
    metrics.update(code_spread=spread, train_codes_used=len(seen), code_spacing=index.spacing / spread)
    convergence: dict[str, dict[str, float]] = {}
    recon_inside, recon_error = fidelity(held_codes)
    recon_precision, recon_reencode = float(recon_inside.mean()), float(recon_error.mean())
    metrics["recon_reencode"] = recon_reencode

    # Claim 1: codes by the shared recipe inside the hull, their decodes' fidelity against their distance
    # to the nearest training code: the farthest tenth against the nearest.
    prior_sample = (lambda m, seed: run.sample_codes(m, seed).double().numpy()) if has_prior else None
    z, source, share_inside = recipe_codes(seen, s.hole_codes, s.seed, prior_sample, hull=hull)
    inside, error = fidelity(torch.as_tensor(z, dtype=torch.float32))

    def contrasts(distance: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
        precision = _ratio(band_means(distance, inside, DISTANCE_BANDS), recon_precision)
        reencode = _ratio(band_means(distance, error, DISTANCE_BANDS), recon_reencode)
        return precision, reencode, {"far_precision_drop": float(precision[0] - precision[-1]),
                                     "far_reencode_rise": float(reencode[-1] - reencode[0])}

    distance = index.distance(z)
    precision_bands, reencode_bands, far = contrasts(distance)
    bands = band_means(distance, distance, DISTANCE_BANDS)
    metrics.update(far, hole_precision=_ratio(float(inside.mean()), recon_precision),
                   hole_reencode=_ratio(float(error.mean()), recon_reencode), hole_share_inside_hull=share_inside,
                   hole_neighbour_distance=float(np.median(distance)), far_band_distance=float(bands[-1]),
                   near_band_distance=float(bands[0]))
    for n, pick in subsets.items():
        for key, value in contrasts(CodeIndex(seen[pick]).distance(z))[2].items():
            convergence.setdefault(key, {})[str(n)] = value
    arrays.update(hole_codes=z, hole_source=source, hole_inside=inside, hole_reencode=_ratio(error, recon_reencode),
                  hole_distance=distance, hole_band_precision=precision_bands, hole_band_reencode=reencode_bands,
                  hole_band_distance=bands)

    # Hole mass: the share of a reference density's draws (inside the hull) that the void test finds empty,
    # the reference being the Gaussian fitted to the codes, and the prior where the model has one.
    references = {"fitted": lambda codes: _fitted_draws(codes, s.seed + 2)}
    if has_prior:
        prior_draw = lambda m: run.sample_codes(m, s.seed + 3).double().numpy()
        references["prior"] = lambda codes: (prior_draw, _log_prior(vae))
    for name, reference in references.items():
        for n, pick in subsets.items():
            full = n == len(seen)
            found = hole_mass(seen[pick], *reference(seen[pick]), s.hole_mass_draws,
                              index if full else None, hull if full else None)
            convergence.setdefault(f"hole_mass_{name}", {})[str(n)] = found["mass"]
            if full:
                metrics[f"hole_mass_{name}"], metrics[f"hole_resolution_{name}"] = found["mass"], found["resolution"]

    # Perturbation: decode(enc(x) + eps * spread), the noise shaped like the codes' covariance.
    rng = np.random.default_rng(s.seed + 2)
    cov = fit_gaussian(seen)[1]
    base = held_codes[: s.perturb_images].double()
    noise = torch.as_tensor(rng.standard_normal((len(base), seen.shape[1])) @ np.linalg.cholesky(cov + 1e-12 * np.eye(len(cov))).T)
    eps = np.asarray(s.perturb_eps, dtype=np.float64)
    curves = [fidelity((base + e * noise).float()) for e in eps]
    base_inside, base_error = fidelity(base.float())
    perturb_precision = _ratio(np.array([c[0].mean() for c in curves]), float(base_inside.mean()))
    perturb_reencode = _ratio(np.array([c[1].mean() for c in curves]), float(base_error.mean()))
    metrics.update(perturb_precision_drop=float(1 - np.interp(1.0, eps, perturb_precision)),
                   perturb_reencode_at_1=float(np.interp(1.0, eps, perturb_reencode)))
    arrays.update(perturb_eps=eps, perturb_precision=perturb_precision, perturb_reencode=perturb_reencode)

    # Claim 2: the aggregate posterior against the prior (every training posterior, and nested subsets of
    # them for the convergence table), with its floor: the same estimator on a hole-free mixture of as
    # many posteriors of the same scales whose aggregate is exactly N(0, I).
    if not deterministic:
        log_prior = _log_prior(vae)
        for n, pick in subsets.items():
            found = aggregate_kl(means[pick], scales[pick], log_prior, max_cells=s.kl_grid_cells, seed=s.seed)
            convergence.setdefault("aggregate_kl", {})[str(n)] = found["aggregate_kl"]
            if n == len(means):
                metrics.update({k: v for k, v in found.items() if k != "refused"})
                if "refused" in found:
                    metrics["aggregate_kl_refused"] = found["refused"]  # not a metric: the report's note
        narrow = np.minimum(scales, 0.99)  # a posterior as wide as the prior cannot be part of an N(0, I) mixture
        ideal = np.random.default_rng(s.seed + 6).standard_normal(means.shape) * np.sqrt(1 - narrow**2)
        standard = lambda z: -0.5 * (z**2).sum(1) - 0.5 * z.shape[1] * math.log(2 * math.pi)
        metrics["aggregate_kl_floor"] = aggregate_kl(ideal, narrow, standard, max_cells=s.kl_grid_cells,
                                                     seed=s.seed)["aggregate_kl"]

    # A likelihood under the prior the codes suggest (an AE's only fair one).
    if cfg.latent_dim == 2:
        mean, cov = fit_gaussian(seen)
        fitted_vae = VAE(FittedPrior(mean, cov), vae.encoder_guide, vae.decoder, vae.likelihood, vae.beta)
        grid = grid_log_likelihood(fitted_vae, lx, tol=s.grid_tol)
        metrics["log_px_exact_fitted"] = float(grid["log_px"].mean()) if grid["converged"] else math.nan
    return convergence
