"""The report folder: what may be replaced there, and a build that appears whole or not at all.

A build holds the folder's lock (pyro_vae.training.runs.locked: a second build on the folder is
refused, naming the holder's pid), writes every file into STAGING inside the folder, and only then
moves them into place, one rename each, with Ctrl-C and SIGTERM held off until the last one; a
build stopped before that leaves the previous report as it was. MANIFEST, written last, lists the
files of the build, so that the next build replaces exactly those; a folder holding anything else
is refused, as `--force` refuses a run folder holding files that are not a run's.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import threading
from pathlib import Path
from typing import Iterator

from pyro_vae.errors import UserError
from pyro_vae.io import atomic_write_json, temporaries
from pyro_vae.training import runs

__all__ = ["MANIFEST", "STAGING", "check_report_folder", "report_folder"]

MANIFEST = ".report-files.json"  # {"files": [paths relative to the folder]}: what the last build wrote
STAGING = ".building"  # where a build writes its files before they are moved into place
# What a report wrote before it kept a manifest (the reports committed in reports/, say).
UNLISTED_FILES = ("results.json", "results.csv", "report.md", "report.html", "explorer.html")


def check_report_folder(out_dir: Path, flag: str = "--out") -> None:
    """Before anything is read, trained or evaluated: the report can go into this folder: it is, or
    can become, a folder (no file on its path, a path the system accepts), and it holds nothing but
    an earlier report's files (which a build replaces)."""
    out_dir = Path(out_dir)
    try:
        for folder in (out_dir, *out_dir.parents):
            if folder.exists():
                if not folder.is_dir():
                    raise UserError(f"{folder} exists and is not a folder; choose another {flag} for the report")
                break
        if out_dir.is_symlink():
            raise UserError(f"{out_dir} is a symbolic link; give the real folder as {flag} for the report")
        foreign = _foreign(out_dir, earlier_files(out_dir)) if out_dir.is_dir() else []
    except OSError as e:
        raise UserError(f"{flag} {out_dir} cannot be used ({e.strerror}); choose another {flag} for the report") from None
    if foreign:
        raise UserError(f"{out_dir} holds files that no report wrote there ({', '.join(foreign[:5])}"
                        f"{', ...' if len(foreign) > 5 else ''}); a report replaces only its own files: "
                        f"choose another {flag} (a new or empty folder)")


def earlier_files(out_dir: Path) -> set[str]:
    """The files earlier builds left in out_dir (paths relative to it): those its manifest lists, and
    those of a build whose moving in was cut short (its manifest is still in STAGING); in a folder
    without a manifest, the report's file names and figures/*.png when its results.json is a report's."""
    files = _listed(out_dir / MANIFEST) | _listed(out_dir / STAGING / MANIFEST)
    if not (out_dir / MANIFEST).exists() and _is_results(out_dir / "results.json"):
        files |= set(UNLISTED_FILES) | {f"figures/{p.name}" for p in (out_dir / "figures").glob("*.png")}
    return files


def _listed(manifest: Path) -> set[str]:
    try:
        files = json.loads(manifest.read_text(encoding="utf-8"))["files"]
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError):
        return set()  # missing or damaged: it vouches for nothing
    if not isinstance(files, list):
        return set()
    return {f for f in files if isinstance(f, str) and f and not f.startswith("/") and ".." not in f.split("/")}  # inside only


def _is_results(path: Path) -> bool:
    """Whether `path` is a report's results.json: a list of run entries as tables.result_row writes them."""
    try:
        rows = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(rows, list) and bool(rows) and all(
        isinstance(r, dict) and {"variant", "seed", "run", "config", "data", "evaluation"} <= set(r) for r in rows)


def _foreign(folder: Path, ours: set[str], prefix: str = "") -> list[str]:
    """The entries of `folder` (relative names) that are none of `ours`, nor a folder holding only those."""
    own = {p.name for p in temporaries(folder)} | (set() if prefix else {runs.LOCK, MANIFEST, STAGING})
    found = []
    for p in sorted(folder.iterdir()):
        name = prefix + p.name
        if p.name in own:
            continue
        if p.is_dir() and not p.is_symlink() and any(f.startswith(name + "/") for f in ours):
            found += _foreign(p, ours, name + "/")
        elif name not in ours or p.is_symlink() or not p.is_file():
            found.append(name)
    return found


@contextlib.contextmanager
def report_folder(out_dir: Path) -> Iterator[Path]:
    """Lock out_dir (which check_report_folder has passed) for a build and yield the empty folder to
    build it in; when the block ends without an error, move the build into out_dir and remove the
    earlier build's other files."""
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    try:
        with runs.locked(out_dir):
            check_report_folder(out_dir)  # again, now that no other build can be writing there
            staging = out_dir / STAGING
            earlier = earlier_files(out_dir)  # before a killed build's staging (and the manifest it holds) goes
            shutil.rmtree(staging, ignore_errors=True)  # what a killed build left
            staging.mkdir()
            try:
                yield staging
                _move_in(staging, out_dir, earlier)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                out_dir.rmdir()  # a first build that failed leaves no empty folder
        raise


def _move_in(staging: Path, out_dir: Path, earlier: set[str]) -> None:
    files = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
    atomic_write_json(staging / MANIFEST, {"files": files})
    with _signals_held():
        for name in files:
            (out_dir / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / name, out_dir / name)
        for name in sorted(earlier - set(files)):  # an earlier build's figure this one did not draw, say
            (out_dir / name).unlink(missing_ok=True)
            if (out_dir / name).parent != out_dir:
                with contextlib.suppress(OSError):
                    (out_dir / name).parent.rmdir()  # left empty
        os.replace(staging / MANIFEST, out_dir / MANIFEST)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP wait until the block has run, then act as they would have."""
    if threading.current_thread() is not threading.main_thread():  # handlers can be set in the main thread only
        yield
        return
    caught: list[int] = []
    saved = {s: signal.signal(s, lambda signum, frame: caught.append(signum))
             for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        if caught:
            signal.raise_signal(caught[0])
