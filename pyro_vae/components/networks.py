"""Encoder and decoder networks, chosen by name, with their options (`network_options`).

An encoder maps images (B, 784) to features (B, out_dim); the guide decides what the features mean.
A decoder maps codes (..., z_dim) to Bernoulli logits (..., 784), keeping any leading particle dims.
A registered network is a `Network` value (no options) or a factory whose keyword-only arguments are
its options and which returns one: `mlp` takes `hidden = [200, 200]` (the widths, one per hidden
layer; default one layer of `hidden_dim`) and `activation = "tanh"` (one of ACTIVATIONS).
`gated-mlp` has gated hidden units, as Tomczak & Welling's VampPrior code has them (GatedDense):
each hidden layer is h = (W1 x + b1) * sigmoid(W2 x + b2); it takes `hidden` as `mlp` does,
`activation` (optional: applied to W1 x + b1 only; default none, the authors' choice) and
`init = "he"` (weights ~ N(0, 2 / fan_in), as in the authors' code; default: PyTorch's own).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from pyro_vae.data import PIXELS
from pyro_vae.errors import UserError
from pyro_vae.registry import Registry


@dataclass(frozen=True)
class Network:
    encoder: Callable[[int, int], nn.Module]  # (out_dim, hidden_dim) -> module
    decoder: Callable[[int, int], nn.Module]  # (z_dim, hidden_dim) -> module


NETWORKS: Registry[Network | Callable[..., Network]] = Registry("network")
ACTIVATIONS: Registry[Callable[[], nn.Module]] = Registry("activation")
for _name, _module in (("relu", nn.ReLU), ("tanh", nn.Tanh), ("elu", nn.ELU), ("leaky-relu", nn.LeakyReLU),
                       ("softplus", nn.Softplus), ("gelu", nn.GELU)):
    ACTIVATIONS.register(_name)(_module)


def build_network(name: str, options: dict) -> Network:
    """The network `name` with its options: a registered Network value takes none."""
    return NETWORKS.build(name, options, Network)


def output_bias(decoder: nn.Module) -> torch.Tensor | None:
    """The decoder's per-pixel output bias (the last bias with one entry per pixel), or None."""
    found = None
    for module in decoder.modules():
        bias = getattr(module, "bias", None)
        if isinstance(bias, torch.Tensor) and bias.shape == (PIXELS,):
            found = bias
    return found


class _FlattenLeading(nn.Module):
    """Runs `body` on (N, in) and restores any leading dims, so particle dims pass through."""

    def __init__(self, body: nn.Module, in_dim: int, out_dim: int):
        super().__init__()
        self.body, self.in_dim, self.out_dim = body, in_dim, out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        return self.body(x.reshape(-1, self.in_dim)).reshape(*lead, self.out_dim)


def in_precision(module: nn.Module, precision: str) -> nn.Module:
    """`module` computing in `precision`: for bf16 its forward runs under torch.autocast (matrix products
    and convolutions in bfloat16) and returns float32, so the likelihood, the loss and the optimiser
    state stay in float32. The weights and their names are untouched: checkpoints load either way."""
    if precision == "float32":
        return module
    forward = module.forward

    def autocast_forward(x, *args, **kwargs):
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
            return forward(x, *args, **kwargs).float()

    module.forward = autocast_forward
    return module


def mlp_layers(sizes: list[int], activation: str = "relu") -> nn.Module:
    """Linear layers through `sizes` with the activation between them (plain Linear layers broadcast
    over leading dims already, so particle dims pass through)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [nn.Linear(a, b)] + ([ACTIVATIONS[activation]()] if i < len(sizes) - 2 else [])
    return nn.Sequential(*layers)


def _check_hidden(where: str, hidden) -> None:
    if hidden is not None and (not isinstance(hidden, list) or not hidden or not all(
            isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in hidden)):
        raise UserError(f"{where} option hidden must be a list of layer widths such as [200, 200], got {hidden!r}")


@NETWORKS.register("mlp")
def mlp(*, hidden: list[int] | None = None, activation: str = "relu") -> Network:
    """Fully connected encoder and decoder; the decoder mirrors the encoder's hidden widths."""
    where = "network 'mlp'"
    _check_hidden(where, hidden)
    if not isinstance(activation, str):
        raise UserError(f"{where} option activation must be a name, one of: {', '.join(ACTIVATIONS.names())}")
    ACTIVATIONS.check(activation)

    def widths(hidden_dim: int) -> list[int]:
        return list(hidden) if hidden is not None else [hidden_dim]

    return Network(lambda out_dim, hidden_dim: mlp_layers([PIXELS, *widths(hidden_dim), out_dim], activation),
                   lambda z_dim, hidden_dim: mlp_layers([z_dim, *widths(hidden_dim)[::-1], PIXELS], activation))


