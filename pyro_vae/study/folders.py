"""Any set of run folders seen as a study, for `pyro-vae report RUN... --out DIR`.

Each folder is one variant named after the folder (its parent's name is put in front where two
folders share a name); its config is the variant's settings, its seed its one seed. There are no
claims: the report compares the runs side by side.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pyro_vae.errors import UserError
from pyro_vae.io import read_json
from pyro_vae.study.spec import Study
from pyro_vae.training import runs

__all__ = ["RunFolders", "study_from_runs"]


@dataclass
class RunFolders(Study):
    paths: dict[str, Path] = field(default_factory=dict)  # variant -> its run folder
    run_seeds: dict[str, int] = field(default_factory=dict)

    def cells(self) -> list[tuple[str, int]]:
        return [(v, self.run_seeds[v]) for v in self.variants]

    def run_dir(self, runs_dir: Path, variant: str, seed: int) -> Path:
        return self.paths[variant]


def _names(paths: list[Path]) -> list[str]:
    names = [p.name for p in paths]
    names = [f"{p.parent.name}-{p.name}" if names.count(p.name) > 1 else p.name for p in paths]
    if len(set(names)) < len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise UserError(f"two run folders would both be called {twice!r} in the report; give each run once, "
                        "or copy one into a folder with another name")
    return names


def _evaluation_settings(paths: list[Path]) -> dict:
    """The settings the runs were evaluated with (the first evaluated run's), so that runs evaluated
    alike are not evaluated again; runs evaluated otherwise are re-evaluated to match."""
    for path in paths:
        if (path / runs.EVALUATION).exists():
            record = read_json(path / runs.EVALUATION)
            settings = record.get("settings") if isinstance(record, dict) else None
            if isinstance(settings, dict):
                return dict(settings)
    return {}  # none readable: evaluate with the defaults (a damaged evaluation.json is evaluated again)


def study_from_runs(run_dirs: list[str | Path]) -> RunFolders:
    paths = [Path(p) for p in run_dirs]
    for path in paths:
        if not (path / runs.CONFIG).exists():
            raise UserError(f"{path} is not a run folder (it has no {runs.CONFIG}); give run folders made by "
                            "`pyro-vae train`, or the one RUNS_DIR of a study")
    names = _names(paths)
    variants, seeds = {}, {}
    for name, path in zip(names, paths):
        config = runs.read_config(path)[0].to_dict()  # a damaged config.json is a one-line error naming it
        seeds[name] = config.pop("seed")
        variants[name] = config
    return RunFolders(name="runs", title=f"Runs compared: {', '.join(names)}", description="",
                      seeds=sorted(set(seeds.values())), base={}, variants=variants,
                      evaluation=_evaluation_settings(paths), paths=dict(zip(names, paths)), run_seeds=seeds)
