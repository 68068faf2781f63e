"""Evaluate a trained run on its test split: bounds, likelihoods, latent geometry, sample quality.

Writes `RUN_DIR/evaluation.json` (flat metrics, one value each) and `RUN_DIR/evaluation.npz`
(the codes and images the report draws). Codes are posterior means; the claims of the code space
also read one posterior draw per image (evaluation/codespace.py).
"""

from __future__ import annotations

import hashlib
import io
import math
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from scipy.stats import norm

from pyro_vae import plugins
from pyro_vae.config import SEED_LIMIT, check_value
from pyro_vae.data import BINARIZATIONS, Data, cache_subdir
from pyro_vae.errors import UserError
from pyro_vae.evaluation import estimators
from pyro_vae.evaluation import latent as latent_metrics
from pyro_vae.evaluation.classifier import (
    classifier_features,
    load_or_train_classifier,
    sample_quality,
)
from pyro_vae.evaluation.codespace import code_space_measures
from pyro_vae.evaluation.fidelity import RealManifold
from pyro_vae.evaluation.grid import (
    density_grid_points,
    grid_log_likelihood,
    manifold_codes,
)
from pyro_vae.io import atomic_write_bytes, atomic_write_json, read_json, seeded
from pyro_vae.training import runs
from pyro_vae.training.numerics import flush_denormals
from pyro_vae.training.runs import Run, load_run

EVALUATION_ARRAYS = "evaluation.npz"
MANIFOLD_SIZE = 15
SHOWN_IMAGES = 64
RECONSTRUCTED = 12
PRIOR_GRID = 120


@dataclass
class EvalSettings:
    num_samples: int = 1000  # importance samples per image (K)
    likelihood_images: int | None = None  # evaluate log p(x) on the first N test images (None: all)
    grid_tol: float = 0.01  # nats; the exact 2-D quadrature refines until it moves less than this
    generated: int = 2000  # images decoded from random codes for each sample-quality score
    pairs: int = 1000  # same-class and different-class pairs for midpoint decodes
    seed: int = 0
    # The code-space measures of evaluation/codespace.py (holes, the N(0, I) null, class volumes).
    knn_k: int = 3  # neighbours whose ball makes the real images' manifold (k-NN precision)
    train_codes: int | None = None  # training images encoded (None: all): hull, distances, hole mass, aggregate posterior
    hole_codes: int = 4000  # codes drawn by the shared recipe and decoded (a tenth of them in each distance band)
    hole_mass_draws: int = 20000  # draws from the fitted Gaussian (and the prior) inside the hull, for the hole mass
    perturb_images: int = 250  # test images whose codes are perturbed
    perturb_eps: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 1.0, 1.5, 2.0])  # in code spreads
    null_draws: int = 200  # simulated N(0, I) code sets per null test
    mmd_codes: int = 500  # codes in the MMD test against N(0, I)
    bootstrap: int = 50  # resamples of the whole class-volume recipe (subsample and MCD refit) for its interval
    kl_grid_cells: int = 4096  # most cells along an axis of the 2-D grid of KL(q(z) || p(z)); unconverged: refused

    def __post_init__(self):
        # Checked when made (from flags or a study's [evaluation] table), never after the training.
        for name, (kind, low, high) in _SETTINGS.items():
            check_value(f"evaluation setting {name}", getattr(self, name), kind, low, high, optional=name in _SETTING_OPTIONAL)
        eps = self.perturb_eps
        if eps != sorted(set(eps)) or not eps[0] <= 1 <= eps[-1]:
            raise UserError(f"evaluation setting perturb_eps must be rising sizes, each once, from 1 or less to 1 or more "
                            f"(its measures are read at 1 code spread), got {eps!r}")

    @classmethod
    def from_dict(cls, values: dict) -> "EvalSettings":
        unknown = set(values) - set(f.name for f in fields(cls))
        if unknown:
            raise UserError(f"unknown evaluation setting(s) {', '.join(sorted(unknown))}; "
                            f"valid: {', '.join(f.name for f in fields(cls))}")
        return cls(**values)

    def check_test_images(self, count: int, where: str) -> None:
        """Refuse settings that `count` test images cannot serve (before any slow work): the k-NN manifold
        is built on half of them and needs more than knn_k."""
        if count // 2 <= self.knn_k:
            raise UserError(f"{where} has {count} test images, too few for evaluation setting knn_k = {self.knn_k} "
                            f"(the k-NN manifold is built on half the test images and needs {2 * self.knn_k + 2} or more); "
                            f"lower knn_k or use more test images")


