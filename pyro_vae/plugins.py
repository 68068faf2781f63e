"""Researchers' own components: a Python file or module that registers priors, guides, likelihoods,
objectives or networks with the public decorators (`pyro_vae.register_prior` ...).

    pyro-vae train --plugin my_priors.py --prior student-t --out runs/t
    plugins = ["my_priors.py", "mylab.guides"]     # in a config or study TOML, paths relative to it

A plugin is imported before any name is resolved. Each run's config.json records the plugins it was
trained with (path and sha256); reading the run back (evaluate, report, --resume) imports them again
and refuses a missing or changed one. Whatever goes wrong inside a plugin (it raises, registers a
name twice, builds a part of the wrong shape) is a one-line UserError naming the plugin.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import sys
import traceback
from pathlib import Path
from typing import Iterator

from pyro_vae.components import GUIDES, LIKELIHOODS, NETWORKS, OBJECTIVES, PRIORS, SCHEDULES
from pyro_vae.errors import UserError
from pyro_vae.registry import RegisteredTwice

# config field -> registry; the order is the order a VAE is checked in (networks first: every part uses them)
KINDS = {"network": NETWORKS, "likelihood": LIKELIHOODS, "prior": PRIORS, "guide": GUIDES, "objective": OBJECTIVES,
         "lr_schedule": SCHEDULES}

_LOADED: dict[str, dict] = {}  # resolved path -> record {"plugin", "path", "sha256", "names"}
_OWNER: dict[tuple[str, str], dict] = {}  # (kind, name) -> the record of the plugin that registered it


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def is_path(spec: str) -> bool:
    return spec.endswith(".py") or "/" in spec or "\\" in spec


def resolve(spec: str, base: str | Path | None = None) -> str:
    """A file plugin as an absolute path (relative ones from `base`, the folder of the TOML file that
    names it, or the working folder); a module name as it is."""
    if not isinstance(spec, str) or not spec.strip():
        raise UserError(f"a plugin is a path to a .py file or a module name, got {spec!r}")
    if not is_path(spec):
        return spec
    path = Path(spec).expanduser()
    return str((Path(base) / path if base is not None and not path.is_absolute() else path).resolve())


def from_toml(values: dict, source: str | Path) -> list[str]:
    """Pop `plugins = [...]` from a TOML table read from `source`, resolved relative to that file."""
    specs = values.pop("plugins", [])
    if not isinstance(specs, list):
        raise UserError(f"plugins in {source} must be a list of paths or module names, got {specs!r}")
    return [resolve(s, Path(source).parent) for s in specs]


def _names() -> set[tuple[str, str]]:
    return {(kind, name) for kind, registry in KINDS.items() for name in registry.names()}


def _unregister(names) -> None:
    for kind, name in names:
        KINDS[kind].unregister(name)
        _OWNER.pop((kind, name), None)


def _import(spec: str) -> Path:
    """Import the plugin; returns its file."""
    if is_path(spec):
        path = Path(spec)
        if not path.is_file():
            raise UserError(f"plugin {spec} does not exist; give the path of a .py file (or a module name)")
        name = f"pyro_vae_plugin_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module  # dataclasses and pickling look a module up by name
        try:
            module_spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        return path
    try:
        module = importlib.import_module(spec)
    except ModuleNotFoundError as e:
        if e.name and spec.startswith(e.name):
            raise UserError(f"plugin module {spec!r} cannot be found on the Python path; give a path to its .py file") from None
        raise
    if getattr(module, "__file__", None) is None:
        raise UserError(f"plugin module {spec!r} has no file to record; give a path to a .py file")
    return Path(module.__file__).resolve()


def _import_guarded(spec: str) -> Path:
    """_import, with the plugin's prints sent to stderr (stdout carries a command's answer, such as
    `evaluate --json`) and torch's default dtype kept: a plugin that changes it is refused, by name."""
    import torch

    dtype = torch.get_default_dtype()
    try:
        with contextlib.redirect_stdout(sys.stderr):
            path = _import(spec)
    finally:
        changed = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
    if changed != dtype:
        raise UserError(f"plugin {spec} changed torch's default dtype to {changed} on import; pyro-vae needs {dtype} (its "
                        f"models, checkpoints and evaluation are {str(dtype).replace('torch.', '')}): remove its "
                        "torch.set_default_dtype call")
    return path


