"""Shared fixtures: the data the tests read, and a private cache.

The suite runs on a fresh clone with nothing but the package: without the complete data it reads the
MNIST sample the package ships (10,000 images, a train/test split carved from them) and skips the
tests marked ``full_data`` (the official split's counts, Fashion-MNIST, the committed reports'
provenance) with a reason naming PYRO_VAE_DATA. CI sets PYRO_VAE_DATA and runs them all.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pyro_vae.data import EMBEDDED_ROOT

REPO = Path(__file__).resolve().parents[1]
FULL_FILES = ("MNIST/raw/train-images-idx3-ubyte.gz", "MNIST/raw/t10k-images-idx3-ubyte.gz",
              "FashionMNIST/raw/train-images-idx3-ubyte.gz", "FashionMNIST/raw/t10k-images-idx3-ubyte.gz")
NEEDS_FULL_DATA = ("needs the complete MNIST and Fashion-MNIST: set PYRO_VAE_DATA to the folder holding "
                   "MNIST/raw and FashionMNIST/raw (as CI does)")


def _full_data_root() -> Path | None:
    """The complete data: $PYRO_VAE_DATA (which must hold it when set) or ../shared/data where present."""
    configured = os.environ.get("PYRO_VAE_DATA")
    root = Path(configured).resolve() if configured else REPO.parent / "shared" / "data"  # absolute: tests run code elsewhere
    missing = [name for name in FULL_FILES if not (root / name).is_file()]
    if configured and missing:
        pytest.exit(f"PYRO_VAE_DATA={configured} lacks {missing[0]}; point it at the folder holding MNIST/raw and "
                    "FashionMNIST/raw, or unset it to run on the package's MNIST sample", 2)
    return None if missing else root


FULL_DATA_ROOT = _full_data_root()
HAVE_FULL_DATA = FULL_DATA_ROOT is not None
DATA_ROOT = FULL_DATA_ROOT or EMBEDDED_ROOT  # the sample: MNIST's 10,000 t10k images, read-only
# A dataset for tests that need a small slice of real images, not a particular dataset: Fashion-MNIST
# where it is present (CI), else the sample's MNIST.
SLICE_DATASET = "fashion-mnist" if HAVE_FULL_DATA else "mnist"


def pytest_collection_modifyitems(config, items):
    if HAVE_FULL_DATA:
        return
    skip = pytest.mark.skip(reason=NEEDS_FULL_DATA)
    for item in items:
        if "full_data" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def _environment(tmp_path_factory):
    """Tests read DATA_ROOT (the complete data, or the package's sample) and decompress into a cache of their own."""
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
def official_split_root(tmp_path_factory) -> Path:
    """A data folder holding MNIST's train and t10k files: the path on which the official split is read.
    The complete data where present; else made from the sample (its first 8,000 images as train-*, the
    other 2,000 as t10k-*), so the official-split code runs on a fresh clone too."""
    if HAVE_FULL_DATA:
        return FULL_DATA_ROOT
    import gzip

    source = EMBEDDED_ROOT / "MNIST" / "raw"
    images = gzip.decompress((source / "t10k-images-idx3-ubyte.gz").read_bytes())
    labels = gzip.decompress((source / "t10k-labels-idx1-ubyte.gz").read_bytes())
    root = tmp_path_factory.mktemp("official-split")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)

    def header(*numbers: int) -> bytes:  # IDX: magic, then one big-endian uint32 per dimension
        return b"".join(n.to_bytes(4, "big") for n in numbers)

    for prefix, start, stop in (("train", 0, 8000), ("t10k", 8000, 10000)):
        (raw / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(header(2051, stop - start, 28, 28) + images[16 + 784 * start : 16 + 784 * stop]))
        (raw / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(header(2049, stop - start) + labels[8 + start : 8 + stop]))
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
