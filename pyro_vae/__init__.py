"""pyro-vae: variational autoencoders as Pyro programs, and studies that compare them.

    import pyro_vae as pv

    run = pv.train(out="runs/vae", guide="gaussian", epochs=5, train_limit=2000, seed=0)
    mean, scale = run.encode(images)     # (N, 784), (N, 28, 28) or (N, 1, 28, 28); uint8 or float; torch or numpy
    metrics = pv.evaluate("runs/vae", quick=True)

The names below load on first use, so `import pyro_vae` (and `pyro-vae --help`) stays quick.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "train": "pyro_vae.api",
    "resume": "pyro_vae.api",
    "load_run": "pyro_vae.training.runs",
    "evaluate": "pyro_vae.api",
    "run_study": "pyro_vae.api",
    "build_report": "pyro_vae.api",
    "Run": "pyro_vae.training.runs",
    "TrainConfig": "pyro_vae.config",
    "UserError": "pyro_vae.errors",
    "register_prior": "pyro_vae.components",
    "register_guide": "pyro_vae.components",
    "register_likelihood": "pyro_vae.components",
    "register_objective": "pyro_vae.components",
    "register_network": "pyro_vae.components",
    "register_schedule": "pyro_vae.components",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pyro_vae' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))
