"""The SVI loop: one Pyro ELBO, a torch optimiser, data held on the device and batched by index."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Callable

import pyro
import torch
from tqdm import tqdm

from . import data as data_mod
from . import runs
from .config import TrainConfig
from .errors import DivergedError, UserError
from .model import VAE, build_vae
from .objectives import OBJECTIVES

EVAL_BATCH = 1000
# Evaluation draws its noise from its own seeded stream, so it neither disturbs training's RNG
# (resume equivalence) nor varies between epochs.
_EVAL_STREAM = 7919


def log_to_stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load_data(cfg: TrainConfig) -> data_mod.Data:
    return data_mod.load(
        cfg.dataset, cfg.data_dir, test_fraction=cfg.test_fraction, split_seed=cfg.split_seed,
        train_limit=cfg.train_limit, test_limit=cfg.test_limit,
    )


def build_objective(cfg: TrainConfig):
    return OBJECTIVES[cfg.objective](cfg.num_particles, **cfg.objective_options)


@torch.no_grad()
def objective_per_image(vae: VAE, objective, x: torch.Tensor, seed: int) -> float:
    """The objective's bound per image in nats on x (posterior samples from a fixed seed)."""
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=x.device.type):
        torch.manual_seed(seed + _EVAL_STREAM)
        total = sum(float(objective.differentiable_loss(vae.model, vae.guide, x[i : i + EVAL_BATCH])) for i in range(0, len(x), EVAL_BATCH))
    return -total / len(x)


class Trainer:
    """Holds one run's model, optimiser and data; `fit` trains to cfg.epochs, checkpointing each epoch."""

    def __init__(self, cfg: TrainConfig, run: Path, dataset: data_mod.Data, log: Callable[[str], None] = log_to_stderr):
        self.cfg, self.run, self.log = cfg, Path(run), log
        self.device = torch.device(cfg.device)
        pyro.set_rng_seed(cfg.seed)
        self.vae = build_vae(cfg).to(self.device)
        self.objective = build_objective(cfg)
        self.optimizer = torch.optim.Adam(self.vae.parameters(), lr=cfg.lr)
        self.binarization = data_mod.BINARIZATIONS[cfg.binarize]
        self.train_x = dataset.train_x.to(self.device)
        self.test_obs = self.binarization.test(dataset.test_x.to(self.device), cfg.seed)
        self.epoch = 0

    def restore(self, state: dict) -> None:
        self.vae.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"]["torch"])
        if self.device.type == "cuda" and "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        self.epoch = state["epoch"]

    def state(self) -> dict:
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {"epoch": self.epoch, "model": self.vae.state_dict(), "optimizer": self.optimizer.state_dict(), "rng": rng}

    def beta_at(self, epoch: int) -> float:
        """KL annealing: beta * epoch / warm-up during the warm-up epochs, then beta."""
        warmup = self.cfg.beta_warmup_epochs
        return self.cfg.beta * min(1.0, epoch / warmup) if warmup else self.cfg.beta

    def train_epoch(self, progress: bool) -> float:
        cfg, n = self.cfg, len(self.train_x)
        epoch = self.epoch + 1
        self.vae.beta = self.beta_at(epoch)
        observed = self.binarization.train(self.train_x, cfg.seed, epoch)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)).to(self.device)
        total = 0.0
        bar = tqdm(range(0, n, cfg.batch_size), desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", leave=False, disable=not progress, file=sys.stderr)
        for step, start in enumerate(bar, 1):
            batch = observed[order[start : start + cfg.batch_size]]
            loss = self.objective.differentiable_loss(self.vae.model, self.vae.guide, batch)
            value = loss.item()
            if not math.isfinite(value):
                raise DivergedError(
                    f"loss became {value} at step {step} of epoch {epoch}; the checkpoint of epoch {self.epoch} "
                    f"in {self.run} is kept. Try a lower --lr"
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += value
            if step % 20 == 0:
                bar.set_postfix(elbo=f"{-value / len(batch):.2f}")
        return -total / n

    def fit(self, progress: bool = True) -> list[dict]:
        lines = []
        while self.epoch < self.cfg.epochs:
            started = time.perf_counter()
            train_elbo = self.train_epoch(progress)
            seconds = time.perf_counter() - started
            self.epoch += 1
            beta, self.vae.beta = self.vae.beta, self.cfg.beta  # test numbers use the final beta, comparable across epochs
            test_elbo = objective_per_image(self.vae, self.objective, self.test_obs, self.cfg.seed)
            line = {"epoch": self.epoch, "train_elbo": train_elbo, "test_elbo": test_elbo, "beta": beta, "epoch_seconds": seconds}
            runs.append_metrics(self.run, line)
            runs.save_checkpoint(self.run, self.state())
            lines.append(line)
            self.log(
                f"epoch {self.epoch}/{self.cfg.epochs}: train {train_elbo:.2f}, test {test_elbo:.2f} nats/image "
                f"({seconds:.1f} s)"
            )
        return lines


def train(cfg: TrainConfig, out: str | Path, force: bool = False, progress: bool = True, log=log_to_stderr) -> Path:
    """Train a new run into `out` (a fresh or, with force, replaced folder)."""
    cfg.validate()
    dataset = load_data(cfg)
    # Data, model and objective are built before touching `out`: a bad setting must not cost a folder.
    trainer = Trainer(cfg, Path(out), dataset, log)
    run = runs.prepare(out, force)
    record = {"config": cfg.to_dict(), "data": dataset.provenance, "versions": runs.versions(),
              "objective_note": "train_elbo/test_elbo in metrics.jsonl are the objective's bound per image (beta-scaled)"}
    runs.atomic_write_json(run / runs.CONFIG, record)
    if dataset.split_indices is not None:
        runs.atomic_write_json(run / runs.SPLIT, dataset.split_indices)
    log(f"training {cfg.guide} guide, {cfg.prior} prior, beta={cfg.beta} on {dataset.provenance['train_count']} "
        f"{cfg.dataset} images ({dataset.provenance['origin']}) -> {run}")
    trainer.fit(progress)
    return run


def resume(run: str | Path, epochs: int | None = None, progress: bool = True, log=log_to_stderr) -> Path:
    """Continue a run from its checkpoint, to its configured epochs or to `epochs`."""
    run = Path(run)
    cfg, record = runs.read_config(run)
    if epochs is not None:
        cfg.epochs = epochs
    cfg.validate()
    dataset = load_data(cfg)
    for key in ("train_file", "test_file"):
        if key in record["data"] and record["data"][key]["images_sha256"] != dataset.provenance.get(key, {}).get("images_sha256"):
            raise UserError(f"the data found now differs from the data {run} was trained on ({key}); point --data-dir at the original")
    trainer = Trainer(cfg, run, dataset, log)
    trainer.restore(runs.load_checkpoint(run, cfg.device))
    runs.truncate_metrics(run, trainer.epoch)
    if epochs is not None:
        record["config"]["epochs"] = epochs
        runs.atomic_write_json(run / runs.CONFIG, record)
    log(f"resuming {run} at epoch {trainer.epoch} of {cfg.epochs}")
    trainer.fit(progress)
    return run
