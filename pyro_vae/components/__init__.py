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



def register_prior(name: str):
    """Register a prior under `name`, so `prior=name` (`--prior name`) builds it.

    Args:
        name: the name settings use, e.g. "student-t".

    Returns:
        A decorator for an `nn.Module` class (or factory) called `Prior(z_dim, guide, **options)` whose
        call returns p(z), event shape (z_dim,) (`pyro_vae.registry.PriorContract`); its keyword-only
        arguments are its options.

    Example:
        >>> @register_prior("student-t")
        ... class StudentT(torch.nn.Module):
        ...     def __init__(self, z_dim, guide=None, *, df: float = 3.0): ...
        ...     def forward(self): return dist.StudentT(self.df, self.loc, 1.0).to_event(1)
    """
    return PRIORS.register(name)


def register_guide(name: str):
    """Register a guide q(z | x) under `name`, so `guide=name` (`--guide name`) builds it.

    Args:
        name: the name settings use, e.g. "my-flow".

    Returns:
        A decorator for an `nn.Module` class called `Guide(z_dim, make_encoder, **options)`: its call
        on (N, 784) images is q(z | x), batch shape (N,), event shape (z_dim,), and `encode(x)` gives
        the posterior mean and scale (`pyro_vae.registry.GuideContract`).

    Example:
        >>> @register_guide("my-gaussian")
        ... class MyGaussian(torch.nn.Module):
        ...     deterministic = False
        ...     def __init__(self, z_dim, make_encoder): ...
    """
    return GUIDES.register(name)


def register_likelihood(name: str):
    """Register a likelihood p(x | z) under `name`, so `likelihood=name` (`--likelihood name`) uses it.

    Args:
        name: the name settings use, e.g. "beta".

    Returns:
        A decorator for a `Likelihood` value (or a factory returning one) with `distribution(logits)`,
        event dim 1 over the 784 pixels, and `mean(logits)`, the expected image
        (`pyro_vae.registry.LikelihoodContract`).

    Example:
        >>> register_likelihood("my-bernoulli")(Likelihood(lambda l: dist.Bernoulli(logits=l).to_event(1), torch.sigmoid))
    """
    return LIKELIHOODS.register(name)


def register_objective(name: str):
    """Register a training objective under `name`, so `objective=name` (`--objective name`) uses it.

    Args:
        name: the name settings use, e.g. "my-elbo".

    Returns:
        A decorator for a class (or factory) called `Objective(num_particles, **options)`: a Pyro
        ELBO-like object with `differentiable_loss(model, guide, x)` (`pyro_vae.registry.ObjectiveContract`).

    Example:
        >>> @register_objective("my-trace")
        ... def my_trace(num_particles, *, vectorize: bool = True):
        ...     return pyro.infer.Trace_ELBO(num_particles=num_particles, vectorize_particles=vectorize)
    """
    return OBJECTIVES.register(name)


def register_network(name: str):
    """Register an encoder/decoder network pair under `name`, so `network=name` (`--network name`) uses it.

    Args:
        name: the name settings use, e.g. "wide-mlp".

    Returns:
        A decorator for a `Network` value (or a factory of one, called with the network's options):
        `encoder(out_dim, hidden_dim)` maps (..., 784) to (..., out_dim), `decoder(z_dim, hidden_dim)`
        maps (..., z_dim) to (..., 784) logits (`pyro_vae.registry.NetworkContract`).

    Example:
        >>> register_network("linear")(Network(lambda o, h: nn.Linear(784, o), lambda z, h: nn.Linear(z, 784)))
    """
    return NETWORKS.register(name)


def register_schedule(name: str):
    """Register a learning-rate schedule under `name`, so `lr_schedule=name` (`--lr-schedule name`) uses it.

    Args:
        name: the name settings use, e.g. "halving".

    Returns:
        A decorator for a factory called with the schedule's options (its keyword-only arguments)
        that returns `factor(epoch, epochs)`: each epoch's lr as a multiple of the configured lr
        (epoch counts from 1, epochs is the run's total).

    Example:
        >>> @register_schedule("my-constant")
        ... def my_constant():
        ...     return lambda epoch, epochs: 1.0
    """
    return SCHEDULES.register(name)

__all__ = ["GUIDES", "LIKELIHOODS", "NETWORKS", "OBJECTIVES", "PRIORS", "SCHEDULES", "register_guide",
           "register_likelihood", "register_network", "register_objective", "register_prior", "register_schedule"]
