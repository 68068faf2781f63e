"""Use a trained run from Python: load it, encode, decode, sample.

    run = load_run("runs/vae")
    mean, scale = run.encode(images)      # posterior mean and scale, (N, z_dim) each
    images = run.decode(codes)            # Bernoulli means, (N, 784)
    samples = run.sample(64, seed=0)      # decoded draws from the prior
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from . import runs
from .config import TrainConfig
from .data import Data
from .model import VAE, build_vae


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
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.vae.sample_prior(n).cpu()

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        return self.decode(self.sample_codes(n, seed))

    def metrics(self) -> list[dict]:
        return runs.read_metrics(self.path)

    def data(self) -> Data:
        from .train import load_data

        return load_data(self.config)


def load_run(path: str | Path, device: str = "cpu") -> Run:
    path = Path(path)
    cfg, record = runs.read_config(path)
    cfg.device = device
    state = runs.load_checkpoint(path, device)
    vae = build_vae(cfg).to(device)
    vae.load_state_dict(state["model"])
    vae.eval()
    return Run(path, cfg, record, vae, state["epoch"])
