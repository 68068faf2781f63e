"""Component options: keyword-only constructor arguments, checked by name and value.

A prior, guide or objective takes its options from the config's `*_options` tables; an unknown
option or a bad value is a one-line UserError rather than a TypeError from inside build_vae.
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Any, Callable

from .errors import UserError
from .registry import Registry



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


def register_component(registry: Registry, name: str):
    """Register a class under `name`; its keyword-only __init__ arguments are its options, and any
    other option is a UserError (rather than a TypeError from deep inside build_vae)."""

    def add(cls):
        init = cls.__init__
        allowed = keyword_options(init)

        @functools.wraps(init)
        def checked_init(self, *args, **options):
            init(self, *args, **check_options(registry.kind, name, options, allowed))

        cls.__init__ = checked_init
        cls.registered_name = name
        return registry.register(name)(cls)

    return add


def int_option(where: str, option: str, value: Any, low: int = 1) -> int:
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())) or value < low:
        raise UserError(f"{where} option {option} must be a whole number of at least {low}, got {value!r}")
    return int(value)


def float_option(where: str, option: str, value: Any, low: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or (low is not None and value < low):
        bound = f" of at least {low}" if low is not None else ""
        raise UserError(f"{where} option {option} must be a number{bound}, got {value!r}")
    return float(value)


