"""Peers in the bench: other ways people train the same VAE, timed beside pyro-vae in one run.

- `pyro-example`: the structure of Pyro's own VAE example (examples/vae/vae.py), written here from its
  published design: a model and a guide registering their networks with `pyro.module`, a
  `pyro.plate("data")`, `SVI.step` with `pyro.optim.Adam` and `Trace_ELBO`, batches from a shuffled
  torch `DataLoader`.
- `pythae`: pythae's `VAE` trained by its `BaseTrainer` (analytic KL, its own DataLoader), when the
  optional `pythae` package is installed.

Every side gets the project's MLP encoder and decoder (built from the same seed, so all start from the
same weights), the same binarised images of each epoch, batch size and Adam learning rate. Each side's
test ELBO is then measured by one estimator for all (analytic KL, 10 posterior draws per image under
one seed), so the numbers compare training, not bookkeeping.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F

from pyro_vae.components.guides import MIN_SCALE
from pyro_vae.components.networks import build_network
from pyro_vae.io import seeded
from pyro_vae.registry import Registry

PEERS: Registry[Callable[..., "Peer"]] = Registry("peer")
ELBO_DRAWS = 10


class Peer:
    """A way of training the VAE: `train_epoch(observed)` runs one epoch over those binarised images;
    `encode(x) -> (loc, scale)` and `decode(z) -> logits` give the trained networks to the common
    test-ELBO estimator."""

    note = ""

    def __init__(self, cfg, device: torch.device):
        network = build_network(cfg.network, cfg.network_options)
        pyro.set_rng_seed(cfg.seed)  # build_vae builds the guide's encoder, then the decoder: the same start
        self.encoder = network.encoder(2 * cfg.latent_dim, cfg.hidden_dim).to(device)
        self.decoder = network.decoder(cfg.latent_dim, cfg.hidden_dim).to(device)
        self.z_dim, self.batch_size, self.lr, self.seed, self.device = cfg.latent_dim, cfg.batch_size, cfg.lr, cfg.seed, device
        self.epoch = 0

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, raw = self.encoder(x).split(self.z_dim, dim=-1)
        return loc, F.softplus(raw) + MIN_SCALE

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def train_epoch(self, observed: torch.Tensor) -> None:
        raise NotImplementedError

    def loader(self, observed: torch.Tensor):
        from torch.utils.data import DataLoader, TensorDataset

        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return DataLoader(TensorDataset(observed), batch_size=self.batch_size, shuffle=True, generator=gen)


@PEERS.register("pyro-example")
class PyroExample(Peer):
    note = "Pyro's examples/vae structure: pyro.module, SVI.step, pyro.optim.Adam, shuffled DataLoader"

    def __init__(self, cfg, device):
        super().__init__(cfg, device)
        self.svi = pyro.infer.SVI(self.model, self.guide, pyro.optim.Adam({"lr": self.lr}), loss=pyro.infer.Trace_ELBO())

    def model(self, x: torch.Tensor) -> None:
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            loc = x.new_zeros((x.shape[0], self.z_dim))
            z = pyro.sample("latent", dist.Normal(loc, torch.ones_like(loc)).to_event(1))
            pyro.sample("obs", dist.Bernoulli(logits=self.decoder(z), validate_args=False).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("latent", dist.Normal(*self.encode(x)).to_event(1))

    def train_epoch(self, observed: torch.Tensor) -> None:
        pyro.clear_param_store()  # the example's networks are the store's only params
        for (x,) in self.loader(observed):
            self.svi.step(x)
        self.epoch += 1


@PEERS.register("pythae")
class Pythae(Peer):
    note = "pythae VAE + BaseTrainer (analytic KL; its own DataLoader)"

    def __init__(self, cfg, device):
        super().__init__(cfg, device)
        from pythae.models import VAE, VAEConfig
        from pythae.models.base.base_utils import ModelOutput
        from pythae.models.nn import BaseDecoder, BaseEncoder
        from pythae.trainers import BaseTrainer, BaseTrainerConfig

        peer = self

        class Encoder(BaseEncoder):
            def __init__(self):
                super().__init__()
                self.net = peer.encoder

            def forward(self, x):  # pythae wants the log-variance
                loc, scale = peer.encode(x)
                return ModelOutput(embedding=loc, log_covariance=2 * scale.log())

        class Decoder(BaseDecoder):
            def __init__(self):
                super().__init__()
                self.net = peer.decoder

            def forward(self, z):  # pythae's BCE takes probabilities
                return ModelOutput(reconstruction=torch.sigmoid(self.net(z)))

        self.output = tempfile.TemporaryDirectory(prefix="pyro-vae-bench-pythae-")
        model = VAE(VAEConfig(input_dim=(784,), latent_dim=self.z_dim, reconstruction_loss="bce"), Encoder(), Decoder())
        config = BaseTrainerConfig(output_dir=self.output.name, per_device_train_batch_size=self.batch_size,
                                   learning_rate=self.lr, optimizer_cls="Adam", num_epochs=1, no_cuda=device.type != "cuda",
                                   seed=self.seed)
        self._dataset = _pythae_dataset
        with seeded():  # pythae seeds the global RNGs when its trainer starts; keep the caller's stream
            self.trainer = BaseTrainer(model, self._dataset(torch.zeros(1, 784)), training_config=config)
            self.trainer.prepare_training()  # what BaseTrainer.train does before its epochs
        # Its progress-bar callback writes frames to stderr; the bench prints its own lines.
        handler = self.trainer.callback_handler
        handler.callbacks = [c for c in handler.callbacks if type(c).__name__ != "ProgressBarCallback"]

    def train_epoch(self, observed: torch.Tensor) -> None:
        self.trainer.train_loader = self.trainer.get_train_dataloader(self._dataset(observed))
        self.trainer.train_step(self.epoch + 1)
        self.epoch += 1


def _pythae_dataset(x: torch.Tensor):
    from pythae.data.datasets import BaseDataset

    return BaseDataset(x, torch.zeros(len(x)))


def available(name: str) -> str | None:
    """None when the peer can run here, else why not (a missing optional package)."""
    if name == "pythae":
        try:
            import pythae  # noqa: F401
        except ImportError:
            return 'pythae is not installed (pip install "pyro-vae[peers]")'
    return None


@torch.no_grad()
def test_elbo(encode: Callable, decode: Callable, x: torch.Tensor, seed: int = 0, draws: int = ELBO_DRAWS) -> float:
    """ELBO per image in nats with the analytic KL to N(0, I), averaged over `draws` posterior draws."""
    total = 0.0
    with seeded(seed, x.device):
        for i in range(0, len(x), 1000):
            xb = x[i : i + 1000]
            loc, scale = encode(xb)
            kl = 0.5 * (scale.pow(2) + loc.pow(2) - 1).sum() - scale.log().sum()
            z = loc + scale * torch.randn((draws, *loc.shape), device=x.device)
            logits = decode(z)
            recon = -F.binary_cross_entropy_with_logits(logits, xb.expand_as(logits), reduction="sum") / draws
            total += float(recon - kl)
    return total / len(x)


def trainer_networks(trainer) -> tuple[Callable, Callable]:
    """The project's trained encoder (posterior loc, scale) and decoder (logits)."""
    vae = trainer.vae
    return vae.encoder_guide.encode, vae.decoder


