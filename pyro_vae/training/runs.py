"""A run is a folder: config.json, split.json, metrics.jsonl, checkpoint.pt (+ evaluation.json).

Every file is written atomically (temp file + rename), so an interrupted run never leaves a
half-written file behind. `load_run` opens a finished run from Python:

    run = load_run("runs/vae")
    mean, scale = run.encode(images)      # posterior mean and scale, (N, z_dim) each
    images = run.decode(codes)            # Bernoulli means, (N, 784)
    samples = run.sample(64, seed=0)      # decoded draws from the prior
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import platform
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from pyro_vae import plugins
from pyro_vae.config import TrainConfig
from pyro_vae.data import Data, load_data
from pyro_vae.errors import UserError
from pyro_vae.training import inputs
from pyro_vae.io import atomic_write_bytes, os_fix, read_json, seeded, temporaries
from pyro_vae.model import VAE, build_vae

CONFIG, SPLIT, METRICS, CHECKPOINT, EVALUATION = "config.json", "split.json", "metrics.jsonl", "checkpoint.pt", "evaluation.json"


def versions() -> dict[str, str]:
    import numpy
    import pyro
    import torchvision

    from pyro_vae import __version__

    return {
        "pyro_vae": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "pyro": pyro.__version__, "torchvision": torchvision.__version__, "numpy": numpy.__version__,
        "platform": platform.platform(),
    }


# What a run folder consists of; --force removes these and nothing else.
RUN_FILES = {CONFIG, SPLIT, METRICS, CHECKPOINT, EVALUATION, "evaluation.npz"}
TENSORBOARD = "tensorboard"  # a folder of TensorBoard event files (--tensorboard), replaced with the run


def _is_run_entry(p: Path) -> bool:
    if p.name == TENSORBOARD and p.is_dir() and not p.is_symlink():
        return all(f.is_file() and f.name.startswith("events.out.tfevents.") for f in p.iterdir())
    return p.name in RUN_FILES and p.is_file()
LOCK = ".lock"
STUDY_FILE = "study.json"  # what marks RUNS_DIR of a study, whose run folders are RUNS_DIR/<variant>/seed-<n>
STUDY_ENV = "PYRO_VAE_LOCKED"  # the folders whose locks this process (or the study that started it) holds


def check_target(out: Path, force: bool) -> list[Path]:
    """The entries `prepare` would remove, or the UserError it would raise; writes nothing, so a
    caller can refuse a bad --out before the slow part."""
    try:
        return _check_target(Path(out), force)
    except OSError as e:  # an overlong name, a component that is a file, no permission to look
        raise UserError(f"cannot use {out} as a run folder ({e.strerror or e}); choose another --out") from None


def _check_target(out: Path, force: bool) -> list[Path]:
    if out.is_symlink():
        raise UserError(f"{out} is a symbolic link; give the real folder as --out")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder; choose another --out")
    entries = [p for p in out.iterdir() if p.name != LOCK and p not in temporaries(out)] if out.exists() else []
    if entries:
        if not force:
            raise UserError(f"run folder {out} is not empty; pass --force to overwrite it or --resume {out} to continue it")
        foreign = sorted(p.name for p in entries if not _is_run_entry(p))
        if foreign:
            raise UserError(f"{out} holds files that are not part of a run ({', '.join(foreign[:5])}"
                            f"{', ...' if len(foreign) > 5 else ''}); --force only replaces run folders: choose another --out")
    return entries


def prepare(out: Path, force: bool) -> Path:
    """An empty run folder, locked by the caller; an existing non-empty one only with force, and then
    only if it holds nothing but run files (which are removed, one by one)."""
    out = Path(out)
    for p in check_target(out, force):
        for f in p.iterdir() if p.is_dir() else ():  # a run's tensorboard/ folder holds files only
            f.unlink()
        p.rmdir() if p.is_dir() else p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


@contextlib.contextmanager
def locked(folder: str | Path, create: bool = True) -> Iterator[Path]:
    """Hold an OS lock on `folder` (created if missing, unless `create` is False: then a missing
    folder is an error) while a process trains or writes there.

    flock is released by the kernel when the holder exits in any way, so a lock left by a dead
    process is never in force. The lock file names the holder's pid for the message a second
    process gets. Leftover temporary files of interrupted writes are swept once the lock is held.
    """
    folder = Path(folder)
    try:
        if folder.is_symlink():
            raise UserError(f"{folder} is a symbolic link; give the real folder")
        if not create and not folder.is_dir():
            raise UserError(f"{folder} does not exist or is not a folder; give a trained run folder")
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {folder}: {os_fix(e)}") from None
    if not os.access(folder, os.W_OK):
        raise UserError(f"{folder} is not writable; choose another folder or fix its permissions")
    _check_study_free(folder)
    path = folder / LOCK
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise UserError(f"{folder} is in use by process {holder} (another pyro-vae run or study); "
                            "wait for it to finish or use another folder") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:  # else the holder removed the file as we opened it: lock the new one
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        for leftover in temporaries(folder):  # safe to remove: the folder is locked
            leftover.unlink(missing_ok=True)
        with _held(folder):
            yield folder
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def study_of(folder: Path) -> Path | None:
    """The study folder a run folder belongs to (RUNS_DIR of RUNS_DIR/<variant>/seed-<n>), or None."""
    folder = Path(folder).resolve()  # `.`, `seed-0/../seed-0` and links name the same folder
    parent = folder.parent.parent
    return parent if folder.name.startswith("seed-") and (parent / STUDY_FILE).is_file() else None


def _check_study_free(folder: Path) -> None:
    """A run of a study that another process is running is the study's: `train --resume` or `evaluate`
    of it meanwhile would mix its epochs or evaluation into the study's report. The study's own
    processes (which inherit STUDY_ENV) pass."""
    study = study_of(folder)
    if study is None or not (study / LOCK).exists() or str(study.resolve()) in os.environ.get(STUDY_ENV, "").split(os.pathsep):
        return
    try:
        fd = os.open(study / LOCK, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # refused only while the study holds its lock
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        raise UserError(f"{folder} is a run of the study in {study}, which process {holder} is running; "
                        "wait for the study to finish (it trains and evaluates this run itself)") from None
    finally:
        os.close(fd)


@contextlib.contextmanager
def _held(folder: Path) -> Iterator[None]:
    """Record `folder` as locked by this process, for this process and the workers it starts (the
    environment is inherited), in STUDY_ENV."""
    previous = os.environ.get(STUDY_ENV)
    os.environ[STUDY_ENV] = os.pathsep.join(filter(None, [previous, str(folder.resolve())]))
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(STUDY_ENV, None)
        else:
            os.environ[STUDY_ENV] = previous


def new_run_id() -> str:
    """Who a run is: config.json and every checkpoint of the run carry it, so a checkpoint copied in from
    another run (another seed, another variant of the same shapes) is refused, not taken for the run's own."""
    return uuid.uuid4().hex


