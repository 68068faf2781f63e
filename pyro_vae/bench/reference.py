"""The yardstick for the training path: the same networks and optimiser in a plain PyTorch loop."""

from __future__ import annotations

import math

import pyro
import torch
import torch.nn.functional as F

from pyro_vae.bench.batching import batches
from pyro_vae.components.guides import MIN_SCALE
from pyro_vae.components.likelihoods import normal_log_constant, normal_scale
from pyro_vae.components.networks import build_network
from pyro_vae.training.batches import EpochInputs
from pyro_vae.training.trainer import build_optimizer

KINDS = ("mc", "analytic", "ae")


def reconstruction_term(likelihood: str, options: dict):
    """-log p(x | z) summed over the batch, from the decoder's logits, written out in plain PyTorch."""
    if likelihood == "bernoulli":
        return lambda logits, x: F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    if likelihood == "normal":
        sd = normal_scale(**options)
        constant, weight = normal_log_constant(sd), 0.5 / sd**2
        return lambda logits, x: weight * (x - torch.sigmoid(logits)).pow(2).sum() + constant * x.shape[0]
    raise ValueError(f"the plain-PyTorch reference has no {likelihood!r} likelihood (bernoulli, normal)")


class Reference:
    """The project's networks and optimiser with a hand-written loss, batched like the Trainer.

    Encoder and decoder are built from `build_network(cfg.network, cfg.network_options)` after `pyro.set_rng_seed(cfg.seed)`,
    in the order build_vae builds them (guide encoder, prior, decoder), so they start from the
    Trainer's weights. The losses are what the project's objectives compute, summed over the batch:

    - mc:       BCE-with-logits sum + sum(z^2/2 - log sigma - eps^2/2), z = mu + sigma eps: the Monte
                Carlo estimate -[log p(x|z) + log p(z) - log q(z|x)] that Trace_ELBO computes with the
                gaussian guide and the standard-normal prior (the log 2pi terms cancel).
    - analytic: BCE-with-logits sum + sum(KL(N(mu, sigma^2) || N(0, 1))): TraceMeanField_ELBO's.
    - ae:       BCE-with-logits sum: the delta guide with beta = 0.

    The reconstruction term is the BCE-with-logits sum for the bernoulli likelihood, and for the normal
    likelihood (the book's squared error) sum (x - sigmoid(logits))^2 / (2 scale^2) + 784 log(scale sqrt(2 pi)).

    eps is drawn the way Pyro's Normal.rsample draws it, so with the same RNG state both compute the
    same number.
    """

    def __init__(self, cfg, kind: str, device):
        if kind not in KINDS:
            raise ValueError(f"unknown reference kind {kind!r}")
        self.kind, self.z_dim = kind, cfg.latent_dim
        self.reconstruction = reconstruction_term(cfg.likelihood, cfg.likelihood_options)
        self.batch_size, self.seed = cfg.batch_size, cfg.seed
        network = build_network(cfg.network, cfg.network_options)
        pyro.set_rng_seed(cfg.seed)
        self.encoder = network.encoder(cfg.latent_dim if kind == "ae" else 2 * cfg.latent_dim, cfg.hidden_dim).to(device)
        self.decoder = network.decoder(cfg.latent_dim, cfg.hidden_dim).to(device)
        self.optimizer = build_optimizer(list(self.encoder.parameters()) + list(self.decoder.parameters()), cfg.lr, device)
        self.epoch = 0
        self.inputs: EpochInputs | None = None

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior loc and scale, parametrised as the gaussian guide's."""
        loc, raw_scale = self.encoder(x).split(self.z_dim, dim=-1)
        return loc, F.softplus(raw_scale) + MIN_SCALE

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "ae":
            return self.reconstruction(self.decoder(self.encoder(x)), x)
        loc, scale = self.encode(x)
        eps = torch.empty_like(loc).normal_()  # as torch.distributions.Normal.rsample draws it
        z = loc + scale * eps
        reconstruction = self.reconstruction(self.decoder(z), x)
        if self.kind == "mc":
            latent = (0.5 * z * z - scale.log() - 0.5 * eps * eps).sum()
        else:
            latent = (0.5 * (scale * scale + loc * loc - 1.0) - scale.log()).sum()
        return reconstruction + latent

    def train_epoch(self, train_x: torch.Tensor, binarization) -> float:
        """One epoch as Trainer.train_epoch runs it: same binarisation (drawn ahead the same way) and
        order, index batching."""
        if self.inputs is None or self.inputs.x is not train_x:
            self.inputs = EpochInputs(binarization, train_x, self.seed, last_epoch=math.inf)
        epoch = self.epoch + 1
        total = torch.zeros((), dtype=torch.float64, device=train_x.device)
        optimizer = self.optimizer
        for batch in batches(*self.inputs(epoch), self.batch_size):
            loss = self.loss(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
        self.epoch = epoch
        return -float(total) / len(train_x)
