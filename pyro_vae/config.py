"""Training configuration: defaults, TOML files, flag overrides and validation."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any, Callable

from pyro_vae.errors import UserError

SEED_LIMIT = 2**32  # numpy's seeds are 32-bit
OUTPUT_BIASES = ("default", "data-mean")
PRECISIONS = ("float32", "bf16")


def check_value(what: str, value: Any, kind: type, low: float | None = None, high: float | None = None, *,
                above: bool = False, optional: bool = False) -> Any:
    """`value` if it is a `kind` within [low, high] (`above`: low itself excluded), else a one-line
    UserError saying what `what` must be. int: a whole number (not a bool); float: a finite int or
    float; str: a string; list: a non-empty list of finite numbers, each within the bounds.
    `optional`: None passes too. The one check of every number and name a file or flag may hold."""
    if value is None and optional:
        return value
    if kind is list:
        ok = isinstance(value, list) and bool(value) and all(_within(v, float, low, high, above) for v in value)
    else:
        ok = isinstance(value, str) if kind is str else _within(value, kind, low, high, above)
    if not ok:
        raise UserError(f"{what} must be {_described(kind, low, high, above)}{' (or left out)' if optional else ''}, got {value!r}")
    return value


def _within(value: Any, kind: type, low: float | None, high: float | None, above: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return (low is None or (value > low if above else value >= low)) and (high is None or value <= high)


def _described(kind: type, low: float | None, high: float | None, above: bool) -> str:
    if kind is str:
        return "a string"
    bounds = [f"above {low}" if above else f"of at least {low}"] if low is not None else []
    bounds += [f"at most {high}"] if high is not None else []
    if low is not None and high is not None and not above:
        bounds = [f"from {low} to {high}"]
    if kind is not int and high is None and bounds:
        bounds.append("finite")
    said = " and ".join(bounds)
    if kind is list:
        return f"a non-empty list of {'finite ' if not bounds else ''}numbers{', each ' + said if said else ''}"
    noun = "a whole number" if kind is int else "a number" if bounds else "a finite number"
    return f"{noun}{' ' + said if said else ''}"


def setting(default: Any, help: str, *, factory: Callable[[], Any] | None = None) -> Any:
    """A TrainConfig field with its help text: the CLI's flags and their help are made from these."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