def read_config(run: Path) -> tuple[TrainConfig, dict]:
    """The run's TrainConfig and the full record (data provenance, versions)."""
    path = Path(run) / CONFIG
    record = read_json(path)
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict) or not isinstance(record.get("data"), dict):
        raise UserError(f"{path} is damaged: it must be an object with 'config' and 'data' tables; "
                        "restore it or train the run again")
    plugins.reload_recorded(record.get("plugins", []), run)  # its components must exist before its names resolve
    return TrainConfig.from_dict(record["config"], str(path)), record


def check_data(run: Path, record: dict, provenance: dict) -> None:
    """Refuse data other than what the run was trained on (the hashes config.json recorded)."""
    for key in ("train_file", "test_file"):
        saved, found = record["data"].get(key), provenance.get(key, {})
        if not isinstance(saved, dict):
            continue
        for field in ("images_sha256", "labels_sha256", "images_content_sha256"):
            if field in saved and field in found and saved[field] != found[field]:
                raise UserError(f"the data found now differs from the data {run} was trained on ({key} {field.split('_')[0]}); "
                                "make the original data available where the run's data_dir or PYRO_VAE_DATA points")


def append_metrics(run: Path, line: dict) -> None:
    path = Path(run) / METRICS
    previous = path.read_bytes() if path.exists() else b""
    atomic_write_bytes(path, previous + (json.dumps(line) + "\n").encode())


def read_metrics(run: Path) -> list[dict]:
    path = Path(run) / METRICS
    if not path.exists():
        return []
    lines = []
    for number, text in enumerate(path.read_bytes().split(b"\n"), 1):
        try:
            line = json.loads(text.decode("utf-8")) if text.strip() else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            line = False
        if line is None:
            continue
        if not isinstance(line, dict) or not isinstance(line.get("epoch"), int):
            raise UserError(f"{path} line {number} is damaged (not a JSON metrics record); "
                            "delete that line and lines after it, then continue with --resume (the checkpoint rewrites them)")
        lines.append(line)
    return lines


def truncate_metrics(run: Path, epochs: int, last: dict | None = None) -> None:
    """Keep only the lines of epochs a checkpoint holds (a crash can fall between the two writes), and
    restore the checkpoint's own line (`last`, epoch `epochs`) where its write failed."""
    kept = [m for m in read_metrics(run) if m["epoch"] <= epochs]
    if isinstance(last, dict) and last.get("epoch") == epochs and (kept[-1]["epoch"] if kept else 0) == epochs - 1:
        kept.append(last)
    atomic_write_bytes(Path(run) / METRICS, "".join(json.dumps(m) + "\n" for m in kept).encode())


