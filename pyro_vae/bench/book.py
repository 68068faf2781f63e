"""Item `--book`: the Generative Deep Learning book's VAE (studies/gdl_book.toml's: the conv network on grey MNIST,
the Normal likelihood of r_loss_factor 1000, batch 32, Adam 5e-4) timed side by side, at each thread setting:

- `pyro-vae` in each precision asked for (float32; bf16 where the CPU has bfloat16 matrix units or on CUDA),
  the Trainer's epoch as `pyro-vae train` runs it;
- `plain PyTorch`: the same networks, loss and optimiser in a hand-written loop (bench/reference.py);
- `keras`: the book's own code, Keras 3 on TensorFlow (bench/keras_book.py, in a process of its own), when
  `pip install "pyro-vae[keras]"` has installed it; skipped with that message otherwise.

After one untimed epoch each (compiling, warming caches), each repeat times one epoch of every side, the
order rotating per repeat so that a slow spell on a shared machine hits all. Ratios are medians over
medians; each row also gives the range of its per-repeat ratios.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pyro_vae.bench.reference import Reference
from pyro_vae.bench.targets import TARGET_BOOK_OVER_KERAS
from pyro_vae.bench.timers import project_epochs, summary, timed
from pyro_vae.config import TrainConfig
from pyro_vae.data import load_data
from pyro_vae.training.numerics import flush_denormals
from pyro_vae.training.trainer import Trainer

BOOK = {"dataset": "mnist", "network": "conv", "latent_dim": 2, "binarize": "none", "likelihood": "normal",
        "likelihood_options": {"r_loss_factor": 1000.0}, "batch_size": 32, "lr": 5e-4, "guide": "gaussian", "beta": 1.0}
KERAS_EXTRA = 'pip install "pyro-vae[keras]"'
KERAS_START_TIMEOUT_S = 300
KERAS_EPOCH_TIMEOUT_S = 3600


def keras_missing() -> str | None:
    """None when the book's Keras code can run here, else why not."""
    missing = [name for name in ("keras", "tensorflow") if importlib.util.find_spec(name) is None]
    return f"{' and '.join(missing)} not installed ({KERAS_EXTRA})" if missing else None


def bf16_units(device: str) -> bool:
    """Whether bfloat16 matrix products have hardware here: CUDA, or a CPU with AMX or AVX-512 BF16.
    Without them oneDNN emulates bfloat16 and an epoch takes several times as long."""
    if device == "cuda":
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def default_precisions(device: str) -> list[str]:
    return ["float32", "bf16"] if bf16_units(device) else ["float32"]


class KerasWorker:
    """The book's Keras VAE in a process of its own, one epoch per request."""

    def __init__(self, images: np.ndarray, threads: int, seed: int, folder: Path):
        path = folder / "images.npy"
        np.save(path, images.astype(np.float32))
        env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
        self.log_path = folder / f"keras-{threads}-threads.log"
        self.stderr = self.log_path.open("w")
        self.process = subprocess.Popen([sys.executable, "-m", "pyro_vae.bench.keras_book", str(path), str(threads), str(seed)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True, env=env)
        self.info = self._answer("starting")

    def _answer(self, what: str) -> dict:
        line = self.process.stdout.readline()
        if not line:
            self.close()
            tail = self.log_path.read_text()[-2000:]
            raise RuntimeError(f"the Keras peer stopped while {what} (exit {self.process.returncode}):\n{tail}")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"the Keras peer: {answer['error']}")
        return answer

    def epoch(self) -> dict:
        self.process.stdin.write("epoch\n")
        self.process.stdin.flush()
        return self._answer("training an epoch")

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.write("quit\n")
                self.process.stdin.flush()
                self.process.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self.stderr.close()


def book_config(opts, images: int, precision: str, seed: int = 0) -> TrainConfig:
    cfg = TrainConfig(data_dir=opts.data_dir, device=opts.device, train_limit=images, test_limit=1000, epochs=10**6, seed=seed)
    cfg.update(dict(BOOK, precision=precision), "the book's experiment")
    return cfg.validate()


def _images(opts) -> int:
    return opts.conv_images if opts.conv_images is not None else (60000 if opts.device == "cuda" else 6000)


