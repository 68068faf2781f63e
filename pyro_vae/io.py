"""Files and streams, one of each: atomic writes, JSON and TOML reading, seeded random streams, logging.

Every file the package writes goes through `atomic_write`: a temporary file in the destination
folder, flushed to disk, then renamed over the target, so a reader never sees half a file and an
interrupted write leaves the previous version in place.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from pyro_vae.errors import UserError


def counted(n: int, word: str) -> str:
    """'1 seed', '2 seeds': a count in the words of a log line or a report."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def fmt_seconds(seconds: float) -> str:
    """'42 s', '3.5 min': a duration in a log line."""
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def log_to_stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# Why a write failed, in words a user can act on; the previous version of the file is always kept.
_WRITE_FIXES = {
    errno.ENOSPC: "the disk is full: free some space and run the command again",
    errno.EDQUOT: "the disk quota is used up: free some space and run the command again",
    errno.EROFS: "the file system is read-only: choose a writable folder",
    errno.EACCES: "permission denied: choose a writable folder or fix its permissions",
    errno.ENAMETOOLONG: "the path is too long: choose a shorter one",
}


class WriteError(UserError):
    """A file could not be written (full disk, read-only folder, ...); its previous version is intact."""


def os_fix(e: OSError) -> str:
    """What an OSError of a write or mkdir means, and what to do."""
    return _WRITE_FIXES.get(e.errno, f"{e.strerror or e}: check the folder")


def write_error(path: str | os.PathLike, e: OSError) -> WriteError:
    return WriteError(f"cannot write {path}: {os_fix(e)} (its previous version, if any, is intact)")


def temporaries(folder: str | os.PathLike) -> list[Path]:
    """The temporary files of atomic writes in `folder` (what a killed writer leaves behind)."""
    return [p for p in Path(folder).glob(".*.tmp") if p.is_file()]


@functools.cache
def _default_mode() -> int:
    """What open() would give a new file: 0o666 less the process's umask. Read once: reading it means
    setting it, which another thread's file creation could see in between."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None], mode: int | None = None) -> Path:
    """Write `path` through `write(file)` into a temporary sibling, then rename it into place.

    An OSError (a full disk, a read-only folder) becomes a WriteError naming the file, and the
    temporary file is removed whatever stopped the write, so a full disk is not kept full by it."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise write_error(path, e) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _default_mode() if mode is None else mode)  # mkstemp's 0600 would hide reports from others
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise write_error(path, e) from None
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def _read(path: str | os.PathLike, parse: Callable[[bytes], Any], messages: dict[str, str]) -> Any:
    """`parse` of a file's bytes, every way that can fail as one UserError: `messages` per failure
    (missing, folder, encoding, syntax, unreadable), formatted with path, parent and the error."""
    import tomllib

    try:
        return parse(Path(path).read_bytes())
    except (FileNotFoundError, NotADirectoryError) as e:
        kind, error = "missing", e
    except IsADirectoryError as e:
        kind, error = "folder", e
    except UnicodeDecodeError as e:
        kind, error = "encoding", e
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        kind, error = "syntax", e
    except OSError as e:
        kind, error = "unreadable", e
    raise UserError(messages[kind].format(path=path, parent=Path(path).parent, error=error,
                                          start=getattr(error, "start", None), strerror=getattr(error, "strerror", None)))


def read_json(path: str | os.PathLike, damaged: str = "the run folder is damaged") -> Any:
    """A JSON file; `damaged` is what the message says (the fix) when it cannot be parsed."""
    fix = damaged.replace("{", "{{").replace("}", "}}")
    return _read(path, lambda data: json.loads(data.decode("utf-8")), {
        "missing": "{path} does not exist; is {parent} a pyro-vae run folder?",
        "folder": "{path} is a folder, not a file; " + fix,
        "encoding": "{path} holds bytes that are not UTF-8 (at byte {start}); " + fix,
        "syntax": "{path} is not valid JSON ({error}); " + fix,
        "unreadable": "{path} cannot be read ({strerror}); " + fix,
    })


def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    import tomllib

    return _read(path, lambda data: tomllib.loads(data.decode("utf-8")), {
        "missing": "config file {path} does not exist",
        "folder": "config file {path} is a folder; name a TOML file",
        "encoding": "config file {path} is not UTF-8 (byte {start}); TOML files are UTF-8: save it as UTF-8",
        "syntax": "config file {path} is not valid TOML: {error}",
        "unreadable": "config file {path} cannot be read ({strerror})",
    })


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
