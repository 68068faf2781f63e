"""pyro-vae: variational autoencoders as Pyro programs, and studies that compare them.

The names below load on first use, so `import pyro_vae` (and `pyro-vae --help`) stays quick.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "load_run": "pyro_vae.training.runs",
    "TrainConfig": "pyro_vae.config",
    "register_prior": "pyro_vae.components",
    "register_guide": "pyro_vae.components",
    "register_likelihood": "pyro_vae.components",
    "register_objective": "pyro_vae.components",
    "register_network": "pyro_vae.components",
    "register_schedule": "pyro_vae.components",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pyro_vae' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))
