"""The SVI loop: one Pyro ELBO, a torch optimiser, data held on the device and batched by index."""

from __future__ import annotations

import contextlib
import math
import sys
import time
from pathlib import Path
from typing import Callable

import pyro
import pyro.infer
import torch
from tqdm import tqdm

from pyro_vae import data as data_mod
from pyro_vae import plugins
from pyro_vae.components.networks import output_bias
from pyro_vae.components.objectives import OBJECTIVES
from pyro_vae.components.schedules import SCHEDULES
from pyro_vae.config import TrainConfig
from pyro_vae.data import load_data
from pyro_vae.errors import DivergedError, UserError
from pyro_vae.io import WriteError, atomic_write_json, log_to_stderr, seeded
from pyro_vae.model import VAE, build_vae
from pyro_vae.training import runs
from pyro_vae.training import tensorboard as board
from pyro_vae.training.batches import EpochInputs
from pyro_vae.training.compiled import CompiledLoss, jit_wanted
from pyro_vae.training.numerics import flush_denormals
from pyro_vae.training.plateau import Plateau, PlateauState, watched_key

EVAL_BATCH = 1000
# The loop keeps each step's loss as a tensor and looks at them every CHECK_EVERY steps (and at the
# end of the epoch): one host sync per CHECK_EVERY steps instead of one per step. A non-finite loss
# is still reported with its own step and epoch.
CHECK_EVERY = 50
# Evaluation draws its noise from its own seeded stream, so it neither disturbs training's RNG
# (resume equivalence) nor varies between epochs.
_EVAL_STREAM = 7919


def build_objective(cfg: TrainConfig):
    return OBJECTIVES[cfg.objective](cfg.num_particles, **cfg.objective_options)


def build_optimizer(params, lr: float, device: torch.device) -> torch.optim.Optimizer:
    """Adam; its fused kernel (one pass over each parameter instead of about ten) where torch has one."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=device.type in ("cpu", "cuda"))
    except (RuntimeError, TypeError):  # an older torch, or a device without the fused kernel
        return torch.optim.Adam(params, lr=lr)


@torch.no_grad()
def objective_per_image(vae: VAE, objective, x: torch.Tensor, seed: int) -> float:
    """The objective's bound per image in nats on x (posterior samples from a fixed seed)."""
    with seeded(seed + _EVAL_STREAM, x.device):
        total = sum(float(objective.differentiable_loss(vae.model, vae.guide, x[i : i + EVAL_BATCH])) for i in range(0, len(x), EVAL_BATCH))
    return -total / len(x)


