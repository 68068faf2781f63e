"""Writing figures to disk."""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.figure import Figure

from pyro_vae.io import atomic_write

DEFAULT_DPI = 100


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = DEFAULT_DPI) -> Path:
    """Write ``fig`` as a PNG to ``path`` atomically and return the path.

    The PNG is rendered into a temporary file in the destination folder and
    moved into place with :func:`os.replace`, so readers never see a partial
    file.  Missing parent folders are created.  The figure is not closed (it is
    not registered with pyplot, so it is freed when no longer referenced).
    The output is always PNG, whatever the file suffix.
    """
    if not isinstance(fig, Figure):
        raise ValueError(f"save_figure: expected a matplotlib Figure, got {type(fig).__name__}")
    path = Path(path)
    if path.name in ("", ".", ".."):
        raise ValueError(f"save_figure: {str(path)!r} is not a file path")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=dpi, facecolor="white"))
    return path
