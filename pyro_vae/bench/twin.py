"""The plain-PyTorch twin trained to the end: does the Pyro path learn what a hand-written loop learns?

For each dataset and seed the project's default VAE (Trainer: Pyro model and guide, compiled
Trace_ELBO) and the Reference loop (the same networks from the same seed, the hand-written Monte Carlo
ELBO, the same epoch draws, order and Adam) train for the same epochs; both are then scored by one
estimator (bench.peers.test_elbo) on the same binarised test images. Agreement is judged on the mean
over seeds of the difference.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import replace

from pyro_vae.bench.options import VARIANTS, Options

AGREEMENT_NATS = 0.5


def bench_twin(opts: Options, log: Callable[[str], None]) -> dict:
    from pyro_vae.bench.peers import test_elbo, trainer_networks
    from pyro_vae.bench.throughput import build_pair, train_config
    from pyro_vae.data import load_data
    from pyro_vae.training.numerics import flush_denormals

    rows = []
    for dataset in opts.twin_datasets:
        base = replace(opts, dataset=dataset)
        data = load_data(train_config(base, VARIANTS["vae"], opts.train_images))
        images = len(data.train_x)
        for seed in opts.twin_seeds:
            trainer, reference = build_pair(base, "vae", data, images, log, seed=seed)
            with flush_denormals():
                for _ in range(opts.twin_epochs):
                    trainer.train_epoch(progress=False)
                    trainer.epoch += 1
                    reference.train_epoch(trainer.train_x, trainer.binarization)
                ours = test_elbo(*trainer_networks(trainer), trainer.test_obs)
                twin = test_elbo(reference.encode, reference.decoder, trainer.test_obs)
            rows.append({"dataset": dataset, "seed": seed, "epochs": opts.twin_epochs, "images": images,
                         "project": ours, "twin": twin, "difference": ours - twin})
            log(f"bench twin {dataset} seed {seed}: project {ours:.2f}, twin {twin:.2f} nats/image after {opts.twin_epochs} epochs")
    summary = {}
    for dataset in opts.twin_datasets:
        diffs = [r["difference"] for r in rows if r["dataset"] == dataset]
        mean = statistics.fmean(diffs)
        summary[dataset] = {"seeds": len(diffs), "mean_difference": mean,
                            "project": statistics.fmean(r["project"] for r in rows if r["dataset"] == dataset),
                            "twin": statistics.fmean(r["twin"] for r in rows if r["dataset"] == dataset),
                            "met": abs(mean) <= AGREEMENT_NATS}
    return {"rows": rows, "summary": summary, "target_nats": AGREEMENT_NATS}
