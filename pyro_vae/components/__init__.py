"""The parts a VAE is built from, each kind a registry filled where its entries are defined.

A researcher's own part registers the same way as the built-in ones (see the contracts in
pyro_vae/registry.py):

    from pyro_vae.components import register_prior

    @register_prior("student-t")
    class StudentT(torch.nn.Module):
        def __init__(self, z_dim, guide=None, *, df: float = 3.0): ...
        def forward(self): return dist.StudentT(...).to_event(1)
"""

from pyro_vae.components.guides import GUIDES
from pyro_vae.components.likelihoods import LIKELIHOODS
from pyro_vae.components.networks import NETWORKS
from pyro_vae.components.objectives import OBJECTIVES
from pyro_vae.components.priors import PRIORS
from pyro_vae.components.schedules import SCHEDULES

register_prior = PRIORS.register
register_guide = GUIDES.register
register_likelihood = LIKELIHOODS.register
register_objective = OBJECTIVES.register
register_network = NETWORKS.register
register_schedule = SCHEDULES.register

__all__ = ["GUIDES", "LIKELIHOODS", "NETWORKS", "OBJECTIVES", "PRIORS", "SCHEDULES", "register_guide",
           "register_likelihood", "register_network", "register_objective", "register_prior", "register_schedule"]