# A peer "matches" pyro-vae's test ELBO within this many nats: the spread of one seed's result.
ELBO_TOLERANCE = 0.5


def bench_peers(opts, data, log: Callable[[str], None]) -> dict:
    """pyro-vae's default VAE and each available peer, trained side by side on the same epoch draws:
    one untimed epoch each (compiling, warming caches), then `opts.repeats` timed epochs each, the
    order of the sides rotating per repeat; then each one's test ELBO by the common estimator."""
    from pyro_vae.bench.throughput import build_pair
    from pyro_vae.bench.timers import project_epochs, summary, timed
    from pyro_vae.training.numerics import flush_denormals

    images = len(data.train_x) if opts.train_images is None else min(opts.train_images, len(data.train_x))
    trainer, _ = build_pair(opts, "vae", data, images, log)
    skipped = {name: why for name in PEERS.names() if (why := available(name))}
    peers = {name: PEERS[name](trainer.cfg, trainer.device) for name in PEERS.names() if name not in skipped}
    for name, why in skipped.items():
        log(f"bench peers: {name} skipped: {why}")

    def side(peer):
        def epoch():
            observed = trainer.inputs.draw(peer.epoch + 1)  # drawn outside the timing: the peers' favour
            return lambda: peer.train_epoch(observed)
        return epoch

    sides = {"pyro-vae": lambda: (lambda: project_epochs(trainer, 1))} | {name: side(peer) for name, peer in peers.items()}
    times: dict[str, list[float]] = {name: [] for name in sides}
    with flush_denormals():
        for name, make in sides.items():
            timed(make(), trainer.device)
        for r in range(opts.repeats):
            order = list(sides)[r % len(sides):] + list(sides)[: r % len(sides)]
            for name in order:
                times[name].append(timed(sides[name](), trainer.device)[0])
        elbos = {"pyro-vae": test_elbo(*trainer_networks(trainer), trainer.test_obs)}
        elbos |= {name: test_elbo(peer.encode, peer.decode, trainer.test_obs) for name, peer in peers.items()}
    ours = summary(times["pyro-vae"])["median"]
    result = {"images": images, "epochs": 1 + opts.repeats, "test_images": len(trainer.test_obs), "skipped": skipped,
              "elbo_tolerance": ELBO_TOLERANCE, "sides": {}}
    for name in sides:
        epoch = summary(times[name])
        result["sides"][name] = {
            "epoch": epoch, "ratio": epoch["median"] / ours, "test_elbo": elbos[name],
            "note": "the project (Trainer, compiled Trace_ELBO)" if name == "pyro-vae" else PEERS[name].note,
        }
        log(f"bench peers: {name} {epoch['median']:.3f} s/epoch ({epoch['median'] / ours:.2f}x), test ELBO {elbos[name]:.2f}")
    return result
