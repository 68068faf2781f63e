"""Training configuration: defaults, TOML files, flag overrides and validation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

from pyro_vae.errors import UserError


@dataclass
class TrainConfig:
    dataset: str = "mnist"
    data_dir: str | None = None
    guide: str = "gaussian"
    prior: str = "standard-normal"
    likelihood: str = "bernoulli"
    objective: str = "trace"
    num_particles: int = 1
    beta: float = 1.0
    beta_warmup_epochs: int = 0  # KL annealing: beta rises linearly to its value over this many epochs
    latent_dim: int = 2
    network: str = "mlp"
    hidden_dim: int = 400
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    device: str = "cpu"
    binarize: str = "dynamic"
    train_limit: int | None = None
    test_limit: int | None = None
    split_seed: int = 0
    test_fraction: float = 0.2
    guide_options: dict = field(default_factory=dict)
    prior_options: dict = field(default_factory=dict)
    objective_options: dict = field(default_factory=dict)

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> "TrainConfig":
        cfg = cls()
        cfg.update(values, source)
        return cfg

    def update(self, values: dict[str, Any], source: str = "config") -> "TrainConfig":
        for key, value in values.items():
            name = key.replace("-", "_")
            if name not in self.keys():
                raise UserError(f"unknown setting {key!r} in {source}; valid settings: {', '.join(self.keys())}")
            setattr(self, name, value)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> "TrainConfig":
        from pyro_vae.components.guides import GUIDES
        from pyro_vae.components.likelihoods import LIKELIHOODS
        from pyro_vae.components.networks import NETWORKS
        from pyro_vae.components.objectives import OBJECTIVES
        from pyro_vae.components.priors import PRIORS
        from pyro_vae.data import BINARIZATIONS, DATASETS

        for registry, name in (
            (DATASETS, self.dataset), (GUIDES, self.guide), (PRIORS, self.prior), (LIKELIHOODS, self.likelihood),
            (OBJECTIVES, self.objective), (NETWORKS, self.network), (BINARIZATIONS, self.binarize),
        ):
            registry.check(name)
        _typed(self)
        positive = {"latent_dim": 1, "hidden_dim": 1, "batch_size": 1, "num_particles": 1, "epochs": 0, "beta_warmup_epochs": 0}
        for name, low in positive.items():
            if getattr(self, name) < low:
                raise UserError(f"{name.replace('_', '-')} must be at least {low}, got {getattr(self, name)}")
        for name in ("train_limit", "test_limit"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UserError(f"{name.replace('_', '-')} must be a positive number of images, got {getattr(self, name)}")
        if not self.lr > 0:
            raise UserError(f"lr must be positive, got {self.lr}")
        if not self.beta >= 0:
            raise UserError(f"beta must be 0 or more, got {self.beta}")
        if not 0 < self.test_fraction < 1:
            raise UserError(f"test-fraction must be between 0 and 1, got {self.test_fraction}")
        if self.device not in ("cpu", "cuda"):
            raise UserError(f"unknown device {self.device!r}; choose one of: cpu, cuda")
        if self.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise UserError("device cuda was asked for but torch sees no CUDA GPU here; use --device cpu")
        return self


def _typed(cfg: TrainConfig) -> None:
    """Coerce values from TOML/flags to the field's type, with a clear error when impossible."""
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        kind = f.type.split(" | ")[0]
        if value is None or kind in ("str", "dict"):
            if kind == "dict" and not isinstance(value, dict):
                raise UserError(f"{f.name} must be a table of options, got {value!r}")
            continue
        try:
            converted = {"int": int, "float": float}[kind](value)
        except (TypeError, ValueError):
            raise UserError(f"{f.name.replace('_', '-')} must be a number ({kind}), got {value!r}") from None
        if kind == "int" and converted != value and not isinstance(value, str):
            raise UserError(f"{f.name.replace('_', '-')} must be a whole number, got {value!r}")
        setattr(cfg, f.name, converted)


