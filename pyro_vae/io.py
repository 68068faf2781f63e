"""Files and streams, one of each: atomic writes, JSON and TOML reading, seeded random streams, logging.

Every file the package writes goes through `atomic_write`: a temporary file in the destination
folder, flushed to disk, then renamed over the target, so a reader never sees half a file and an
interrupted write leaves the previous version in place.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from pyro_vae.errors import UserError


def log_to_stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None], mode: int | None = None) -> Path:
    """Write `path` through `write(file)` into a temporary sibling, then rename it into place."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def read_json(path: str | os.PathLike) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path} does not exist; is {Path(path).parent} a pyro-vae run folder?") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e}); the run folder is damaged") from None


def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    import tomllib

    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"config file {path} is not valid TOML: {e}") from None


@contextlib.contextmanager
def seeded(seed: int | None = None, device: Any = "cpu") -> Iterator[None]:
    """Run a block on a forked copy of torch's RNG (of the CPU and of `device` when it is a GPU),
    seeded with `seed` when given, so the caller's random stream is the same afterwards."""
    import torch

    device = torch.device(device)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type):
        if seed is not None:
            torch.manual_seed(seed)
        yield
