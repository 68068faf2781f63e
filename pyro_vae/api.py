"""The Python API: what the command line does, as functions of `pyro_vae` (`import pyro_vae as pv`).

    run = pv.train(out="runs/vae", guide="gaussian", epochs=5, train_limit=2000)   # a Run
    mean, scale = run.encode(images)                        # (N, 784) | (N, 28, 28) | (N, 1, 28, 28)
    metrics = pv.evaluate("runs/vae", quick=True)           # evaluation.json's metrics
    runs = pv.run_study("studies/ae_vs_vae.toml", out="runs/q", epochs=1, seeds=[0], quick=True)
    page = pv.build_report(runs, out="runs/q/report")       # report.html

Keyword settings are checked as the command line's flags are (the same one-line `UserError`s, an
unknown name with the nearest valid one); `pyro_vae.cli` is a thin layer over these functions.
Nothing heavy is imported until a function runs, so `import pyro_vae` stays quick.
"""

from __future__ import annotations

import copy
import difflib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from pyro_vae.config import TrainConfig
from pyro_vae.errors import UserError

if TYPE_CHECKING:
    from pyro_vae.study.spec import Study
    from pyro_vae.training.runs import Run

__all__ = ["train", "resume", "evaluate", "run_study", "build_report"]

def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _check_names(given: Iterable[str], known: list[str], where: str, noun: str = "setting") -> None:
    """An unknown name is a one-line UserError naming it and the nearest valid one."""
    for key in given:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            raise UserError(f"unknown {noun} {key!r} in {where}" + (f"; did you mean {close[0]!r}?" if close else "")
                            + f" (valid: {', '.join(known)})")


def _folder(value: Any, what: str, example: str) -> Path:
    from pyro_vae.training.runs import Run

    if isinstance(value, Run):
        return value.path
    if isinstance(value, (str, Path)) and str(value):
        return Path(value)
    raise UserError(f"{what} must be a folder (a str or Path), e.g. {example!r}, got {value!r}")