# Help texts may name registries in braces ({guides}); the CLI fills in the registered names.
@dataclass
class TrainConfig:
    """Every setting of one training run: `pyro-vae train`'s flags (`--latent-dim` is `latent_dim`),
    a TOML file's keys and `pyro_vae.train`'s keywords are its fields.

    Each field has a default; `validate()` checks the values (names against the registries,
    numbers against their ranges) with one-line `UserError`s, as the command line does. The
    `*_options` tables are the chosen component's options, e.g. `prior_options={"components": 10}`.

    Example:
        >>> import pyro_vae as pv
        >>> cfg = pv.TrainConfig(guide="delta", beta=0.0, epochs=5, latent_dim=2)
        >>> cfg.update({"lr": 3e-4}).validate().lr
        0.0003
        >>> run = pv.train(cfg, out="runs/ae")
    """

    dataset: str = setting("mnist", "dataset: {datasets}")
    data_dir: str | None = setting(None, "folder holding <Name>/raw/*-ubyte[.gz], e.g. ~/data (else $PYRO_VAE_DATA, the cache, a download)")
    guide: str = setting("gaussian", "guide: {guides}")
    prior: str = setting("standard-normal", "prior: {priors}")
    likelihood: str = setting("bernoulli", "likelihood: {likelihoods}")
    objective: str = setting("trace", "objective: {objectives}")
    num_particles: int = setting(1, "particles per ELBO estimate (K of iwae/renyi)")
    beta: float = setting(1.0, "weight of the latent site's log-densities (0: plain AE with the delta guide)")
    beta_warmup_epochs: int = setting(0, "KL annealing: beta rises linearly to its value over this many epochs")
    latent_dim: int = setting(2, "size of the code z")
    network: str = setting("mlp", "encoder/decoder network: {networks}")
    hidden_dim: int = setting(400, "hidden width of the network (mlp: unless its option hidden lists the widths)")
    output_bias: str = setting("default", "decoder output bias at the start: default (the layer's own) or data-mean "
                                          "(logit of the training images' mean pixel, as Burda et al.)")
    epochs: int = setting(10, "epochs to train (with --resume: the new total)")
    batch_size: int = setting(128, "images per step")
    lr: float = setting(1e-3, "Adam learning rate")
    lr_schedule: str = setting("constant", "learning-rate schedule over the epochs: {schedules}")
    seed: int = setting(0, "seed for weights, batches, binarisation and noise")
    device: str = setting("cpu", "cpu or cuda")
    precision: str = setting("float32", "float32, or bf16: the networks' matrix products in bfloat16 (torch.autocast; AMX "
                                        "units on recent CPUs, tensor cores on GPUs), the loss and optimiser state in float32")
    binarize: str = setting("dynamic", "binarisation: {binarizations}")
    train_limit: int | None = setting(None, "use only this many training images (a seeded subset), e.g. 2000")
    test_limit: int | None = setting(None, "use only this many test images (a seeded subset), e.g. 500")
    split_seed: int = setting(0, "seed of the subsets and of a train/test split carved from a single-split dataset")
    test_fraction: float = setting(0.2, "share of each class sent to test when a split is carved from one file")
    validation: int = setting(0, "training images held out (seeded) for a validation bound each epoch, e.g. 400")
    plateau_patience: int = setting(0, "train until the bound stops improving: stop after this many epochs without a gain "
                                       "of plateau-delta, e.g. 5 (0: train every epoch; else epochs is the most)")
    plateau_delta: float = setting(0.1, "nats per image an epoch must gain over the last improvement to count as one")
    plateau_cuts: int = setting(0, "on a plateau, first cut the lr by plateau-factor up to this many times, e.g. 2")
    plateau_factor: float = setting(0.3, "what each plateau cut multiplies the lr by (between 0 and 1)")
    network_options: dict = setting(None, "options of the network, e.g. hidden=[200,200] or activation=tanh for mlp", factory=dict)
    guide_options: dict = setting(None, "options of the guide, e.g. steps=2 for iaf", factory=dict)
    prior_options: dict = setting(None, "options of the prior, e.g. components=10 for mixture or vamp", factory=dict)
    likelihood_options: dict = setting(None, "options of the likelihood, e.g. r_loss_factor=1000 or scale=0.5 for normal", factory=dict)
    objective_options: dict = setting(None, "options of the objective, e.g. alpha=0.5 for renyi", factory=dict)
    lr_schedule_options: dict = setting(None, "options of the schedule, e.g. stages=5 for burda, every=30 for step", factory=dict)

    @classmethod
    def keys(cls) -> list[str]:
        """The names of every setting, in the order they are declared."""
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> "TrainConfig":
        """The defaults with `values` set over them (see `update`); not yet validated."""
        cfg = cls()
        cfg.update(values, source)
        return cfg

    def update(self, values: dict[str, Any], source: str = "config") -> "TrainConfig":
        """Set the named settings (dashes read as underscores) and return this config.

        An unknown name raises a one-line `UserError` naming it, `source` (where the values came from) and the
        valid settings. Values are not checked here: call `validate()`.

        Example: ``TrainConfig().update({"latent-dim": 10}, source="my.toml").latent_dim == 10``
        """
        for key, value in values.items():
            name = key.replace("-", "_")
            if name not in self.keys():
                raise UserError(f"unknown setting {key!r} in {source}; valid settings: {', '.join(self.keys())}")
            setattr(self, name, value)
        return self

    def to_dict(self) -> dict[str, Any]:
        """Every setting by name, as plain values (what a run's `config.json` records)."""
        return dataclasses.asdict(self)

    def validate(self) -> "TrainConfig":
        """Check every setting (type, range, a registered component name) and return this config.

        The first problem raises a one-line `UserError` that names the setting, what it got and what it needs.
        """
        from pyro_vae.components.guides import GUIDES
        from pyro_vae.components.likelihoods import LIKELIHOODS
        from pyro_vae.components.networks import NETWORKS
        from pyro_vae.components.objectives import OBJECTIVES
        from pyro_vae.components.priors import PRIORS
        from pyro_vae.data import BINARIZATIONS, DATASETS
        from pyro_vae.components.schedules import SCHEDULES

        _typed(self)  # first: a name given as a list is a type error, not an unknown name
        for registry, name in (
            (DATASETS, self.dataset), (GUIDES, self.guide), (PRIORS, self.prior), (LIKELIHOODS, self.likelihood),
            (OBJECTIVES, self.objective), (NETWORKS, self.network), (BINARIZATIONS, self.binarize),
            (SCHEDULES, self.lr_schedule),
        ):
            registry.check(name)
        positive = {"latent_dim": 1, "hidden_dim": 1, "batch_size": 1, "num_particles": 1, "epochs": 0, "beta_warmup_epochs": 0,
                    "validation": 0, "plateau_patience": 0, "plateau_cuts": 0}
        for name, low in positive.items():
            if getattr(self, name) < low:
                raise UserError(f"{name.replace('_', '-')} must be at least {low}, got {getattr(self, name)}")
        for name in ("train_limit", "test_limit"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UserError(f"{name.replace('_', '-')} must be a positive number of images, got {getattr(self, name)}")
        if self.precision not in PRECISIONS:
            raise UserError(f"unknown precision {self.precision!r}; choose one of: {', '.join(PRECISIONS)}")
        if self.output_bias not in OUTPUT_BIASES:
            raise UserError(f"unknown output-bias {self.output_bias!r}; choose one of: {', '.join(OUTPUT_BIASES)}")
        SCHEDULES[self.lr_schedule](**self.lr_schedule_options)  # its options checked now, not at epoch 1
        if not self.lr > 0:
            raise UserError(f"lr must be positive, got {self.lr}")
        if not self.beta >= 0:
            raise UserError(f"beta must be 0 or more, got {self.beta}")
        if not (self.plateau_delta >= 0 and math.isfinite(self.plateau_delta)):
            raise UserError(f"plateau-delta must be a finite number of nats, 0 or more, got {self.plateau_delta}")
        if not 0 < self.plateau_factor < 1:
            raise UserError(f"plateau-factor must be between 0 and 1 (it cuts the lr), got {self.plateau_factor}")
        for name in ("lr", "beta"):
            if not math.isfinite(getattr(self, name)):
                raise UserError(f"{name} must be a finite number, got {getattr(self, name)}")
        for name in ("seed", "split_seed"):
            if not 0 <= getattr(self, name) < SEED_LIMIT:
                raise UserError(f"{name.replace('_', '-')} must be a whole number from 0 to 2**32 - 1, got {getattr(self, name)}")
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
    """Coerce values from TOML/flags to the field's type, with a clear error when impossible: a name or
    folder must be a string, options a table, a count or rate a number (None only where the field allows it)."""
    for f in fields(cfg):
        value, flag = getattr(cfg, f.name), f.name.replace("_", "-")
        kind = f.type.split(" | ")[0]
        if value is None and "None" in f.type:
            continue
        if kind == "str":
            check_value(flag, value, str)
            continue
        if kind == "dict":
            if not isinstance(value, dict):
                raise UserError(f"{f.name} must be a table of options, got {value!r}")
            continue
        if isinstance(value, bool) or value is None:  # a bool is an int to Python, never a count or a rate here
            raise UserError(f"{flag} must be a number ({kind}), got {value!r}")
        if kind == "int" and isinstance(value, float) and not value.is_integer():  # 2.5, inf, nan
            raise UserError(f"{flag} must be a whole number, got {value!r}")
        try:
            converted = {"int": int, "float": float}[kind](value)
        except (TypeError, ValueError):
            raise UserError(f"{flag} must be a number ({kind}), got {value!r}") from None
        if kind == "int" and converted != value and not isinstance(value, str):
            raise UserError(f"{flag} must be a whole number, got {value!r}")
        setattr(cfg, f.name, converted)
