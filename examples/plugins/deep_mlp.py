"""A network: encoder and decoder with two hidden layers of `hidden_dim` units and ELU activations.

Contract (NetworkContract): a value with `encoder(out_dim, hidden_dim)`, a module from (..., 784) to
(..., out_dim), and `decoder(z_dim, hidden_dim)`, a module from (..., z_dim) to (..., 784) logits;
leading dimensions (particles) pass through.
"""

from torch import nn

from pyro_vae import register_network
from pyro_vae.components.networks import Network


def _mlp(inputs: int, hidden: int, outputs: int) -> nn.Module:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU(), nn.Linear(hidden, outputs))


register_network("deep-mlp")(Network(lambda out_dim, hidden: _mlp(784, hidden, out_dim),
                                     lambda z_dim, hidden: _mlp(z_dim, hidden, 784)))
