"""An objective: the ELBO of K posterior draws per image whose draws are weighted by their normalised
importance weights with the weights held fixed (a "self-normalised" ELBO, between the ELBO at
temperature 0 and a weighted ELBO): -sum_i sum_k softmax_k(w_ik / tau).detach() * w_ik.

Contract (ObjectiveContract): constructed as OBJECTIVE(num_particles, **options); an object whose
differentiable_loss(model, guide, x) is a scalar tensor, the negative bound summed over the batch.
Written from Pyro traces with the package's own per-image log weights.
"""

import torch

from pyro_vae import register_objective
from pyro_vae.components.objectives import log_weights


class WeightedElbo:
    def __init__(self, num_particles: int, temperature: float):
        self.num_particles, self.temperature = num_particles, temperature

    def differentiable_loss(self, model, guide, x: torch.Tensor) -> torch.Tensor:
        lw = log_weights(model, guide, x, self.num_particles)  # (K, N)
        weights = torch.softmax(lw.detach() / self.temperature, dim=0)
        return -(weights * lw).sum(0).sum()


@register_objective("weighted-elbo")
def weighted_elbo(num_particles: int, *, temperature: float = 1.0) -> WeightedElbo:
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return WeightedElbo(num_particles, float(temperature))
