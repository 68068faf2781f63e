"""Per-image fidelity of generated images in a feature space: k-NN precision (Kynkäänniemi et al. 2019).

The real images' features define a manifold: the union of balls around each real feature whose radius
is the distance to its k-th nearest real neighbour. A generated image is faithful when its feature
lies inside that manifold. Unlike a Fréchet distance this scores each image on its own, so it can be
averaged over any subset of codes (a density decile, one perturbation size), and unlike classifier
confidence it does not rise for saturated, unrealistic strokes far from every real image.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["RealManifold"]

_ROWS = 1024  # distance rows per block: a block of 1024 x 10,000 float32 distances is 40 MB


def _as_features(features, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(features), dtype=torch.float32)
    if t.ndim != 2 or len(t) < 1:
        raise ValueError(f"{name} must be a 2-D array (N, features); got shape {tuple(t.shape)}")
    return t


class RealManifold:
    """The k-NN manifold of real features; `inside(features)` says which generated features lie in it."""

    def __init__(self, real_features, k: int = 3):
        self.real = _as_features(real_features, "real_features")
        if not 1 <= int(k) < len(self.real):
            raise ValueError(f"k must be between 1 and the number of real features - 1 ({len(self.real) - 1}), got {k}")
        self.k = int(k)
        # The k-th neighbour of a point among the reals, not counting itself (distance 0, the first).
        self.radii = torch.cat([torch.cdist(self.real[i : i + _ROWS], self.real).topk(self.k + 1, largest=False)
                                .values[:, -1] for i in range(0, len(self.real), _ROWS)])

    def inside(self, features) -> np.ndarray:
        """(N,) bool: is each feature within the k-NN ball of some real feature."""
        f = _as_features(features, "features")
        return torch.cat([(torch.cdist(f[i : i + _ROWS], self.real) <= self.radii).any(1)
                          for i in range(0, len(f), _ROWS)]).numpy()

    def precision(self, features) -> float:
        """Share of the features inside the manifold: 1 for the real features themselves."""
        return float(self.inside(features).mean())
