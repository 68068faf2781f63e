"""Name -> entry tables, so a dataset, prior, guide, likelihood, objective or network is chosen by name.

One registration style for every kind: ``@PRIORS.register("mixture")`` above a class or a factory
function, or ``NETWORKS.register("mlp")(value)`` for a plain value. A class's keyword-only
``__init__`` arguments, or a factory's keyword-only arguments, are its options: an unknown option
or a bad value is a one-line UserError rather than a TypeError from deep inside build_vae.
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import TYPE_CHECKING, Any, Callable, Generic, Protocol, TypeVar

from pyro_vae.errors import UserError

if TYPE_CHECKING:  # the contracts name torch types; importing torch here would slow every CLI call
    import torch
    from pyro.distributions import Distribution

T = TypeVar("T")


class RegisteredTwice(ValueError):
    """A name registered again (by a plugin, say); plugins turn it into a one-line error naming the plugin."""


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(entry: T) -> T:
            if name in self._entries:
                raise RegisteredTwice(f"{self.kind} {name!r} is registered twice")
            entry = _with_checked_options(self.kind, name, entry)
            self._entries[name] = entry
            return entry

        return add

    def build(self, name: str, options: dict, value_type: type) -> T:
        """The entry `name` made with its options: an entry that is already a `value_type` takes none,
        any other is a factory called with them."""
        entry = self[name]
        if isinstance(entry, value_type):
            check_options(self.kind, name, options, [])
            return entry
        return entry(**options)

    def unregister(self, name: str) -> None:
        """Drop an entry (a plugin's, when its import fails half-way or its file changed)."""
        self._entries.pop(name, None)

    def __getitem__(self, name: str) -> T:
        self.check(name)
        return self._entries[name]

    def check(self, name: str) -> None:
        if not isinstance(name, str):  # a list or number from a TOML file: not a name at all
            raise UserError(f"a {self.kind} is named by a string, got {name!r}; choose one of: {', '.join(self.names())}")
        if name not in self._entries:
            raise UserError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}")

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        return isinstance(name, str) and name in self._entries


# ---------------------------------------------------------------------------------------------
# What each kind of component must be. A registered class (or factory) is called as shown; its
# keyword-only arguments are its options.


class PriorContract(Protocol):
    """`PRIORS[name](z_dim, guide, **options)`: an nn.Module whose call returns p(z), a distribution
    with event shape (z_dim,). `guide` is the run's guide, for priors defined through it (VampPrior)."""

    def __call__(self) -> "Distribution": ...


class GuideContract(Protocol):
    """`GUIDES[name](z_dim, make_encoder, **options)`: an nn.Module; `make_encoder(out_dim)` builds the
    configured network from (N, 784) images to (N, out_dim). `deterministic` is True for a point mass."""

    deterministic: bool

    def __call__(self, x: "torch.Tensor") -> "Distribution":
        """q(z | x) for a batch (N, 784): batch shape (N,), event shape (z_dim,)."""

    def encode(self, x: "torch.Tensor") -> "tuple[torch.Tensor, torch.Tensor]":
        """The posterior mean and scale of each image, (N, z_dim) each (scale 0 for a point mass)."""


class NetworkContract(Protocol):
    """`NETWORKS[name]`, a value, or a factory called with the network's options that returns one:
    `encoder(out_dim, hidden_dim)` maps (..., 784) to (..., out_dim) and `decoder(z_dim, hidden_dim)`
    maps (..., z_dim) to (..., 784) logits; leading dims pass through."""

    encoder: "Callable[[int, int], torch.nn.Module]"
    decoder: "Callable[[int, int], torch.nn.Module]"


class LikelihoodContract(Protocol):
    """`LIKELIHOODS[name]`: `distribution(logits)` is p(x | z) with event dim 1 over the 784 pixels;
    `mean(logits)` is the expected image."""

    distribution: "Callable[[torch.Tensor], Distribution]"
    mean: "Callable[[torch.Tensor], torch.Tensor]"


class ObjectiveContract(Protocol):
    """`OBJECTIVES[name](num_particles, **options)`: a Pyro ELBO-like object whose
    `differentiable_loss(model, guide, x)` is the negative bound summed over the batch."""

    def differentiable_loss(self, model: Callable, guide: Callable, x: "torch.Tensor") -> "torch.Tensor": ...


def _with_checked_options(kind: str, name: str, entry):
    """A class gets its __init__ wrapped, a function is wrapped, a plain value is kept as it is."""
    if inspect.isclass(entry):
        init = entry.__init__
        allowed = keyword_options(init)

        @functools.wraps(init)
        def checked_init(self, *args, **options):
            init(self, *args, **check_options(kind, name, options, allowed))

        entry.__init__ = checked_init
        entry.registered_name = name
        return entry
    if inspect.isfunction(entry):
        allowed = keyword_options(entry)

        @functools.wraps(entry)
        def checked(*args, **options):
            return entry(*args, **check_options(kind, name, options, allowed))

        return checked
    return entry


def check_options(kind: str, name: str, options: dict, allowed: list[str]) -> dict[str, Any]:
    """`options` with '-' read as '_', or a UserError naming the unknown ones and the valid ones."""
    normalized = {str(key).replace("-", "_"): value for key, value in options.items()}
    unknown = sorted(set(normalized) - set(allowed))
    if unknown:
        valid = ", ".join(allowed) if allowed else f"none ({kind} {name!r} takes no options)"
        raise UserError(
            f"unknown option {', '.join(map(repr, unknown))} for {kind} {name!r} in {kind}_options; valid options: {valid}"
        )
    return normalized


def keyword_options(fn: Callable) -> list[str]:
    return [p.name for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY]


def int_option(where: str, option: str, value: Any, low: int = 1) -> int:
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())) or value < low:
        raise UserError(f"{where} option {option} must be a whole number of at least {low}, got {value!r}")
    return int(value)


def float_option(where: str, option: str, value: Any, low: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or (low is not None and value < low):
        bound = f" of at least {low}" if low is not None else ""
        raise UserError(f"{where} option {option} must be a number{bound}, got {value!r}")
    return float(value)


