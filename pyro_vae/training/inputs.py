"""What a notebook hands a run, made into what its networks read, or a one-line UserError.

Images: a torch tensor or a numpy array of shape (N, 784), (N, 28, 28) or (N, 1, 28, 28); uint8
(0..255, divided by 255) or floating point in [0, 1]. Codes: (N, z_dim), any real dtype. Both
become float32 tensors, (N, 784) and (N, z_dim). Anything else (a list, another shape, bool,
complex, strings, other integer dtypes, NaN or infinite values, floats outside [0, 1]) is refused
with a message that says what was given and what is needed. A list is refused, not guessed at
(wrap it: torch.tensor(x) or np.asarray(x)); so is a single image or code without its batch
dimension (x[None] adds it), so that what comes back is always one row per input.
"""

from __future__ import annotations

import operator
from typing import Any

import torch

from pyro_vae.errors import UserError

PIXELS, SIDE = 784, 28
IMAGE_SHAPES = "(N, 784), (N, 28, 28) or (N, 1, 28, 28)"
_TORCH_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _shape(x: Any) -> str:
    return "(" + ", ".join(str(n) for n in x.shape) + ("," if len(x.shape) == 1 else "") + ")"


def _as_tensor(x: Any, what: str, needs: str) -> tuple[torch.Tensor, str]:
    """A torch tensor of `x` (a tensor or a numpy array of numbers), detached, and the name of its
    dtype as given; else the UserError."""
    if isinstance(x, torch.Tensor):
        dtype = str(x.dtype).replace("torch.", "")
        if x.is_complex():
            raise UserError(f"{what} must be {needs}, got a tensor of dtype {dtype}")
        return x.detach(), dtype
    import numpy as np

    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "biuf":  # complex, strings, bytes, objects, dates, records
            raise UserError(f"{what} must be {needs}, got a numpy array of dtype {x.dtype}")
        if x.dtype.kind == "f" and x.dtype.itemsize > 8:
            converted = x.astype(np.float64)  # float128: torch has none
        elif x.dtype.kind == "u" and x.dtype.itemsize > 1:
            converted = x.astype(np.int64)  # uint16/32/64: not every torch op has them
        else:
            converted = x
        return torch.from_numpy(np.ascontiguousarray(converted)), str(x.dtype)
    kind = type(x).__name__
    hint = " (wrap it: torch.tensor(x) or np.asarray(x))" if isinstance(x, (list, tuple)) else ""
    raise UserError(f"{what} must be a torch tensor or a numpy array of {needs}, got {kind}{hint}")


def _finite(x: torch.Tensor, what: str, needs: str) -> None:
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise UserError(f"{what} must be finite {needs}, got {bad} NaN or infinite value{'s' if bad > 1 else ''} "
                        f"in an array of shape {_shape(x)}")


def images(x: Any, what: str = "images") -> torch.Tensor:
    """`x` as a float32 (N, 784) tensor in [0, 1] (on its own device); uint8 is divided by 255.

    Args:
        x: a torch tensor or numpy array of shape (N, 784), (N, 28, 28) or (N, 1, 28, 28), uint8
            (0..255) or floating point in [0, 1].
        what: how messages name `x`, e.g. "encode: images".

    Returns:
        The images, (N, 784) float32.

    Raises:
        UserError: one line naming what `x` is and what is needed.

    Example:
        >>> import numpy as np
        >>> images(np.zeros((2, 28, 28), dtype=np.uint8)).shape
        torch.Size([2, 784])
    """
    needs = f"uint8 (0..255) or float in [0, 1] images of shape {IMAGE_SHAPES}"
    t, dtype = _as_tensor(x, what, needs)
    shape = tuple(t.shape)
    if not (t.dim() == 2 and shape[1] == PIXELS or t.dim() == 3 and shape[1:] == (SIDE, SIDE)
            or t.dim() == 4 and shape[1:] == (1, SIDE, SIDE)):
        extra = ""
        if t.dim() == 4 and shape[2:] == (SIDE, SIDE):
            extra = f" ({shape[1]} channels; a run reads grey images: one channel)"
        elif t.dim() == 4 and shape[1:3] == (SIDE, SIDE):
            extra = " (channels last; x.permute(0, 3, 1, 2) puts the channel first, and it must be one)"
        elif shape in ((PIXELS,), (SIDE, SIDE), (1, SIDE, SIDE)):
            extra = " (one image without its batch dimension: x[None] adds it)"
        raise UserError(f"{what} must have shape {IMAGE_SHAPES}, got {_shape(t)}{extra}")
    if t.dtype == torch.uint8:
        return t.reshape(len(t), PIXELS).to(torch.float32) / 255
    if t.dtype not in _TORCH_FLOATS:
        fix = "; convert it to uint8 (0..255) or to floats in [0, 1]" if t.dtype != torch.bool else "; convert it with x.float()"
        raise UserError(f"{what} must be uint8 (0..255) or floating point in [0, 1], got dtype {dtype}{fix}")
    t = t.reshape(len(t), PIXELS).to(torch.float32)
    if t.numel():
        _finite(t, what, "values in [0, 1]")
        low, high = float(t.min()), float(t.max())
        if low < 0 or high > 1:
            raise UserError(f"{what} must be floats in [0, 1] (or uint8 0..255), got values from {low:g} to {high:g}"
                            + ("; divide 0..255 values by 255" if high > 1 and high <= 255 and low >= 0 else ""))
    return t


def codes(z: Any, z_dim: int, what: str = "z") -> torch.Tensor:
    """`z` as a float32 (N, z_dim) tensor (on its own device).

    Args:
        z: a torch tensor or numpy array of real numbers (float or integer), shape (N, z_dim).
        z_dim: the run's latent_dim.
        what: how messages name `z`, e.g. "decode: z".

    Returns:
        The codes, (N, z_dim) float32.

    Raises:
        UserError: one line naming what `z` is and what is needed.

    Example:
        >>> codes(torch.zeros(3, 2, dtype=torch.float64), 2).dtype
        torch.float32
    """
    needs = f"real numbers of shape (N, {z_dim})"
    t, _ = _as_tensor(z, what, needs)
    if t.dim() != 2 or t.shape[1] != z_dim:
        extra = " (one code without its batch dimension: z[None] adds it)" if tuple(t.shape) == (z_dim,) else ""
        raise UserError(f"{what} must have shape (N, {z_dim}) (this run's latent_dim is {z_dim}), got {_shape(t)}{extra}")
    if t.dtype == torch.bool:
        raise UserError(f"{what} must be real numbers (float or integer), got dtype bool")
    t = t.to(torch.float32)
    if t.numel():
        _finite(t, what, needs)
    return t


def count(n: Any, what: str, low: int = 0) -> int:
    """`n` as an int of at least `low` (a Python or numpy whole number, not a bool), else the UserError.

    Example:
        >>> count(64, "sample: n", 1)
        64
    """
    try:
        value = operator.index(n) if not isinstance(n, bool) else None
    except TypeError:
        value = None
    if value is None or value < low:
        raise UserError(f"{what} must be a whole number of at least {low}, got {n!r}")
    return value


def seed(value: Any, what: str = "seed") -> int:
    """A seed for torch.manual_seed: a whole number from 0 to 2**64 - 1."""
    s = count(value, what, 0)
    if s >= 2**64:
        raise UserError(f"{what} must be a whole number from 0 to 2**64 - 1, got {value!r}")
    return s
