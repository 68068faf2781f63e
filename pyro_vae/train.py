"""The SVI loop: one Pyro ELBO, a torch optimiser, data held on the device and batched by index."""

from __future__ import annotations

import contextlib
import os
import sys
import time
import warnings
import weakref
from pathlib import Path
from typing import Callable

import pyro
import pyro.infer
import torch
from tqdm import tqdm

from . import data as data_mod
from . import runs
from .config import TrainConfig
from .errors import DivergedError, UserError
from .model import VAE, build_vae
from .objectives import OBJECTIVES

EVAL_BATCH = 1000
# The loop keeps each step's loss as a tensor and looks at them every CHECK_EVERY steps (and at the
# end of the epoch): one host sync per CHECK_EVERY steps instead of one per step. A non-finite loss
# is still reported with its own step and epoch.
CHECK_EVERY = 50
# PYRO_VAE_JIT=0 turns the compiled training loss off (see CompiledLoss).
JIT_ENV = "PYRO_VAE_JIT"
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


def build_optimizer(params, lr: float, device: torch.device) -> torch.optim.Optimizer:
    """Adam; its fused kernel (one pass over each parameter instead of about ten) where torch has one."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=device.type in ("cpu", "cuda"))
    except (RuntimeError, TypeError):  # an older torch, or a device without the fused kernel
        return torch.optim.Adam(params, lr=lr)


# Pyro's ELBO classes and their TorchScript twins: same estimator, compiled (pyro.ops.jit). Only
# Trace_ELBO's: JitTraceMeanField_ELBO (Pyro 1.9.2) draws its noise differently from the eager
# TraceMeanField_ELBO under the same seed (same estimator, other draws), which would tie a run's
# numbers to whether it was compiled; meanfield trains eagerly.
_JIT_TWINS = {pyro.infer.Trace_ELBO: pyro.infer.JitTrace_ELBO}


def jit_wanted() -> bool:
    return os.environ.get(JIT_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


class CompiledLoss:
    """The objective's training loss through Pyro's JIT twin of its class (JitTrace_ELBO for Trace_ELBO,
    the `trace` objective): the same Pyro model and guide, traced once with TorchScript per batch size
    and beta, then replayed as one graph without Pyro's per-step Python (messenger stack, site checks,
    per-site .item() calls).

    The graph runs unoptimised (torch.jit.optimized_execution(False)): its ops record eager autograd,
    whose backward formulas are faster here than TorchScript's symbolic ones (ReLU's, for one) and
    give the eager objective's gradients.

    pyro.ops.jit feeds the graph its parameters from Pyro's param store, so the model and guide
    register the VAE there (pyro.module under a name of this object's own; the store then holds the
    VAE's Parameter tensors themselves, which the optimiser updates in place). Once compiled, the
    traced graph is called with those tensors directly, skipping pyro.ops.jit's per-call param lookups.

    The loss is JitTrace_ELBO's (loss, surrogate) combined as Trace_ELBO combines them: the value of
    the loss, the gradient of the surrogate. (JitTrace_ELBO.differentiable_loss itself returns
    loss + (surrogate - surrogate.detach()) with a loss that is not detached under the JIT, i.e. twice
    the ELBO's gradient, in Pyro 1.9.2.)

    Each new (batch size, beta) is checked when it is compiled: under one seed the compiled loss and
    its gradient must match the eager objective's, else this falls back to the eager objective for the
    rest of the run (a model whose structure depends on its data cannot be traced). Compiling and
    checking draw from a forked RNG, so the training stream is the eager one, draw for draw, and a
    resumed run repeats a straight one.
    """

    RTOL = 1e-5  # on the loss, a sum over the batch
    GRAD_RTOL = 1e-4  # on each parameter's gradient, relative to its norm

    def __init__(self, vae: VAE, objective, log: Callable[[str], None] = log_to_stderr):
        twin = _JIT_TWINS[type(objective)]
        self.vae, self.eager, self.log = vae, objective, log
        self.jit = twin(
            num_particles=objective.num_particles, vectorize_particles=objective.vectorize_particles,
            max_plate_nesting=objective.max_plate_nesting, ignore_jit_warnings=True,
        )
        self.name = f"pyro_vae.train.{id(self)}"
        self.calls: dict[tuple, Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]] = {}
        self.fallback: str | None = None
        name = self.name

        def model(x, **_):
            pyro.module(name, vae)
            vae.model(x)

        def guide(x, **_):
            pyro.module(name, vae)
            vae.guide(x)

        self.model, self.guide = model, guide
        weakref.finalize(self, _forget_params, name)

    @classmethod
    def applies(cls, objective) -> bool:
        return type(objective) in _JIT_TWINS

    @property
    def active(self) -> bool:
        return self.fallback is None

    @staticmethod
    def _combine(loss: torch.Tensor, surrogate: torch.Tensor | None) -> torch.Tensor:
        if surrogate is None:
            return loss
        return loss.detach() + (surrogate - surrogate.detach())

    @staticmethod
    def _surrogate_only(call):
        def surrogate(x):
            _, value = call(x)
            return value, None

        return surrogate

    def _through_pyro(self, key: tuple):
        kwargs = {"_batch": key[0], "_beta": key[1]}
        return lambda x: self.jit.loss_and_surrogate_loss(self.model, self.guide, x, **kwargs)

    def _direct(self, before: set, fallback):
        """The graph pyro.ops.jit compiled for this key, called with the VAE's parameters directly."""
        try:
            compiled = self.jit._loss_and_surrogate_loss  # pyro.ops.jit.CompiledFunction
            (script,) = [f for k, f in compiled.compiled.items() if k not in before]
            store = pyro.get_param_store()
            params = tuple(store[n].unconstrained() for n in compiled._param_names)
        except Exception:  # noqa: BLE001 - another Pyro version: keep its public call
            return fallback
        return lambda x: script(*params, x)

    def _compile(self, x: torch.Tensor, key: tuple) -> None:
        devices = [x.device] if x.device.type == "cuda" else []
        params = [p for p in self.vae.parameters() if p.requires_grad]
        try:
            with torch.random.fork_rng(devices=devices, device_type=x.device.type), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TorchScript's tracer warnings; the check below is the judge
                seed = int(torch.randint(2**31 - 1, ()).item())
                existing = getattr(self.jit, "_loss_and_surrogate_loss", None)
                before = set(existing.compiled) if existing is not None else set()
                public = self._through_pyro(key)
                with torch.jit.optimized_execution(False):
                    for _ in range(2):  # trace, then run the traced graph once
                        public(x)
                call = self._direct(before, public)
                torch.manual_seed(seed)
                expected = self.eager.differentiable_loss(self.vae.model, self.vae.guide, x)
                expected_grads = torch.autograd.grad(expected, params, allow_unused=True)
                torch.manual_seed(seed)
                with torch.jit.optimized_execution(False):
                    loss, surrogate = call(x)
                if torch.equal(loss.detach(), surrogate.detach()):
                    # Every guide site reparametrised: the surrogate is the loss, value and gradient.
                    call = self._surrogate_only(call)
                got = self._combine(loss, surrogate)
                got_grads = torch.autograd.grad(got, params, allow_unused=True)
            store = pyro.get_param_store()
            if not bool(torch.isfinite(expected.detach())):
                return  # nothing to compare (a diverged model): this batch runs eagerly, the next one tries again
            if not all(store[f"{self.name}$$${k}"] is p for k, p in self.vae.named_parameters()):
                self._fall_back("the param store does not hold the model's own parameters")
            elif not torch.allclose(got.detach(), expected.detach(), rtol=self.RTOL, atol=1e-3, equal_nan=True):
                self._fall_back(f"compiled loss {float(got.detach()):.6g} differs from the eager {float(expected.detach()):.6g}")
            else:
                for p, g, e in zip(params, got_grads, expected_grads):
                    g = torch.zeros_like(p) if g is None else g
                    e = torch.zeros_like(p) if e is None else e
                    if not float((g - e).norm()) <= self.GRAD_RTOL * float(e.norm()) + 1e-6:
                        self._fall_back(f"compiled gradient differs from the eager one (relative {float((g - e).norm() / e.norm()):.3g})")
                        break
        except Exception as e:  # noqa: BLE001 - any tracing failure means: run eagerly
            self._fall_back(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        else:
            if self.fallback is None:
                self.calls[key] = call

    def _fall_back(self, why: str) -> None:
        self.fallback = why
        self.log(f"note: training without the compiled loss ({why}); set {JIT_ENV}=0 to skip the attempt")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.fallback is None:
            key = (len(x), float(self.vae.beta))
            call = self.calls.get(key)
            if call is None:
                self._compile(x, key)
                call = self.calls.get(key)
            if call is not None:
                with torch.jit.optimized_execution(False):
                    return self._combine(*call(x))
        return self.eager.differentiable_loss(self.vae.model, self.vae.guide, x)


def _forget_params(name: str) -> None:
    store = pyro.get_param_store()
    for key in [k for k in store.keys() if k.startswith(name + "$$$")]:
        del store[key]


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

    def __init__(self, cfg: TrainConfig, run: Path, dataset: data_mod.Data, log: Callable[[str], None] = log_to_stderr,
                 jit: bool | None = None):
        self.cfg, self.run, self.log = cfg, Path(run), log
        self.device = torch.device(cfg.device)
        pyro.set_rng_seed(cfg.seed)
        self.vae = build_vae(cfg).to(self.device)
        self.objective = build_objective(cfg)
        self.optimizer = build_optimizer(self.vae.parameters(), cfg.lr, self.device)
        if jit is None:
            jit = jit_wanted()
        self.compiled = CompiledLoss(self.vae, self.objective, log) if jit and CompiledLoss.applies(self.objective) else None
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
        observed = self.binarization.train(self.train_x, cfg.seed, epoch)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)).to(self.device)
        optimizer, size = self.optimizer, cfg.batch_size
        dtype = self.train_x.dtype if observed.dtype != self.train_x.dtype else None  # e.g. uint8 observations
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        pending: list[torch.Tensor] = []
        starts = range(0, n, size)
        last_step = len(starts)
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
            raise DivergedError(
                f"loss became {float(values[bad])} at step {first_step + bad} of epoch {epoch}; the checkpoint of epoch "
                f"{self.epoch} in {self.run} is kept. Try a lower --lr"
            )
        return values.sum(dtype=torch.float64)

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