def save_checkpoint(run: Path, state: dict) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(Path(run) / CHECKPOINT, buffer.getvalue())


CHECKPOINT_KEYS = ("epoch", "model", "optimizer", "rng")


def load_checkpoint(run: Path, device: str = "cpu", run_id: str | None = None) -> dict:
    """The checkpoint's state; `run_id` is config.json's: a checkpoint of another run is refused
    (runs made before ids existed have none on either side)."""
    path = Path(run) / CHECKPOINT
    if not path.exists():
        raise UserError(f"{path} does not exist; the run has not finished an epoch yet")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # pickle/zip errors from a damaged file
        raise UserError(f"{path} cannot be read ({type(e).__name__}); the checkpoint is damaged: train the run again") from None
    if not isinstance(state, dict) or any(k not in state for k in CHECKPOINT_KEYS) or not isinstance(state["epoch"], int):
        raise UserError(f"{path} is damaged: it lacks {', '.join(CHECKPOINT_KEYS)}; train the run again")
    if state.get("run_id") != run_id:
        raise UserError(f"{path} belongs to another run (its run id {state.get('run_id') or 'none'}, {CONFIG} says "
                        f"{run_id or 'none'}): it was copied in from another folder; put back the run's own checkpoint "
                        "or train the run again")
    return state


def load_model_state(vae: torch.nn.Module, state: dict, run: Path) -> None:
    """The checkpoint's weights into a model built from config.json, which must describe them."""
    try:
        vae.load_state_dict(state["model"])
    except (RuntimeError, TypeError, AttributeError) as e:
        first = str(e).strip().splitlines()[-1].strip()[:160] if str(e).strip() else type(e).__name__
        raise UserError(f"{Path(run) / CHECKPOINT} does not fit the model {Path(run) / CONFIG} describes ({first}); "
                        "was config.json edited? restore it or train the run again") from None


def is_complete(run: Path) -> bool:
    """A run whose checkpoint holds all the epochs its config asks for, or the epoch its plateau rule stopped at."""
    run = Path(run)
    if not (run / CONFIG).exists() or not (run / CHECKPOINT).exists():
        return False
    cfg, _ = read_config(run)
    metrics = read_metrics(run)
    return bool(metrics) and epochs_left(metrics, cfg.epochs) == 0


def epochs_left(metrics: list[dict], epochs: int) -> int:
    """The epochs a run with these metrics.jsonl lines still trains towards `epochs` (0 once it stopped)."""
    if metrics and metrics[-1].get("stopped"):
        return 0
    return max(epochs - (metrics[-1]["epoch"] if metrics else 0), 0)


