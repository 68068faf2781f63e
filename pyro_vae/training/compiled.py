"""The compiled training loss: everything that reaches into Pyro's internals (pyro.ops.jit, the param store)."""

from __future__ import annotations

import os
import warnings
import weakref
from typing import Callable

import pyro
import pyro.infer
import torch

from pyro_vae.io import log_to_stderr, seeded
from pyro_vae.model import VAE

# PYRO_VAE_JIT=0 turns the compiled training loss off (see CompiledLoss).
JIT_ENV = "PYRO_VAE_JIT"

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
        params = [p for p in self.vae.parameters() if p.requires_grad]
        try:
            with seeded(device=x.device), warnings.catch_warnings():
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