KNN_K_MAX = 100  # a sane k for k-NN precision (Kynkäänniemi et al. use 3): beyond it every ball covers the manifold
# (type, lowest, highest) of each setting (None: unbounded); `generated` needs two images for a covariance (FID),
# kl_grid_cells two grids, the second of at least 129 cells.
_SETTINGS = {"num_samples": (int, 1, None), "likelihood_images": (int, 1, None), "grid_tol": (float, 1e-12, None),
             "generated": (int, 2, None), "pairs": (int, 1, None), "seed": (int, 0, SEED_LIMIT - 1),
             "knn_k": (int, 1, KNN_K_MAX), "train_codes": (int, 10, None), "hole_codes": (int, 10, None),
             "hole_mass_draws": (int, 1, None), "perturb_images": (int, 1, None), "perturb_eps": (list, 0, None),
             "null_draws": (int, 20, None), "mmd_codes": (int, 2, None), "bootstrap": (int, 1, None),
             "kl_grid_cells": (int, 129, None)}
_SETTING_OPTIONAL = {"likelihood_images", "train_codes"}  # None: all images
assert set(_SETTINGS) == {f.name for f in fields(EvalSettings)}, "every evaluation setting is declared"


class Scorer:
    """A classifier trained on the real training split, and the features of the real test images."""

    def __init__(self, data: Data, dataset: str, log: Callable[[str], None]):
        fingerprint = hashlib.sha256(data.train_x[:: max(1, len(data.train_x) // 500)].numpy().tobytes()).hexdigest()[:12]
        key = f"{dataset}-{len(data.train_x)}-{fingerprint}"
        folder = cache_subdir("classifiers")
        log(f"sample-quality classifier for {dataset}: loading or training (cached in {folder})")
        self.classifier, info = load_or_train_classifier(
            folder, key, data.train_x, data.train_y, data.test_x, data.test_y, progress=False
        )
        self.accuracy = info["test_accuracy"]
        self.real_features = classifier_features(self.classifier, data.test_x)
        # Two fixed halves of the test images: k-NN precision's real manifold, and the real images
        # scored against it (the real-vs-real reference row).
        order = np.random.default_rng(0).permutation(len(data.test_x))
        self.reference, self.held_out = np.sort(order[: len(order) // 2]), np.sort(order[len(order) // 2 :])
        self.held_out_images = data.test_x[self.held_out]
        self._manifolds: dict[int, RealManifold] = {}

    def manifold(self, k: int) -> RealManifold:
        if k not in self._manifolds:
            self._manifolds[k] = RealManifold(self.real_features[self.reference], k)
        return self._manifolds[k]

    def score(self, images: torch.Tensor, prefix: str, knn_k: int, real_features: np.ndarray | None = None) -> dict:
        reference = self.real_features if real_features is None else real_features
        q = sample_quality(self.classifier, images, reference, manifold=self.manifold(knn_k))
        return {f"{prefix}_{k}": float(q[k]) for k in ("confidence", "label_entropy", "class_coverage", "fid", "precision")}

    def score_real(self, knn_k: int) -> dict:
        """The held-out real half scored like samples, against the other half: the reference row."""
        return self.score(self.held_out_images, "real", knn_k, self.real_features[self.reference])


def _pairs(labels: torch.Tensor, n: int, same: bool, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n random index pairs (a != b) whose labels agree (same=True) or differ: drawn in rounds until
    n are found (one round of 8n draws finds only about 0.8n same-class pairs among ten classes)."""
    counts = torch.bincount(labels)
    if not ((counts > 1).any() if same else (counts > 0).sum() > 1):
        raise ValueError(f"no {'same' if same else 'different'}-class pairs among labels {counts.tolist()}")
    found_a, found_b, count = [], [], 0
    while not found_a or count < n:
        a = torch.randint(len(labels), (8 * n,), generator=gen)
        b = torch.randint(len(labels), (8 * n,), generator=gen)
        keep = ((labels[a] == labels[b]) == same) & (a != b)
        found_a.append(a[keep])
        found_b.append(b[keep])
        count += int(keep.sum())
    return torch.cat(found_a)[:n], torch.cat(found_b)[:n]


def _box_codes(codes: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """Uniform draws over the box the codes occupy: how one samples a plain AE."""
    low, high = codes.min(0).values, codes.max(0).values
    return low + (high - low) * torch.rand(n, codes.shape[1], generator=gen)


def manifold_axis(codes: torch.Tensor, deterministic: bool) -> np.ndarray:
    """Grid values per axis: normal quantiles for a probabilistic code, the codes' range otherwise."""
    if deterministic:
        low, high = np.percentile(codes.numpy(), [1, 99])
        return np.linspace(low, high, MANIFOLD_SIZE)
    return norm.ppf(np.linspace(0.03, 0.97, MANIFOLD_SIZE))


def evaluate_run(run_dir: str | Path, settings: EvalSettings | None = None, scorer: Scorer | None = None,
                 data: Data | None = None, log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
                 announce: Callable[[Run, EvalSettings], None] | None = None) -> dict:
    """Evaluate a run (with denormals flushed, as it was trained) and write evaluation.json/.npz.

    The run folder is locked meanwhile (a read-only one is refused before the work), and the data
    must be what config.json says the run was trained on."""
    with runs.locked(run_dir, create=False), flush_denormals():
        started = time.perf_counter()
        run = load_run(run_dir)
        with plugins.blamed(run.config, in_plugin_code=True):  # a plugin's fault: one line naming it
            return _evaluate_run(run, settings or EvalSettings(), scorer, data, log, started, announce)


def paced(log: Callable[[str], None], what: str, total: int, every: float = 30.0) -> Callable[[int], None]:
    """A progress callback for long loops: given the items done, logs a line with the time left at most
    every `every` seconds (none for work that ends sooner)."""
    started = last = time.perf_counter()

    def progress(done: int) -> None:
        nonlocal last
        now = time.perf_counter()
        if now - last < every or done >= total:
            return
        last = now
        left = (now - started) / done * (total - done)
        log(f"{what}: {done:,}/{total:,} images, about {left / 60:.1f} min left")

    return progress


def _evaluate_run(run: Run, settings: EvalSettings, scorer: Scorer | None, data: Data | None,
                  log: Callable[[str], None], started: float, announce=None) -> dict:
    cfg, vae = run.config, run.vae
    data = data or run.data()
    runs.check_data(run.path, run.record, data.provenance)
    settings.check_test_images(len(data.test_x), str(run.path))  # before the classifier and every slow part
    if announce is not None:  # what is about to run, once the run and its data are known to be sound
        announce(run, settings)
    scorer = scorer or Scorer(data, cfg.dataset, log)
    x = BINARIZATIONS[cfg.binarize].test(data.test_x, cfg.seed)
    labels = data.test_y
    gen = torch.Generator().manual_seed(settings.seed)
    deterministic = bool(vae.encoder_guide.deterministic)

    codes, scales = run.encode(x)
    with torch.no_grad():
        logits = torch.cat([vae.decoder(codes[i : i + 2000]) for i in range(0, len(codes), 2000)])
        recon_bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="sum") / len(x)
    result: dict = {"run": str(run.path), "epochs_trained": run.epoch, "deterministic_guide": deterministic,
                    "recon_bce": float(recon_bce), "classifier_accuracy": scorer.accuracy}
    result.update(latent_metrics.latent_metrics(codes.numpy(), labels.numpy()))

    lx = x[: settings.likelihood_images]
    if not deterministic:
        result["test_elbo"] = float(estimators.elbo_per_image(vae, lx, seed=settings.seed).mean())
        iw = estimators.importance_log_likelihood(vae, lx, num_samples=settings.num_samples, seed=settings.seed,
                                                  progress=paced(log, f"importance sampling (K = {settings.num_samples})", len(lx)))
        result.update(log_px_is=float(iw["log_px"].mean()), pareto_k_share_above_0_7=float(iw["share_k_above_0_7"]),
                      pareto_k_median=float(np.median(np.asarray(iw["pareto_k"]))),
                      pareto_k_threshold=float(iw["k_threshold"]),
                      pareto_k_share_above_threshold=float(iw["share_k_above_threshold"]))
    if cfg.latent_dim == 2:
        grid = grid_log_likelihood(vae, lx, tol=settings.grid_tol)
        # An unconverged quadrature is refused: its number would be reported as exact.
        result.update(log_px_exact=float(grid["log_px"].mean()) if grid["converged"] else math.nan,
                      grid_points=int(grid["grid_points"]), log_px_grid_converged=bool(grid["converged"]))
        if not grid["converged"]:
            log(f"{run.path}: the exact 2-D log p(x) grid did not converge to {settings.grid_tol:g} nats; "
                "log p(x) exact is left out (NaN)")
        if "test_elbo" in result:
            result["gap_exact_minus_elbo"] = result["log_px_exact"] - result["test_elbo"]
            result["gap_exact_minus_is"] = result["log_px_exact"] - result["log_px_is"]
    else:
        result.update({f"active_units_{k}" if not k.startswith("active") else k: v
                       for k, v in estimators.active_units(vae, x).items() if np.isscalar(v)})

    # Sample quality: prior draws, uniform draws over the code box, midpoints of encoded pairs.
    with seeded(settings.seed):
        prior_codes = vae.sample_prior(settings.generated)
    box_codes = _box_codes(codes, settings.generated, gen)
    prior_images, box_images = run.decode(prior_codes), run.decode(box_codes)
    result.update(scorer.score(prior_images, "prior", settings.knn_k))
    result.update(scorer.score(box_images, "box", settings.knn_k))
    for name, same in (("mid_same", True), ("mid_diff", False)):
        a, b = _pairs(labels, settings.pairs, same, gen)
        result.update(scorer.score(run.decode((codes[a] + codes[b]) / 2), name, settings.knn_k))
    # FID grows as images blur and as fewer are scored: midpoints against as many reconstructions of
    # held-out images, so the ratio says what the midpoints lose beyond the model's own blur.
    held = torch.as_tensor(scorer.held_out[: settings.pairs])
    if len(held) < settings.pairs:  # a small test set: say so rather than compare unequal counts
        log(f"{run.path}: {len(held)} held-out images for {settings.pairs} midpoint pairs; the midpoint FID ratio "
            "compares unequal counts (set [evaluation] pairs to at most half the test images)")
    recon_fid = scorer.score(run.decode(codes[held]), "recon_pairs", settings.knn_k)["recon_pairs_fid"]
    for name in ("mid_same", "mid_diff"):
        result[f"{name}_fid_ratio"] = result[f"{name}_fid"] / recon_fid if recon_fid > 0 else math.nan
    measures, measure_arrays = code_space_measures(run, data, scorer, codes, labels, lx, settings, test_x=x, log=log)
    result.update(measures)
    result["eval_seconds"] = time.perf_counter() - started

    axis = manifold_axis(codes, deterministic)
    arrays = {
        "codes": codes.numpy(), "scales": scales.numpy(), "labels": labels.numpy(),
        "prior_images": prior_images[:SHOWN_IMAGES].numpy(), "box_images": box_images[:SHOWN_IMAGES].numpy(),
        "originals": x[:RECONSTRUCTED].numpy(), "reconstructions": torch.sigmoid(logits[:RECONSTRUCTED]).numpy(),
    }
    if cfg.latent_dim == 2:
        grid_codes = torch.as_tensor(manifold_codes(axis), dtype=torch.float32)
        arrays.update(manifold=run.decode(grid_codes).numpy(), manifold_axis=axis)
        # The prior's density under the codes (flat for the standard normal, learned for others).
        reach = float(max(np.abs(codes.numpy()).max(), 3.5)) * 1.1
        extent = (-reach, reach, -reach, reach)
        points = torch.as_tensor(density_grid_points(extent, PRIOR_GRID), dtype=torch.float32)
        with torch.no_grad():
            log_density = vae.prior().log_prob(points).reshape(PRIOR_GRID, PRIOR_GRID)
        arrays.update(prior_log_density=log_density.numpy(), prior_extent=np.array(extent))
    arrays.update(measure_arrays)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(run.path / EVALUATION_ARRAYS, buffer.getvalue())
    atomic_write_json(run.path / runs.EVALUATION, {"settings": asdict(settings), "metrics": result})
    log(f"evaluated {run.path} in {result['eval_seconds']:.1f} s")
    return result


def read_evaluation(run_dir: str | Path) -> dict | None:
    path = Path(run_dir) / runs.EVALUATION
    if not path.exists():
        return None
    fix = f"it is damaged: delete it and run `pyro-vae evaluate {run_dir}` (or `pyro-vae report`) to evaluate again"
    record = read_json(path, damaged=fix)
    if not isinstance(record, dict) or not isinstance(record.get("metrics"), dict):
        raise UserError(f"{path} lacks its metrics; {fix}")
    return record["metrics"]