def bench_book(opts, log: Callable[[str], None]) -> dict:
    precisions = opts.book_precisions or default_precisions(opts.device)
    images = _images(opts)
    data = load_data(book_config(opts, images, "float32"))
    images = len(data.train_x)
    keras_why = keras_missing()
    if keras_why:
        log(f"bench book: keras skipped: {keras_why}")
    result = {"images": images, "batch_size": BOOK["batch_size"], "repeats": opts.repeats, "precisions": precisions,
              "bf16_units": bf16_units(opts.device), "keras_skipped": keras_why, "target": TARGET_BOOK_OVER_KERAS,
              "threads": {}}
    saved_threads = torch.get_num_threads()
    try:
        with flush_denormals(), tempfile.TemporaryDirectory(prefix="pyro-vae-bench-book-") as folder:
            for threads in opts.book_threads:
                torch.set_num_threads(threads)
                log(f"bench book: {images} grey MNIST images, batch 32, {threads} thread(s), {opts.repeats} repeats")
                result["threads"][str(threads)] = _one_setting(opts, data, precisions, threads, keras_why, Path(folder), log)
    finally:
        torch.set_num_threads(saved_threads)
    return result


def _one_setting(opts, data, precisions: list[str], threads: int, keras_why: str | None, folder: Path, log) -> dict:
    sides: dict[str, Callable[[], float]] = {}
    notes: dict[str, str] = {}
    trainers: dict[str, Trainer] = {}
    for precision in precisions:
        cfg = book_config(opts, len(data.train_x), precision)
        trainer = Trainer(cfg, Path(f"<bench book {precision}>"), data, log=lambda m: None)
        trainer.inputs.last_epoch = math.inf
        sides[f"pyro-vae {precision}"] = _project_side(trainer)
        trainers[f"pyro-vae {precision}"] = trainer
    reference = Reference(book_config(opts, len(data.train_x), "float32"), "mc", torch.device(opts.device))
    sides["plain PyTorch"] = _reference_side(reference, trainer)
    notes["plain PyTorch"] = "the same networks, loss and Adam in a hand-written loop, float32"
    keras = None
    if keras_why is None:
        keras = KerasWorker(data.train_x.cpu().numpy(), threads, 0, folder)
        sides["keras"] = lambda: keras.epoch()["seconds"]
        notes["keras"] = f"the book's code: Keras {keras.info['keras']}, TensorFlow {keras.info['tensorflow']}, fit(batch_size=32)"
    try:
        times: dict[str, list[float]] = {name: [] for name in sides}
        first = {name: fn() for name, fn in sides.items()}
        names = list(sides)
        for r in range(opts.repeats):
            for name in names[r % len(names):] + names[: r % len(names)]:
                times[name].append(sides[name]())
            log(f"bench book ({threads} thread(s)), repeat {r + 1}/{opts.repeats}: "
                + ", ".join(f"{n} {times[n][-1]:.2f} s" for n in names))
    finally:
        if keras is not None:
            keras.close()
    for name, trainer in trainers.items():  # after the epochs: a compiled loss that failed its check fell back
        notes[name] = "the Trainer's epoch" + ("; compiled loss" if trainer.jit_active else "; eager (compiled loss fell back)")
    out = {}
    for name in names:
        s = summary(times[name])
        row = {"epoch": s, "first_epoch_seconds": first[name], "note": notes[name],
               "images_per_second": len(data.train_x) / s["median"]}
        for yardstick in ("keras", "plain PyTorch"):
            if yardstick in times and name != yardstick:
                row[f"over {yardstick}"] = s["median"] / summary(times[yardstick])["median"]
                row[f"over {yardstick} pairs"] = summary([a / b for a, b in zip(times[name], times[yardstick])])
        out[name] = row
    project = [n for n in names if n.startswith("pyro-vae")]
    best = min(project, key=lambda n: out[n]["epoch"]["median"])
    met = None if "keras" not in out else out[best]["over keras"] <= TARGET_BOOK_OVER_KERAS
    return {"sides": out, "best": best, "met": met}


def _project_side(trainer: Trainer) -> Callable[[], float]:
    return lambda: timed(lambda: project_epochs(trainer, 1), trainer.device)[0]


def _reference_side(reference: Reference, trainer: Trainer) -> Callable[[], float]:
    return lambda: timed(lambda: reference.train_epoch(trainer.train_x, trainer.binarization), trainer.device)[0]

