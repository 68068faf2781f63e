"""Datasets as in-memory tensors: where they come from, their splits, and binarisation.

Files are read in torchvision's ``<root>/<Name>/raw/`` layout.
Gzipped files are decompressed into the project's own cache, never next to the originals.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from pyro_vae.errors import DataError
from pyro_vae.io import atomic_write_bytes, temporaries
from pyro_vae.registry import Registry

IMAGE_MAGIC = 2051
LABEL_MAGIC = 2049
PIXELS = 28 * 28
CLASSES = 10
EMBEDDED_ROOT = Path(__file__).parent / "_data"
EMBEDDED_NOTE = (
    "using the MNIST sample shipped with pyro-vae (the 10,000-image MNIST test split, "
    "LeCun, Cortes & Burges, CC BY-SA 3.0); pass --data-dir or set PYRO_VAE_DATA for the full data"
)


@dataclass(frozen=True)
class DatasetSpec:
    folder: str  # torchvision's class name and folder name
    torchvision_class: str
    class_names: tuple[str, ...]


DATASETS: Registry[DatasetSpec] = Registry("dataset")
DATASETS.register("mnist")(DatasetSpec("MNIST", "MNIST", tuple(str(i) for i in range(10))))
DATASETS.register("fashion-mnist")(
    DatasetSpec(
        "FashionMNIST",
        "FashionMNIST",
        ("T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Boot"),
    )
)

SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def cache_dir() -> Path:
    """The per-user cache: $PYRO_VAE_CACHE, else $XDG_CACHE_HOME/pyro-vae, else ~/.cache/pyro-vae."""
    if os.environ.get("PYRO_VAE_CACHE"):
        return Path(os.environ["PYRO_VAE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pyro-vae"


# ---------------------------------------------------------------------------------------------
# Reading IDX files


def _find(raw: Path, name: str) -> Path | None:
    for candidate in (raw / name, raw / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


STALE_TEMPORARY_SECONDS = 6 * 3600  # no cache write takes this long: its temporary file is a dead writer's


def cache_subdir(name: str) -> Path:
    """A folder in the per-user cache, created if missing, with a one-line error when it cannot be."""
    folder = cache_dir() / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for temporary in temporaries(folder):  # a killed writer's; unlocked, so only those old enough to be dead
            if time.time() - temporary.stat().st_mtime > STALE_TEMPORARY_SECONDS:
                temporary.unlink(missing_ok=True)
    except OSError as e:
        raise DataError(f"cannot use the cache folder {folder} ({e.strerror}); set PYRO_VAE_CACHE to a writable folder") from None
    return folder


def _decompressed(path: Path, digest: str) -> bytes:
    """The bytes of a .gz file, through a cache of decompressions that is checked on every use.

    The hash of each decompressed file is recorded beside it when it is written; a cached file that
    no longer matches it (edited, truncated) is made again from the .gz, never trusted."""
    target = cache_subdir(f"idx/{digest[:16]}") / path.stem
    recorded = target.with_name(target.name + ".sha256")
    if target.is_file() and recorded.is_file():
        data = target.read_bytes()
        if hashlib.sha256(data).hexdigest() == recorded.read_text().strip():
            return data
        print(f"pyro-vae: the cached decompression {target} does not match its recorded hash; decompressing {path} again",
              file=sys.stderr)
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path} is not a readable gzip file ({e}); download it again") from None
    atomic_write_bytes(target, data)
    atomic_write_bytes(recorded, (hashlib.sha256(data).hexdigest() + "\n").encode())
    return data


def read_idx(path: Path, magic: int) -> tuple[torch.Tensor, str, str]:
    """Read one IDX file (plain or .gz) after checking its header.

    Returns (tensor, sha256 of the file, sha256 of the IDX bytes actually parsed): the bytes are read
    once, hashed and parsed from memory, so the recorded hash is that of what was used."""
    digest = _sha256(path)
    data = _decompressed(path, digest) if path.suffix == ".gz" else path.read_bytes()
    header, size = data[:16], len(data)
    if len(header) < 8 or int.from_bytes(header[:4], "big") != magic:
        found = int.from_bytes(header[:4], "big") if len(header) >= 4 else None
        raise DataError(
            f"{path} has IDX magic number {found}, expected {magic} "
            f"({'images' if magic == IMAGE_MAGIC else 'labels'}); is it the right file?"
        )
    ndim = magic % 256
    if len(header) < 4 + 4 * ndim:
        raise DataError(f"{path} is truncated: its header is incomplete; download it again")
    dims = [int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = 4 + 4 * ndim + int(np.prod(dims, dtype=np.int64))
    if size != expected:
        raise DataError(
            f"{path} is truncated or padded: its header promises {expected} bytes, the file holds {size}; "
            "download it again"
        )
    values = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)
    return torch.from_numpy(values.copy()), digest, hashlib.sha256(data).hexdigest()


def read_split(raw: Path, split: str) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(images float32 (N, 784) in [0, 1], labels int64 (N,), provenance) of one split in `raw`."""
    image_name, label_name = SPLIT_FILES[split]
    image_path, label_path = _find(raw, image_name), _find(raw, label_name)
    missing = [n for n, p in ((image_name, image_path), (label_name, label_path)) if p is None]
    if missing:
        raise DataError(f"{raw} lacks {', '.join(missing)} (or .gz) for the {split} split")
    images, image_sha, image_content = read_idx(image_path, IMAGE_MAGIC)
    labels, label_sha, label_content = read_idx(label_path, LABEL_MAGIC)
    if images.shape[1:] != (28, 28):
        raise DataError(f"{image_path} holds {tuple(images.shape[1:])} images, expected 28x28")
    if len(images) != len(labels):
        raise DataError(
            f"{image_path} holds {len(images)} images but {label_path} holds {len(labels)} labels; "
            "the two files must come from the same split"
        )
    if len(labels) and int(labels.max()) >= CLASSES:
        raise DataError(f"{label_path} holds label {int(labels.max())}; labels must be 0-{CLASSES - 1}: is it the right file?")
    provenance = {
        "images": str(image_path),
        "images_sha256": image_sha,
        "labels": str(label_path),
        "labels_sha256": label_sha,
        "images_content_sha256": image_content,
        "labels_content_sha256": label_content,
        "count": len(images),
    }
    x = images.reshape(len(images), PIXELS).to(torch.float32).div_(255.0)
    return x, labels.to(torch.int64), provenance


