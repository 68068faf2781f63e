"""Run a study: train every variant x seed, evaluate the runs, and collect them for the report.

The study file itself is :class:`pyro_vae.study.spec.Study`.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from pyro_vae.config import TrainConfig
from pyro_vae.data import load_data
from pyro_vae.errors import UserError
from pyro_vae.evaluation.evaluate import Scorer, evaluate_run, read_evaluation
from pyro_vae.io import atomic_write_json, read_json
from pyro_vae.study.spec import STUDY_FILE, Study
from pyro_vae.training import runs
from pyro_vae.training.trainer import check, resume, train

# Study and STUDY_FILE live in spec.py; they stay importable from here, where callers first found them.
__all__ = ["run_study", "evaluate_study", "collect", "Study", "STUDY_FILE"]


def _check_same_config(run: Path, cfg: TrainConfig) -> None:
    saved, _ = runs.read_config(run)
    old, new = saved.to_dict(), cfg.to_dict()
    old.pop("epochs"), new.pop("epochs")  # more epochs continue a run; other changes need a new one
    diff = [k for k in new if old.get(k) != new.get(k)]
    if diff:
        k = diff[0]
        raise UserError(f"{run} was trained with {k}={old.get(k)!r}, the study now says {new.get(k)!r}; "
                        "remove that run folder or use another --out")


def _fmt_minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def run_study(study: Study, runs_dir: str | Path, progress: bool = True,
              log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True)) -> Path:
    """Train every variant x seed (skipping complete runs, resuming unfinished ones), then evaluate them."""
    runs_dir = Path(runs_dir)
    for variant in study.variants:  # a variant whose model cannot be built fails before any folder is written
        check(study.config(variant, study.seeds[0]))
    runs_dir.mkdir(parents=True, exist_ok=True)
    if (runs_dir / STUDY_FILE).exists():
        previous = read_json(runs_dir / STUDY_FILE)
        if previous.get("name") != study.name:
            raise UserError(f"{runs_dir} holds the runs of study {previous.get('name')!r}; use another --out for {study.name!r}")
    atomic_write_json(runs_dir / STUDY_FILE, asdict(study))
    cells = study.cells()
    todo = []
    for variant, seed in cells:
        run, cfg = study.run_dir(runs_dir, variant, seed), study.config(variant, seed)
        done = 0
        if (run / runs.CONFIG).exists():
            _check_same_config(run, cfg)
            done = len(runs.read_metrics(run)) if (run / runs.CHECKPOINT).exists() else 0
        todo.append((variant, seed, run, cfg, max(cfg.epochs - done, 0)))
    epochs_left = sum(t[-1] for t in todo)
    log(f"study {study.name}: {len(cells)} runs ({len(study.variants)} variants x {len(study.seeds)} seeds), "
        f"{epochs_left} epochs to train, then evaluation -> {runs_dir}")
    started, trained = time.perf_counter(), 0
    for i, (variant, seed, run, cfg, remaining) in enumerate(todo, 1):
        head = f"[{i}/{len(todo)}] {variant} seed {seed}"
        if remaining == 0:
            log(f"{head}: complete, skipped")
            continue
        if trained:
            rate = (time.perf_counter() - started) / trained
            log(f"{head}: {remaining} epochs (training about {_fmt_minutes(rate * epochs_left)} left)")
        else:
            log(f"{head}: {remaining} epochs")
        if (run / runs.CHECKPOINT).exists():
            resume(run, cfg.epochs, progress=progress, log=log)
        else:
            train(cfg, run, force=True, progress=progress, log=log)
        trained += remaining
        epochs_left -= remaining
    log(f"training done in {_fmt_minutes(time.perf_counter() - started)}")
    evaluate_study(study, runs_dir, log=log)
    return runs_dir


def evaluate_study(study: Study, runs_dir: Path, log: Callable[[str], None], cells: list[tuple[str, int]] | None = None) -> None:
    """Evaluate every run (of `cells`, default all) whose evaluation is missing or older than its checkpoint."""
    settings = study.eval_settings()
    stale = []
    for variant, seed in study.cells() if cells is None else cells:
        run = study.run_dir(runs_dir, variant, seed)
        evaluation = run / runs.EVALUATION
        if not evaluation.exists() or evaluation.stat().st_mtime < (run / runs.CHECKPOINT).stat().st_mtime \
                or read_json(evaluation).get("settings") != asdict(settings):
            stale.append((variant, seed, run))
    if not stale:
        log("evaluation: all runs already evaluated")
        return
    data = load_data(study.config(*stale[0][:2]))  # variants share the dataset and split
    scorer = Scorer(data, study.config(*stale[0][:2]).dataset, log)
    started = time.perf_counter()
    for i, (variant, seed, run) in enumerate(stale, 1):
        left = (time.perf_counter() - started) / (i - 1) * (len(stale) - i + 1) if i > 1 else None
        log(f"evaluating [{i}/{len(stale)}] {variant} seed {seed}" + (f" (about {_fmt_minutes(left)} left)" if left else ""))
        evaluate_run(run, settings, scorer=scorer, data=data, log=log)


def collect(study: Study, runs_dir: Path, cells: list[tuple[str, int]] | None = None) -> list[dict]:
    """One row per run (of `cells`, default all): variant, seed, config, final metrics and evaluation."""
    rows = []
    for variant, seed in study.cells() if cells is None else cells:
        run = study.run_dir(runs_dir, variant, seed)
        if not runs.is_complete(run):
            raise UserError(f"{run} is missing or unfinished; run `pyro-vae study` to train it first")
        evaluation = read_evaluation(run)
        if evaluation is None:
            raise UserError(f"{run} has no evaluation.json; run `pyro-vae evaluate {run}`")
        cfg, record = runs.read_config(run)
        rows.append({"variant": variant, "seed": seed, "run": str(run), "config": cfg.to_dict(),
                     "data": record["data"], "versions": record["versions"], "metrics": runs.read_metrics(run),
                     "evaluation": evaluation})
    return rows
