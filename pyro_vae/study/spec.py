"""Study files: a TOML file naming a base config, variants, seeds and the claims a report judges.

    name = "ae_vs_vae"
    seeds = [0, 1, 2]
    [base]            # TrainConfig settings shared by every variant
    dataset = "mnist"
    [variants.AE]     # each variant overrides the base; the table order is the display order
    guide = "delta"
    beta = 0.0
    [compare]         # optional: the default baseline and candidate of the claims
    baseline = "AE"
    candidate = "VAE"
    [claims.centre]   # optional: a claim the report judges (see pyro_vae.study.claims)
    title = "Centred: {candidate}'s codes sit like N(0, I) samples, {baseline}'s do not"
    metrics = ["mean_norm", "gaussian_kl"]
    [evaluation]      # optional: EvalSettings
    [resources]       # optional: what one run asks of a Ray cluster (cpus = 1, gpus = 0.25)
    [published]       # optional: published values the report prints beside ours (pyro_vae.study.published)
    [related]         # optional: another study whose verdicts the report sets beside these (pyro_vae.study.related)

RUNS_DIR/<variant>/seed-<seed>/ holds one run folder each, and RUNS_DIR/study.json the resolved study.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

from pyro_vae import plugins
from pyro_vae.config import SEED_LIMIT, TrainConfig, check_value
from pyro_vae.errors import UserError
from pyro_vae.evaluation.evaluate import EvalSettings
from pyro_vae.io import read_json, read_toml
from pyro_vae.study.claims import ClaimSpec, parse_claims
from pyro_vae.study.published import check_published
from pyro_vae.study.related import check_related
from pyro_vae.study.resources import check_resources
from pyro_vae.training.runs import STUDY_FILE

__all__ = ["Study", "STUDY_FILE"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
NAME_LIMIT = 100  # characters in a variant name: a folder name, well inside every file system's 255 bytes
# Names a variant's folder may not take in RUNS_DIR: the study's own files and the default report folder.
RESERVED = {STUDY_FILE, "report", ".lock"}
COMPARE_KEYS = {"baseline", "candidate"}
_TABLES = ("base", "compare", "evaluation", "claims", "published", "related")


@dataclass
class Study:
    name: str
    title: str
    description: str
    seeds: list[int]
    base: dict
    variants: dict[str, dict]
    compare: dict = field(default_factory=dict)
    evaluation: dict = field(default_factory=dict)
    claims: dict = field(default_factory=dict)  # the [claims.NAME] tables as written; see claim_specs
    overrides: dict = field(default_factory=dict)  # what the command line changed (study/overrides.py), kept in study.json
    resources: dict = field(default_factory=dict)  # per run on Ray; see pyro_vae.study.resources
    plugins: list[str] = field(default_factory=list)  # files (absolute paths) and modules to import first
    tensorboard: bool = False  # TensorBoard event files in every run folder
    published: dict = field(default_factory=dict)  # the [published] table, checked
    related: dict = field(default_factory=dict)  # the [related] table, its paths absolute

    def plugin_records(self) -> list[dict]:
        return plugins.load_all(self.plugins)

    def config(self, variant: str, seed: int) -> TrainConfig:
        cfg = TrainConfig.from_dict(self.base, "[base]")
        cfg.update(self.variants[variant], f"[variants.{variant}]")
        cfg.seed = seed
        return cfg.validate()

    def eval_settings(self) -> EvalSettings:
        return EvalSettings.from_dict(self.evaluation)

    def claim_specs(self) -> list[ClaimSpec]:
        return parse_claims(self.claims, list(self.variants), self.compare, f"study {self.name}")

    def cells(self) -> list[tuple[str, int]]:
        return [(v, s) for v in self.variants for s in self.seeds]

    def run_dir(self, runs_dir: Path, variant: str, seed: int) -> Path:
        return Path(runs_dir) / variant / f"seed-{seed}"

    @classmethod
    def from_dict(cls, d: dict, source: str) -> "Study":
        known = {"name", "title", "description", "seeds", "base", "variants", "compare", "evaluation", "claims", "resources",
                 "plugins", "tensorboard", "overrides", "published", "related"}
        if not isinstance(d, dict):
            raise UserError(f"{source} must be a table of study settings (name, seeds, [base], [variants.NAME])")
        if set(d) - known:
            raise UserError(f"unknown key(s) {', '.join(sorted(set(d) - known))} in {source}; valid: {', '.join(sorted(known))}")
        d = dict(d)
        specs = plugins.from_toml(d, source)  # imported before any variant's names are resolved
        plugins.load_all(specs)
        if not isinstance(d.get("tensorboard", False), bool):
            raise UserError(f"tensorboard in {source} must be true or false, got {d['tensorboard']!r}")
        for key in ("name", "title", "description"):
            if key in d and not isinstance(d[key], str):
                raise UserError(f"{key} in {source} must be a string, got {d[key]!r}")
        for key in _TABLES:
            if not isinstance(d.get(key, {}), dict):
                raise UserError(f"[{key}] in {source} must be a table, got {d[key]!r}")
        if not d.get("variants") or not isinstance(d["variants"], dict):
            raise UserError(f"{source} names no [variants.NAME] tables; a study compares at least one variant")
        seeds = d.get("seeds", [0])
        if not isinstance(seeds, list) or not seeds or len(set(map(repr, seeds))) != len(seeds) or not all(
                isinstance(s, int) and not isinstance(s, bool) and 0 <= s < SEED_LIMIT for s in seeds):
            raise UserError(f"seeds in {source} must be a list of distinct whole numbers from 0 to 2**32 - 1, got {seeds!r}")
        for name, table in d["variants"].items():
            if not _NAME.fullmatch(name) or name in RESERVED or len(name) > NAME_LIMIT:
                raise UserError(f"variant name {name[:40]!r}{'...' if len(name) > 40 else ''} ({len(name)} characters) in "
                                f"{source} must be at most {NAME_LIMIT} letters, digits, '.', '_', '+' or '-' "
                                f"(starting with a letter or digit) and not one of {', '.join(sorted(RESERVED))}")
            if not isinstance(table, dict):
                raise UserError(f"[variants.{name}] in {source} must be a table of settings, got {table!r}")
        for where, table in [("[base]", d.get("base", {}))] + [(f"[variants.{n}]", t) for n, t in d["variants"].items()]:
            if "seed" in table:
                raise UserError(f"{where} of {source} sets seed; a study's seeds come from its top-level seeds = [...] list")
        if set(d.get("compare", {})) - COMPARE_KEYS:
            raise UserError(f"unknown key(s) {', '.join(sorted(set(d['compare']) - COMPARE_KEYS))} in [compare] of {source}; "
                            f"valid: {', '.join(sorted(COMPARE_KEYS))}")
        for role, variant in d.get("compare", {}).items():
            check_value(f"{role} in [compare] of {source} (a variant's name)", variant, str)
        study = cls(
            name=d.get("name", Path(source).stem), title=d.get("title", d.get("name", Path(source).stem)),
            description=d.get("description", ""), seeds=list(seeds), base=dict(d.get("base", {})),
            variants={k: dict(v) for k, v in d["variants"].items()}, compare=dict(d.get("compare", {})),
            evaluation=dict(d.get("evaluation", {})), claims=d.get("claims", {}),
            resources=check_resources(dict(d.get("resources", {})), f"[resources] of {source}"), plugins=specs,
            tensorboard=d.get("tensorboard", False), overrides=dict(d.get("overrides", {})),
            published=check_published(dict(d.get("published", {})), source),
            related=check_related(dict(d.get("related", {})), source),
        )
        settings = study.eval_settings()
        for variant in study.variants:  # every cell must be a valid config and model before anything runs
            cfg = study.config(variant, study.seeds[0])
            _check_variant(cfg, variant, source)
            if cfg.test_limit is not None:  # too few test images for the evaluation: refused now, not after training
                settings.check_test_images(cfg.test_limit, f"[variants.{variant}] of {source} (test_limit = {cfg.test_limit})")
        for role in ("baseline", "candidate"):
            if role in study.compare and study.compare[role] not in study.variants:
                raise UserError(f"[compare] {role} {study.compare[role]!r} is not a variant of {source}")
        parse_claims(study.claims, list(study.variants), study.compare, source)
        return study

    @classmethod
    def load(cls, path: str | Path) -> "Study":
        return cls.from_dict(read_toml(path), str(path))

    @classmethod
    def from_runs_dir(cls, runs_dir: str | Path) -> "Study":
        return cls.from_dict(read_json(Path(runs_dir) / STUDY_FILE), str(Path(runs_dir) / STUDY_FILE))


def _check_variant(cfg: TrainConfig, variant: str, source: str) -> None:
    """What only building the model would show (a prior that needs another guide, bad options), and a
    study's need of at least one epoch, found before anything trains or is written."""
    if cfg.epochs < 1:
        raise UserError(f"[variants.{variant}] of {source} trains {cfg.epochs} epochs; a study trains at least 1")
    from pyro_vae.training.trainer import check

    try:  # a narrow copy: the combination is what is checked, not the memory of the full width
        check(dataclasses.replace(cfg, hidden_dim=min(cfg.hidden_dim, 8)))
    except UserError as e:
        raise UserError(f"[variants.{variant}] of {source}: {e}") from None
    except (ValueError, TypeError, KeyError, RuntimeError, NotImplementedError) as e:
        raise UserError(f"[variants.{variant}] of {source} is not a model pyro-vae can build: {e}") from None