# ---------------------------------------------------------------------------------------------
# Finding the data


def _available_splits(raw: Path) -> list[str]:
    return [s for s, names in SPLIT_FILES.items() if any(_find(raw, n) for n in names)]


def _download(spec: DatasetSpec, root: Path) -> None:
    import torchvision.datasets as tvd

    getattr(tvd, spec.torchvision_class)(root=str(root), train=True, download=True)
    getattr(tvd, spec.torchvision_class)(root=str(root), train=False, download=True)


# A download that failed once in this process is not tried again: offline, each try costs seconds
# (name resolution for every mirror), and a study loads its data once per run. The default
# download's failures are also handed to the processes this one starts (a study's workers) through
# the environment, so that a study tries once and says so once.
_FAILED_DOWNLOADS: dict[tuple[str, Callable], str] = {}
FAILED_DOWNLOADS_ENV = "PYRO_VAE_FAILED_DOWNLOADS"


def _handed_down() -> dict[str, str]:
    try:
        failed = json.loads(os.environ.get(FAILED_DOWNLOADS_ENV) or "{}")
    except json.JSONDecodeError:
        return {}
    return {k: v for k, v in failed.items() if isinstance(v, str)} if isinstance(failed, dict) else {}


def _inherited_failure(dataset: str, download: Callable) -> str | None:
    return _handed_down().get(dataset) if download is _download else None


def _hand_down_failure(dataset: str, download: Callable, reason: str) -> None:
    if download is _download:
        os.environ[FAILED_DOWNLOADS_ENV] = json.dumps({**_handed_down(), dataset: reason})


