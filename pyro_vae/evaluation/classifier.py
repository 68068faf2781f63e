"""A small MNIST/Fashion-MNIST classifier used to score generated images.

It plays the role Inception plays for natural images: its confidence and
label histogram on decoded samples tell whether the samples look like digits
(or garments) and cover all classes, and its penultimate features give a
Fréchet distance to real data (an "FID" for 28x28 images).

Images are float tensors (N, 784) with values in [0, 1], the same layout the
VAE decodes to.
"""

from __future__ import annotations

import math
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pyro_vae.evaluation.latent import frechet_distance
from pyro_vae.io import atomic_write, seeded

__all__ = [
    "Classifier",
    "train_classifier",
    "evaluate_accuracy",
    "load_or_train_classifier",
    "classifier_features",
    "sample_quality",
]

N_CLASSES = 10
FEATURE_DIM = 128
# Bump when the architecture changes so stale cache files are retrained, not mis-loaded.
ARCH_VERSION = 1


class Classifier(nn.Module):
    """Two conv blocks + one hidden dense layer; small enough to train on 2 CPU cores."""

    def __init__(self, n_classes: int = N_CLASSES, feature_dim: int = FEATURE_DIM):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)   # 28x28 -> pool -> 14x14
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)  # 14x14 -> pool -> 7x7
        self.fc = nn.Linear(32 * 7 * 7, feature_dim)
        self.head = nn.Linear(feature_dim, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features (N, feature_dim) for images (N, 784) in [0, 1]."""
        h = (x.reshape(-1, 1, 28, 28) - 0.5) / 0.5  # centre inputs; helps early training
        h = F.max_pool2d(F.relu(self.conv1(h)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        return F.relu(self.fc(h.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (N, n_classes)."""
        return self.head(self.features(x))


# --------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------

def _as_images(x) -> torch.Tensor:
    """Float32 tensor (N, 784), accepting numpy arrays or (N, 28, 28) / (N, 1, 28, 28) shapes."""
    t = torch.as_tensor(x)
    if t.ndim < 2 or t[0].numel() != 784:
        raise ValueError(f"images must have 784 pixels each, got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise ValueError("images must be floats in [0, 1], not integers (divide uint8 by 255)")
    return t.reshape(t.shape[0], 784).float()


def _as_labels(y, n: int) -> torch.Tensor:
    t = torch.as_tensor(y).long().reshape(-1)
    if t.shape[0] != n:
        raise ValueError(f"{n} images but {t.shape[0]} labels")
    return t


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def _batched(model: nn.Module, fn, images, batch_size: int = 2048) -> torch.Tensor:
    """Apply ``fn(model, batch)`` over ``images`` in batches, in eval mode, result on CPU."""
    x = _as_images(images)
    dev = _device_of(model)
    was_training = model.training
    model.eval()
    try:
        out = [fn(model, x[i:i + batch_size].to(dev)).cpu() for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out)


def evaluate_accuracy(model: Classifier, images, labels, batch_size: int = 2048) -> float:
    """Share of ``images`` whose arg-max class equals ``labels``."""
    logits = _batched(model, Classifier.forward, images, batch_size)
    return float((logits.argmax(1) == _as_labels(labels, len(logits))).float().mean())


def train_classifier(
    train_x,
    train_y,
    test_x,
    test_y,
    epochs: int = 5,
    seed: int = 0,
    batch_size: int = 128,
    lr: float = 2e-3,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> tuple[Classifier, float]:
    """Train a :class:`Classifier` with Adam; return it (eval mode) and its test accuracy.

    Data stay in memory as tensors and are batched by a seeded permutation
    (much faster than a DataLoader for 60k tiny images).  The global torch RNG
    is left untouched: initialisation runs under ``fork_rng`` and shuffling
    uses its own generator, so results depend only on ``seed``.
    """
    x = _as_images(train_x).to(device)
    y = _as_labels(train_y, len(x)).to(device)

    with seeded(seed):
        model = Classifier().to(device)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    # Cosine decay to 0 over the run: a few epochs reach higher accuracy than a flat rate.
    steps = epochs * math.ceil(len(x) / batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))

    model.train()
    start = time.perf_counter()
    for epoch in range(epochs):
        perm = torch.randperm(len(x), generator=gen).to(device)
        total = 0.0
        for i in range(0, len(x), batch_size):
            idx = perm[i:i + batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        if progress:
            print(f"classifier epoch {epoch + 1}/{epochs}: loss {total / len(x):.4f} "
                  f"({time.perf_counter() - start:.1f}s)", flush=True)

    model.eval()
    acc = evaluate_accuracy(model, test_x, test_y)
    if progress:
        print(f"classifier test accuracy {acc:.4f}", flush=True)
    return model, acc


# --------------------------------------------------------------------------
# caching
# --------------------------------------------------------------------------

_KEY_RE = re.compile(r"^[A-Za-z0-9._-]+$")


def _load_cached(path: Path, key: str, device) -> tuple[Classifier, dict] | None:
    """The cached classifier, or None when the file is damaged or stale: it is then trained again
    and the file replaced, instead of blocking every evaluation until someone deletes it."""
    try:
        blob = torch.load(path, map_location=device, weights_only=True)
        if not isinstance(blob, dict) or blob.get("arch_version") != ARCH_VERSION or blob.get("key") != key:
            return None
        model = Classifier().to(device)
        model.load_state_dict(blob["state_dict"])
        accuracy = float(blob["test_accuracy"])
    except Exception as e:  # any damage: pickle/zip errors, missing keys, wrong shapes
        print(f"pyro-vae: the cached classifier {path} is damaged ({type(e).__name__}); training it again", file=sys.stderr)
        return None
    model.eval()
    return model, {"test_accuracy": accuracy, "key": key, "path": str(path), "cached": True}


def load_or_train_classifier(
    cache_dir: Path,
    key: str,
    train_x,
    train_y,
    test_x,
    test_y,
    **kw,
) -> tuple[Classifier, dict]:
    """Load ``cache_dir/classifier-{key}.pt`` if present, else train and save it.

    ``key`` should identify the training data (e.g. dataset name + data
    fingerprint); ``kw`` is passed to :func:`train_classifier`.  The file is
    written atomically (temp file + ``os.replace``) so an interrupted run never
    leaves a half-written cache.  A file from another architecture version is
    ignored and overwritten.

    Returns
    -------
    (classifier in eval mode, info) where info has ``test_accuracy``, ``key``,
    ``path`` (str) and ``cached`` (True if loaded from disk).
    """
    if not _KEY_RE.match(key):
        raise ValueError(f"classifier cache key must match {_KEY_RE.pattern}, got {key!r}")
    cache_dir = Path(cache_dir)
    path = cache_dir / f"classifier-{key}.pt"
    device = kw.get("device", "cpu")

    if path.exists():
        cached = _load_cached(path, key, device)
        if cached is not None:
            return cached

    model, acc = train_classifier(train_x, train_y, test_x, test_y, **kw)
    blob = {
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "test_accuracy": float(acc),
        "key": key,
        "arch_version": ARCH_VERSION,
    }
    cache_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda fh: torch.save(blob, fh))
    return model, {"test_accuracy": float(acc), "key": key, "path": str(path), "cached": False}


# --------------------------------------------------------------------------
# scoring generated images
# --------------------------------------------------------------------------

def classifier_features(classifier: Classifier, images, batch_size: int = 2048) -> np.ndarray:
    """Penultimate features (N, FEATURE_DIM) as float64 numpy, e.g. of real test images."""
    return _batched(classifier, Classifier.features, images, batch_size).double().numpy()


def sample_quality(classifier: Classifier, images, real_features, batch_size: int = 2048, manifold=None) -> dict:
    """Score images (typically decoded samples) with the classifier.

    Returns
    -------
    dict with
      ``confidence``: mean top-class softmax probability (high = recognisable);
      ``label_entropy``: entropy (nats) of the predicted-label histogram;
      log(10) ~ 2.303 when all classes are equally frequent, 0 for one class;
      ``class_coverage``: share of the classes predicted at least once;
      ``n_classes_predicted``: the same as a count;
      ``class_histogram``: share of images predicted as each class;
      ``fid``: :func:`frechet_distance` between classifier features of
      ``images`` and ``real_features`` (see :func:`classifier_features`);
      ``precision`` (when a :class:`~pyro_vae.evaluation.fidelity.RealManifold` is given): the share
      of the images whose features lie in the real images' k-NN manifold.
    """
    feats = _batched(classifier, Classifier.features, images, batch_size)
    with torch.no_grad():
        # Head applied to the features we already have: one pass over the images.
        probs = torch.softmax(classifier.head(feats.to(_device_of(classifier))).cpu(), dim=1)
    n_classes = probs.shape[1]
    counts = torch.bincount(probs.argmax(1), minlength=n_classes).double()
    hist = counts / counts.sum()
    nz = hist[hist > 0]
    quality = {} if manifold is None else {"precision": manifold.precision(feats.numpy())}
    return quality | {
        "confidence": float(probs.max(1).values.mean()),
        "label_entropy": max(0.0, float(-(nz * nz.log()).sum())),  # no "-0.0" for one class
        "class_coverage": float((counts > 0).sum()) / n_classes,
        "n_classes_predicted": int((counts > 0).sum()),
        "class_histogram": [float(h) for h in hist],
        "fid": frechet_distance(feats.double().numpy(), real_features),
    }