def load(spec: str, base: str | Path | None = None) -> dict:
    """Import one plugin (once per process; again if its file changed) and return its record."""
    spec = resolve(spec, base)
    key = spec
    if key in _LOADED:
        record = _LOADED[key]
        if Path(record["path"]).is_file() and _sha256(Path(record["path"])) == record["sha256"]:
            return record
        _unregister(_LOADED.pop(key)["names"])  # edited since: import the new version
        if not is_path(spec):
            sys.modules.pop(spec, None)
    before = _names()
    try:
        path = _import_guarded(spec)
    except UserError:
        _unregister(_names() - before)
        raise
    except RegisteredTwice as e:
        _unregister(_names() - before)
        raise UserError(f"plugin {spec}: {e} (a built-in or another plugin has that name); register it under another name") from None
    except BaseException as e:
        _unregister(_names() - before)
        raise UserError(f"plugin {spec} raised {type(e).__name__} on import: {_one_line(e)}{_where(e, spec)}") from None
    names = sorted(_names() - before)
    record = {"plugin": spec, "path": str(path), "sha256": _sha256(path), "names": names}
    _LOADED[key] = record
    for kind_name in names:
        _OWNER[kind_name] = record
    return record


def load_all(specs: list[str], base: str | Path | None = None) -> list[dict]:
    """Import several plugins; the records (without the registered names) for a run's config.json."""
    records = [load(s, base) for s in specs]
    unique = {r["path"]: {k: r[k] for k in ("plugin", "path", "sha256")} for r in records}
    return list(unique.values())


def reload_recorded(records: list[dict], where: str | Path) -> None:
    """Import the plugins a run was trained with, refusing a missing or changed one."""
    for r in records:
        path = Path(r["path"])
        if not path.is_file():
            raise UserError(f"plugin {r['plugin']} that {where} was trained with is missing ({path}); put it back to read the run")
        now = _sha256(path)
        if now != r["sha256"]:
            raise UserError(f"plugin {r['plugin']} has changed since {where} was trained with it (sha256 {r['sha256'][:12]}… then, "
                            f"{now[:12]}… now); restore that version to read the run")
        load(r["plugin"])


def owner(kind: str, name: str) -> dict | None:
    return _OWNER.get((kind, name))


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or "(no message)"


def _where(e: BaseException, path: str) -> str:
    """' (line N)' of the deepest frame in the plugin's file, so the researcher finds the fault."""
    lines = [f.lineno for f in traceback.extract_tb(e.__traceback__) if Path(f.filename).resolve() == Path(path).resolve()]
    return f" (line {lines[-1]})" if lines else ""


def _components(cfg) -> list[tuple[str, str, dict]]:
    return [(kind, getattr(cfg, kind), _OWNER[(kind, getattr(cfg, kind))]) for kind in KINDS if (kind, getattr(cfg, kind)) in _OWNER]


@contextlib.contextmanager
def blamed(cfg, in_plugin_code: bool = False) -> Iterator[None]:
    """Turn an exception from a plugin's code into a one-line UserError naming the plugin: the one
    whose file is deepest in the traceback, else (while building or checking a model, where a plugin's
    arguments may fail inside torch) the first plugin component the config uses. With
    `in_plugin_code` (training, evaluation) only an exception raised through a plugin's own file is
    blamed on it; any other propagates as it is."""
    try:
        yield
    except UserError:
        raise
    except Exception as e:
        used = _components(cfg)
        if not used:
            raise
        files = {Path(r["path"]).resolve(): (kind, name, r) for kind, name, r in used}
        frames = [Path(f.filename).resolve() for f in traceback.extract_tb(e.__traceback__)]
        hit = [files[f] for f in frames if f in files]
        if in_plugin_code and not hit:
            raise
        kind, name, r = hit[-1] if hit else used[0]
        raise UserError(f"plugin {r['plugin']}: {kind} {name!r} raised {type(e).__name__}: {_one_line(e)}{_where(e, r['path'])}") from None