@dataclass
class Run:
    """A trained run, read back from its folder: the model in eval mode and what the folder records.

    Made by `load_run` (or returned by `pyro_vae.train`). Images given to its methods are torch
    tensors or numpy arrays of shape (N, 784), (N, 28, 28) or (N, 1, 28, 28), uint8 (0..255) or
    float in [0, 1]; codes are (N, latent_dim); anything else is a one-line `UserError`. Results
    are float32 CPU tensors, one row per input.

    Attributes:
        path: the run folder.
        config: the run's `TrainConfig` (its device: where this Run was loaded).
        record: the whole config.json (data provenance with file hashes, versions, plugins).
        vae: the model (`pyro_vae.model.VAE`), a Pyro model/guide pair of torch modules.
        epoch: the epochs its checkpoint holds.

    Example:
        >>> run = pyro_vae.load_run("runs/vae")
        >>> mean, scale = run.encode(run.data().test_x[:8])
        >>> run.decode(mean).shape
        torch.Size([8, 784])
    """

    path: Path
    config: TrainConfig
    record: dict
    vae: VAE
    epoch: int

    @property
    def device(self) -> torch.device:
        """Where the model's weights are (the `device` it was loaded onto)."""
        return next(self.vae.parameters()).device

    @torch.no_grad()
    def encode(self, x, batch_size: int = 2000) -> tuple[torch.Tensor, torch.Tensor]:
        """The posterior q(z | x) of each image: its mean and scale (a delta guide's scale is 0).

        Args:
            x: images, torch or numpy, (N, 784), (N, 28, 28) or (N, 1, 28, 28); uint8 (0..255) or
                float in [0, 1].
            batch_size: images per forward pass.

        Returns:
            (mean, scale), two (N, latent_dim) tensors.

        Example:
            >>> mean, scale = run.encode(run.data().test_x[:100])
            >>> mean.shape, scale.shape
            (torch.Size([100, 2]), torch.Size([100, 2]))
        """
        x = inputs.images(x, "encode: images")
        if not len(x):
            empty = torch.empty(0, self.config.latent_dim)
            return empty, empty.clone()
        parts = self._batches(self.vae.encode, x, batch_size)
        return torch.cat([p[0] for p in parts]).cpu(), torch.cat([p[1] for p in parts]).cpu()

    @torch.no_grad()
    def sample_posterior(self, x, seed: int = 0, batch_size: int = 2000) -> torch.Tensor:
        """One draw of q(z | x) per image, seeded (a delta guide's draw is its code): together, draws of
        the aggregate posterior q(z), the codes the decoder was trained on.

        Args:
            x: images, as `encode` takes them.
            seed: seed of the draws (torch's own random stream is left as it was).
            batch_size: images per forward pass.

        Returns:
            The codes drawn, (N, latent_dim).
        """
        x = inputs.images(x, "sample_posterior: images")
        seed = inputs.seed(seed, "sample_posterior: seed")
        if not len(x):
            return torch.empty(0, self.config.latent_dim)
        with seeded(seed, self.device):
            return torch.cat(self._batches(lambda b: self.vae.encoder_guide(b).sample(), x, batch_size)).cpu()

    @torch.no_grad()
    def decode(self, z, batch_size: int = 2000) -> torch.Tensor:
        """The mean image of p(x | z) for each code (Bernoulli means: pixel probabilities).

        Args:
            z: codes, torch or numpy, (N, latent_dim), float or integer.
            batch_size: codes per forward pass.

        Returns:
            The images, (N, 784), in [0, 1].

        Example:
            >>> run.decode(torch.zeros(1, run.config.latent_dim)).shape
            torch.Size([1, 784])
        """
        z = inputs.codes(z, self.config.latent_dim, "decode: z")
        if not len(z):
            return torch.empty(0, inputs.PIXELS)
        return torch.cat(self._batches(self.vae.decode, z, batch_size)).cpu()

    def _batches(self, fn, x: torch.Tensor, batch_size: int) -> list:
        batch_size = inputs.count(batch_size, "batch_size", 1)
        return [fn(x[i : i + batch_size].to(self.device)) for i in range(0, len(x), batch_size)]

    def sample_codes(self, n: int, seed: int = 0) -> torch.Tensor:
        """`n` draws from the run's prior p(z), (n, latent_dim), seeded (torch's own stream is left as it was)."""
        n = inputs.count(n, "sample: n")
        with seeded(inputs.seed(seed, "sample: seed")):
            return self.vae.sample_prior(n).cpu()

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """`n` new images: the decodes of `n` draws from the prior (`decode(sample_codes(n, seed))`).

        Args:
            n: how many images.
            seed: seed of the draws.

        Returns:
            The images, (n, 784), in [0, 1].

        Example:
            >>> run.sample(64, seed=0).reshape(64, 28, 28).shape
            torch.Size([64, 28, 28])
        """
        return self.decode(self.sample_codes(n, seed))

    def metrics(self) -> list[dict]:
        """The lines of metrics.jsonl, one dict per epoch trained (epoch, train_elbo, test_elbo, ...).

        Example:
            >>> run.metrics()[-1]["test_elbo"]  # the last epoch's bound per test image, in nats
            -170.3
        """
        return read_metrics(self.path)

    def data(self) -> Data:
        """The data the run was trained on, split and limited as its config says (the same images,
        in the same order).

        Returns:
            A `pyro_vae.data.Data`: train_x, test_x (float (N, 784) in [0, 1]), train_y, test_y
            (labels), class_names, provenance.

        Example:
            >>> data = run.data(); data.train_x.shape
        """
        return load_data(self.config)


def load_run(path: str | Path, device: str = "cpu") -> Run:
    """Open a trained run folder: its config, its checkpoint's model (in eval mode), its records.

    The plugins the run was trained with are imported again (a missing or changed one is refused).

    Args:
        path: the run folder, e.g. "runs/vae" (one that has finished at least one epoch).
        device: where to put the model: "cpu" or "cuda".

    Returns:
        The `Run`.

    Example:
        >>> run = load_run("runs/vae")
        >>> run.epoch, run.config.guide
        (5, 'gaussian')
    """
    path = Path(path)
    cfg, record = read_config(path)
    cfg.device = device
    state = load_checkpoint(path, device, record.get("run_id"))
    vae = build_vae(cfg).to(device)
    load_model_state(vae, state, path)
    vae.eval()
    return Run(path, cfg, record, vae, state["epoch"])
