"""Items 1 and 2: the project's training epoch against the plain-PyTorch reference, and the share
of the epoch spent getting batches.

After one warm-up epoch each (its time is kept: it holds the compile), project and reference epochs
alternate (P R, R P, ...) so that a slow spell on a shared machine hits both; the ratio is the
median project epoch over the median reference epoch, its spread the range of the pairwise ratios.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from pyro_vae.bench.batching import batching_epoch, dataloader_epoch
from pyro_vae.bench.options import VARIANTS, Options, Variant
from pyro_vae.bench.reference import Reference
from pyro_vae.bench.targets import RATIO_TARGETS, TARGET_BATCHING_SHARE
from pyro_vae.bench.timers import project_epochs, summary, timed
from pyro_vae.config import TrainConfig
from pyro_vae.training.numerics import flush_denormals
from pyro_vae.training.trainer import Trainer

REPORTED_CONFIG = ("guide", "beta", "objective", "network", "prior", "likelihood", "latent_dim", "hidden_dim", "lr", "binarize")


def train_config(opts: Options, variant: Variant, images: int | None, seed: int = 0) -> TrainConfig:
    cfg = TrainConfig(dataset=opts.dataset, data_dir=opts.data_dir, device=opts.device, batch_size=opts.batch_size,
                      train_limit=images, epochs=10**6, seed=seed)
    cfg.update(variant.overrides, "bench variant")
    return cfg.validate()


def subset(data, images: int):
    """The first `images` training images of a loaded dataset (a seeded shuffle came before)."""
    return replace(data, train_x=data.train_x[:images], train_y=data.train_y[:images])


def build_pair(opts: Options, name: str, data, images: int, log: Callable[[str], None],
               seed: int = 0) -> tuple[Trainer, Reference]:
    """(Trainer, Reference) for a variant: the project's path and its plain-PyTorch twin, same start."""
    variant = VARIANTS[name]
    cfg = train_config(opts, variant, images, seed)
    trainer = Trainer(cfg, Path(f"<bench {name}>"), subset(data, images), log=log, jit=variant.jit)
    trainer.inputs.last_epoch = math.inf  # the bench trains past cfg.epochs: keep drawing ahead
    return trainer, Reference(cfg, variant.reference, trainer.device)


def _images(opts: Options, variant: Variant, full: int) -> int:
    if variant.overrides.get("network") == "conv":  # about 20x the MLP's arithmetic per image
        return min(full, opts.conv_images if opts.conv_images is not None else (full if opts.device == "cuda" else 6000))
    return full if opts.train_images is None else min(opts.train_images, full)


def bench_training(opts: Options, data, log: Callable[[str], None]) -> tuple[dict, dict | None, Trainer | None]:
    """Item 1 per variant, item 2 on the first. Returns (train, batching, the default VAE's trainer).
    Both sides run with denormals flushed, as `pyro-vae train` runs, so the ratio compares like with like."""
    with flush_denormals():
        return _bench_training(opts, data, log)


def _bench_training(opts: Options, data, log: Callable[[str], None]) -> tuple[dict, dict | None, Trainer | None]:
    results, batching, vae_trainer = {}, None, None
    for name in opts.variants:
        variant = VARIANTS[name]
        images = _images(opts, variant, len(data.train_x))
        trainer, reference = build_pair(opts, name, data, images, log)
        log(f"bench train {name}: {images} images, batch {opts.batch_size}, {opts.repeats} repeats of {opts.epochs} epoch(s) each")
        sides = _sides(trainer, reference, opts.epochs)
        first = {side: timed(fn, trainer.device)[0] / opts.epochs for side, fn in sides.items()}  # compiles, warms caches
        times, batch_times = {side: [] for side in sides}, []
        for r in range(opts.repeats):
            for side in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
                times[side].append(timed(sides[side], trainer.device)[0] / opts.epochs)
            if not results:  # the first variant also gives the batching share, between its epochs
                batch_times.append(batching_epoch(trainer))
        results[name] = _train_result(name, variant, trainer, images, opts, times, first)
        log(f"bench train {name}: project {results[name]['project']['median']:.3f} s/epoch, reference "
            f"{results[name]['reference']['median']:.3f} s/epoch, ratio {results[name]['ratio']:.3f}")
        if batch_times:
            batching = _batching_result(name, trainer, images, opts, batch_times, times["project"])
            log(f"bench batching: {batching['total']['median']:.3f} s per epoch = {100 * batching['share']:.1f}% of the project's epoch")
        if name == "vae":
            vae_trainer = trainer
    return results, batching, vae_trainer


def _sides(trainer: Trainer, reference: Reference, epochs: int) -> dict[str, Callable[[], object]]:
    def reference_epochs():
        for _ in range(epochs):
            reference.train_epoch(trainer.train_x, trainer.binarization)

    return {"project": lambda: project_epochs(trainer, epochs), "reference": reference_epochs}


def _train_result(name: str, variant: Variant, trainer: Trainer, images: int, opts: Options, times: dict, first: dict) -> dict:
    proj, ref = summary(times["project"]), summary(times["reference"])
    target = RATIO_TARGETS.get(name)
    ratio = proj["median"] / ref["median"]
    return {
        "note": variant.note, "images": images, "batch_size": opts.batch_size, "epochs_per_repeat": opts.epochs,
        "config": {k: v for k, v in trainer.cfg.to_dict().items() if k in REPORTED_CONFIG},
        "jit": bool(trainer.jit_active),
        "project": dict(proj, images_per_second=images / proj["median"], first_epoch_seconds=first["project"]),
        "reference": dict(ref, images_per_second=images / ref["median"], first_epoch_seconds=first["reference"]),
        "ratio": ratio, "ratio_pairs": summary([p / q for p, q in zip(times["project"], times["reference"])]),
        "target": target, "met": None if target is None else ratio <= target,
    }


def _batching_result(name: str, trainer: Trainer, images: int, opts: Options, batch_times: list, project: list) -> dict:
    wait, draw, gather = (summary([t[i] for t in batch_times]) for i in range(3))
    total = summary([w + g for w, _, g in batch_times])  # what the epoch's critical path spends
    epoch = summary(project)["median"]
    share = total["median"] / epoch
    return {
        "variant": name, "images": images, "wait": wait, "binarise": draw, "gather": gather, "total": total,
        "project_epoch_seconds": epoch, "share": share,
        "share_pairs": summary([t / p for t, p in zip(total["values"], project)]),
        "wait_share": wait["median"] / epoch, "binarise_share": draw["median"] / epoch, "gather_share": gather["median"] / epoch,
        "dataloader": summary([dataloader_epoch(trainer) for _ in range(opts.repeats)]),
        "target": TARGET_BATCHING_SHARE, "met": share <= TARGET_BATCHING_SHARE,
    }
