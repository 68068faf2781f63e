"""`pyro-vae bench`: how fast the toolkit runs, measured side by side in one process.

A study is many runs, so the time per run is the toolkit's capacity. The bench measures, in one
process and one invocation (so that ratios hold on a noisy, shared machine):

1. train: epoch time and images/s of the project's training path, `pyro_vae.train.Trainer.train_epoch`
   (what `pyro-vae train` and studies run), against a reference loop in plain PyTorch with the
   identical encoder and decoder modules (same initial weights), batch size, optimiser
   (`train.build_optimizer`) and in-memory data (same per-epoch binarisation and order), for the
   default VAE, the AE baseline, `meanfield`, the default VAE with the compiled loss switched off
   (`-eager`), and the conv network. After one warm-up epoch each (its time is kept: it holds the
   compile), project and reference epochs alternate (P R, R P, ...), and the ratio is the median
   project epoch over the median reference epoch; the spread is the range of the pairwise ratios.
2. batching: the share of the project's epoch spent getting batches, i.e. the per-epoch
   binarisation plus one epoch of index gathers observed[order[i:i+B]], timed on their own between
   the training epochs. For comparison: a torch DataLoader over the same tensor, and a faster
   binarisation proposed for pyro_vae/data.py (ProposedBinarisation; not used in training).
3. eval: on the test images, log p(x) by importance sampling (K=1000) and by the exact 2-D grid
   (pyro_vae.estimators), their times and values, and the floor the decoder's arithmetic sets for
   importance sampling: decoding N*K codes and scoring them, timed on a subset and scaled up.
4. study (opt-in, --study): wall time and peak memory (the child's max RSS) of
   `pyro-vae study studies/ae_vs_vae.toml` run as a child process.

The report is a table on stdout and, with --json FILE, the full numbers (atomic write). This
module imports only the standard library at import time; torch and the rest load when it runs.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pyro_vae.io import seeded

# Targets of the issue (on the 2-core machine).
TARGET_TRAIN_RATIO = 1.10  # project/reference epoch time, default VAE and AE
TARGET_BATCHING_SHARE = 0.03  # of the project's epoch
TARGET_GRID_SECONDS = 5.0  # exact 2-D log p(x) of the test images
TARGET_IS_OVER_GRID = 20.0  # IS (K=1000) time / grid time, at least
TARGET_IS_OVER_FLOOR = 1.25  # IS time / its decoder-arithmetic floor, at most
TARGET_STUDY_SECONDS = 15 * 60
TARGET_STUDY_BYTES = 3 * 2**30
RATIO_TARGETS = {"vae": TARGET_TRAIN_RATIO, "ae": TARGET_TRAIN_RATIO}


@dataclass(frozen=True)
class Variant:
    """A training configuration the bench times, and the plain-PyTorch loss it is compared with."""

    overrides: dict
    reference: str  # "mc": Monte Carlo ELBO (Trace_ELBO), "analytic": analytic-KL ELBO, "ae": reconstruction only
    jit: bool | None  # None: the Trainer's default (compiled where it can be)
    note: str


VARIANTS: dict[str, Variant] = {
    "vae": Variant({}, "mc", None, "default VAE: gaussian guide, objective trace (Trace_ELBO; compiled)"),
    "vae-eager": Variant({}, "mc", False, "default VAE, compiled loss off (PYRO_VAE_JIT=0): eager Trace_ELBO"),
    "ae": Variant({"guide": "delta", "beta": 0.0}, "ae", None, "AE baseline: delta guide, beta=0 (compiled)"),
    "ae-eager": Variant({"guide": "delta", "beta": 0.0}, "ae", False, "AE baseline, eager Trace_ELBO"),
    "meanfield": Variant({"objective": "meanfield"}, "analytic", None, "objective meanfield (TraceMeanField_ELBO, eager)"),
    "conv": Variant({"network": "conv"}, "mc", None, "default VAE with the conv encoder/decoder"),
}
DEFAULT_VARIANTS = list(VARIANTS)


# ---------------------------------------------------------------------------------------------
# Options


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=["cpu", "cuda"], help="where to run (default: cuda when torch sees a GPU, else cpu)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    p.add_argument("--dataset", default="fashion-mnist", help="dataset for the training and evaluation items (default fashion-mnist)")
    p.add_argument("--data-dir", help="folder holding <Name>/raw/*-ubyte[.gz] (else $PYRO_VAE_DATA, the cache)")
    p.add_argument("--train-images", type=int, help="training images per epoch (default: all, 60000 for fashion-mnist)")
    p.add_argument("--conv-images", type=int, help="training images per epoch for the conv network (default: 6000 on cpu, all on cuda)")
    p.add_argument("--batch-size", type=int, default=128, help="images per step (default 128)")
    p.add_argument("--epochs", type=int, default=1, help="epochs per timed repeat (default 1)")
    p.add_argument("--repeats", type=int, help="timed repeats of each measurement; medians and spread over them (default 3, --quick 2)")
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help=f"training variants to time, comma-separated, '' for none (default {','.join(DEFAULT_VARIANTS)})")
    p.add_argument("--eval-images", type=int, help="test images for the log-likelihood item (default 10000, --quick 200)")
    p.add_argument("--num-samples", type=int, help="importance samples per image K (default 1000, --quick 100)")
    p.add_argument("--eval-repeats", type=int, default=1, help="repeats of the importance-sampling timing (default 1; the grid uses --repeats)")
    p.add_argument("--run", dest="run_dir", metavar="RUN_DIR", help="evaluate this trained 2-D run instead of the VAE trained by the bench")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation item")
    p.add_argument("--study", nargs="?", const="studies/ae_vs_vae.toml", metavar="STUDY_TOML",
                   help="also time a whole study (default file studies/ae_vs_vae.toml; takes minutes)")
    p.add_argument("--study-out", help="folder for the study's runs (default: a temporary folder, removed afterwards)")
    p.add_argument("--study-timeout", type=float, default=2 * TARGET_STUDY_SECONDS, help="stop the study after this many seconds (default 1800)")
    p.add_argument("--quick", action="store_true", help="small sizes for a smoke test: 2000 images, 2 repeats, 200 test images, K=100")
    p.add_argument("--json", metavar="FILE", help="also write every number as JSON to FILE")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


@dataclass
class Options:
    device: str = "cpu"
    threads: int | None = None
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    train_images: int | None = None
    conv_images: int | None = None
    batch_size: int = 128
    epochs: int = 1
    repeats: int = 3
    variants: list[str] = field(default_factory=lambda: list(DEFAULT_VARIANTS))
    eval_images: int = 10000
    num_samples: int = 1000
    eval_repeats: int = 1
    run: str | None = None
    eval: bool = True
    study: str | None = None
    study_out: str | None = None
    study_timeout: float = 2 * TARGET_STUDY_SECONDS
    quick: bool = False
    json: str | None = None
    quiet: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Options":
        quick = args.quick

        def pick(value, default, quick_default):
            return value if value is not None else (quick_default if quick else default)

        o = cls(
            device=args.device or _default_device(), threads=args.threads, dataset=args.dataset, data_dir=args.data_dir,
            train_images=pick(args.train_images, None, 2000), conv_images=pick(args.conv_images, None, 256),
            batch_size=args.batch_size, epochs=args.epochs, repeats=pick(args.repeats, 3, 2),
            variants=[v.strip() for v in args.variants.split(",") if v.strip()],
            eval_images=pick(args.eval_images, 10000, 200), num_samples=pick(args.num_samples, 1000, 100),
            eval_repeats=args.eval_repeats, run=args.run_dir, eval=not args.no_eval, study=args.study, study_out=args.study_out,
            study_timeout=args.study_timeout, quick=quick, json=args.json, quiet=args.quiet,
        )
        return o.validate()

    def validate(self) -> "Options":
        from pyro_vae.errors import UserError

        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise UserError(f"unknown variant(s) {', '.join(map(repr, unknown))}; choose from: {', '.join(VARIANTS)}")
        for name in ("batch_size", "epochs", "repeats", "eval_images", "num_samples", "eval_repeats"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("threads", "train_images", "conv_images"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise UserError("device cuda was asked for but torch sees no CUDA GPU here; use --device cpu")
        if self.study is not None and not Path(self.study).is_file():
            raise UserError(f"study file {self.study} does not exist")
        return self


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# ---------------------------------------------------------------------------------------------
# Timing helpers


def _sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device) -> tuple[float, object]:
    _sync(device)
    started = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - started, out


def summary(values: list[float]) -> dict:
    """Median and spread (min, max, interquartile range where there are enough values)."""
    values = [float(v) for v in values]
    out = {"values": values, "median": statistics.median(values), "min": min(values), "max": max(values)}
    if len(values) >= 4:
        q = statistics.quantiles(values, n=4)
        out["q1"], out["q3"] = q[0], q[2]
    return out


# ---------------------------------------------------------------------------------------------
# The reference: the same model as a plain PyTorch loop


class Reference:
    """The project's networks and optimiser with a hand-written loss, batched like the Trainer.

    Encoder and decoder are built from `NETWORKS[cfg.network]` after `pyro.set_rng_seed(cfg.seed)`,
    in the order build_vae builds them (guide encoder, prior, decoder), so they start from the
    Trainer's weights. The losses are what the project's objectives compute, summed over the batch:

    - mc:       BCE-with-logits sum + sum(z^2/2 - log sigma - eps^2/2), z = mu + sigma eps: the Monte
                Carlo estimate -[log p(x|z) + log p(z) - log q(z|x)] that Trace_ELBO computes with the
                gaussian guide and the standard-normal prior (the log 2pi terms cancel).
    - analytic: BCE-with-logits sum + sum(KL(N(mu, sigma^2) || N(0, 1))): TraceMeanField_ELBO's.
    - ae:       BCE-with-logits sum: the delta guide with beta = 0.

    eps is drawn the way Pyro's Normal.rsample draws it, so with the same RNG state both compute the
    same number.
    """

    def __init__(self, cfg, kind: str, device):
        import pyro

        from pyro_vae.components.guides import MIN_SCALE
        from pyro_vae.components.networks import NETWORKS
        from pyro_vae.training.trainer import build_optimizer

        if kind not in ("mc", "analytic", "ae"):
            raise ValueError(f"unknown reference kind {kind!r}")
        self.kind, self.z_dim, self.min_scale = kind, cfg.latent_dim, MIN_SCALE
        self.batch_size, self.seed, self.device = cfg.batch_size, cfg.seed, device
        network = NETWORKS[cfg.network]
        pyro.set_rng_seed(cfg.seed)
        self.encoder = network.encoder(cfg.latent_dim if kind == "ae" else 2 * cfg.latent_dim, cfg.hidden_dim).to(device)
        self.decoder = network.decoder(cfg.latent_dim, cfg.hidden_dim).to(device)
        self.optimizer = build_optimizer(list(self.encoder.parameters()) + list(self.decoder.parameters()), cfg.lr, device)
        self.epoch = 0

    def loss(self, x):
        import torch
        import torch.nn.functional as F

        h = self.encoder(x)
        if self.kind == "ae":
            return F.binary_cross_entropy_with_logits(self.decoder(h), x, reduction="sum")
        loc, raw_scale = h.split(self.z_dim, dim=-1)
        scale = F.softplus(raw_scale) + self.min_scale
        eps = torch.empty_like(loc).normal_()  # as torch.distributions.Normal.rsample draws it
        z = loc + scale * eps
        reconstruction = F.binary_cross_entropy_with_logits(self.decoder(z), x, reduction="sum")
        if self.kind == "mc":
            latent = (0.5 * z * z - scale.log() - 0.5 * eps * eps).sum()
        else:
            latent = (0.5 * (scale * scale + loc * loc - 1.0) - scale.log()).sum()
        return reconstruction + latent

    def train_epoch(self, train_x, binarization) -> float:
        """One epoch as Trainer.train_epoch runs it: same binarisation and order, index batching."""
        import torch

        epoch = self.epoch + 1
        n, size = len(train_x), self.batch_size
        observed = binarization.train(train_x, self.seed, epoch)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)).to(self.device)
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        optimizer = self.optimizer
        for start in range(0, n, size):
            batch = observed[order[start : start + size]]
            loss = self.loss(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
        self.epoch = epoch
        return -float(total) / n


# ---------------------------------------------------------------------------------------------
# 1-2. Training and batching


def _train_config(opts: Options, variant: Variant, images: int):
    from pyro_vae.config import TrainConfig

    cfg = TrainConfig(dataset=opts.dataset, data_dir=opts.data_dir, device=opts.device, batch_size=opts.batch_size,
                      train_limit=images, epochs=10**6, seed=0)
    cfg.update(variant.overrides, "bench variant")
    return cfg.validate()


def _subset(data, images: int):
    """The first `images` training images of a loaded dataset (a seeded shuffle came before)."""
    from dataclasses import replace

    return replace(data, train_x=data.train_x[:images], train_y=data.train_y[:images])


def build_pair(opts: Options, name: str, data, images: int, log: Callable[[str], None]):
    """(Trainer, Reference) for a variant: the project's path and its plain-PyTorch twin, same start."""
    from pyro_vae.training.trainer import Trainer

    variant = VARIANTS[name]
    cfg = _train_config(opts, variant, images)
    trainer = Trainer(cfg, Path(f"<bench {name}>"), _subset(data, images), log=log, jit=variant.jit)
    reference = Reference(cfg, variant.reference, trainer.device)
    return trainer, reference


