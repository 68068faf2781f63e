"""A run is a folder: config.json, split.json, metrics.jsonl, checkpoint.pt (+ evaluation.json).

Every file is written atomically (temp file + rename), so an interrupted run never leaves a
half-written file behind.
"""

from __future__ import annotations

import io
import json
import os
import platform
import shutil
from pathlib import Path
from typing import Any

import torch

from .config import TrainConfig
from .errors import UserError

CONFIG, SPLIT, METRICS, CHECKPOINT, EVALUATION = "config.json", "split.json", "metrics.jsonl", "checkpoint.pt", "evaluation.json"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path} does not exist; is {Path(path).parent} a pyro-vae run folder?") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e}); the run folder is damaged") from None


def versions() -> dict[str, str]:
    import numpy
    import pyro
    import torchvision

    from . import __version__

    return {
        "pyro_vae": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "pyro": pyro.__version__, "torchvision": torchvision.__version__, "numpy": numpy.__version__,
        "platform": platform.platform(),
    }


def prepare(out: Path, force: bool) -> Path:
    """An empty run folder; an existing non-empty one only with force, and only if it is a run folder."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder; choose another --out")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise UserError(f"run folder {out} is not empty; pass --force to overwrite it or --resume {out} to continue it")
        if not (out / CONFIG).exists() and not (out / CHECKPOINT).exists():
            raise UserError(f"{out} is not empty and is not a pyro-vae run folder; --force only replaces run folders")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def read_config(run: Path) -> tuple[TrainConfig, dict]:
    """The run's TrainConfig and the full record (data provenance, versions)."""
    record = read_json(Path(run) / CONFIG)
    return TrainConfig.from_dict(record["config"], f"{run}/{CONFIG}"), record


def append_metrics(run: Path, line: dict) -> None:
    path = Path(run) / METRICS
    previous = path.read_bytes() if path.exists() else b""
    atomic_write_bytes(path, previous + (json.dumps(line) + "\n").encode())


def read_metrics(run: Path) -> list[dict]:
    path = Path(run) / METRICS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_metrics(run: Path, epochs: int) -> None:
    """Keep only the lines of epochs a checkpoint holds (a crash can fall between the two writes)."""
    kept = [m for m in read_metrics(run) if m["epoch"] <= epochs]
    atomic_write_bytes(Path(run) / METRICS, "".join(json.dumps(m) + "\n" for m in kept).encode())


def save_checkpoint(run: Path, state: dict) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(Path(run) / CHECKPOINT, buffer.getvalue())


def load_checkpoint(run: Path, device: str = "cpu") -> dict:
    path = Path(run) / CHECKPOINT
    if not path.exists():
        raise UserError(f"{path} does not exist; the run has not finished an epoch yet")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # pickle/zip errors from a damaged file
        raise UserError(f"{path} cannot be read ({type(e).__name__}); the checkpoint is damaged") from None


def is_complete(run: Path) -> bool:
    """A run whose checkpoint holds all the epochs its config asks for."""
    run = Path(run)
    if not (run / CONFIG).exists() or not (run / CHECKPOINT).exists():
        return False
    cfg, _ = read_config(run)
    metrics = read_metrics(run)
    return bool(metrics) and metrics[-1]["epoch"] >= cfg.epochs
