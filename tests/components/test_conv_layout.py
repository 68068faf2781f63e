"""The conv network lays its feature maps out channels-last: the same function of the same weights, the same
checkpoint names, and the compiled training loss still takes it."""

from pathlib import Path

import torch
from torch import nn

from pyro_vae.components.networks import ChannelsLastConv2d, FeatureMaps, conv_decoder, conv_encoder
from pyro_vae.config import TrainConfig
from pyro_vae.training.trainer import Trainer


def _plain(module: nn.Module) -> nn.Module:
    """The same module, its layers put back to plain channels-first ones holding the same weights."""
    body = module.body
    for i, layer in enumerate(body):
        if isinstance(layer, FeatureMaps):
            body[i] = nn.Unflatten(layer.dim, layer.unflattened_size)
        elif isinstance(layer, ChannelsLastConv2d):
            plain = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding)
            plain.load_state_dict(layer.state_dict())
            body[i] = plain
    return module


def test_channels_last_feature_maps_compute_what_channels_first_ones_do():
    torch.manual_seed(0)
    encoder, decoder = conv_encoder(4, 0), conv_decoder(2, 0)
    layouts = []
    convs = [*encoder.body[3:8:2], *decoder.body[2:9:2]]  # every convolution with more than one channel in
    for conv in convs:
        conv.register_forward_hook(lambda m, args, out: layouts.append(
            (args[0].is_contiguous(memory_format=torch.channels_last), args[0].is_contiguous())))
    x, z = torch.rand(8, 784), torch.randn(3, 5, 2)  # the decoder keeps leading particle dims
    features, logits = encoder(x), decoder(z)
    assert layouts == [(True, False)] * 7  # each saw NHWC maps, not NCHW ones
    names = list(encoder.state_dict()) + list(decoder.state_dict())
    _plain(encoder), _plain(decoder)
    assert list(encoder.state_dict()) + list(decoder.state_dict()) == names  # one checkpoint layout
    layouts.clear()
    plain_features, plain_logits = encoder(x), decoder(z)
    assert layouts == [(False, True)] * 7
    assert features.shape == (8, 4) and logits.shape == (3, 5, 784)
    assert torch.allclose(features, plain_features, atol=1e-5) and torch.allclose(logits, plain_logits, atol=1e-5)


def test_the_compiled_loss_takes_the_channels_last_conv_network_and_trains(one_thread):
    from pyro_vae import data

    images = data.load("mnist", train_limit=64, test_limit=32)
    cfg = TrainConfig(dataset="mnist", network="conv", device="cpu", batch_size=32, train_limit=64, epochs=10**6, seed=0).validate()
    trainer = Trainer(cfg, Path("<test>"), images, log=lambda m: None)
    losses = []
    for _ in range(3):
        losses.append(trainer.train_epoch(progress=False))
        trainer.epoch += 1
    assert trainer.jit_active  # channels-last weights would have made it fall back to the eager loss
    assert all(torch.isfinite(torch.tensor(losses)))
