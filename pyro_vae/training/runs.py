"""A run is a folder: config.json, split.json, metrics.jsonl, checkpoint.pt (+ evaluation.json).

Every file is written atomically (temp file + rename), so an interrupted run never leaves a
half-written file behind. `load_run` opens a finished run from Python:

    run = load_run("runs/vae")
    mean, scale = run.encode(images)      # posterior mean and scale, (N, z_dim) each
    images = run.decode(codes)            # Bernoulli means, (N, 784)
    samples = run.sample(64, seed=0)      # decoded draws from the prior
"""

from __future__ import annotations

import io
import json
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from pyro_vae.config import TrainConfig
from pyro_vae.data import Data, load_data
from pyro_vae.errors import UserError
from pyro_vae.io import atomic_write_bytes, read_json, seeded
from pyro_vae.model import VAE, build_vae

CONFIG, SPLIT, METRICS, CHECKPOINT, EVALUATION = "config.json", "split.json", "metrics.jsonl", "checkpoint.pt", "evaluation.json"


def versions() -> dict[str, str]:
    import numpy
    import pyro
    import torchvision

    from pyro_vae import __version__

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


@dataclass
class Run:
    path: Path
    config: TrainConfig
    record: dict
    vae: VAE
    epoch: int

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    def encode(self, x: torch.Tensor, batch_size: int = 2000) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [self.vae.encode(x[i : i + batch_size].to(self.device)) for i in range(0, len(x), batch_size)]
        return torch.cat([p[0] for p in parts]).cpu(), torch.cat([p[1] for p in parts]).cpu()

    def decode(self, z: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
        return torch.cat([self.vae.decode(z[i : i + batch_size].to(self.device)) for i in range(0, len(z), batch_size)]).cpu()

    def sample_codes(self, n: int, seed: int = 0) -> torch.Tensor:
        with seeded(seed):
            return self.vae.sample_prior(n).cpu()

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        return self.decode(self.sample_codes(n, seed))

    def metrics(self) -> list[dict]:
        return read_metrics(self.path)

    def data(self) -> Data:
        return load_data(self.config)


def load_run(path: str | Path, device: str = "cpu") -> Run:
    path = Path(path)
    cfg, record = read_config(path)
    cfg.device = device
    state = load_checkpoint(path, device)
    vae = build_vae(cfg).to(device)
    vae.load_state_dict(state["model"])
    vae.eval()
    return Run(path, cfg, record, vae, state["epoch"])
