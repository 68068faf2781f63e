"""Run a study: train and evaluate every variant x seed, and collect the runs for the report.

Where the cells run (this process, local workers, a Ray cluster) is `pyro_vae.study.executors`.

The study file itself is :class:`pyro_vae.study.spec.Study`.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from pyro_vae.config import TrainConfig
from pyro_vae.data import data_key, load_data, locate
from pyro_vae.errors import UserError
from pyro_vae.evaluation import cost
from pyro_vae.evaluation.evaluate import Scorer, evaluate_run, read_evaluation
from pyro_vae.io import atomic_write_json, counted, fmt_seconds, read_json
from pyro_vae.study.cells import evaluation_stale, make_cell
from pyro_vae.study.executors import Execution, make_executor
from pyro_vae.study.spec import STUDY_FILE, Study
from pyro_vae.training import runs
from pyro_vae.training.trainer import check

# Study and STUDY_FILE live in spec.py; they stay importable from here, where callers first found them.
__all__ = ["run_study", "evaluate_study", "collect", "Study", "STUDY_FILE", "Execution"]


def _check_same_config(run: Path, cfg: TrainConfig) -> None:
    saved, _ = runs.read_config(run)
    old, new = saved.to_dict(), cfg.to_dict()
    old.pop("epochs"), new.pop("epochs")  # more epochs continue a run; other changes need a new one
    diff = [k for k in new if old.get(k) != new.get(k)]
    if diff:
        k = diff[0]
        raise UserError(f"{run} was trained with {k}={old.get(k)!r}, the study now says {new.get(k)!r}; "
                        "remove that run folder or use another --out")


def _epochs_to_train(cells: list) -> str:
    """The epochs cells still train: a ceiling where a plateau rule may stop runs sooner."""
    total = sum(c.epochs_left for c in cells)
    return f"at most {total} epochs (runs stop when their bound stops improving)" if any(c.capped for c in cells) else f"{total} epochs"


def run_study(study: Study, runs_dir: str | Path, progress: bool = True,
              log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True),
              execution: Execution | None = None) -> Path:
    """Train and evaluate every variant x seed (skipping complete runs, resuming unfinished ones),
    where `execution` says (default: one after another in this process).

    The study folder is locked throughout: a second study on it gets the holder's pid."""
    execution = execution or Execution(progress=progress)
    runs_dir = Path(runs_dir)
    for variant in study.variants:  # a variant whose model cannot be built fails before any folder is written
        check(study.config(variant, study.seeds[0]))
    with runs.locked(runs_dir) as folder:
        return _run_study(study, folder, log, execution)


def _run_study(study: Study, runs_dir: Path, log: Callable[[str], None], execution: Execution) -> Path:
    if (runs_dir / STUDY_FILE).exists():
        previous = read_json(runs_dir / STUDY_FILE, damaged=f"it is damaged: use another --out or delete {runs_dir / STUDY_FILE}")
        if not isinstance(previous, dict) or previous.get("name") != study.name:
            raise UserError(f"{runs_dir} holds the runs of study {previous.get('name')!r}; use another --out for {study.name!r}")
    atomic_write_json(runs_dir / STUDY_FILE, asdict(study))
    settings = asdict(study.eval_settings())
    cells = []
    for variant, seed in study.cells():
        run, cfg = study.run_dir(runs_dir, variant, seed), study.config(variant, seed)
        if (run / runs.CONFIG).exists():
            _check_same_config(run, cfg)
        cells.append(make_cell(variant, seed, run, cfg, settings, study.plugins, study.tensorboard))
    executor = make_executor(execution, study.resources, log)
    todo = [c for c in cells if c.todo]
    if execution.ray is None:  # the data is this machine's (a cluster's nodes have their own)
        for dataset, data_dir in dict.fromkeys((c.config["dataset"], c.config["data_dir"]) for c in todo):
            locate(dataset, data_dir)  # here, once: a missing dataset fails now, a failed download is said once
    log(f"study {study.name}: {counted(len(cells), 'run')} ({counted(len(study.variants), 'variant')} x "
        f"{counted(len(study.seeds), 'seed')}), "
        f"{_epochs_to_train(todo)} to train, then evaluation, {executor.describe()} -> {runs_dir}")
    for cell in cells:
        if not cell.todo:
            log(f"{cell.name}: complete, skipped")
    try:
        _run_cells(executor, todo, log)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: say what stays, the caller says how to continue
        with contextlib.suppress(UserError):  # a damaged metrics line must not replace the stop
            log("stopped; kept: " + "; ".join(_kept(c) for c in cells))
        raise
    return runs_dir


