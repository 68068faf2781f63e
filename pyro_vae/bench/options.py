"""The bench's options, written once: each field carries its flag's help, and `add_arguments` and
`Options.from_args` are both derived from the fields.

Standard library only at import time: the CLI builds every command's parser on each call.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from pyro_vae.bench.targets import TARGET_STUDY_SECONDS


@dataclass(frozen=True)
class Variant:
    """A training configuration the bench times, and the plain-PyTorch loss it is compared with."""

    overrides: dict
    reference: str  # "mc": Monte Carlo ELBO (Trace_ELBO), "analytic": analytic-KL ELBO, "ae": reconstruction only
    jit: bool | None  # None: the Trainer's default (compiled where it can be)
    note: str


VARIANTS: dict[str, Variant] = {
    "vae": Variant({}, "mc", None, "default VAE: gaussian guide, objective trace (Trace_ELBO; compiled)"),
    "vae-eager": Variant({}, "mc", False, "default VAE, compiled loss off (PYRO_VAE_JIT=0): eager Trace_ELBO"),
    "ae": Variant({"guide": "delta", "beta": 0.0}, "ae", None, "AE baseline: delta guide, beta=0 (compiled)"),
    "ae-eager": Variant({"guide": "delta", "beta": 0.0}, "ae", False, "AE baseline, eager Trace_ELBO"),
    "meanfield": Variant({"objective": "meanfield"}, "analytic", None, "objective meanfield (TraceMeanField_ELBO, eager)"),
    "conv": Variant({"network": "conv"}, "mc", None, "default VAE with the conv encoder/decoder"),
}
DEFAULT_VARIANTS = list(VARIANTS)


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _ints(text: str) -> list[int]:
    return [int(x) for x in _names(text)]


_names.__name__, _ints.__name__ = "comma-separated names", "comma-separated whole numbers"  # argparse's error text


def _option(default, help: str, quick=None, **argparse_kwargs):
    """A field with its flag. With `quick`, the flag's own default is None so that --quick can tell
    "not given" from "given", and the field's default applies only without --quick."""
    meta = {"help": help, "quick": quick, "argparse": argparse_kwargs}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Options:
    device: str | None = _option(None, "where to run, e.g. cpu (default: cuda when torch sees a GPU, else cpu)", choices=["cpu", "cuda"])
    threads: int | None = _option(None, "torch CPU threads, e.g. 1 (default: torch's own choice)", type=int)
    dataset: str = _option("fashion-mnist", "dataset for the training and evaluation items, e.g. mnist (default: fashion-mnist)")
    data_dir: str | None = _option(None, "folder holding <Name>/raw/*-ubyte[.gz], e.g. ~/data (default: $PYRO_VAE_DATA, the cache)")
    train_images: int | None = _option(None, "training images per epoch, e.g. 10000 (default: all, 60000 for fashion-mnist; --quick 2000)", quick=2000, type=int)
    conv_images: int | None = _option(None, "training images per epoch for the conv network, e.g. 1000 "
                                      "(default: 6000 on cpu, all on cuda; --quick 256)",
                                      quick=256, type=int)
    batch_size: int = _option(128, "images per step, e.g. 256 (default: 128)", type=int)
    epochs: int = _option(1, "epochs per timed repeat, e.g. 2 (default: 1)", type=int)
    repeats: int = _option(3, "timed repeats of each measurement; medians and spread over them, e.g. 5 (default: 3, --quick 2)", quick=2, type=int)
    variants: list[str] = _option(DEFAULT_VARIANTS, f"training variants to time, comma-separated, '' for none, e.g. vae,ae "
                                  f"(default: {','.join(DEFAULT_VARIANTS)})", type=_names)
    eval_images: int = _option(10000, "test images for the log-likelihood item, e.g. 1000 (default: 10000, --quick 200)", quick=200, type=int)
    num_samples: int = _option(1000, "importance samples per image K, e.g. 100 (default: 1000, --quick 100)", quick=100, type=int)
    eval_repeats: int = _option(1, "repeats of the importance-sampling timing, e.g. 3 (default: 1; the grid uses --repeats)", type=int)
    # Flag --run, but not dest "run": the CLI keeps each command's action in args.run.
    run_dir: str | None = _option(None, "evaluate this trained 2-D run instead of the VAE trained by the bench, e.g. runs/vae "
                                  "(default: none)",
                                  flag="--run", metavar="RUN_DIR")
    eval: bool = _option(True, "skip the evaluation item", flag="--no-eval", action="store_false")
    study: str | None = _option(None, "also time a whole study (takes minutes), e.g. studies/prior_swap.toml "
                                "(default: none; the flag alone: studies/ae_vs_vae.toml)",
                                nargs="?", const="studies/ae_vs_vae.toml", metavar="STUDY_TOML")
    study_out: str | None = _option(None, "folder for the study's runs, e.g. runs/bench-study (default: a temporary folder, removed afterwards)")
    study_timeout: float = _option(2 * TARGET_STUDY_SECONDS, "stop the study after this many seconds, e.g. 600 (default: 1800)", type=float)
    twin: bool = _option(False, "train the default VAE and its plain-PyTorch twin to the end, side by side, and compare "
                         "their final test ELBOs (takes long: --twin-epochs per dataset and seed)", action="store_true")
    twin_epochs: int = _option(100, "epochs of the --twin runs, e.g. 20 (default: 100, the default study's)", type=int)
    twin_seeds: list[int] = _option([0, 1, 2], "seeds of the --twin runs, comma-separated, e.g. 0,1 (default: 0,1,2)", type=_ints)
    twin_datasets: list[str] = _option(["mnist", "fashion-mnist"], "datasets of the --twin runs, e.g. mnist "
                                       "(default: mnist,fashion-mnist)", type=_names)
    peers: bool = _option(False, "also time Pyro's VAE example loop and pythae's trainer (when installed) on the same "
                          "data and network, and compare test ELBOs", action="store_true")
    book: bool = _option(False, "also time the Generative Deep Learning book's VAE (conv network, grey MNIST, 1000 x MSE + KL, "
                         "batch 32) in pyro-vae, a plain-PyTorch loop and the book's Keras code (pip install \"pyro-vae[keras]\"), "
                         "on --conv-images images", action="store_true")
    book_threads: list[int] = _option([1, 2], "torch and TensorFlow threads of the --book item, comma-separated, e.g. 2 "
                                      "(default: 1,2)", type=_ints)
    book_precisions: list[str] | None = _option(None, "precisions of pyro-vae in the --book item, e.g. float32,bf16 (default: "
                                                "float32, and bf16 where there are bfloat16 units: CUDA, AMX or AVX-512 BF16)",
                                                type=_names)
    quick: bool = _option(False, "small sizes for a smoke test: 2000 images, 2 repeats, 200 test images, K=100", action="store_true")
    json: str | None = _option(None, "also write every number as JSON to FILE, e.g. bench.json (default: none)", metavar="FILE")
    quiet: bool = _option(False, "no progress lines on stderr", action="store_true")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Options:
        values = {}
        for f in fields(cls):
            value, quick = getattr(args, f.name), f.metadata["quick"]
            if value is None and quick is not None:
                value = quick if args.quick else f.default
            values[f.name] = value
        return cls(**values).validate()

    def validate(self) -> Options:
        from pyro_vae.errors import UserError

        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise UserError(f"unknown variant(s) {', '.join(map(repr, unknown))}; choose from: {', '.join(VARIANTS)}")
        for name in ("batch_size", "epochs", "repeats", "eval_images", "num_samples", "eval_repeats", "twin_epochs"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("threads", "train_images", "conv_images"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not self.book_threads or any(t < 1 for t in self.book_threads):
            raise UserError(f"--book-threads must be whole numbers of at least 1, got {self.book_threads}")
        from pyro_vae.config import PRECISIONS

        unknown = [p for p in self.book_precisions or [] if p not in PRECISIONS]
        if unknown or self.book_precisions == []:
            raise UserError(f"unknown precision(s) {', '.join(map(repr, unknown)) or 'none given'} for --book-precisions; "
                            f"choose from: {', '.join(PRECISIONS)}")
        if self.twin and (not self.twin_seeds or not self.twin_datasets):
            raise UserError("--twin needs at least one seed (--twin-seeds) and one dataset (--twin-datasets)")
        from pyro_vae.data import DATASETS

        for name in self.twin_datasets:
            DATASETS.check(name)
        import torch

        if self.device is None:
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cuda" and not torch.cuda.is_available():
            raise UserError("device cuda was asked for but torch sees no CUDA GPU here; use --device cpu")
        if self.study is not None and not Path(self.study).is_file():
            raise UserError(f"study file {self.study} does not exist")
        return self


def add_arguments(p: argparse.ArgumentParser) -> None:
    for f in fields(Options):
        kwargs = dict(f.metadata["argparse"])
        flag = kwargs.pop("flag", "--" + f.name.replace("_", "-"))
        default = f.default_factory() if f.default is MISSING else f.default
        kwargs["default"] = None if f.metadata["quick"] is not None else default
        p.add_argument(flag, dest=f.name, help=f.metadata["help"], **kwargs)
