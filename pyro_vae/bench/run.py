"""`pyro-vae bench`: run the items, print the table, write the JSON.

Only the standard library and the options load at import time (the CLI imports this to build its
parser); torch and the measuring modules load when the bench runs.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pyro_vae.bench.options import VARIANTS, Options, add_arguments

__all__ = ["add_arguments", "main", "run_bench"]


def _meta(opts: Options) -> dict:
    import pyro
    import torch

    from pyro_vae import __version__

    meta = {
        "pyro_vae": __version__, "torch": torch.__version__, "pyro": pyro.__version__, "python": platform.python_version(),
        "platform": platform.platform(), "processor": platform.processor(), "cpu_count": os.cpu_count(),
        "device": opts.device, "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if opts.device == "cuda" else None,
        "cuda_available": torch.cuda.is_available(), "jit_env": os.environ.get("PYRO_VAE_JIT"),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "options": dict(vars(opts)), "argv": sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if hasattr(os, "getloadavg"):
        meta["loadavg_start"] = os.getloadavg()
    return meta


def run_bench(opts: Options, log: Callable[[str], None] | None = None) -> dict:
    import torch

    from pyro_vae.bench.likelihood import bench_eval, eval_model
    from pyro_vae.bench.startup import bench_startup
    from pyro_vae.bench.study import bench_study_modes
    from pyro_vae.bench.tables import table_rows
    from pyro_vae.bench.throughput import bench_training, train_config
    from pyro_vae.data import load_data

    if log is None:
        log = (lambda m: None) if opts.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    if opts.threads:
        torch.set_num_threads(opts.threads)
    report: dict = {"meta": _meta(opts), "startup": None, "train": {}, "batching": None, "peers": None, "book": None, "twin": None,
                    "eval": None, "study": None}
    started = time.perf_counter()
    report["startup"] = bench_startup(opts.repeats, log)
    trainer = None
    if opts.variants or opts.peers or (opts.eval and not opts.run_dir):
        cfg = train_config(opts, VARIANTS["vae"], opts.train_images)
        cfg.test_limit = opts.eval_images
        data = load_data(cfg)
        report["meta"]["data"] = {k: data.provenance.get(k) for k in ("dataset", "origin", "train_count", "test_count", "split")}
        if opts.variants:
            report["train"], report["batching"], trainer = bench_training(opts, data, log)
        if opts.peers:
            from pyro_vae.bench.peers import bench_peers

            report["peers"] = bench_peers(opts, data, log)
    if opts.book:
        from pyro_vae.bench.book import bench_book

        report["book"] = bench_book(opts, log)
    if opts.eval:
        vae, test_obs, source = eval_model(opts, trainer, log)
        report["eval"] = bench_eval(opts, vae, test_obs, source, log)
    del trainer  # its model and data are not needed while the study runs
    if opts.twin:
        from pyro_vae.bench.twin import bench_twin

        report["twin"] = bench_twin(opts, log)
    if opts.study:
        report["study"] = bench_study_modes(opts, log)
    report["meta"]["seconds"] = time.perf_counter() - started
    if hasattr(os, "getloadavg"):
        report["meta"]["loadavg_end"] = os.getloadavg()
    report["table"] = table_rows(report)
    return report


def _jsonable(obj):
    import numpy as np
    import torch

    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def main(args: argparse.Namespace) -> int:
    from pyro_vae.bench.tables import format_table
    from pyro_vae.io import atomic_write_json

    opts = Options.from_args(args)
    report = run_bench(opts)
    m = report["meta"]
    print(f"pyro-vae bench on {m['device']}{' (' + m['gpu'] + ')' if m['gpu'] else ''}, {m['threads']} threads, "
          f"torch {m['torch']}, pyro {m['pyro']}; {m['cpu_count']} CPUs, load {m.get('loadavg_start', ['?'])[0]:.2f} at start, "
          f"OMP_WAIT_POLICY={m['omp_wait_policy'] or 'unset'}")
    load = m.get("loadavg_start", [0.0])[0]
    if m["threads"] > 1 and not m["omp_wait_policy"] and load >= 0.75 * (m["cpu_count"] or 1):
        print(f"note: the machine was busy (load {load:.1f} on {m['cpu_count']} CPUs) and OMP_WAIT_POLICY is unset: torch's "
              "OpenMP threads spin while they wait, and on a shared machine epochs can slow down many times over, "
              "project and reference alike; OMP_WAIT_POLICY=PASSIVE or --threads 1 gives steadier numbers")
    print(format_table(report["table"]))
    if opts.json:
        atomic_write_json(Path(opts.json), _jsonable(report))
        print(f"JSON: {opts.json}")
    return 0