def _kept(cell) -> str:
    """What a cell's run folder holds now: epochs trained and whether its evaluation is current."""
    run = Path(cell.run)
    done = runs.read_metrics(run)[-1]["epoch"] if (run / runs.CHECKPOINT).exists() and runs.read_metrics(run) else 0
    evaluated = done and not evaluation_stale(run, cell.evaluation)
    return f"{cell.name} {done}/{cell.config['epochs']} epochs" + (", evaluated" if evaluated else ", not evaluated" if done else "")


def _run_cells(executor, todo: list, log: Callable[[str], None]) -> None:
    started, left = time.perf_counter(), {c.name: c for c in todo}
    for i, (cell, result) in enumerate(executor.run(todo), 1):
        del left[cell.name]
        done = [f"trained epochs {result['resumed_at'] + 1}-{result['resumed_at'] + result['epochs']}"] if result["epochs"] else []
        done += ["evaluated"] if result["evaluated"] else []
        # The rest's time, from the pace so far per unit of work (an epoch, or an evaluation counted as one).
        work_done = sum(c.epochs_left + 1 for c in todo if c.name not in left)
        eta = (time.perf_counter() - started) / work_done * sum(c.epochs_left + 1 for c in left.values())
        log(f"[{i}/{len(todo)}] {cell.name}: {', '.join(done)} in {fmt_seconds(result['seconds'])}"
            + (f" (about {fmt_seconds(eta)} left)" if left else ""))
    log(f"training and evaluation done in {fmt_seconds(time.perf_counter() - started)}")


# What a run's data depends on: runs that agree on these are evaluated on one copy of it.
def evaluate_study(study: Study, runs_dir: Path, log: Callable[[str], None], cells: list[tuple[str, int]] | None = None) -> None:
    """Evaluate every run (of `cells`, default all) whose evaluation is missing, damaged or older than its
    checkpoint, each on its own data (variants may differ in dataset or split; data and classifier are
    loaded once per kind)."""
    settings = study.eval_settings()
    stale = [(v, s, study.run_dir(runs_dir, v, s)) for v, s in (study.cells() if cells is None else cells)
             if evaluation_stale(study.run_dir(runs_dir, v, s), asdict(settings))]
    if not stale:
        log("evaluation: all runs already evaluated")
        return
    keys = [cost.kind_of_run(run, settings) for _, _, run in stale]
    log(cost.announce([f"{v} seed {s}" for v, s, _ in stale], keys, settings))
    loaded: dict[tuple, tuple] = {}
    started = time.perf_counter()
    for i, ((variant, seed, run), key) in enumerate(zip(stale, keys), 1):
        cfg = study.config(variant, seed)
        data_id = data_key(cfg)
        if data_id not in loaded:
            data = load_data(cfg)
            loaded[data_id] = (data, Scorer(data, cfg.dataset, log))
        data, scorer = loaded[data_id]
        left = (time.perf_counter() - started) / (i - 1) * (len(stale) - i + 1) if i > 1 else None
        log(f"evaluating [{i}/{len(stale)}] {variant} seed {seed}" + (f" (about {fmt_seconds(left)} left)" if left else ""))
        result = evaluate_run(run, settings, scorer=scorer, data=data, log=log)
        cost.remember(key, result["eval_seconds"])


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
