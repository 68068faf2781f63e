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

RUNS_DIR/<variant>/seed-<seed>/ holds one run folder each, and RUNS_DIR/study.json the resolved study.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from pyro_vae.config import TrainConfig
from pyro_vae.errors import UserError
from pyro_vae.evaluation.evaluate import EvalSettings
from pyro_vae.io import read_json, read_toml
from pyro_vae.study.claims import ClaimSpec, parse_claims
from pyro_vae.study.resources import check_resources

__all__ = ["Study", "STUDY_FILE"]

STUDY_FILE = "study.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


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
                 "overrides"}
        if set(d) - known:
            raise UserError(f"unknown key(s) {', '.join(sorted(set(d) - known))} in {source}; valid: {', '.join(sorted(known))}")
        if not d.get("variants"):
            raise UserError(f"{source} names no [variants.NAME] tables; a study compares at least one variant")
        seeds = d.get("seeds", [0])
        if not seeds or not all(isinstance(s, int) for s in seeds) or len(set(seeds)) != len(seeds):
            raise UserError(f"seeds in {source} must be a list of distinct whole numbers, got {seeds!r}")
        for name in d["variants"]:
            if not _NAME.match(name):
                raise UserError(f"variant name {name!r} in {source} must be letters, digits, '.', '_', '+' or '-'")
        study = cls(
            name=d.get("name", Path(source).stem), title=d.get("title", d.get("name", Path(source).stem)),
            description=d.get("description", ""), seeds=list(seeds), base=dict(d.get("base", {})),
            variants={k: dict(v) for k, v in d["variants"].items()}, compare=dict(d.get("compare", {})),
            evaluation=dict(d.get("evaluation", {})), claims=d.get("claims", {}),
            resources=check_resources(dict(d.get("resources", {})), f"[resources] of {source}"),
            overrides=dict(d.get("overrides", {})),
        )
        for variant in study.variants:
            study.config(variant, study.seeds[0])  # every cell must be a valid config before anything runs
        for role in ("baseline", "candidate"):
            if role in study.compare and study.compare[role] not in study.variants:
                raise UserError(f"[compare] {role} {study.compare[role]!r} is not a variant of {source}")
        study.eval_settings()
        parse_claims(study.claims, list(study.variants), study.compare, source)
        return study

    @classmethod
    def load(cls, path: str | Path) -> "Study":
        return cls.from_dict(read_toml(path), str(path))

    @classmethod
    def from_runs_dir(cls, runs_dir: str | Path) -> "Study":
        return cls.from_dict(read_json(Path(runs_dir) / STUDY_FILE), str(Path(runs_dir) / STUDY_FILE))
