"""One cell of a study (a variant x seed run): what it still needs, and doing it.

A cell is plain data so that it can travel to another process or machine. `run_cell` trains or
resumes the run and then evaluates it, in whatever process the executor chose; `run_shipped` does
the same in a private temporary folder from the run's files sent as bytes and returns the files,
for workers that do not share the driver's filesystem.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from pyro_vae import plugins
from pyro_vae.config import TrainConfig
from pyro_vae.errors import UserError
from pyro_vae.io import atomic_write_bytes, read_json
from pyro_vae.training import runs


@dataclass(frozen=True)
class Cell:
    variant: str
    seed: int
    run: str  # the run folder where the work happens
    config: dict  # TrainConfig.to_dict()
    evaluation: dict  # EvalSettings as a dict
    epochs_left: int
    evaluate: bool  # the evaluation is missing or stale
    threads: int | None = None  # torch threads for this cell (None: leave the process's setting)
    plugins: tuple[str, ...] = ()  # the study's plugins (paths, modules), imported before the config is read
    tensorboard: bool = False

    @property
    def name(self) -> str:
        return f"{self.variant} seed {self.seed}"

    @property
    def capped(self) -> bool:
        """Its epochs are a ceiling: a plateau rule may stop the run sooner."""
        return bool(self.config.get("plateau_patience"))

    @property
    def todo(self) -> bool:
        return self.epochs_left > 0 or self.evaluate


def evaluation_stale(run: Path, settings: dict) -> bool:
    evaluation = run / runs.EVALUATION
    return (not evaluation.exists() or not (run / runs.CHECKPOINT).exists()
            or evaluation.stat().st_mtime < (run / runs.CHECKPOINT).stat().st_mtime
            or _settings_of(evaluation) != settings)


def _settings_of(evaluation: Path) -> dict | None:
    """The settings an evaluation.json was made with; None when it is damaged (it is then made again)."""
    try:
        record = read_json(evaluation)
    except UserError:
        return None
    return record.get("settings") if isinstance(record, dict) else None


def make_cell(variant: str, seed: int, run: Path, cfg: TrainConfig, settings: dict, plugins: list[str] = (),
              tensorboard: bool = False) -> Cell:
    """The cell of an existing or new run folder (whose config the caller has checked)."""
    left = runs.epochs_left(runs.read_metrics(run) if (run / runs.CHECKPOINT).exists() else [], cfg.epochs)
    return Cell(variant, seed, str(run), cfg.to_dict(), settings, left, left > 0 or evaluation_stale(run, settings),
                plugins=tuple(plugins), tensorboard=tensorboard)


# Data and the sample-quality scorer, kept for the next cell of the same dataset in this process.
_LOADED: dict[tuple, tuple] = {}


def _data_and_scorer(cfg: TrainConfig, log: Callable[[str], None]):
    from pyro_vae.data import data_key, load_data
    from pyro_vae.evaluation.evaluate import Scorer

    key = data_key(cfg)
    if key not in _LOADED:
        data = load_data(cfg)
        _LOADED.clear()
        _LOADED[key] = (data, Scorer(data, cfg.dataset, log))
    return _LOADED[key]


def run_cell(cell: Cell, log: Callable[[str], None] = lambda m: None, progress: bool = False) -> dict:
    """Train (or resume) the cell's run to its epochs, then evaluate it; what was done and how long it took."""
    import torch

    from pyro_vae.evaluation import cost
    from pyro_vae.evaluation.evaluate import EvalSettings, evaluate_run
    from pyro_vae.training.trainer import resume, train

    if cell.threads:
        torch.set_num_threads(cell.threads)
    started, run = time.perf_counter(), Path(cell.run)
    records = plugins.load_all(list(cell.plugins))  # in this process too, before any name is resolved
    cfg = TrainConfig.from_dict(cell.config, f"study cell {cell.name}")
    resumed_at = len(runs.read_metrics(run)) if (run / runs.CHECKPOINT).exists() else 0
    if cell.epochs_left:
        if resumed_at:
            resume(run, cfg.epochs, progress=progress, log=log, tensorboard=cell.tensorboard)
        else:
            train(cfg, run, force=True, progress=progress, log=log, plugins=records, tensorboard=cell.tensorboard)
    trained = time.perf_counter() - started
    epochs = len(runs.read_metrics(run)) - resumed_at  # fewer than epochs_left when the plateau rule stopped it
    if cell.evaluate:
        data, scorer = _data_and_scorer(cfg, log)
        settings = EvalSettings.from_dict(cell.evaluation)
        result = evaluate_run(run, settings, scorer=scorer, data=data, log=log)
        cost.remember(cost.kind_of_run(run, settings), result["eval_seconds"])
    return {"variant": cell.variant, "seed": cell.seed, "resumed_at": resumed_at, "epochs": epochs,
            "evaluated": cell.evaluate, "train_seconds": trained, "seconds": time.perf_counter() - started}


def pack(run: Path) -> dict[str, bytes]:
    """The run folder's files as bytes (only the files a run consists of)."""
    return {name: (run / name).read_bytes() for name in sorted(runs.RUN_FILES) if (run / name).is_file()}


def unpack(run: Path, files: dict[str, bytes]) -> None:
    """Write a run's files into `run`, each atomically; the folder is locked meanwhile, as training locks it."""
    unknown = set(files) - runs.RUN_FILES
    if unknown:  # a worker sends run files only; anything else would be written outside the run's format
        raise ValueError(f"not run files: {sorted(unknown)}")
    with runs.locked(run):
        for name in sorted(files, key=lambda n: n == runs.METRICS):  # metrics last: it claims the checkpoint
            atomic_write_bytes(run / name, files[name])


def run_shipped(cell: Cell, files: dict[str, bytes]) -> dict:
    """`run_cell` in a private temporary folder seeded with `files`; the result carries the run's files back.

    The run's own path is recorded in evaluation.json; the driver puts its real path back (`relocate`).
    """
    with tempfile.TemporaryDirectory(prefix="pyro-vae-cell-") as tmp:
        run = Path(tmp) / cell.variant / f"seed-{cell.seed}"
        run.mkdir(parents=True)
        for name, data in files.items():
            atomic_write_bytes(run / name, data)
        result = run_cell(replace(cell, run=str(run)))
        result["files"] = pack(run)
    return result


def relocate(files: dict[str, bytes], run: Path) -> dict[str, bytes]:
    """The files of a run made elsewhere, with evaluation.json naming `run` as the run's folder."""
    import json

    if runs.EVALUATION not in files:
        return files
    record = json.loads(files[runs.EVALUATION])
    record["metrics"]["run"] = str(run)
    return {**files, runs.EVALUATION: (json.dumps(record, indent=2) + "\n").encode()}