def _project_epoch(trainer) -> float:
    trainer.train_epoch(progress=False)
    trainer.epoch += 1
    return 0.0


def batching_epoch(trainer) -> tuple[float, float]:
    """(binarise + order seconds, gather seconds) of one epoch of the Trainer's batching, on its own."""
    import torch

    cfg, n, device = trainer.cfg, len(trainer.train_x), trainer.device
    epoch = trainer.epoch + 1
    _sync(device)
    t0 = time.perf_counter()
    observed = trainer.binarization.train(trainer.train_x, cfg.seed, epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)).to(device)
    _sync(device)
    t1 = time.perf_counter()
    batch = None
    for start in range(0, n, cfg.batch_size):
        batch = observed[order[start : start + cfg.batch_size]]
    _sync(device)
    t2 = time.perf_counter()
    del batch
    return t1 - t0, t2 - t1


class ProposedBinarisation:
    """A faster dynamic binarisation, measured here as a proposal for pyro_vae/data.py (not used in training).

    Pixels are k/255 (IDX bytes). P(observation = 1) = 257 k / 65536 for k < 255 and 1 for k = 255,
    i.e. k/255 to within 2^-16, from 16 random bits per pixel: numpy's PCG64 fills 32-bit words
    (two pixels each, about 4x cheaper than torch.bernoulli's one draw per pixel), compared with a
    per-pixel threshold computed once. Observations are uint8, so gathers move a quarter of the bytes;
    each batch becomes float32 after its gather.
    """

    CHUNK = 2**18  # pixels per piece

    def __init__(self, train_x):
        import numpy as np

        x = train_x.detach().cpu().numpy()
        k = np.rint(x * 255.0)
        if x.size and float(np.abs(k / 255.0 - x).max()) > 1e-6:
            raise ValueError("pixels are not multiples of 1/255")
        k = k.astype(np.uint16)
        self.thresholds = k * np.uint16(257)
        self.white = k == 255
        self.device = train_x.device

    def train(self, seed: int, epoch: int):
        import numpy as np
        import torch

        rng = np.random.Generator(np.random.PCG64([seed, epoch]))
        thresholds, white = self.thresholds.reshape(-1), self.white.reshape(-1)
        observed = np.empty(thresholds.shape, dtype=np.bool_)
        step = self.CHUNK  # cache-sized pieces: no large temporaries to fault in
        for i in range(0, len(thresholds), step):
            t = thresholds[i : i + step]
            bits = rng.integers(0, 2**32, size=(len(t) + 1) // 2, dtype=np.uint32).view(np.uint16)[: len(t)]
            out = observed[i : i + step]
            np.less(bits, t, out=out)
            np.bitwise_or(out, white[i : i + step], out=out)
        return torch.from_numpy(observed.view(np.uint8).reshape(self.thresholds.shape)).to(self.device)


def proposed_batching_epoch(proposal: ProposedBinarisation, trainer) -> tuple[float, float]:
    """(binarise seconds, gather + float conversion seconds) of one epoch with the proposal."""
    import torch

    cfg, n, device = trainer.cfg, len(trainer.train_x), trainer.device
    epoch = trainer.epoch + 1
    _sync(device)
    t0 = time.perf_counter()
    observed = proposal.train(cfg.seed, epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)).to(device)
    _sync(device)
    t1 = time.perf_counter()
    batch = None
    for start in range(0, n, cfg.batch_size):
        batch = observed[order[start : start + cfg.batch_size]].to(torch.float32)
    _sync(device)
    t2 = time.perf_counter()
    del batch
    return t1 - t0, t2 - t1


