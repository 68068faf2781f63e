"""Shared fixtures: the real data in ../shared/data (or $PYRO_VAE_DATA) and a private cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _data_root() -> Path:
    root = Path(os.environ.get("PYRO_VAE_DATA", REPO.parent / "shared" / "data"))
    if not (root / "MNIST" / "raw").is_dir():
        pytest.exit(f"test data not found in {root}; set PYRO_VAE_DATA to the folder holding MNIST/ and FashionMNIST/", 2)
    return root


DATA_ROOT = _data_root()


@pytest.fixture(autouse=True, scope="session")
def _environment(tmp_path_factory):
    """Tests read the shared real data and decompress into a cache of their own."""
    saved = {k: os.environ.get(k) for k in ("PYRO_VAE_DATA", "PYRO_VAE_CACHE")}
    os.environ["PYRO_VAE_DATA"] = str(DATA_ROOT)
    os.environ["PYRO_VAE_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run faster on one thread, and far faster on a CPU shared with other jobs
    (two OpenMP threads spin-waiting for each other under load made steps ~20x slower)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def data_root() -> Path:
    return DATA_ROOT


@pytest.fixture(scope="session")
def test_split_only_root(tmp_path_factory) -> Path:
    """A data folder holding only MNIST's t10k files, like the sample shipped in the package:
    the path on which a train/test split is carved from one file."""
    import shutil

    root = tmp_path_factory.mktemp("t10k-only")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(DATA_ROOT / "MNIST" / "raw" / name, raw / name)
    return root


@pytest.fixture(scope="session")
def mnist_small():
    """2000 real MNIST training images and 500 test images."""
    from pyro_vae import data

    os.environ["PYRO_VAE_DATA"] = str(DATA_ROOT)
    return data.load("mnist", train_limit=2000, test_limit=500)


def small_config(**overrides):
    from pyro_vae.config import TrainConfig

    values = dict(dataset="mnist", epochs=1, train_limit=1000, test_limit=300, batch_size=100)
    values.update(overrides)
    return TrainConfig(**values)