# The conv network's feature maps are laid out channels-last (NHWC), so its convolutions run oneDNN's
# channels-last kernels, faster on the CPU at batch 32 than channels-first (`pyro-vae bench --book`
# times the epoch against plain PyTorch and the book's Keras code). Only the
# activations move: the weights, their layout and their names stay as they are (channels-last weights
# would make the compiled loss refuse them as constants), and flattening gives the same feature order.
class _ChannelsLastOutput:
    """Mixed in before a torch layer: its output laid out channels-last."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).contiguous(memory_format=torch.channels_last)


class FeatureMaps(_ChannelsLastOutput, nn.Unflatten):
    """nn.Unflatten to (C, H, W) feature maps, laid out channels-last."""


class ChannelsLastConv2d(_ChannelsLastOutput, nn.Conv2d):
    """nn.Conv2d with channels-last output maps: for the first convolution, whose one-channel input is
    laid out both ways at once, so torch would keep channels-first."""


def conv_encoder(out_dim: int, hidden_dim: int) -> nn.Module:
    """Four 3x3 convolutions with strides 1-2-2-1 (28 -> 28 -> 14 -> 7 -> 7), then a dense layer."""
    body = nn.Sequential(
        nn.Unflatten(1, (1, 28, 28)),
        ChannelsLastConv2d(1, 32, 3, stride=1, padding=1), nn.LeakyReLU(),
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
        FeatureMaps(1, (64, 7, 7)),
        nn.ConvTranspose2d(64, 64, 3, stride=1, padding=1), nn.LeakyReLU(),
        nn.ConvTranspose2d(64, 64, 3, stride=2, padding=1, output_padding=1), nn.LeakyReLU(),
        nn.ConvTranspose2d(64, 32, 3, stride=2, padding=1, output_padding=1), nn.LeakyReLU(),
        nn.ConvTranspose2d(32, 1, 3, stride=1, padding=1),
        nn.Flatten(),
    )
    return _FlattenLeading(body, z_dim, PIXELS)


NETWORKS.register("conv")(Network(conv_encoder, conv_decoder))


class GatedDense(nn.Module):
    """A gated hidden layer: (W1 x + b1) * sigmoid(W2 x + b2), with an optional activation on the
    first factor only. Linear layers and the product broadcast, so leading dims pass through."""

    def __init__(self, in_dim: int, out_dim: int, activation: str | None = None):
        super().__init__()
        self.h = nn.Linear(in_dim, out_dim)
        self.g = nn.Linear(in_dim, out_dim)
        self.activation = ACTIVATIONS[activation]() if activation is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.h(x)
        if self.activation is not None:
            h = self.activation(h)
        return h * torch.sigmoid(self.g(x))


GATED_INITS = ("default", "he")


def gated_layers(sizes: list[int], activation: str | None = None, init: str = "default") -> nn.Module:
    """Gated layers through `sizes[:-1]`, then one plain Linear layer to `sizes[-1]` (the features or logits)."""
    layers: list[nn.Module] = [GatedDense(a, b, activation) for a, b in zip(sizes[:-2], sizes[1:-1])]
    body = nn.Sequential(*layers, nn.Linear(sizes[-2], sizes[-1]))
    if init == "he":  # the authors' he_init: every Linear weight ~ N(0, 2 / fan_in); biases keep PyTorch's
        for module in body.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, (2.0 / module.in_features) ** 0.5)
    return body


@NETWORKS.register("gated-mlp")  # after conv: the names list as mlp, conv, gated-mlp
def gated_mlp(*, hidden: list[int] | None = None, activation: str | None = None, init: str = "default") -> Network:
    """Fully connected encoder and decoder of gated hidden layers; the decoder mirrors the encoder's widths.
    Tomczak & Welling's one-layer VAE is hidden = [300, 300], init = "he"."""
    where = "network 'gated-mlp'"
    _check_hidden(where, hidden)
    if activation is not None:
        if not isinstance(activation, str):
            raise UserError(f"{where} option activation must be a name, one of: {', '.join(ACTIVATIONS.names())}")
        ACTIVATIONS.check(activation)
    if init not in GATED_INITS:
        raise UserError(f"{where} option init must be one of {', '.join(GATED_INITS)}, got {init!r}")

    def widths(hidden_dim: int) -> list[int]:
        return list(hidden) if hidden is not None else [hidden_dim]

    return Network(lambda out_dim, hidden_dim: gated_layers([PIXELS, *widths(hidden_dim), out_dim], activation, init),
                   lambda z_dim, hidden_dim: gated_layers([z_dim, *widths(hidden_dim)[::-1], PIXELS], activation, init))