def dataloader_epoch(trainer) -> float:
    """Seconds for one epoch of a torch DataLoader (shuffle, batch_size) over the same binarised tensor."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    cfg = trainer.cfg
    observed = trainer.binarization.train(trainer.train_x, cfg.seed, trainer.epoch + 1)
    loader = DataLoader(TensorDataset(observed), batch_size=cfg.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(cfg.seed))
    started = time.perf_counter()
    for (batch,) in loader:
        pass
    return time.perf_counter() - started


def bench_training(opts: Options, data, log: Callable[[str], None]) -> tuple[dict, dict | None, object]:
    """Item 1 (per variant) and item 2 (for the first variant). Returns (train, batching, vae trainer)."""
    results, batching, eval_trainer = {}, None, None
    full = len(data.train_x)
    for name in opts.variants:
        variant = VARIANTS[name]
        images = full if opts.train_images is None else min(opts.train_images, full)
        if variant.overrides.get("network") == "conv":  # about 20x the MLP's arithmetic per image
            images = min(full, opts.conv_images if opts.conv_images is not None else (full if opts.device == "cuda" else 6000))
        trainer, reference = build_pair(opts, name, data, images, log)
        device = trainer.device
        log(f"bench train {name}: {images} images, batch {opts.batch_size}, {opts.repeats} repeats of {opts.epochs} epoch(s) each")

        def project():
            for _ in range(opts.epochs):
                _project_epoch(trainer)

        def plain():
            for _ in range(opts.epochs):
                reference.train_epoch(trainer.train_x, trainer.binarization)

        first_project, _ = _timed(project, device)  # compiles the loss (JIT), warms caches
        first_reference, _ = _timed(plain, device)
        times = {"project": [], "reference": []}
        batch_times = {"binarise": [], "gather": [], "proposed_binarise": [], "proposed_gather": []}
        proposal = None
        if batching is None and not results and trainer.cfg.binarize == "dynamic":
            try:
                proposal = ProposedBinarisation(trainer.train_x)
            except ValueError:
                proposal = None
        for r in range(opts.repeats):
            order = (("project", project), ("reference", plain))
            for label, fn in (order if r % 2 == 0 else order[::-1]):
                times[label].append(_timed(fn, device)[0])
            if batching is None and not results:  # the first variant also gives the batching share
                b, g = batching_epoch(trainer)
                batch_times["binarise"].append(b)
                batch_times["gather"].append(g)
                if proposal is not None:
                    b, g = proposed_batching_epoch(proposal, trainer)
                    batch_times["proposed_binarise"].append(b)
                    batch_times["proposed_gather"].append(g)
        per_epoch = {k: [t / opts.epochs for t in v] for k, v in times.items()}
        pairs = [p / q for p, q in zip(per_epoch["project"], per_epoch["reference"])]
        proj, ref = summary(per_epoch["project"]), summary(per_epoch["reference"])
        target = RATIO_TARGETS.get(name)
        ratio = proj["median"] / ref["median"]
        results[name] = {
            "note": variant.note, "images": images, "batch_size": opts.batch_size, "epochs_per_repeat": opts.epochs,
            "config": {k: v for k, v in trainer.cfg.to_dict().items() if k in ("guide", "beta", "objective", "network", "prior", "likelihood", "latent_dim", "hidden_dim", "lr", "binarize")},
            "jit": bool(trainer.jit_active),
            "project": dict(proj, images_per_second=images / proj["median"], first_epoch_seconds=first_project / opts.epochs),
            "reference": dict(ref, images_per_second=images / ref["median"], first_epoch_seconds=first_reference / opts.epochs),
            "ratio": ratio, "ratio_pairs": summary(pairs), "target": target,
            "met": None if target is None else ratio <= target,
        }
        log(f"bench train {name}: project {proj['median']:.3f} s/epoch, reference {ref['median']:.3f} s/epoch, ratio {ratio:.3f}")
        if batch_times["binarise"]:
            binarise, gather = summary(batch_times["binarise"]), summary(batch_times["gather"])
            total = summary([b + g for b, g in zip(batch_times["binarise"], batch_times["gather"])])
            loader = summary([dataloader_epoch(trainer) for _ in range(opts.repeats)]) if opts.repeats else None
            share = total["median"] / proj["median"]
            batching = {
                "variant": name, "images": images, "binarise": binarise, "gather": gather, "total": total,
                "project_epoch_seconds": proj["median"], "share": share,
                "share_pairs": summary([t / p for t, p in zip(total["values"], per_epoch["project"])]),
                "binarise_share": binarise["median"] / proj["median"], "gather_share": gather["median"] / proj["median"],
                "dataloader": loader, "target": TARGET_BATCHING_SHARE, "met": share <= TARGET_BATCHING_SHARE,
                "proposed": None,
            }
            if batch_times["proposed_binarise"]:
                pb, pg = summary(batch_times["proposed_binarise"]), summary(batch_times["proposed_gather"])
                ptotal = summary([b + g for b, g in zip(batch_times["proposed_binarise"], batch_times["proposed_gather"])])
                batching["proposed"] = {
                    "what": "16-bit thresholds from numpy PCG64, uint8 observations, float32 per batch (ProposedBinarisation)",
                    "binarise": pb, "gather": pg, "total": ptotal, "share": ptotal["median"] / proj["median"],
                    "binarise_share": pb["median"] / proj["median"], "gather_share": pg["median"] / proj["median"],
                }
            log(f"bench batching: {total['median']:.3f} s per epoch = {100 * share:.1f}% of the project's epoch")
        if name == "vae":
            eval_trainer = trainer
    return results, batching, eval_trainer


# ---------------------------------------------------------------------------------------------
# 3. Evaluation


def decoder_floor(vae, x, num_samples: int, device, budget_codes: int = 200_000, chunk_bytes: int = 4 * 2**20) -> dict:
    """The arithmetic importance sampling cannot avoid: decode N*K codes and score each against its image.

    Times, on up to `budget_codes` codes in cache-sized chunks (`chunk_bytes` of logits, as the
    estimator's), (a) the decoder alone and (b) the decoder plus the exact Bernoulli log-likelihood
    x.l - sum softplus(l) (the estimator's own formula where it has one), best of two passes, and
    scales to N*K codes. Also counts the decoder's matmul FLOPs (MLP decoders).
    """
    import torch

    from pyro_vae.evaluation import estimators

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
    dev = torch.device(device)
    with torch.no_grad(), seeded(0, dev):
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

        dec_s = min(_timed(decode_only, device)[0] for _ in range(2))
        full_s = min(_timed(decode_and_score, device)[0] for _ in range(2))
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


FULL_TEST = 10000  # the eval targets are stated for the 10k test images


def bench_eval(opts: Options, vae, test_obs, source: str, log: Callable[[str], None]) -> dict:
    import torch

    from pyro_vae.evaluation import estimators

    device = next(vae.parameters()).device
    x = test_obs[: opts.eval_images].to(device)
    vae.eval()
    full = len(x) >= FULL_TEST
    out: dict = {"images": len(x), "num_samples": opts.num_samples, "model": source, "targets_apply": full}
    two_d = vae.prior().event_shape == torch.Size([2])
    stochastic = not getattr(vae.encoder_guide, "deterministic", False)
    if stochastic:
        times, result = [], None
        for r in range(opts.eval_repeats):
            log(f"bench eval: importance sampling, K={opts.num_samples}, {len(x)} images ({r + 1}/{opts.eval_repeats})")
            seconds, result = _timed(lambda: estimators.importance_log_likelihood(vae, x, num_samples=opts.num_samples, seed=0), device)
            times.append((seconds, result.get("seconds", seconds), result.get("psis_seconds", 0.0)))
        imp = dict(summary([t[0] for t in times]), mean_log_px=float(result["log_px"].mean()),
                   share_k_above_0_7=float(result.get("share_k_above_0_7", float("nan"))),
                   sampling=summary([t[1] for t in times]), psis=summary([t[2] for t in times]))
        log("bench eval: decoder floor for importance sampling")
        floor = decoder_floor(vae, x, opts.num_samples, device)
        imp["sampling_over_floor"] = imp["sampling"]["median"] / floor["decoder_and_loglik_seconds"]
        imp["target_over_floor"] = TARGET_IS_OVER_FLOOR
        imp["met"] = imp["sampling_over_floor"] <= TARGET_IS_OVER_FLOOR
        out["importance"], out["floor"] = imp, floor
    if two_d:
        times, result = [], None
        for r in range(opts.repeats):
            log(f"bench eval: 2-D grid log-likelihood, {len(x)} images ({r + 1}/{opts.repeats})")
            seconds, result = _timed(lambda: estimators.grid_log_likelihood(vae, x, tol=0.01), device)
            times.append(seconds)
        grid = dict(summary(times), mean_log_px=float(result["log_px"].mean()), grid_points=int(result["grid_points"]),
                    converged=bool(result.get("converged", True)), target_seconds=TARGET_GRID_SECONDS)
        grid["met"] = grid["median"] <= TARGET_GRID_SECONDS if full else None
        out["grid"] = grid
        if stochastic:
            speedup = out["importance"]["median"] / grid["median"]
            out["is_over_grid"] = {"ratio": speedup, "target": TARGET_IS_OVER_GRID, "met": speedup >= TARGET_IS_OVER_GRID if full else None,
                                   "sampling_ratio": out["importance"]["sampling"]["median"] / grid["median"]}
            out["is_minus_grid_nats"] = out["importance"]["mean_log_px"] - grid["mean_log_px"]
    return out


def _eval_model(opts: Options, trainer, log):
    """(vae, binarised test images, description) to evaluate: --run, the bench's VAE, or a fresh one."""
    from pyro_vae import data as data_mod
    from pyro_vae.training.trainer import Trainer

    if opts.run:
        from pyro_vae.data import load_data
        from pyro_vae.training.runs import load_run

        run = load_run(opts.run, device=opts.device)
        cfg = run.config
        cfg.test_limit = opts.eval_images
        cfg.train_limit = 1
        data = load_data(cfg)
        obs = data_mod.BINARIZATIONS[cfg.binarize].test(data.test_x.to(opts.device), cfg.seed)
        return run.vae, obs, f"run {opts.run} (epoch {run.epoch})"
    if trainer is None:
        from pyro_vae.data import load_data

        cfg = _train_config(opts, VARIANTS["vae"], opts.train_images or 60000)
        cfg.test_limit = opts.eval_images
        data = load_data(cfg)
        trainer = Trainer(cfg, Path("<bench eval>"), data, log=log)
        for _ in range(3):
            _project_epoch(trainer)
    return trainer.vae, trainer.test_obs, f"the bench's default VAE after {trainer.epoch} epochs on {len(trainer.train_x)} images"


# ---------------------------------------------------------------------------------------------
# 4. Study


def bench_study(opts: Options, log: Callable[[str], None]) -> dict:
    """Run `pyro-vae study FILE --out DIR` as a child; its wall time and peak RSS (os.wait4's rusage)."""
    out_dir = Path(opts.study_out) if opts.study_out else Path(tempfile.mkdtemp(prefix="pyro-vae-bench-study-"))
    cmd = [sys.executable, "-m", "pyro_vae.cli", "study", str(opts.study), "--out", str(out_dir), "--no-progress"]
    env = dict(os.environ)
    if opts.threads:
        env["OMP_NUM_THREADS"] = str(opts.threads)
    log(f"bench study: {' '.join(cmd)} (limit {opts.study_timeout:.0f} s)")
    logs = tempfile.TemporaryFile()
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=logs, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    timed_out = threading.Event()

    def stop():
        timed_out.set()
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    timer = threading.Timer(opts.study_timeout, stop)
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    logs.seek(0)
    tail = logs.read().decode(errors="replace")[-4000:]
    logs.close()
    # ru_maxrss: kilobytes on Linux, bytes on macOS.
    peak = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    result = {
        "study": str(opts.study), "command": cmd, "returncode": proc.returncode, "timed_out": timed_out.is_set(),
        "wall_seconds": wall, "peak_rss_bytes": peak, "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "target_seconds": TARGET_STUDY_SECONDS, "target_bytes": TARGET_STUDY_BYTES,
        "met_time": proc.returncode == 0 and wall <= TARGET_STUDY_SECONDS,
        "met_memory": peak < TARGET_STUDY_BYTES, "output_tail": tail,
    }
    if opts.study_out is None:
        shutil.rmtree(out_dir, ignore_errors=True)
    else:
        result["out"] = str(out_dir)
    log(f"bench study: {'finished' if proc.returncode == 0 else f'FAILED (exit {proc.returncode})'} in {wall:.0f} s, "
        f"peak RSS {peak / 2**20:.0f} MiB")
    return result


# ---------------------------------------------------------------------------------------------
# Report


def _fmt_s(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.3g} s" if v < 100 else f"{v:.0f} s"


def _spread(s: dict, fmt=_fmt_s) -> str:
    return f"{fmt(s['min'])} - {fmt(s['max'])}" if s["min"] != s["max"] else "-"


def _yes(met) -> str:
    return "-" if met is None else ("yes" if met else "NO")


def table_rows(report: dict) -> list[dict]:
    rows: list[dict] = []

    def row(item, median="-", spread="-", ratio="-", target="-", met=None, note=""):
        rows.append({"item": item, "median": median, "spread": spread, "ratio": ratio, "target": target, "met": _yes(met), "note": note})

    for name, r in report.get("train", {}).items():
        p, q = r["project"], r["reference"]
        row(f"train {name}: project epoch", _fmt_s(p["median"]), _spread(p), "", "", None,
            f"{p['images_per_second']:,.0f} img/s, {r['images']} img; first epoch {_fmt_s(p['first_epoch_seconds'])}"
            + ("; compiled" if r["jit"] else "; eager"))
        row(f"train {name}: reference epoch", _fmt_s(q["median"]), _spread(q), "", "", None, f"{q['images_per_second']:,.0f} img/s")
        pairs = r["ratio_pairs"]
        row(f"train {name}: project/reference", "", f"{pairs['min']:.3f} - {pairs['max']:.3f}", f"{r['ratio']:.3f}",
            f"<= {r['target']:.2f}" if r["target"] else "-", r["met"], r["note"])
    b = report.get("batching")
    if b:
        row("batching: binarise+gather / epoch", _fmt_s(b["total"]["median"]), _spread(b["total"]), f"{100 * b['share']:.1f}%",
            f"<= {100 * TARGET_BATCHING_SHARE:.0f}%", b["met"],
            f"binarise {100 * b['binarise_share']:.1f}% + gather {100 * b['gather_share']:.1f}% of the {b['variant']} epoch")
        if b.get("proposed"):
            q = b["proposed"]
            row("batching, proposed binarisation", _fmt_s(q["total"]["median"]), _spread(q["total"]), f"{100 * q['share']:.1f}%",
                f"<= {100 * TARGET_BATCHING_SHARE:.0f}%", None,
                f"proposal for data.py: binarise {100 * q['binarise_share']:.1f}% + gather {100 * q['gather_share']:.1f}%")
        if b.get("dataloader"):
            d = b["dataloader"]
            row("batching: torch DataLoader / epoch", _fmt_s(d["median"]), _spread(d), f"{100 * d['median'] / b['project_epoch_seconds']:.1f}%",
                "", None, "for comparison: gathers of the binarised tensor via DataLoader(TensorDataset, shuffle=True)")
    e = report.get("eval")
    if e:
        imp = e.get("importance")
        if imp:
            row(f"eval IS K={e['num_samples']}, {e['images']} img: total", _fmt_s(imp["median"]), _spread(imp), "", "", None,
                f"log p(x) {imp['mean_log_px']:.2f} nats; sampling {_fmt_s(imp['sampling']['median'])} + PSIS k {_fmt_s(imp['psis']['median'])}; "
                f"k>0.7 for {100 * imp['share_k_above_0_7']:.1f}%")
            f = e["floor"]
            row("eval IS sampling / decoder floor", _fmt_s(f["decoder_and_loglik_seconds"]), "", f"{imp['sampling_over_floor']:.2f}x",
                f"<= {TARGET_IS_OVER_FLOOR:.2f}x", imp["met"],
                f"floor = decode + score N*K codes; decoder alone {_fmt_s(f['decoder_seconds'])}"
                + (f", {f['decoder_matmul_flops'] / 1e12:.2f} TFLOP at {f['decoder_gflops_per_second']:.0f} GFLOP/s" if f["decoder_matmul_flops"] else ""))
        g = e.get("grid")
        if g:
            row(f"eval grid 2-D exact, {e['images']} img", _fmt_s(g["median"]), _spread(g), "",
                f"<= {_fmt_s(g['target_seconds'])}" + ("" if e["targets_apply"] else " @10k"), g["met"],
                f"log p(x) {g['mean_log_px']:.2f} nats, {g['grid_points']:,} grid points" + ("" if g["converged"] else ", NOT converged"))
        if e.get("is_over_grid"):
            s = e["is_over_grid"]
            row("eval IS time / grid time", "", "", f"{s['ratio']:.1f}x", f">= {TARGET_IS_OVER_GRID:.0f}x" + ("" if e["targets_apply"] else " @10k"), s["met"],
                f"sampling alone {s['sampling_ratio']:.1f}x; IS - grid = {e['is_minus_grid_nats']:+.2f} nats")
    s = report.get("study")
    if s:
        row("study: wall time", _fmt_s(s["wall_seconds"]), "", "", f"<= {TARGET_STUDY_SECONDS / 60:.0f} min", s["met_time"],
            f"{s['study']}, exit {s['returncode']}" + (", timed out" if s["timed_out"] else ""))
        row("study: peak memory (max RSS)", f"{s['peak_rss_bytes'] / 2**30:.2f} GB", "", "", f"< {TARGET_STUDY_BYTES / 2**30:.0f} GB", s["met_memory"])
    return rows


def format_table(rows: list[dict]) -> str:
    heads = {"item": "item", "median": "median", "spread": "spread (min - max)", "ratio": "ratio/share", "target": "target", "met": "met", "note": "note"}
    widths = {k: max(len(heads[k]), *(len(str(r[k])) for r in rows)) if rows else len(heads[k]) for k in heads}
    line = lambda r: "  ".join(str(r[k]).ljust(widths[k]) if k != "note" else str(r[k]) for k in heads).rstrip()
    return "\n".join([line(heads), line({k: "-" * widths[k] for k in heads})] + [line(r) for r in rows])


# ---------------------------------------------------------------------------------------------
# Driver


def _meta(opts: Options) -> dict:
    import pyro
    import torch

    from pyro_vae import __version__

    meta = {
        "pyro_vae": __version__, "torch": torch.__version__, "pyro": pyro.__version__, "python": platform.python_version(),
        "platform": platform.platform(), "processor": platform.processor(), "cpu_count": os.cpu_count(),
        "device": opts.device, "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if opts.device == "cuda" else None,
        "cuda_available": torch.cuda.is_available(), "jit_env": os.environ.get("PYRO_VAE_JIT"),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "options": {k: v for k, v in vars(opts).items()}, "argv": sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if hasattr(os, "getloadavg"):
        meta["loadavg_start"] = os.getloadavg()
    return meta


def run_bench(opts: Options, log: Callable[[str], None] | None = None) -> dict:
    import torch

    from pyro_vae.data import load_data

    if log is None:
        log = (lambda m: None) if opts.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    if opts.threads:
        torch.set_num_threads(opts.threads)
    report: dict = {"meta": _meta(opts), "train": {}, "batching": None, "eval": None, "study": None}
    started = time.perf_counter()
    trainer = None
    if opts.variants or (opts.eval and not opts.run):
        cfg = _train_config(opts, VARIANTS["vae"], opts.train_images)
        cfg.train_limit = opts.train_images
        cfg.test_limit = opts.eval_images
        data = load_data(cfg)
        report["meta"]["data"] = {k: data.provenance.get(k) for k in ("dataset", "origin", "train_count", "test_count", "split")}
        if opts.variants:
            report["train"], report["batching"], trainer = bench_training(opts, data, log)
    if opts.eval:
        vae, test_obs, source = _eval_model(opts, trainer, log)
        report["eval"] = bench_eval(opts, vae, test_obs, source, log)
    del trainer
    if opts.study:
        report["study"] = bench_study(opts, log)
    report["meta"]["seconds"] = time.perf_counter() - started
    if hasattr(os, "getloadavg"):
        report["meta"]["loadavg_end"] = os.getloadavg()
    report["table"] = table_rows(report)
    return report


def _jsonable(obj):
    import numpy as np
    import torch

    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def main(args: argparse.Namespace) -> int:
    from pyro_vae.io import atomic_write_json

    opts = Options.from_args(args)
    report = run_bench(opts)
    m = report["meta"]
    print(f"pyro-vae bench on {m['device']}{' (' + m['gpu'] + ')' if m['gpu'] else ''}, {m['threads']} threads, "
          f"torch {m['torch']}, pyro {m['pyro']}; {m['cpu_count']} CPUs, load {m.get('loadavg_start', ['?'])[0]:.2f} at start, "
          f"OMP_WAIT_POLICY={m['omp_wait_policy'] or 'unset'}")
    load = m.get("loadavg_start", [0.0])[0]
    if m["threads"] > 1 and not m["omp_wait_policy"] and load >= 0.75 * (m["cpu_count"] or 1):
        print(f"note: the machine was busy (load {load:.1f} on {m['cpu_count']} CPUs) and OMP_WAIT_POLICY is unset: torch's "
              "OpenMP threads spin while they wait, and on a shared machine epochs can slow down many times over, "
              "project and reference alike; OMP_WAIT_POLICY=PASSIVE or --threads 1 gives steadier numbers")
    print(format_table(report["table"]))
    if opts.json:
        atomic_write_json(Path(opts.json), _jsonable(report))
        print(f"JSON: {opts.json}")
    return 0
