"""Training objectives, chosen by name.

An objective has `differentiable_loss(model, guide, x)`: the negative bound summed over the batch.
Options come from `objective_options` in the config (keyword-only arguments of the constructor).

- trace:     the ELBO, Pyro's Trace_ELBO (Monte Carlo over `num_particles` particles, averaged).
- meanfield: the ELBO with analytic KL(q || p) where one is known for the guide/prior pair
             (Pyro's TraceMeanField_ELBO); other pairs fall back to the Monte Carlo estimate
             -log q(z) + log p(z) of that site, so every combination works.
- iwae:      the importance-weighted bound (Burda et al. 2016) with K = `num_particles` per image.
- renyi:     the Rényi bound of order `alpha` (Li & Turner 2016) per image; alpha = 0 is iwae,
             alpha -> 1 the ELBO (alpha = 1 is computed as the ELBO).
"""

from __future__ import annotations

import math
from typing import Callable

import pyro
import pyro.infer
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from pyro_vae.errors import UserError
from pyro_vae.registry import ObjectiveContract, Registry, float_option

# Constructor signature: (num_particles, **options) -> objective.
OBJECTIVES: Registry[Callable[..., ObjectiveContract]] = Registry("objective")

# The model's only plate ("data") sits at dim -1; particles go to its left.
MAX_PLATE_NESTING = 1


def _pyro_elbo(cls):
    def build(num_particles: int):
        # Particles are vectorised (one batched pass) rather than looped in Python.
        return cls(num_particles=num_particles, vectorize_particles=num_particles > 1, max_plate_nesting=MAX_PLATE_NESTING)

    return build


OBJECTIVES.register("trace")(_pyro_elbo(pyro.infer.Trace_ELBO))
OBJECTIVES.register("meanfield")(_pyro_elbo(pyro.infer.TraceMeanField_ELBO))


# ---------------------------------------------------------------------------------------------
# Per-image multi-sample bounds, written from Pyro traces.
#
# Pyro's RenyiELBO computes the same per-image bound here (since Pyro 1.5 plates enclosing every
# sample site, our data plate, stay outside its log-mean-exp; tests check the two agree to the draw).
# It offers only `loss` and `loss_and_grads`, which runs backward itself and returns a Python float
# (a host sync every step); the training loop and evaluation work from a `differentiable_loss` they
# can batch, check and reuse, so the bound is written here from the traces, once, with log_weights.


def log_weights(model, guide, x: torch.Tensor, num_particles: int) -> torch.Tensor:
    """Per-image log importance weights log p(x, z_k) - log q(z_k | x), shape (K, B).

    The guide runs once, vectorised over a particle plate left of the data plate; the model is
    replayed on its draws. Each site's log-density is Pyro's scaled and masked one (site["log_prob"]
    from Trace.compute_log_prob applies poutine.scale / poutine.mask), so beta weights log p(z) and
    log q(z) here exactly as in the ELBO objectives. Evaluation's importance sampling calls it too
    (on unscaled programs), so training and evaluation weigh draws by one definition.
    """
    with pyro.plate("particles", num_particles, dim=-(MAX_PLATE_NESTING + 1)):
        guide_trace = poutine.trace(guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    shape = (num_particles, x.shape[0])
    total = x.new_zeros(shape)
    for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
        trace.compute_log_prob()
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            if sign < 0:
                if site["is_observed"]:
                    continue
                if not site["fn"].has_rsample:
                    raise UserError(
                        f"the guide's site {name!r} cannot be reparametrised, which the iwae and renyi objectives need; "
                        "use objective trace or meanfield"
                    )
            log_prob = site["log_prob"]
            in_data_plate = any(frame.dim == -1 and frame.vectorized for frame in site["cond_indep_stack"])
            if not in_data_plate or torch.broadcast_shapes(log_prob.shape, shape) != shape:
                raise UserError(
                    f"site {name!r} has log-density shape {tuple(log_prob.shape)}, not per particle and image {shape}; "
                    "iwae and renyi need every site inside the data plate"
                )
            total = total + sign * log_prob
    return total


class RenyiBound:
    """-sum_i 1/(1-alpha) log (1/K) sum_k w_ik^(1-alpha), with w_ik the importance weights of image i.

    alpha = 0 is the IWAE bound; alpha = 1 (the limit) is the ELBO estimate mean_k log w_ik.
    All guide sites are reparametrised, so the loss's gradient is the bound's pathwise gradient.
    """

    def __init__(self, num_particles: int, alpha: float = 0.0):
        self.num_particles = num_particles
        self.alpha = alpha

    def differentiable_loss(self, model, guide, x: torch.Tensor) -> torch.Tensor:
        lw = log_weights(model, guide, x, self.num_particles)
        if self.alpha == 1.0:
            return -lw.mean(0).sum()
        scaled = (1.0 - self.alpha) * lw
        bound = (torch.logsumexp(scaled, dim=0) - math.log(self.num_particles)) / (1.0 - self.alpha)
        return -bound.sum()

    def loss(self, model, guide, x: torch.Tensor) -> float:
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, x))


@OBJECTIVES.register("iwae")
def iwae(num_particles: int) -> RenyiBound:
    return RenyiBound(num_particles, alpha=0.0)


@OBJECTIVES.register("renyi")
def renyi(num_particles: int, *, alpha: float = 0.5) -> RenyiBound:
    alpha = float_option("objective 'renyi'", "alpha", alpha)
    if alpha < 0:
        raise UserError(f"objective 'renyi' option alpha must be 0 or more (below 0 it is no lower bound on log p(x)), got {alpha}")
    return RenyiBound(num_particles, alpha=alpha)