def _flag(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise UserError(f"{what} must be True or False, got {value!r}")
    return value


def _plugin_records(specs: Iterable[str] | str) -> list[dict]:
    specs = [specs] if isinstance(specs, (str, Path)) else list(specs)
    if not specs:
        return []
    from pyro_vae import plugins

    return plugins.load_all([str(s) for s in specs])


# ---------------------------------------------------------------------------------------------
# training


def train(config: "TrainConfig | Mapping[str, Any] | str | Path | None" = None, out: "str | Path | None" = None, *,
          force: bool = False, progress: bool = True, tensorboard: bool = False, plugins: Iterable[str] = (),
          **settings: Any) -> "Run":
    """Train one model into a new run folder and return the trained run.

    The settings are the fields of `TrainConfig` (`pyro-vae train`'s flags, with underscores), given
    as keywords, as a `TrainConfig`, as a dict, or as a TOML file as `--config` reads it; keywords
    override the config's fields (a `*_options` keyword updates that table, as `--KIND-option` does).
    Checked as the command line checks them, before any data is read or any folder written.

    Args:
        config: a `TrainConfig` (not changed), a dict of settings, or the path of a TOML file
            (which may also name `plugins` and `tensorboard`); None: the defaults.
        out: the run folder to create, e.g. "runs/vae".
        force: replace a non-empty run folder (one holding only run files).
        progress: show a progress bar per epoch.
        tensorboard: also write TensorBoard event files into `out`/tensorboard/.
        plugins: paths of .py files or module names to import first (their components become
            names the settings may use); recorded in config.json.
        **settings: `TrainConfig` fields, e.g. guide="delta", beta=0.0, epochs=5, train_limit=2000.

    Returns:
        The trained `Run` (loaded from `out`, on the config's device).

    Raises:
        UserError: a bad setting (an unknown name says the nearest valid one), a folder that may not
            be used, missing data; one line.

    Example:
        >>> import pyro_vae as pv
        >>> run = pv.train(out="runs/vae", guide="gaussian", epochs=5, train_limit=2000, seed=0)
        >>> run = pv.train(pv.TrainConfig(guide="delta", beta=0.0, epochs=5), out="runs/ae", force=True)
        >>> run.metrics()[-1]["epoch"]
        5
    """
    from pyro_vae.training.runs import load_run

    if out is None:
        raise UserError("train needs out, the run folder to create, e.g. pyro_vae.train(out='runs/vae', epochs=5)")
    folder, cfg = _train_folder(config, out, settings, where="train's keywords", force=force, progress=progress,
                                tensorboard=tensorboard, plugin_records=_plugin_records(plugins), need_epochs=True)
    return load_run(folder, device=cfg.device)


def _config(config: Any) -> tuple[TrainConfig, list[str], bool, str]:
    """The config a `train` call starts from, the plugins and tensorboard its TOML file (or dict)
    names, and what messages call it."""
    from pyro_vae import plugins

    if config is None:
        return TrainConfig(), [], False, "config"
    if isinstance(config, TrainConfig):
        return copy.deepcopy(config), [], False, "config"
    if isinstance(config, (str, Path)):
        from pyro_vae.io import read_toml

        values, source = read_toml(config), str(config)
    elif isinstance(config, Mapping):
        values, source = dict(config), "config"
    else:
        raise UserError(f"config must be a TrainConfig, a dict of settings or the path of a TOML file, "
                        f"got {type(config).__name__}")
    specs = plugins.from_toml(values, source if isinstance(config, (str, Path)) else Path.cwd() / "config")
    tensorboard = values.pop("tensorboard", False)
    if not isinstance(tensorboard, bool):
        raise UserError(f"tensorboard in {source} must be true or false, got {tensorboard!r}")
    return TrainConfig().update(values, source), specs, tensorboard, source


def _train_folder(config: Any, out: "str | Path", settings: dict, *, where: str, force: bool = False,
                  progress: bool = True, tensorboard: bool = False, plugin_records: list[dict] = (),
                  need_epochs: bool = False) -> tuple[Path, TrainConfig]:
    """`train` up to the run folder (what the CLI prints); returns it and the config trained."""
    from pyro_vae import plugins
    from pyro_vae.training.trainer import train as train_run

    force, progress, tensorboard = _flag(force, "force"), _flag(progress, "progress"), _flag(tensorboard, "tensorboard")
    out = _folder(out, "out", "runs/vae")
    cfg, specs, toml_tensorboard, _ = _config(config)
    records = list(plugin_records) + (plugins.load_all(specs) if specs else [])
    _check_names(settings, TrainConfig.keys(), where)
    tables = {f for f in TrainConfig.keys() if f.endswith("_options")}
    cfg.update({k: v for k, v in settings.items() if k not in tables}, where)
    for key in tables & set(settings):
        current, given = getattr(cfg, key), settings[key]
        if isinstance(current, dict) and isinstance(given, dict):
            current.update(given)
        elif given or not isinstance(given, dict):
            setattr(cfg, key, given)  # not a table: validate() says so
    if need_epochs and isinstance(cfg.epochs, int) and not isinstance(cfg.epochs, bool) and cfg.epochs == 0:
        raise UserError("train returns the trained run, so epochs must be at least 1, got 0")
    folder = train_run(cfg, out, force=force, progress=progress, plugins=records,
                       tensorboard=tensorboard or toml_tensorboard)
    return Path(folder), cfg


def resume(run: "str | Path | Run", epochs: int | None = None, *, device: str | None = None, progress: bool = True,
           tensorboard: bool = False) -> "Run":
    """Continue a run from its checkpoint, to its configured epochs or to `epochs` (the new total).

    Its settings come from the run folder; only `epochs` and `device` (where it trains, not what)
    may change. A run its plateau rule stopped is not extended.

    Args:
        run: the run folder (or a `Run`), e.g. "runs/vae".
        epochs: the new total of epochs (at least those trained); None: the config's.
        device: "cpu" or "cuda" to train on now; None: the run's own.
        progress: show a progress bar per epoch.
        tensorboard: also write TensorBoard event files into the run's tensorboard/ folder.

    Returns:
        The `Run` as it stands afterwards.

    Example:
        >>> run = pyro_vae.resume("runs/vae", epochs=10)
        >>> run.epoch
        10
    """
    from pyro_vae.training.runs import load_run

    folder = _resume_folder(run, epochs, device=device, progress=progress, tensorboard=tensorboard)
    return load_run(folder, device=device or "cpu")


def _resume_folder(run: Any, epochs: int | None, *, device: str | None = None, progress: bool = True,
                   tensorboard: bool = False) -> Path:
    from pyro_vae.training.trainer import resume as resume_run

    return Path(resume_run(_folder(run, "run", "runs/vae"), epochs, progress=_flag(progress, "progress"), device=device,
                           tensorboard=_flag(tensorboard, "tensorboard")))


# ---------------------------------------------------------------------------------------------
# evaluation


def evaluate(run: "str | Path | Run", *, quick: bool = False, seed: int = 0, num_samples: int | None = None,
             likelihood_images: int | None = None, **settings: Any) -> dict:
    """Evaluate a run as `pyro-vae evaluate` does: write its evaluation.json (and evaluation.npz) and
    return the metrics.

    ELBO and importance-sampled log p(x) on the test images (exact log p(x) by quadrature for 2-D
    codes), latent metrics, code-space measures and sample quality; see the evaluation page.

    Args:
        run: the run folder (or a `Run`), e.g. "runs/vae".
        quick: the quick preset (`pyro_vae.evaluation.presets.QUICK`) for a first look; the other
            keywords override it.
        seed: seed of the evaluation's random draws.
        num_samples: importance samples per image (K); None: 1000 (100 with `quick`).
        likelihood_images: estimate log p(x) on the first N test images only; None: all.
        **settings: other fields of `pyro_vae.evaluation.evaluate.EvalSettings`, e.g. generated=500.

    Returns:
        The metrics, as evaluation.json's "metrics" table (e.g. "test_elbo", "log_px_is",
        "log_px_exact" for 2-D codes, "prior_fid", "epochs_trained").

    Example:
        >>> metrics = pyro_vae.evaluate("runs/vae", quick=True)
        >>> round(metrics["test_elbo"], 1)
        -165.2
    """
    from pyro_vae.evaluation.evaluate import EvalSettings

    quick = _flag(quick, "quick")
    _check_names(settings, [f for f in EvalSettings.__dataclass_fields__ if f not in ("seed", "num_samples",
                                                                                        "likelihood_images")],
                 "evaluate's keywords", "evaluation setting")
    values = _eval_values(quick, seed, num_samples, likelihood_images)
    values.update(settings)
    return _evaluate(_folder(run, "run", "runs/vae"), values, " (the quick preset)" if quick else "")


def _eval_values(quick: bool, seed: int, num_samples: int | None, likelihood_images: int | None) -> dict:
    """EvalSettings values: the quick preset (or none), the seed, K and the image count where given."""
    from pyro_vae.evaluation import presets

    values = {**(presets.quick({}) if quick else {}), "seed": seed}
    values.update({k: v for k, v in (("num_samples", num_samples), ("likelihood_images", likelihood_images)) if v is not None})
    return values


def _evaluate(run_dir: Path, values: dict, note: str = "") -> dict:
    """Evaluate with these EvalSettings values, saying first what runs and how long it should take
    (`note` is added to that line), and remembering how long it took."""
    from pyro_vae.evaluation import cost
    from pyro_vae.evaluation.evaluate import EvalSettings, evaluate_run

    settings = EvalSettings.from_dict(values)
    keys = []

    def announce(run, settings) -> None:
        keys.append(cost.kind_of_record(run.config, run.record, settings))
        _stderr(cost.announce([str(run_dir)], keys, settings) + note)

    result = evaluate_run(run_dir, settings, announce=announce)
    cost.remember(keys[0], result["eval_seconds"])
    return result


# ---------------------------------------------------------------------------------------------
# studies and reports


def run_study(study: "str | Path | Study", out: "str | Path | None" = None, *, seeds: "Iterable[int] | int | str | None" = None,
              quick: bool = False, workers: int = 1, threads: int | None = None, ray: str | None = None,
              cpus_per_run: float | None = None, gpus_per_run: float | None = None, tensorboard: bool = False,
              progress: bool = True, plugins: Iterable[str] = (), report: "str | Path | None" = None,
              **settings: Any) -> Path:
    """Train and evaluate every variant x seed of a study, as `pyro-vae study` does (complete runs are
    skipped, unfinished ones resumed).

    Args:
        study: the study TOML file, e.g. "studies/ae_vs_vae.toml" (or a loaded `Study`).
        out: the folder for the study's run folders (RUNS_DIR/<variant>/seed-<n>), e.g. "runs/ae_vs_vae".
        seeds: the seeds to run, e.g. [0] or [0, 1]; None: the file's.
        quick: the quick evaluation preset, stated in the report.
        workers: runs trained at once in local worker processes (1: one after another here).
        threads: torch threads per run; None: the cores shared out among the workers.
        ray: address of a Ray cluster to run each cell on ("auto": $RAY_ADDRESS, a running
            `ray start` or a local one); None: no Ray.
        cpus_per_run: CPUs one run asks of Ray; None: the study's [resources], else 1.
        gpus_per_run: GPUs (or a share of one) one run asks of Ray; None: [resources], else 0.
        tensorboard: write TensorBoard event files into each run's tensorboard/ folder.
        progress: show progress bars.
        plugins: paths of .py files or module names to import first; recorded with the study.
        report: also build the study's report into this folder once every run is done (checked
            before any training); None: no report (`build_report` makes one later).
        **settings: [base] settings of the study to change, `TrainConfig` fields such as epochs=1,
            train_limit=2000 or data_dir="~/data" (not seed: give seeds).

    Returns:
        The runs folder `out`, as a Path (what `build_report` takes).

    Example:
        >>> import pyro_vae as pv
        >>> runs = pv.run_study("studies/ae_vs_vae.toml", out="runs/q", epochs=1, seeds=[0], quick=True, workers=1)
        >>> pv.build_report(runs, out="runs/q/report")
        PosixPath('runs/q/report/report.html')
    """
    if out is None:
        raise UserError("run_study needs out, the folder for its runs, e.g. run_study('studies/ae_vs_vae.toml', out='runs/q')")
    _check_names(settings, TrainConfig.keys(), "run_study's keywords")
    if "seed" in settings:
        raise UserError("the seeds of a study's runs come from its seeds; give run_study seeds=[0, 1] instead of seed=...")
    execution = dict(workers=workers, threads=threads, ray=ray, cpus=cpus_per_run, gpus=gpus_per_run)
    runs_dir, _ = _run_study(study, out, settings, _seeds(seeds), quick=_flag(quick, "quick"),
                             tensorboard=_flag(tensorboard, "tensorboard"), progress=_flag(progress, "progress"),
                             plugin_records=_plugin_records(plugins), execution=execution,
                             resources_flags="cpus_per_run/gpus_per_run",
                             report=None if report is None else _folder(report, "report", "runs/q/report"),
                             report_flag="report folder")
    return runs_dir


def _seeds(seeds: Any) -> list[int] | None:
    if seeds is None:
        return None
    if isinstance(seeds, str):
        from pyro_vae.study.overrides import parse_seeds

        return parse_seeds(seeds)
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        return [seeds]
    if isinstance(seeds, (list, tuple, range)):
        return list(seeds)  # whole numbers, distinct: the study checks them as it checks its file
    raise UserError(f"seeds must be a list of whole numbers, e.g. [0, 1], got {seeds!r}")


def _run_study(study: Any, out: Any, settings: dict, seeds: list[int] | None, *, quick: bool, tensorboard: bool,
               progress: bool, plugin_records: list[dict], execution: dict, resources_flags: str,
               report: Path | None, report_flag: str | None) -> tuple[Path, Path | None]:
    """`run_study` and, when `report` is given, its report (the folder checked first when
    `report_flag` names it); returns the runs folder and report.html (or None)."""
    from pyro_vae.report.folder import check_report_folder
    from pyro_vae.study.executors import Execution
    from pyro_vae.study.overrides import with_overrides, with_quick
    from pyro_vae.study.resources import check_resources
    from pyro_vae.study.runner import run_study as run_cells
    from pyro_vae.study.spec import Study

    out = _folder(out, "out", "runs/ae_vs_vae")
    if isinstance(study, Study):
        loaded, source = study, study.name
    elif isinstance(study, (str, Path)):
        loaded, source = Study.load(study), str(study)
    else:
        raise UserError(f"study must be the path of a study TOML file, e.g. 'studies/ae_vs_vae.toml', got {study!r}")
    loaded = with_quick(with_overrides(loaded, source, settings, seeds), quick, out)
    if report is not None and report_flag:  # before hours of training
        check_report_folder(report, report_flag)
    loaded.plugins = [r["plugin"] for r in plugin_records] + loaded.plugins  # runs record both
    loaded.tensorboard = loaded.tensorboard or tensorboard
    if loaded.tensorboard:
        from pyro_vae.training.tensorboard import require

        require()  # before the first run trains
    check_resources({k: execution[k] for k in ("cpus", "gpus") if execution[k] is not None}, resources_flags)
    runs_dir = run_cells(loaded, out, progress=progress, execution=Execution(**execution, progress=progress))
    page = build_report(runs_dir, report) if report is not None else None
    return runs_dir, page


def build_report(runs: "str | Path | Iterable[str | Path]", out: "str | Path | None" = None, *, quick: bool = False,
                 self_contained: bool = False, explorer: bool = True) -> Path:
    """Build a report from finished runs, as `pyro-vae report` does (never training; runs that lack an
    evaluation are evaluated first).

    Args:
        runs: a study's runs folder (what `run_study` returns; unfinished runs are listed in the
            report), or run folders (or `Run`s) to compare side by side, each named after its folder.
        out: the report folder, e.g. "runs/q/report" (an earlier report there is replaced).
        quick: what needs an evaluation gets the quick preset, and the report says so.
        self_contained: report.html embeds its figures (one file to send) instead of linking figures/.
        explorer: also write explorer.html, the interactive code-space explorer.

    Returns:
        The path of report.html (beside it: report.md, results.json, results.csv, figures/).

    Example:
        >>> page = pyro_vae.build_report("runs/q", out="runs/q/report", self_contained=False)
        >>> page.name
        'report.html'
    """
    from pyro_vae.report.build import build_report as build_study_report, build_runs_report
    from pyro_vae.study.spec import STUDY_FILE
    from pyro_vae.training import runs as run_folders
    from pyro_vae.training.runs import Run

    if out is None:
        raise UserError("build_report needs out, the report folder, e.g. build_report('runs/q', out='runs/q/report')")
    out = _folder(out, "out", "runs/q/report")
    quick, self_contained, explorer = _flag(quick, "quick"), _flag(self_contained, "self_contained"), _flag(explorer, "explorer")
    single = isinstance(runs, (str, Path, Run))
    paths = [_folder(r, "runs", "runs/q") for r in ([runs] if single else _listed(runs))]
    if not paths:
        raise UserError("runs must name a study's runs folder or at least one run folder, got none")
    if len(paths) == 1 and not (paths[0] / STUDY_FILE).exists() and not paths[0].is_dir():
        raise UserError(f"{paths[0]} does not exist; give a study's RUNS_DIR or run folders")
    if len(paths) == 1 and (paths[0] / STUDY_FILE).exists():
        with run_folders.locked(paths[0]):  # it may evaluate runs: no study or other report on the folder meanwhile
            return build_study_report(paths[0], out, quick=quick, self_contained=self_contained, explorer=explorer)
    return build_runs_report(paths, out, quick=quick, self_contained=self_contained, explorer=explorer)


def _listed(runs: Any) -> list:
    if isinstance(runs, (list, tuple)):
        return list(runs)
    raise UserError(f"runs must be a study's runs folder or a list of run folders, got {type(runs).__name__}")