def check_built(cfg, vae, objective, batch: int = 4) -> None:
    """One forward pass of a tiny batch through the parts that come from plugins, checking each part's
    contract (see pyro_vae/registry.py); built-in parts are trusted. Torch's RNG is left as it was."""
    used = {kind: (name, r) for kind, name, r in _components(cfg)}
    if not used:
        return
    import torch

    from pyro_vae.components.networks import build_network
    from pyro_vae.io import seeded

    def require(kind: str, ok: bool, problem: str) -> None:
        if not ok and kind in used:
            name, r = used[kind]
            raise UserError(f"plugin {r['plugin']}: {kind} {name!r} {problem}; see the {kind} contract in the README")

    z_dim, n, pixels = cfg.latent_dim, batch, 784
    device = next(vae.parameters()).device
    with blamed(cfg), seeded(0, device), torch.no_grad():
        x = torch.bernoulli(torch.full((n, pixels), 0.5, device=device))
        encoder = build_network(cfg.network, cfg.network_options).encoder(3, cfg.hidden_dim).to(device)
        require("network", tuple(encoder(x).shape) == (n, 3), f"encoder maps (N, 784) to {tuple(encoder(x).shape)}, not (N, out_dim)")
        z = torch.zeros(n, z_dim, device=device)
        logits = vae.decoder(z)
        require("network", tuple(logits.shape) == (n, pixels), f"decoder maps (N, {z_dim}) to {tuple(logits.shape)}, not (N, 784)")
        p_x = vae.likelihood.distribution(logits)
        require("likelihood", tuple(p_x.event_shape) == (pixels,) and tuple(p_x.log_prob(x).shape) == (n,),
                f"distribution(logits) has event shape {tuple(p_x.event_shape)}, not (784,)")
        mean = vae.likelihood.mean(logits)
        require("likelihood", tuple(mean.shape) == (n, pixels), f"mean(logits) has shape {tuple(mean.shape)}, not (N, 784)")
        prior = vae.prior()
        require("prior", tuple(prior.event_shape) == (z_dim,) and tuple(prior.batch_shape) == (),
                f"returns a distribution of batch shape {tuple(prior.batch_shape)} and event shape {tuple(prior.event_shape)}, "
                f"not () and ({z_dim},)")
        require("prior", tuple(prior.log_prob(z).shape) == (n,), f"log_prob of (N, {z_dim}) codes has shape {tuple(prior.log_prob(z).shape)}, not (N,)")
        q = vae.encoder_guide(x)
        require("guide", tuple(q.batch_shape) == (n,) and tuple(q.event_shape) == (z_dim,),
                f"returns q(z | x) of batch shape {tuple(q.batch_shape)} and event shape {tuple(q.event_shape)}, not (N,) and ({z_dim},)")
        require("guide", isinstance(getattr(vae.encoder_guide, "deterministic", None), bool), "has no boolean attribute `deterministic`")
        codes, scales = vae.encoder_guide.encode(x)
        require("guide", tuple(codes.shape) == tuple(scales.shape) == (n, z_dim),
                f"encode(x) returns shapes {tuple(codes.shape)} and {tuple(scales.shape)}, not (N, {z_dim}) twice")
    with blamed(cfg), seeded(0, device):
        loss = objective.differentiable_loss(vae.model, vae.guide, x)
        require("objective", isinstance(loss, torch.Tensor) and loss.shape == () and bool(torch.isfinite(loss)),
                f"differentiable_loss returned {loss!r:.60}, not a finite scalar tensor")
