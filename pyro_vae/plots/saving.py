"""Writing figures to disk: as small PNGs whose bytes depend on the figure only.

Reports are committed to git, so a figure is stored once per distinct content: the PNG carries no
version or date metadata (the same figure gives the same bytes on a rebuild) and is reduced to a
256-colour palette without dithering, each palette colour being the most common true colour of the
pixels it stands for (so white stays white and the flat colours exact; about a quarter of the RGBA
size, pixels on average within a grey level of the full-colour render).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from pyro_vae.io import atomic_write_bytes

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
    atomic_write_bytes(path, png_bytes(fig, dpi))
    return path


def png_bytes(fig: Figure, dpi: int = DEFAULT_DPI) -> bytes:
    """The figure as an optimised palette PNG, with no metadata (see the module's note)."""
    raw = io.BytesIO()
    fig.savefig(raw, format="png", dpi=dpi, facecolor="white", metadata={"Software": None})
    return optimised_png(raw.getvalue())


def optimised_png(png: bytes) -> bytes:
    """Any PNG as the palette PNG of the module's note (also how older reports' figures are redone)."""
    from PIL import Image

    rgb = Image.open(io.BytesIO(png)).convert("RGB")
    image = rgb.quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    image.putpalette(_modal_palette(np.asarray(rgb), np.asarray(image)))
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _modal_palette(rgb: np.ndarray, index: np.ndarray) -> list[int]:
    """For each palette entry the commonest true colour among its pixels (the octree gives their mean,
    which turns a white background into 254)."""
    colour = (rgb[..., 0].astype(np.int64) << 16 | rgb[..., 1].astype(np.int64) << 8 | rgb[..., 2]).ravel()
    pairs, counts = np.unique(index.ravel().astype(np.int64) << 24 | colour, return_counts=True)
    entry, colour = pairs >> 24, pairs & 0xFFFFFF
    order = np.lexsort((counts, entry))  # by entry, commonest colour last
    last = np.r_[entry[order][1:] != entry[order][:-1], True]
    palette = np.zeros(256, dtype=np.int64)
    palette[entry[order][last]] = colour[order][last]
    return np.stack([palette >> 16, palette >> 8 & 255, palette & 255], 1).astype(np.uint8).ravel().tolist()
