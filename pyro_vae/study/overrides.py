"""Command-line changes to a study file (`pyro-vae study FILE --epochs 5 --seeds 0 --set lr=3e-4`).

They change the [base] table, the [evaluation] table (`--set evaluation.num_samples=1000`) and the
seeds, and the result is checked exactly as the file would be (every cell a valid config, the
evaluation settings valid); study.json records them under "overrides", so a report says what differs
from the file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pyro_vae.config import TrainConfig
from pyro_vae.errors import UserError
from pyro_vae.study.spec import Study

__all__ = ["EVALUATION", "parse_seeds", "with_overrides", "with_quick"]

EVALUATION = "evaluation."  # the prefix of an [evaluation] setting in --set


def parse_seeds(text: str) -> list[int]:
    """"0,1,2" -> [0, 1, 2]."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--seeds takes whole numbers separated by commas, e.g. --seeds 0,1; got {text!r}") from None
    if not seeds:
        raise UserError(f"--seeds takes at least one seed, e.g. --seeds 0; got {text!r}")
    return seeds


def with_overrides(study: Study, source: str, settings: dict[str, Any], seeds: list[int] | None = None) -> Study:
    """The study with [base] settings and seeds replaced, validated like the file; unchanged without any.

    Only what differs from the file is recorded (and stated by the report): `--seeds 0,1,2` on a file of
    those seeds, or `--set lr=1e-3` on a file whose [base] says so, changes nothing."""
    settings = {key.replace("-", "_"): value for key, value in settings.items()}
    evaluation = {key: value for key, value in settings.items() if key.startswith(EVALUATION)}
    settings = {key: value for key, value in settings.items() if key not in evaluation}
    known = TrainConfig.keys()
    for key in settings:
        if key not in known:
            raise UserError(f"unknown setting {key!r} in --set; valid settings: {', '.join(known)}")
        if key == "seed":
            raise UserError("the seed of a study's runs comes from its seeds; use --seeds 0,1 instead of --set seed=...")
        setters = [name for name, table in study.variants.items() if key in table]
        if setters:
            raise UserError(f"variant {setters[0]} of {source} sets {key} itself, so a [base] override would not reach it; "
                            "edit the study file instead")
    defaults = TrainConfig()
    settings = {key: value for key, value in settings.items() if study.base.get(key, getattr(defaults, key)) != value}
    evaluation = _evaluation_changes(study, evaluation)
    if seeds is not None and list(seeds) == list(study.seeds):
        seeds = None
    if not settings and not evaluation and seeds is None:
        return study
    if "epochs" in settings and not (isinstance(settings["epochs"], int) and settings["epochs"] >= 1):
        raise UserError(f"a study trains every run for at least 1 epoch; got epochs={settings['epochs']!r}")
    d = asdict(study)
    d["base"] = {**d["base"], **settings}
    d["evaluation"] = {**d["evaluation"], **{key[len(EVALUATION):]: value for key, value in evaluation.items()}}
    settings = {**settings, **evaluation}
    recorded: dict[str, Any] = {"settings": settings} if settings else {}
    if seeds is not None:
        d["seeds"], recorded["seeds"] = seeds, seeds
    d["overrides"] = recorded
    return Study.from_dict(d, f"{source} with the command line's changes")


def _evaluation_changes(study: Study, evaluation: dict[str, Any]) -> dict[str, Any]:
    """The `evaluation.KEY` settings that differ from the study's [evaluation] table, each checked."""
    from pyro_vae.evaluation.evaluate import EvalSettings

    names = [f.name for f in dataclasses.fields(EvalSettings)]
    for key in evaluation:
        if key[len(EVALUATION):] not in names:
            raise UserError(f"unknown evaluation setting {key!r} in --set; valid: {', '.join(EVALUATION + n for n in names)}")
    own = study.eval_settings()
    changed = {key: value for key, value in evaluation.items() if getattr(own, key[len(EVALUATION):]) != value}
    EvalSettings.from_dict({**study.evaluation, **{key[len(EVALUATION):]: value for key, value in changed.items()}})
    return changed


def with_quick(study: Study, quick: bool, runs_dir: Path | None = None) -> Study:
    """The study with the --quick evaluation preset over its [evaluation] table, recorded in its overrides
    (the report states it). Runs in `runs_dir` already evaluated at the study's own settings are not
    given up for quicker numbers: that is refused."""
    if not quick:
        return study
    from pyro_vae.evaluation import presets
    from pyro_vae.study.cells import evaluation_stale
    from pyro_vae.training import runs

    own = asdict(study.eval_settings())
    quicker = dataclasses.replace(study, evaluation=presets.quick(study.evaluation),
                                  overrides={**study.overrides, "evaluation": "quick"})
    if runs_dir is not None and asdict(quicker.eval_settings()) != own:
        for variant, seed in study.cells():
            run = study.run_dir(runs_dir, variant, seed)
            if (run / runs.EVALUATION).exists() and not evaluation_stale(run, own):
                raise UserError(f"{run} is evaluated at the study's own settings; --quick would replace that evaluation "
                                "with a quicker one: drop --quick")
    return quicker
