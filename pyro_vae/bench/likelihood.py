"""Item 3: log p(x) of the test images by importance sampling and by the exact 2-D grid, and the
floor the decoder's arithmetic sets for importance sampling."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from pyro_vae.bench.options import VARIANTS, Options
from pyro_vae.bench.targets import (
    FULL_TEST,
    TARGET_GRID_SECONDS,
    TARGET_IS_OVER_FLOOR,
    TARGET_IS_OVER_GRID,
)
from pyro_vae.bench.throughput import train_config
from pyro_vae.bench.timers import project_epochs, repeat, summary, timed
from pyro_vae.data import BINARIZATIONS, load_data
from pyro_vae.evaluation import estimators
from pyro_vae.io import seeded
from pyro_vae.training.runs import load_run
from pyro_vae.training.trainer import Trainer


def decoder_floor(vae, x, num_samples: int, device, budget_codes: int = 200_000, chunk_bytes: int = 4 * 2**20) -> dict:
    """The arithmetic importance sampling cannot avoid: decode N*K codes and score each against its image.

    Times, on up to `budget_codes` codes in cache-sized chunks (`chunk_bytes` of logits, as the
    estimator's), (a) the decoder alone and (b) the decoder plus the exact Bernoulli log-likelihood
    x.l - sum softplus(l) (the estimator's own formula where it has one), best of two passes, and
    scales to N*K codes. Also counts the decoder's matmul FLOPs (MLP decoders).
    """
    n = len(x)
    images = max(1, min(n, budget_codes // num_samples))
    chunk_codes = max(1, chunk_bytes // (x.shape[1] * x.element_size()))
    per_image = max(1, min(num_samples, chunk_codes))  # codes of one image per chunk
    per_chunk_images = max(1, chunk_codes // per_image)
    loglik = getattr(estimators, "_loglik_fn", None)
    score = loglik(vae) if loglik is not None else (
        lambda xb, logits: (logits * xb).sum(-1) - torch.nn.functional.softplus(logits).sum(-1))
    z_dim = vae.prior().event_shape[0]
    xs = x[:images].to(device)
    codes = images * num_samples
    with torch.no_grad(), seeded(0, torch.device(device)):
        work = []
        for i in range(0, images, per_chunk_images):
            xb = xs[i : i + per_chunk_images]
            for k in range(0, num_samples, per_image):
                work.append((xb, torch.randn(min(per_image, num_samples - k), len(xb), z_dim, device=device)))

        def decode_only():
            for _, z in work:
                vae.decoder(z)

        def decode_and_score():
            for xb, z in work:
                score(xb, vae.decoder(z))

        dec_s = min(timed(decode_only, device)[0] for _ in range(2))
        full_s = min(timed(decode_and_score, device)[0] for _ in range(2))
    scale = n * num_samples / codes
    flops = None
    linears = [m for m in vae.decoder.modules() if isinstance(m, torch.nn.Linear)]
    others = [m for m in vae.decoder.modules() if not isinstance(m, torch.nn.Linear) and getattr(m, "weight", None) is not None]
    if linears and not others:
        flops = 2 * sum(m.in_features * m.out_features for m in linears) * n * num_samples
    return {
        "codes_timed": codes, "codes_total": n * num_samples, "chunk_codes": per_image * per_chunk_images,
        "decoder_seconds": dec_s * scale, "decoder_and_loglik_seconds": full_s * scale,
        "decoder_matmul_flops": flops,
        "decoder_gflops_per_second": (flops / (dec_s * scale) / 1e9) if flops else None,
    }


def bench_eval(opts: Options, vae, test_obs, source: str, log: Callable[[str], None]) -> dict:
    device = next(vae.parameters()).device
    x = test_obs[: opts.eval_images].to(device)
    vae.eval()
    full = len(x) >= FULL_TEST
    out: dict = {"images": len(x), "num_samples": opts.num_samples, "model": source, "targets_apply": full}
    if not getattr(vae.encoder_guide, "deterministic", False):
        out["importance"], out["floor"] = _importance(opts, vae, x, device, log)
    if vae.prior().event_shape == torch.Size([2]):
        out["grid"] = grid = _grid(opts, vae, x, device, log, full)
        if "importance" in out:
            speedup = out["importance"]["median"] / grid["median"]
            out["is_over_grid"] = {"ratio": speedup, "target": TARGET_IS_OVER_GRID, "met": speedup >= TARGET_IS_OVER_GRID if full else None,
                                   "sampling_ratio": out["importance"]["sampling"]["median"] / grid["median"]}
            out["is_minus_grid_nats"] = out["importance"]["mean_log_px"] - grid["mean_log_px"]
    return out


def _importance(opts: Options, vae, x, device, log) -> tuple[dict, dict]:
    results = []

    def estimate():
        results.append(estimators.importance_log_likelihood(vae, x, num_samples=opts.num_samples, seed=0))
        return results[-1]

    times, result = repeat(estimate, device, opts.eval_repeats, log,
                           f"bench eval: importance sampling, K={opts.num_samples}, {len(x)} images")
    # The estimator reports its sampling and PSIS parts; the bench's clock gives the total.
    sampling = [r.get("seconds", t) for r, t in zip(results, times)]
    imp = dict(summary(times), mean_log_px=float(result["log_px"].mean()),
               share_k_above_0_7=float(result.get("share_k_above_0_7", float("nan"))),
               sampling=summary(sampling), psis=summary([r.get("psis_seconds", 0.0) for r in results]))
    log("bench eval: decoder floor for importance sampling")
    floor = decoder_floor(vae, x, opts.num_samples, device)
    imp["sampling_over_floor"] = imp["sampling"]["median"] / floor["decoder_and_loglik_seconds"]
    imp["target_over_floor"] = TARGET_IS_OVER_FLOOR
    imp["met"] = imp["sampling_over_floor"] <= TARGET_IS_OVER_FLOOR
    return imp, floor


def _grid(opts: Options, vae, x, device, log, full: bool) -> dict:
    times, result = repeat(lambda: estimators.grid_log_likelihood(vae, x, tol=0.01), device, opts.repeats, log,
                           f"bench eval: 2-D grid log-likelihood, {len(x)} images")
    grid = dict(summary(times), mean_log_px=float(result["log_px"].mean()), grid_points=int(result["grid_points"]),
                converged=bool(result.get("converged", True)), target_seconds=TARGET_GRID_SECONDS)
    grid["met"] = grid["median"] <= TARGET_GRID_SECONDS if full else None
    return grid


def eval_model(opts: Options, trainer: Trainer | None, log: Callable[[str], None]):
    """(vae, binarised test images, description) to evaluate: --run, the bench's VAE, or a fresh one."""
    if opts.run_dir:
        run = load_run(opts.run_dir, device=opts.device)
        cfg = run.config
        cfg.test_limit = opts.eval_images
        cfg.train_limit = 1
        data = load_data(cfg)
        obs = BINARIZATIONS[cfg.binarize].test(data.test_x.to(opts.device), cfg.seed)
        return run.vae, obs, f"run {opts.run_dir} (epoch {run.epoch})"
    if trainer is None:
        cfg = train_config(opts, VARIANTS["vae"], opts.train_images or 60000)
        cfg.test_limit = opts.eval_images
        trainer = Trainer(cfg, Path("<bench eval>"), load_data(cfg), log=log)
        project_epochs(trainer, 3)
    return trainer.vae, trainer.test_obs, f"the bench's default VAE after {trainer.epoch} epochs on {len(trainer.train_x)} images"
