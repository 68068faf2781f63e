"""Training objectives, chosen by name.

An objective has `differentiable_loss(model, guide, x)`: the negative bound summed over the batch.
"""

from __future__ import annotations

import pyro.infer

from .registry import Registry

# Constructor signature: (num_particles, **options) -> objective.
OBJECTIVES: Registry = Registry("objective")


def _pyro_elbo(cls):
    def build(num_particles: int):
        # Particles are vectorised (one batched pass) rather than looped in Python.
        return cls(num_particles=num_particles, vectorize_particles=num_particles > 1, max_plate_nesting=1)

    return build


OBJECTIVES.register("trace")(_pyro_elbo(pyro.infer.Trace_ELBO))
OBJECTIVES.register("meanfield")(_pyro_elbo(pyro.infer.TraceMeanField_ELBO))
