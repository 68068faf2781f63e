"""Priors over the latent code, chosen by name.

A prior is a module whose call returns a distribution with event shape (z_dim,) and no batch shape;
the model's plate broadcasts it over the images. Its learnable parameters (if any) are trained with
the rest of the VAE and saved in its state_dict. Options come from `prior_options` in the config and
are the keyword-only arguments of the constructor; unknown options are a UserError.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from torch import nn
from torch.distributions import constraints

from pyro_vae.data import PIXELS
from pyro_vae.errors import UserError
from pyro_vae.registry import PriorContract, Registry, int_option

# Constructor signature: (z_dim, guide, **options) -> nn.Module. The guide is passed for priors
# defined through it (VampPrior); others ignore it.
PRIORS: Registry[type[PriorContract]] = Registry("prior")


@PRIORS.register("standard-normal")
class StandardNormal(nn.Module):
    def __init__(self, z_dim: int, guide: nn.Module | None = None):
        super().__init__()
        self.register_buffer("loc", torch.zeros(z_dim))
        self.register_buffer("scale", torch.ones(z_dim))

    def forward(self) -> dist.Distribution:
        return dist.Normal(self.loc, self.scale).to_event(1)


@PRIORS.register("gaussian")
class LearnedGaussian(nn.Module):
    """Normal(loc, diag(scale^2)) with learnable loc and log-scale; N(0, I) at initialisation."""

    def __init__(self, z_dim: int, guide: nn.Module | None = None):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(z_dim))
        self.log_scale = nn.Parameter(torch.zeros(z_dim))

    def forward(self) -> dist.Distribution:
        return dist.Normal(self.loc, self.log_scale.exp()).to_event(1)


@PRIORS.register("mixture")
class GaussianMixture(nn.Module):
    """A learnable mixture of `components` diagonal Gaussians (weights, means and scales).

    Means start at N(0, I) draws (from the run's seed), scales at 1 and weights uniform.
    """

    def __init__(self, z_dim: int, guide: nn.Module | None = None, *, components: int = 10):
        super().__init__()
        k = int_option("prior 'mixture'", "components", components, 1)
        self.logits = nn.Parameter(torch.zeros(k))
        self.locs = nn.Parameter(torch.randn(k, z_dim))
        self.log_scales = nn.Parameter(torch.zeros(k, z_dim))

    def forward(self) -> dist.Distribution:
        return DiagonalMixture(dist.Categorical(logits=self.logits), dist.Normal(self.locs, self.log_scales.exp()).to_event(1))


def _diagonal(components: dist.Distribution) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(loc, scale), each (K, D), of diagonal-Normal components of batch shape (..., K) and event shape (D,)
    whose leading batch dimensions only repeat one set of K (the expansion over a plate's images); None for
    other families."""
    if not (isinstance(components, dist.Independent) and isinstance(components.base_dist, torch.distributions.Normal)
            and components.batch_shape and components.batch_shape == components.base_dist.loc.shape[:-1]):
        return None
    loc, scale = components.base_dist.loc, components.base_dist.scale
    lead = loc.dim() - 2
    if any(t.stride(i) != 0 for t in (loc, scale) for i in range(lead)):
        return None
    return loc[(0,) * lead], scale[(0,) * lead]


def _draw_components(components: dist.Distribution, which: torch.Tensor) -> torch.Tensor | None:
    """One draw of component which[...] each, for diagonal-Normal components (batch (K,), event (D,));
    None for other families. Draws only the chosen components, not all K for every sample."""
    diagonal = _diagonal(components)
    return None if diagonal is None else torch.normal(diagonal[0][which], diagonal[1][which])


def _component_log_probs(components: dist.Distribution, value: torch.Tensor) -> torch.Tensor | None:
    """log q_k(value) of every component, shape (..., K), for diagonal-Normal components (batch (K,), event
    (D,)); None for other families. The squared distances sum_d (z_d - m_kd)^2 / s_kd^2 are expanded into
    matrix products instead of materialising (..., K, D) (for 500 components, most of a training step's
    time, all of it memory traffic). They are computed in float64: the expansion subtracts terms of size
    |z|^2 / s^2, which float32 would round by up to 0.1 nats at the scales a VampPrior's components reach."""
    diagonal = _diagonal(components)
    if diagonal is None:
        return None
    z, loc, scale = value.double(), diagonal[0].double(), diagonal[1].double()
    precision = scale.pow(-2)
    squared = (z * z) @ precision.T - 2.0 * (z @ (loc * precision).T) + (loc * loc * precision).sum(-1)
    normaliser = scale.log().sum(-1) + 0.5 * loc.shape[-1] * math.log(2 * math.pi)
    return (-0.5 * squared - normaliser).to(value.dtype)


class DiagonalMixture(dist.MixtureSameFamily):
    """MixtureSameFamily whose draws pick a component first and draw only from it (torch's draws every
    component for every sample: 500x the work for a 500-component prior), and whose density of diagonal
    Gaussians is scored by matrix products (_component_log_probs); the same distribution."""

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            drawn = _draw_components(self.component_distribution, self.mixture_distribution.sample(sample_shape))
            return drawn if drawn is not None else super().sample(sample_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        each = _component_log_probs(self.component_distribution, value)
        if each is None:
            return super().log_prob(value)
        if self._validate_args:
            self._validate_sample(value)
        return torch.logsumexp(each + torch.log_softmax(self.mixture_distribution.logits, -1), dim=-1)


class UniformMixture(dist.TorchDistribution):
    """(1/K) sum_k components_k for components with batch shape (..., K) and event shape (D,).

    Unlike MixtureSameFamily, which scores x of shape (..., 1, D) and relies on the components
    broadcasting it, this expands x to (..., K, D) first: the conditioned flows of the `iaf` guide
    need their input to match their context's (K, context) shape exactly.
    """

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = False

    def __init__(self, components: dist.Distribution):
        if len(components.event_shape) != 1 or not components.batch_shape:
            raise ValueError("UniformMixture needs components with batch shape (..., K) and event shape (D,)")
        self.components = components
        self.k = components.batch_shape[-1]
        super().__init__(components.batch_shape[:-1], components.event_shape, validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        each = _component_log_probs(self.components, value)
        if each is not None:  # the VampPrior's components under the gaussian guide
            return torch.logsumexp(each, dim=-1) - math.log(self.k)
        expanded = value.unsqueeze(-2).expand(*value.shape[:-1], self.k, value.shape[-1])
        return torch.logsumexp(self.components.log_prob(expanded), dim=-1) - math.log(self.k)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            if not self.batch_shape:  # the VampPrior's: a chosen component per draw, only it drawn
                drawn = _draw_components(self.components, torch.randint(self.k, torch.Size(sample_shape)))
                if drawn is not None:
                    return drawn
            every = self.components.sample(sample_shape)  # (*sample, *batch, K, D)
            which = torch.randint(self.k, every.shape[:-2], device=every.device)
            return every.gather(-2, which[..., None, None].expand(*which.shape, 1, every.shape[-1])).squeeze(-2)


PSEUDO_INPUTS = ("sigmoid", "hardtanh")  # how the VampPrior's pseudo-inputs are parametrised


@PRIORS.register("vamp")
class VampPrior(nn.Module):
    """VampPrior (Tomczak & Welling 2018): p(z) = (1/K) sum_k q(z | u_k), the guide's own posterior at
    K = `components` learnable pseudo-inputs u_k = sigmoid(logits_k) in pixel space.

    The pseudo-inputs start as grey noise around the mean MNIST intensity (logits ~ N(-2, 0.5^2)).
    With `pseudo_inputs = "hardtanh"` they are parametrised as in the authors' code instead:
    u_k = hardtanh(w_k, 0, 1) with w_k ~ N(0.05, 0.01^2) per pixel (their dynamic-MNIST setting).
    The guide is used, not owned: its encoder is trained through both the guide and this prior,
    and is saved once, under the guide. With the `iaf` guide each prior density needs the flows'
    inverse at every pseudo-input (z_dim sequential passes per step): exact, but slower at large z_dim.
    """

    def __init__(self, z_dim: int, guide: nn.Module | None = None, *, components: int = 50, pseudo_inputs: str = "sigmoid"):
        super().__init__()
        k = int_option("prior 'vamp'", "components", components, 1)
        if pseudo_inputs not in PSEUDO_INPUTS:
            raise UserError(f"prior 'vamp' option pseudo_inputs must be one of {', '.join(PSEUDO_INPUTS)}, got {pseudo_inputs!r}")
        if guide is None or getattr(guide, "deterministic", True):
            name = getattr(guide, "registered_name", type(guide).__name__)
            raise UserError(
                f"prior 'vamp' mixes the guide's densities q(z|u) but guide {name!r} has none (a point mass); "
                "use guide gaussian, full-rank or iaf, or another prior"
            )
        self._guide = (guide,)  # a reference, not a submodule: its parameters belong to the VAE's guide
        self.parametrisation = pseudo_inputs
        if pseudo_inputs == "sigmoid":
            self.pseudo_logits = nn.Parameter(torch.randn(k, PIXELS) * 0.5 - 2.0)
        else:  # the authors' NonLinear(K, 784, bias=False, Hardtanh(0, 1)) on an identity input, normal_init(0.05, 0.01)
            self.pseudo_means = nn.Parameter(torch.randn(k, PIXELS) * 0.01 + 0.05)

    def pseudo_inputs(self) -> torch.Tensor:
        if self.parametrisation == "sigmoid":
            return torch.sigmoid(self.pseudo_logits)
        return nn.functional.hardtanh(self.pseudo_means, 0.0, 1.0)

    def forward(self) -> dist.Distribution:
        return UniformMixture(self._guide[0](self.pseudo_inputs()))


FLOW_TRANSFORMS = ("affine", "spline")


@PRIORS.register("flow")
class FlowPrior(nn.Module):
    """N(0, I) pushed through `steps` learnable autoregressive transforms (`transform`: affine or
    spline; autoregressive networks with two hidden layers of `hidden_dim`).

    The transforms are used in the masked-autoregressive direction: scoring a code (every training
    step) is one network pass per step, sampling from the prior is z_dim sequential passes per step.
    """

    def __init__(self, z_dim: int, guide: nn.Module | None = None, *, steps: int = 2, transform: str = "affine", hidden_dim: int | None = None):
        super().__init__()
        where = "prior 'flow'"
        steps = int_option(where, "steps", steps, 1)
        if transform not in FLOW_TRANSFORMS:
            raise UserError(f"{where} option transform must be one of {', '.join(FLOW_TRANSFORMS)}, got {transform!r}")
        hidden = max(32, 4 * z_dim) if hidden_dim is None else int_option(where, "hidden_dim", hidden_dim, 1)
        if hidden < z_dim:
            raise UserError(f"{where} option hidden_dim must be at least the latent size {z_dim} (autoregressive masks), got {hidden}")
        make = T.affine_autoregressive if transform == "affine" else T.spline_autoregressive
        self.register_buffer("loc", torch.zeros(z_dim))
        self.register_buffer("scale", torch.ones(z_dim))
        # A ModuleList, so the transforms' parameters are trained and saved with the VAE.
        self.flows = nn.ModuleList(make(z_dim, hidden_dims=[hidden, hidden]) for _ in range(steps))

    def forward(self) -> dist.Distribution:
        # Pyro's transform modules live as long as the prior and cache their last (input, output):
        # scoring the same tensor again after a parameter update (or load_state_dict) would return
        # the stale value. Each distribution made here starts from an empty cache.
        for flow in self.flows:
            flow._cached_x_y = (None, None)
        base = dist.Normal(self.loc, self.scale).to_event(1)
        return dist.TransformedDistribution(base, [flow.inv for flow in self.flows])