def download_failure_reason(error: Exception) -> str:
    """One line saying why a download failed. torchvision puts the reason on later lines
    ("Error downloading X:", "Tried MIRROR, got:", "<urlopen error ...>"), so they are joined."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    later = (line.partition("got:")[2].strip() if line.startswith("Tried ") else line for line in lines[1:])
    reasons = list(dict.fromkeys(line for line in later if line))
    return " ".join([lines[0]] + reasons)


def locate(
    dataset: str,
    data_dir: str | os.PathLike | None = None,
    download: Callable[[DatasetSpec, Path], None] = _download,
    notify: Callable[[str], None] = lambda msg: print(f"pyro-vae: {msg}", file=sys.stderr),
) -> tuple[Path, str]:
    """(raw folder, origin) for a dataset.

    An explicit folder (``--data-dir``, then ``$PYRO_VAE_DATA``) must hold the data. Otherwise the
    per-user cache is used, downloading into it with torchvision when empty; if that fails for MNIST,
    the sample shipped with the package is used and said so.
    """
    spec = DATASETS[dataset]
    explicit = [("--data-dir", data_dir), ("PYRO_VAE_DATA", os.environ.get("PYRO_VAE_DATA"))]
    for origin, folder in explicit:
        if folder:
            raw = Path(folder) / spec.folder / "raw"
            if not _available_splits(raw):
                raise DataError(
                    f"no {dataset} files in {raw} (from {origin}); put torchvision's "
                    f"{', '.join(n + '.gz' for n in SPLIT_FILES['test'])} (and train-*) there, "
                    "or unset it to use the cache/download"
                )
            return raw, origin
    cache_root = cache_dir() / "data"
    raw = cache_root / spec.folder / "raw"
    if _available_splits(raw):
        return raw, "cache"
    reason = _FAILED_DOWNLOADS.get((dataset, download)) or _inherited_failure(dataset, download)
    said = reason is not None
    try:
        if reason is None:
            download(spec, cache_root)
    except Exception as e:  # torchvision raises RuntimeError/URLError/OSError offline
        reason = _FAILED_DOWNLOADS[dataset, download] = download_failure_reason(e)
        _hand_down_failure(dataset, download, reason)
    if reason is not None:
        if dataset == "mnist":
            if not said:  # once per process: a study loads the data once per run
                notify(f"download of {dataset} failed ({reason}); {EMBEDDED_NOTE}")
            return EMBEDDED_ROOT / "MNIST" / "raw", "embedded"
        raise DataError(
            f"{dataset} not found in {raw} and the download failed ({reason}); "
            f"pass --data-dir DIR or set PYRO_VAE_DATA=DIR with DIR/{spec.folder}/raw/*-ubyte.gz"
        ) from None
    if not _available_splits(raw):
        raise DataError(f"download of {dataset} finished but {raw} holds no data files")
    return raw, "download"


# ---------------------------------------------------------------------------------------------
# The dataset in memory


@dataclass
class Data:
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    class_names: tuple[str, ...]
    provenance: dict = field(default_factory=dict)
    split_indices: dict[str, list[int]] | None = None  # set when the split was carved from one file
    valid_x: torch.Tensor | None = None  # training images held out for a validation bound (cfg.validation)
    valid_y: torch.Tensor | None = None


def stratified_split(labels: torch.Tensor, test_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded, per-class split of indices; each class gives round(test_fraction * its size) to test."""
    gen = torch.Generator().manual_seed(seed)
    train, test = [], []
    for c in torch.unique(labels):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n_test = round(test_fraction * len(idx))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return torch.sort(torch.cat(train)).values, torch.sort(torch.cat(test)).values


def load(
    dataset: str,
    data_dir: str | os.PathLike | None = None,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    train_limit: int | None = None,
    test_limit: int | None = None,
    validation: int = 0,
    **locate_kw,
) -> Data:
    """Load a dataset into memory with a train/test split.

    Where only one split's files exist (MNIST's test split here), a stratified train/test split is
    carved from it with `split_seed`, and the indices on each side are kept in `split_indices`.
    `train_limit`/`test_limit` keep the first N images of each side (after a seeded shuffle), and then
    `validation` training images (a seeded choice) are held out of training as a validation set.
    """
    spec = DATASETS[dataset]
    raw, origin = locate(dataset, data_dir, **locate_kw)
    splits = _available_splits(raw)
    provenance: dict = {"dataset": dataset, "origin": origin, "raw_dir": str(raw)}
    if origin == "embedded":
        provenance["note"] = EMBEDDED_NOTE
    split_indices = None
    if splits == ["train", "test"]:
        train_x, train_y, provenance["train_file"] = read_split(raw, "train")
        test_x, test_y, provenance["test_file"] = read_split(raw, "test")
        provenance["split"] = "official train/test files"
    else:
        (only,) = splits
        x, y, provenance[f"{only}_file"] = read_split(raw, only)
        train_idx, test_idx = stratified_split(y, test_fraction, split_seed)
        train_x, train_y, test_x, test_y = x[train_idx], y[train_idx], x[test_idx], y[test_idx]
        split_indices = {"train": train_idx.tolist(), "test": test_idx.tolist()}
        provenance["split"] = (
            f"carved from the {only} file only: stratified, seed {split_seed}, "
            f"{test_fraction:.0%} of each class to test ({len(train_idx)} train / {len(test_idx)} test); "
            "indices in split.json"
        )
        provenance["split_sha256"] = hashlib.sha256(
            repr((split_indices["train"], split_indices["test"])).encode()
        ).hexdigest()
    gen = torch.Generator().manual_seed(split_seed)
    if train_limit is not None and train_limit < len(train_x):
        keep = torch.randperm(len(train_x), generator=gen)[:train_limit]
        train_x, train_y = train_x[keep], train_y[keep]
        if split_indices:
            split_indices["train"] = [split_indices["train"][i] for i in keep.tolist()]
    if test_limit is not None and test_limit < len(test_x):
        keep = torch.randperm(len(test_x), generator=gen)[:test_limit]
        test_x, test_y = test_x[keep], test_y[keep]
        if split_indices:
            split_indices["test"] = [split_indices["test"][i] for i in keep.tolist()]
    valid_x = valid_y = None
    if validation:
        if validation >= len(train_x):
            raise DataError(f"validation asks for {validation} of the {len(train_x)} training images; hold out fewer")
        order = torch.randperm(len(train_x), generator=gen)
        held, kept = torch.sort(order[:validation]).values, torch.sort(order[validation:]).values
        valid_x, valid_y, train_x, train_y = train_x[held], train_y[held], train_x[kept], train_y[kept]
        if split_indices:
            split_indices["validation"] = [split_indices["train"][i] for i in held.tolist()]
            split_indices["train"] = [split_indices["train"][i] for i in kept.tolist()]
        provenance["validation_count"] = validation
    provenance["train_count"], provenance["test_count"] = len(train_x), len(test_x)
    _check_test_set(test_y)
    return Data(train_x, train_y, test_x, test_y, spec.class_names, provenance, split_indices, valid_x, valid_y)


