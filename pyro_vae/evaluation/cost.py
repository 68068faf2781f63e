"""What an evaluation will cost, said before it starts: from what the same kind of evaluation took here.

The time of an evaluation depends on the machine, its load, the network, the latent size and the
settings in ways no formula predicts well (the exact 2-D grid refines until it converges, the
class-volume interval refits a robust covariance per class and round). So every evaluation's time is
kept in the per-user cache, under what decides it, and the next one of the same kind is estimated
from it; a kind never evaluated on this machine gets no estimate, and says so.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict, replace

from pyro_vae.data import cache_subdir
from pyro_vae.errors import UserError
from pyro_vae.io import atomic_write_json, counted, fmt_seconds, read_json

FILE = "evaluation-times.json"
KEPT = 200  # kinds remembered (the newest)


def kind(cfg, settings, test_count: int, train_count: int) -> str:
    """What decides an evaluation's time: the model's shape, the data's size and the settings."""
    what = {"network": cfg.network, "network_options": cfg.network_options, "hidden_dim": cfg.hidden_dim,
            "latent_dim": cfg.latent_dim, "guide": cfg.guide, "prior": cfg.prior, "likelihood": cfg.likelihood,
            "device": cfg.device, "precision": cfg.precision,
            "test": test_count, "train": train_count, "settings": asdict(settings)}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def kind_of_run(run, settings) -> str:
    """The kind of a run folder's evaluation, from its config.json (model and data counts)."""
    from pyro_vae.training import runs

    cfg, record = runs.read_config(run)
    return kind_of_record(cfg, record, settings)


def kind_of_record(cfg, record: dict, settings) -> str:
    """The kind, from a run's config and its config.json record (its data counts); its device is the
    one config.json names, wherever the run is evaluated now."""
    device = record.get("config", {}).get("device", cfg.device)
    return kind(replace(cfg, device=device), settings, record["data"].get("test_count", 0), record["data"].get("train_count", 0))


def _read() -> dict:
    try:
        path = cache_subdir("timings") / FILE
        times = read_json(path) if path.exists() else {}
    except UserError:  # a damaged record costs an estimate, nothing more
        return {}
    return times if isinstance(times, dict) else {}


def remember(key: str, seconds: float) -> None:
    """Keep the time of an evaluation of this kind (the mean with the previous one). Best effort: an
    unwritable cache costs the next estimate, never the evaluation that was made."""
    try:
        times = _read()
        previous = times.pop(key, None)
        times[key] = seconds if not isinstance(previous, (int, float)) else (previous + seconds) / 2
        atomic_write_json(cache_subdir("timings") / FILE, dict(list(times.items())[-KEPT:]))
    except UserError as e:
        print(f"pyro-vae: the evaluation's time was not kept for later estimates ({e})", file=sys.stderr)


def estimate(keys: list[str]) -> float | None:
    """Seconds for evaluations of these kinds, or None when one of them was never timed here."""
    times = _read()
    known = [times.get(k) for k in keys]
    return None if any(not isinstance(t, (int, float)) for t in known) else float(sum(known))


def announce(names: list[str], keys: list[str], settings) -> str:
    """The line said before evaluations start: what, with which settings, and about how long."""
    seconds = estimate(keys)
    likelihood = f"on {'the first ' + str(settings.likelihood_images) if settings.likelihood_images else 'all'} test images"
    when = (f"about {fmt_seconds(seconds)} (as long as the same evaluations took here before)" if seconds is not None
            else "no estimate yet (not evaluated on this machine before; each run's time is said as it finishes)")
    shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
    return (f"evaluating {counted(len(names), 'run')} ({shown}): log p(x) with K = {settings.num_samples} "
            f"{likelihood}, {settings.generated} generated images per sampler; {when}")
