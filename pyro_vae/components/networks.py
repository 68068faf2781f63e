"""Encoder and decoder networks, chosen by name.

An encoder maps images (B, 784) to features (B, out_dim); the guide decides what the features mean.
A decoder maps codes (..., z_dim) to Bernoulli logits (..., 784), keeping any leading particle dims.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from pyro_vae.data import PIXELS
from pyro_vae.registry import Registry


@dataclass(frozen=True)
class Network:
    encoder: Callable[[int, int], nn.Module]  # (out_dim, hidden_dim) -> module
    decoder: Callable[[int, int], nn.Module]  # (z_dim, hidden_dim) -> module


NETWORKS: Registry[Network] = Registry("network")


class _FlattenLeading(nn.Module):
    """Runs `body` on (N, in) and restores any leading dims, so particle dims pass through."""

    def __init__(self, body: nn.Module, in_dim: int, out_dim: int):
        super().__init__()
        self.body, self.in_dim, self.out_dim = body, in_dim, out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        return self.body(x.reshape(-1, self.in_dim)).reshape(*lead, self.out_dim)


def mlp_encoder(out_dim: int, hidden_dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(PIXELS, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim))


def mlp_decoder(z_dim: int, hidden_dim: int) -> nn.Module:
    # Plain Linear layers broadcast over leading dims already.
    return nn.Sequential(nn.Linear(z_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, PIXELS))


NETWORKS.register("mlp")(Network(mlp_encoder, mlp_decoder))


def conv_encoder(out_dim: int, hidden_dim: int) -> nn.Module:
    """Four 3x3 convolutions with strides 1-2-2-1 (28 -> 28 -> 14 -> 7 -> 7), then a dense layer."""
    body = nn.Sequential(
        nn.Unflatten(1, (1, 28, 28)),
        nn.Conv2d(1, 32, 3, stride=1, padding=1), nn.LeakyReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.LeakyReLU(),
        nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.LeakyReLU(),
        nn.Conv2d(64, 64, 3, stride=1, padding=1), nn.LeakyReLU(),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, out_dim),
    )
    return _FlattenLeading(body, PIXELS, out_dim)


def conv_decoder(z_dim: int, hidden_dim: int) -> nn.Module:
    """The encoder mirrored with transposed convolutions (7 -> 7 -> 14 -> 28 -> 28)."""
    body = nn.Sequential(
        nn.Linear(z_dim, 64 * 7 * 7),
        nn.Unflatten(1, (64, 7, 7)),
        nn.ConvTranspose2d(64, 64, 3, stride=1, padding=1), nn.LeakyReLU(),
        nn.ConvTranspose2d(64, 64, 3, stride=2, padding=1, output_padding=1), nn.LeakyReLU(),
        nn.ConvTranspose2d(64, 32, 3, stride=2, padding=1, output_padding=1), nn.LeakyReLU(),
        nn.ConvTranspose2d(32, 1, 3, stride=1, padding=1),
        nn.Flatten(),
    )
    return _FlattenLeading(body, z_dim, PIXELS)


NETWORKS.register("conv")(Network(conv_encoder, conv_decoder))