class Trainer:
    """Holds one run's model, optimiser and data; `fit` trains to cfg.epochs, checkpointing each epoch."""

    def __init__(self, cfg: TrainConfig, run: Path, dataset: data_mod.Data, log: Callable[[str], None] = log_to_stderr,
                 jit: bool | None = None, tensorboard: bool = False):
        self.cfg, self.run, self.log = cfg, Path(run), log
        self.device = torch.device(cfg.device)
        pyro.set_rng_seed(cfg.seed)
        with plugins.blamed(cfg):  # a plugin's fault is named, not a traceback
            self.vae = build_vae(cfg).to(self.device)
            self.objective = build_objective(cfg)
        plugins.check_built(cfg, self.vae, self.objective)
        if cfg.output_bias == "data-mean":
            _bias_from_data(self.vae, dataset.train_x)
        self.schedule = SCHEDULES[cfg.lr_schedule](**cfg.lr_schedule_options)
        self.optimizer = build_optimizer(self.vae.parameters(), cfg.lr, self.device)
        if jit is None:
            jit = jit_wanted()
        self.compiled = CompiledLoss(self.vae, self.objective, log) if jit and CompiledLoss.applies(self.objective) else None
        self.binarization = data_mod.BINARIZATIONS[cfg.binarize]
        self.train_x = dataset.train_x.to(self.device)
        self.test_obs = self.binarization.test(dataset.test_x.to(self.device), cfg.seed)
        self.valid_obs = None if dataset.valid_x is None else self.binarization.test(dataset.valid_x.to(self.device), cfg.seed)
        self.epoch = 0
        self.run_id: str | None = None  # config.json's, set when the run starts or resumes
        self.plateau = Plateau.of(cfg)
        self.plateau_state = PlateauState()
        self.inputs = EpochInputs(self.binarization, self.train_x, cfg.seed, cfg.epochs)
        self.tensorboard = tensorboard
        if tensorboard:
            board.require()
        self.board = None  # opened at the first epoch's end, once the run folder exists

    def restore(self, state: dict) -> None:
        runs.load_model_state(self.vae, state, self.run)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["rng"]["torch"])
        except (KeyError, TypeError, ValueError, RuntimeError):
            raise UserError(f"{self.run / runs.CHECKPOINT} is damaged (its optimiser or random state cannot be restored); "
                            "train the run again") from None
        if self.device.type == "cuda" and "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        self.epoch = state["epoch"]

    def lr_at(self, epoch: int, plateau_state: PlateauState) -> float:
        """The learning rate of `epoch`: the configured lr on its schedule, cut by the plateau rule's state."""
        lr = self.cfg.lr * self.schedule(epoch, self.cfg.epochs)
        return lr if self.plateau is None else lr * self.plateau.lr_factor(plateau_state)

    def replay(self, lines: list[dict]) -> None:
        """Where the plateau rule stood after the run's metrics.jsonl lines (one per epoch trained)."""
        if self.plateau is not None:
            self.plateau_state = self.plateau.replay([line[watched_key(line)] for line in lines])

    @property
    def stopped(self) -> bool:
        """The plateau rule ended the run before its epochs."""
        return self.plateau_state.stopped

    def state(self) -> dict:
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        state = {"epoch": self.epoch, "model": self.vae.state_dict(), "optimizer": self.optimizer.state_dict(), "rng": rng}
        return state if self.run_id is None else {**state, "run_id": self.run_id}

    def beta_at(self, epoch: int) -> float:
        """KL annealing: beta * epoch / warm-up during the warm-up epochs, then beta."""
        warmup = self.cfg.beta_warmup_epochs
        return self.cfg.beta * min(1.0, epoch / warmup) if warmup else self.cfg.beta

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """The training loss of one batch (the objective's negative bound summed over the batch)."""
        if self.compiled is not None:
            return self.compiled(x)
        return self.objective.differentiable_loss(self.vae.model, self.vae.guide, x)

    @property
    def jit_active(self) -> bool:
        return self.compiled is not None and self.compiled.active

    def train_epoch(self, progress: bool) -> float:
        """One pass over the training images; returns the objective's bound per image.

        The hot loop: the first step runs with Pyro's validation as configured (model/guide checks,
        distribution arguments), the others without it; losses stay on the device and are checked
        for NaN/inf every CHECK_EVERY steps, the first bad one named by its step and epoch.
        """
        cfg, n = self.cfg, len(self.train_x)
        epoch = self.epoch + 1
        self.vae.beta = self.beta_at(epoch)
        self.lr = self.lr_at(epoch, self.plateau_state)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        started = time.perf_counter()
        observed, order = self.inputs(epoch)
        self.input_seconds = time.perf_counter() - started  # what the epoch waited for its inputs (the bench reads it)
        optimizer, size = self.optimizer, cfg.batch_size
        dtype = self.train_x.dtype if observed.dtype != self.train_x.dtype else None  # e.g. uint8 observations
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        pending: list[torch.Tensor] = []
        starts = range(0, n, size)
        last_step = len(starts)
        # A bar only on a terminal: in a file or pipe (nohup, CI, a cluster log) its carriage-return frames
        # would flood the log, which gets the one line per epoch that _fit writes instead.
        progress = progress and sys.stderr.isatty()
        bar = tqdm(starts, desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", leave=False, disable=not progress, file=sys.stderr)
        with contextlib.ExitStack() as unvalidated:
            for step, start in enumerate(bar, 1):
                batch = observed[order[start : start + size]]
                if dtype is not None:
                    batch = batch.to(dtype)
                loss = self.loss(batch)
                if step == 1:
                    unvalidated.enter_context(pyro.validation_enabled(False))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                pending.append(loss.detach())
                if step % CHECK_EVERY == 0 or step == last_step:
                    total += self._checked_sum(pending, step - len(pending) + 1, epoch)
                    pending = []
                if progress and step % 20 == 0:
                    bar.set_postfix(elbo=f"{-float(loss.detach()) / len(batch):.2f}")
        return -float(total) / n

    def _checked_sum(self, losses: list[torch.Tensor], first_step: int, epoch: int) -> torch.Tensor:
        values = torch.stack(losses)
        finite = torch.isfinite(values)
        if not bool(finite.all()):
            bad = int((~finite).nonzero()[0, 0])
            kept = (f"the checkpoint of epoch {self.epoch} in {self.run} is kept" if self.epoch
                    else f"no epoch finished, so {self.run} holds no checkpoint")
            raise DivergedError(f"loss became {float(values[bad])} at step {first_step + bad} of epoch {epoch}; {kept}. "
                                "Try a lower learning rate (lr) or beta")
        return values.sum(dtype=torch.float64)

    def fit(self, progress: bool = True) -> list[dict]:
        with flush_denormals(), plugins.blamed(self.cfg, in_plugin_code=True):  # a plugin's fault: one line naming it
            return self._fit(progress)

    def _fit(self, progress: bool) -> list[dict]:
        lines = []
        while self.epoch < self.cfg.epochs and not self.stopped:
            started = time.perf_counter()
            train_elbo = self.train_epoch(progress)
            seconds = time.perf_counter() - started
            self.epoch += 1
            beta, self.vae.beta = self.vae.beta, self.cfg.beta  # test numbers use the final beta, comparable across epochs
            test_elbo = objective_per_image(self.vae, self.objective, self.test_obs, self.cfg.seed)
            line = {"epoch": self.epoch, "train_elbo": train_elbo, "test_elbo": test_elbo, "beta": beta, "epoch_seconds": seconds}
            if self.valid_obs is not None:
                line["valid_elbo"] = objective_per_image(self.vae, self.objective, self.valid_obs, self.cfg.seed)
            if self.cfg.lr_schedule != "constant" or self.plateau is not None:
                line["lr"] = self.lr
            news = self._plateau_step(line)
            # The checkpoint first: metrics.jsonl never claims an epoch whose checkpoint was not written.
            # The checkpoint carries its epoch's line, so a line whose write failed is restored on resume.
            try:
                runs.save_checkpoint(self.run, {**self.state(), "metrics": line})
            except WriteError as e:
                kept = f"the checkpoint of epoch {self.epoch - 1} is kept" if self.epoch > 1 else "no checkpoint was written"
                raise WriteError(f"{e}; epoch {self.epoch} is lost, {kept}: continue with --resume {self.run} "
                                 "once there is room") from None
            try:
                runs.append_metrics(self.run, line)
            except WriteError as e:
                raise WriteError(f"{e}; the checkpoint of epoch {self.epoch} was written, its line in {runs.METRICS} was not: "
                                 f"continue with --resume {self.run} once there is room (it restores the line)") from None
            lines.append(line)
            if self.tensorboard:
                self.board = self.board or board.EpochBoard(self.run, self.train_x, self.test_obs, self.binarization, self.cfg.seed, self.epoch - 1)
                self.board.epoch(self, line)
            self.log(
                f"epoch {self.epoch}/{self.cfg.epochs}: train {train_elbo:.2f}, test {test_elbo:.2f} nats/image "
                f"({seconds:.1f} s)" + news
            )
        if self.board is not None:
            self.board.close()
            self.board = None
        return lines


    def _plateau_step(self, line: dict) -> str:
        """Feed the epoch's bound to the plateau rule; marks the line of the epoch that ends the run and
        returns what the rule decided, for the epoch's log line."""
        if self.plateau is None:
            return ""
        before, key = self.plateau_state, watched_key(line)
        if not math.isfinite(line[key]):
            kept = f"the checkpoint of epoch {self.epoch - 1} in {self.run} is kept" if self.epoch > 1 else "no checkpoint was written"
            raise DivergedError(f"the {key.split('_')[0]} bound became {line[key]} at epoch {self.epoch}; {kept}. "
                                "Try a lower learning rate (lr) or beta")
        self.plateau_state = state = self.plateau.step(before, line[key], self.epoch)
        gain = (f"no gain of more than {self.plateau.delta:g} nats on {state.best:.2f} (epoch {state.best_epoch}) "
                f"in {self.plateau.patience} epoch(s)")
        if state.stopped:
            line["stopped"] = f"plateau: {key} {gain}"
            return f"; stopped, {gain}"
        if state.cuts > before.cuts and self.epoch < self.cfg.epochs:
            return f"; lr cut to {self.lr_at(self.epoch + 1, state):.3g}, {gain}"
        return ""


@torch.no_grad()
def _bias_from_data(vae: VAE, train_x: torch.Tensor) -> None:
    """The decoder's output bias set to the logit of the mean training pixel (Burda et al. 2015), so the
    untrained decoder already draws the average image."""
    bias = output_bias(vae.decoder)
    mean = train_x.double().mean(0).clamp(1e-3, 1 - 1e-3)
    bias.copy_(torch.log(mean) - torch.log1p(-mean))


def check(cfg: TrainConfig) -> TrainConfig:
    """Everything about a config that can be checked without data: its values, and that its model and
    objective can be built (e.g. the vamp prior needs a guide with an encoder network). Cheap, so it
    runs before data is loaded and before any folder is written."""
    cfg.validate()
    with seeded(cfg.seed), plugins.blamed(cfg):  # the throwaway model draws from its own stream, not the run's
        vae = build_vae(cfg)
        build_objective(cfg)
    if cfg.output_bias == "data-mean" and output_bias(vae.decoder) is None:
        raise UserError(f"output-bias data-mean needs a decoder whose last bias has one entry per pixel; network "
                        f"{cfg.network!r} has none: use output-bias default")
    return cfg


def train(cfg: TrainConfig, out: str | Path, force: bool = False, progress: bool = True, log=log_to_stderr,
          plugins: list[dict] = (), tensorboard: bool = False) -> Path:
    """Train a new run into `out` (a fresh or, with force, replaced folder); `plugins` are the records
    (pyro_vae.plugins.load_all) of the plugins it needs, kept in config.json."""
    check(cfg)
    runs.check_target(Path(out), force)
    dataset = load_data(cfg)
    # Data, model and objective are built before touching `out`: a bad setting must not cost a folder.
    trainer = Trainer(cfg, Path(out), dataset, log, tensorboard=tensorboard)
    with runs.locked(out):
        return _start(trainer, cfg, dataset, runs.prepare(out, force), progress, log, list(plugins))


def _start(trainer: Trainer, cfg: TrainConfig, dataset, run: Path, progress: bool, log, plugin_records: list[dict]) -> Path:
    trainer.run_id = runs.new_run_id()
    record = {"run_id": trainer.run_id, "config": cfg.to_dict(), "data": dataset.provenance, "versions": runs.versions(),
              "objective_note": "train_elbo/test_elbo in metrics.jsonl are the objective's bound per image (beta-scaled)"}
    if plugin_records:
        record["plugins"] = plugin_records
    if trainer.vae.likelihood.record:
        record["likelihood"] = {"name": cfg.likelihood, **trainer.vae.likelihood.record}
    atomic_write_json(run / runs.CONFIG, record)
    if dataset.split_indices is not None:
        atomic_write_json(run / runs.SPLIT, dataset.split_indices)
    log(f"training {cfg.guide} guide, {cfg.prior} prior, beta={cfg.beta} on {dataset.provenance['train_count']} "
        f"{cfg.dataset} images ({dataset.provenance['origin']}) -> {run}")
    trainer.fit(progress)
    return run


def resume(run: str | Path, epochs: int | None = None, progress: bool = True, log=log_to_stderr,
           device: str | None = None, tensorboard: bool = False) -> Path:
    """Continue a run from its checkpoint, to its configured epochs or to `epochs`, on `device` when
    given (the device changes where it trains, not what: config.json keeps the one it was made on)."""
    run = Path(run)
    cfg, record = runs.read_config(run)
    if epochs is not None:
        cfg.epochs = epochs
    if device is not None:
        cfg.device = device
    check(cfg)
    dataset = load_data(cfg)
    runs.check_data(run, record, dataset.provenance)
    trainer = Trainer(cfg, run, dataset, log, tensorboard=tensorboard)
    with runs.locked(run):
        state = runs.load_checkpoint(run, cfg.device, record.get("run_id"))
        trainer.run_id = record.get("run_id")
        trainer.restore(state)
        if epochs is not None and epochs < trainer.epoch:
            raise UserError(f"{run} has trained {trainer.epoch} epochs already; --epochs is the new total, so give at least {trainer.epoch}")
        runs.truncate_metrics(run, trainer.epoch, state.get("metrics"))
        trainer.replay(runs.read_metrics(run))
        if trainer.stopped:  # config.json keeps its epochs: a stopped run is not extended
            log(f"{run} stopped at epoch {trainer.epoch} when its bound stopped improving (plateau-patience "
                f"{cfg.plateau_patience}); nothing to train, --epochs changes nothing")
            return run
        if epochs is not None:
            record["config"]["epochs"] = epochs
            atomic_write_json(run / runs.CONFIG, record)
        log(f"resuming {run} at epoch {trainer.epoch} of {cfg.epochs}")
        trainer.fit(progress)
    return run
