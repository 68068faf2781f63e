"""Evaluate a trained run on its test split: bounds, likelihoods, latent geometry, sample quality.

Writes `RUN_DIR/evaluation.json` (flat metrics, one value each) and `RUN_DIR/evaluation.npz`
(the codes and images the report draws). Codes are posterior means, never samples.
"""

from __future__ import annotations

import hashlib
import io
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from scipy.stats import norm

from pyro_vae.data import BINARIZATIONS, Data, cache_dir
from pyro_vae.evaluation import estimators
from pyro_vae.evaluation import latent as latent_metrics
from pyro_vae.evaluation.classifier import (
    classifier_features,
    load_or_train_classifier,
    sample_quality,
)
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

    @classmethod
    def from_dict(cls, values: dict) -> "EvalSettings":
        from pyro_vae.errors import UserError

        unknown = set(values) - set(asdict(cls()))
        if unknown:
            raise UserError(f"unknown evaluation setting(s) {', '.join(sorted(unknown))}; valid: {', '.join(asdict(cls()))}")
        return cls(**values)


class Scorer:
    """A classifier trained on the real training split, and the features of the real test images."""

    def __init__(self, data: Data, dataset: str, log: Callable[[str], None]):
        fingerprint = hashlib.sha256(data.train_x[:: max(1, len(data.train_x) // 500)].numpy().tobytes()).hexdigest()[:12]
        key = f"{dataset}-{len(data.train_x)}-{fingerprint}"
        log(f"sample-quality classifier for {dataset}: loading or training (cached in {cache_dir() / 'classifiers'})")
        self.classifier, info = load_or_train_classifier(
            cache_dir() / "classifiers", key, data.train_x, data.train_y, data.test_x, data.test_y, progress=False
        )
        self.accuracy = info["test_accuracy"]
        self.real_features = classifier_features(self.classifier, data.test_x)

    def score(self, images: torch.Tensor, prefix: str) -> dict:
        q = sample_quality(self.classifier, images, self.real_features)
        return {f"{prefix}_{k}": float(q[k]) for k in ("confidence", "label_entropy", "class_coverage", "fid")}


def _pairs(labels: torch.Tensor, n: int, same: bool, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n random index pairs whose labels agree (same=True) or differ."""
    a = torch.randint(len(labels), (8 * n,), generator=gen)
    b = torch.randint(len(labels), (8 * n,), generator=gen)
    keep = ((labels[a] == labels[b]) == same) & (a != b)
    return a[keep][:n], b[keep][:n]


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
                 data: Data | None = None, log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> dict:
    """Evaluate a run (with denormals flushed, as it was trained) and write evaluation.json/.npz."""
    with flush_denormals():
        return _evaluate_run(run_dir, settings or EvalSettings(), scorer, data, log)


def _evaluate_run(run_dir: str | Path, settings: EvalSettings, scorer: Scorer | None, data: Data | None,
                  log: Callable[[str], None]) -> dict:
    started = time.perf_counter()
    run: Run = load_run(run_dir)
    cfg, vae = run.config, run.vae
    data = data or run.data()
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
        iw = estimators.importance_log_likelihood(vae, lx, num_samples=settings.num_samples, seed=settings.seed)
        result.update(log_px_is=float(iw["log_px"].mean()), pareto_k_share_above_0_7=float(iw["share_k_above_0_7"]),
                      pareto_k_median=float(np.median(np.asarray(iw["pareto_k"]))),
                      pareto_k_threshold=float(iw["k_threshold"]),
                      pareto_k_share_above_threshold=float(iw["share_k_above_threshold"]))
    if cfg.latent_dim == 2:
        grid = grid_log_likelihood(vae, lx, tol=settings.grid_tol)
        result.update(log_px_exact=float(grid["log_px"].mean()), grid_points=int(grid["grid_points"]))
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
    result.update(scorer.score(prior_images, "prior"))
    result.update(scorer.score(box_images, "box"))
    for name, same in (("mid_same", True), ("mid_diff", False)):
        a, b = _pairs(labels, settings.pairs, same, gen)
        result.update(scorer.score(run.decode((codes[a] + codes[b]) / 2), name))
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
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(run.path / EVALUATION_ARRAYS, buffer.getvalue())
    atomic_write_json(run.path / runs.EVALUATION, {"settings": asdict(settings), "metrics": result})
    log(f"evaluated {run.path} in {result['eval_seconds']:.1f} s")
    return result


def read_evaluation(run_dir: str | Path) -> dict | None:
    path = Path(run_dir) / runs.EVALUATION
    return read_json(path)["metrics"] if path.exists() else None