def _check_test_set(test_y: torch.Tensor) -> None:
    """The evaluation's cluster scores need two classes and more test images than classes."""
    classes = len(torch.unique(test_y))
    if classes < 2 or len(test_y) <= classes:
        raise DataError(f"the test set holds {len(test_y)} images of {classes} classes; evaluation needs at least 2 classes "
                        "and more images than classes: raise --test-limit (or --test-fraction)")


# ---------------------------------------------------------------------------------------------
# Binarisation


def pixel_levels(x: torch.Tensor) -> torch.Tensor:
    """Grey values in [0, 1] as the 8-bit levels 0..255 the IDX files hold (uint8)."""
    return x.mul(255).round_().to(torch.uint8)


def bernoulli_levels(x: torch.Tensor, seed: int) -> torch.Tensor:
    """0/1 pixels (float32, x's shape and device), each 1 with probability level/255 exactly, level being
    the pixel's 8-bit grey level: a uniform byte u in 0..254 per pixel (255 is drawn again), pixel = u < level.

    One random byte per pixel from numpy's PCG64 (its raw stream runs without the GIL, so the next
    epoch's draw can be made while this one trains) instead of a float uniform per pixel: about a
    tenth of torch.bernoulli's cost on 47M pixels.
    """
    levels = pixel_levels(x.detach().cpu()).reshape(-1)
    rng = np.random.Generator(np.random.PCG64(seed % (1 << 64)))
    u = torch.from_numpy(rng.bit_generator.random_raw((levels.numel() + 7) // 8).view(np.uint8)[: levels.numel()])
    redraw = (u == 255).nonzero().squeeze(1)
    while redraw.numel():
        fresh = torch.from_numpy(rng.bit_generator.random_raw((redraw.numel() + 7) // 8).view(np.uint8)[: redraw.numel()])
        u[redraw] = fresh
        redraw = redraw[fresh == 255]
    return (u < levels).to(torch.float32).reshape(x.shape).to(x.device)


@dataclass(frozen=True)
class Binarization:
    """How grey values become Bernoulli observations, per epoch for training and once for test."""

    train: Callable[[torch.Tensor, int, int], torch.Tensor]  # (x, seed, epoch) -> observations
    test: Callable[[torch.Tensor, int], torch.Tensor]  # (x, seed) -> observations
    per_epoch: bool = False  # a fresh draw each epoch (worth preparing the next one ahead)


# The test draw uses another stream than any training epoch, so test images are never seen binarised
# the same way in training.
_TEST_STREAM = 10_007

BINARIZATIONS: Registry[Binarization] = Registry("binarisation")
BINARIZATIONS.register("dynamic")(Binarization(
    lambda x, seed, epoch: bernoulli_levels(x, seed * 1_000_003 + epoch),
    lambda x, seed: bernoulli_levels(x, seed + _TEST_STREAM), per_epoch=True))
BINARIZATIONS.register("fixed")(Binarization(
    lambda x, seed, epoch: bernoulli_levels(x, seed), lambda x, seed: bernoulli_levels(x, seed + _TEST_STREAM)))
BINARIZATIONS.register("none")(Binarization(lambda x, seed, epoch: x, lambda x, seed: x))


# The TrainConfig settings load_data reads: runs that agree on these see the same data.
DATA_SETTINGS = ("dataset", "data_dir", "test_fraction", "split_seed", "train_limit", "test_limit", "validation")


def data_key(cfg) -> tuple:
    return tuple(getattr(cfg, name) for name in DATA_SETTINGS)


def load_data(cfg) -> Data:
    """The data a TrainConfig names, split and limited as it says (see DATA_SETTINGS)."""
    return load(
        cfg.dataset, cfg.data_dir, test_fraction=cfg.test_fraction, split_seed=cfg.split_seed,
        train_limit=cfg.train_limit, test_limit=cfg.test_limit, validation=cfg.validation,
    )


