"""`pyro-vae COMMAND ...`: each command registers its parser and its action here."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import sys
import threading
from typing import Any, Callable

from pyro_vae.errors import UserError

# name -> (help, add_arguments(parser), run(args) -> exit code)
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def command(name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None]):
    def register(run):
        COMMANDS[name] = (help, add_arguments, run)
        return run

    return register


# ---------------------------------------------------------------------------------------------
# train

class _Formatter(argparse.HelpFormatter):
    """Fills registry names ({guides}, ...) into help texts only when help is printed: listing them
    imports the components and so torch, which neither `pyro-vae --help` nor an argument error needs."""

    def _expand_help(self, action: argparse.Action) -> str:
        text = super()._expand_help(action)
        return text.format(**_choices()) if "{" in text else text


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Formatter)
        kwargs.setdefault("allow_abbrev", False)  # --epoch is not --epochs: a typo must not pass as a prefix
        super().__init__(*args, **kwargs)

    def parse_args(self, args=None, namespace=None):
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:  # the command's own flags, for the nearest one to what was typed
            commands = self._subparsers._group_actions[0].choices if self._subparsers else {}
            command = commands.get(getattr(namespace, "command", None), self)
            close = difflib.get_close_matches(extras[0].split("=")[0], list(command._option_string_actions), n=1)
            command.error(f"unrecognized arguments: {' '.join(extras)}" + (f"; did you mean {close[0]}?" if close else ""))
        return namespace

    def error(self, message: str):  # one line, exit 2, like every other user error
        command = self.prog.removeprefix("pyro-vae").strip()
        raise UserError(f"{message} (see pyro-vae {command + ' ' if command else ''}--help)")


def _choices() -> dict[str, str]:
    """Registry names for the help texts, so they list every component that exists."""
    from pyro_vae.components.guides import GUIDES
    from pyro_vae.components.likelihoods import LIKELIHOODS
    from pyro_vae.components.networks import NETWORKS
    from pyro_vae.components.objectives import OBJECTIVES
    from pyro_vae.components.priors import PRIORS
    from pyro_vae.components.schedules import SCHEDULES
    from pyro_vae.data import BINARIZATIONS, DATASETS

    tables = dict(datasets=DATASETS, guides=GUIDES, priors=PRIORS, likelihoods=LIKELIHOODS, objectives=OBJECTIVES,
                  networks=NETWORKS, binarizations=BINARIZATIONS, schedules=SCHEDULES)
    return {key: ", ".join(table.names()) for key, table in tables.items()}


def train_flags() -> list[tuple[str, str, type, Any, str]]:
    """(flag, field, type, default, help) for every TrainConfig setting; a `*_options` table becomes
    a repeatable `--KIND-option KEY=VALUE`."""
    from pyro_vae.config import TrainConfig

    flags = []
    for f in dataclasses.fields(TrainConfig):
        kind = f.type.split(" | ")[0]
        if kind == "dict":
            flags.append((f"--{f.name.removesuffix('_options').replace('_', '-')}-option", f.name, dict, None, f.metadata["help"]))
        else:
            default = None if f.default is dataclasses.MISSING else f.default
            flags.append((f"--{f.name.replace('_', '-')}", f.name, {"int": int, "float": float, "str": str}[kind], default, f.metadata["help"]))
    return flags


def _train_arguments(p: argparse.ArgumentParser) -> None:
    for flag, name, kind, default, text in train_flags():
        if kind is dict:
            p.add_argument(flag, dest=name, action="append", default=[], metavar="KEY=VALUE",
                           help=f"{text} (repeatable; the value is read as TOML)")
        else:
            shown = f" (default: {'none' if name == 'data_dir' else 'all'})" if default is None else f" (default: {default})"
            p.add_argument(flag, dest=name, type=kind, default=argparse.SUPPRESS, help=text + shown)
    p.add_argument("--config", help="TOML file with the same settings (flags override it), e.g. my.toml (default: none)")
    p.add_argument("--out", help="run folder to create, e.g. runs/vae")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its checkpoint, e.g. runs/vae")
    p.add_argument("--force", action="store_true", help="replace a non-empty run folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--tensorboard", action="store_true", help="write TensorBoard event files into RUN_DIR/tensorboard/")


def _load_plugins(specs: list[str]) -> list[dict]:
    if not specs:
        return []  # no import of the components (and torch) for commands that need none
    from pyro_vae import plugins

    return plugins.load_all(specs)


def _parse_options(items: list[str], flag: str) -> dict:
    import tomllib

    options = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"{flag} takes KEY=VALUE, got {item!r}")
        try:
            options[key.strip()] = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            options[key.strip()] = text  # a bare word: a string option
    return options


@command("train", "train one model into a run folder", _train_arguments)
def _train(args: argparse.Namespace) -> int:
    from pyro_vae import api

    flags, options = {}, {}
    for flag, name, kind, _, _ in train_flags():
        if kind is dict:
            options[name] = _parse_options(getattr(args, name), flag)
        elif hasattr(args, name):
            flags[name] = getattr(args, name)
    if args.resume:
        extra = sorted(set(flags) - {"epochs", "device"}) + [k for k, v in options.items() if v] + (["--config"] if args.config else []) + (["--out"] if args.out else [])
        if extra:
            raise UserError(f"--resume takes its settings from the run folder; drop {', '.join(extra)} (only --epochs and --device may change)")
        api._resume_folder(args.resume, flags.get("epochs"), progress=not args.no_progress, device=flags.get("device"),
                           tensorboard=args.tensorboard)
        return 0
    if not args.out:
        raise UserError("--out RUN_DIR is required (or --resume RUN_DIR)")
    with _stdout_for_the_result():  # the folder, not a loaded Run: the command prints it and loads no model
        run, _ = api._train_folder(args.config, args.out, {**flags, **options}, where="flags", force=args.force,
                                   progress=not args.no_progress, tensorboard=args.tensorboard,
                                   plugin_records=args.plugin_records)
    print(run)
    return 0


def _stdout_for_the_result():
    """A command's stdout carries its result alone (a path, JSON) for scripts to read: whatever runs
    meanwhile (a plugin's print) goes to stderr."""
    import contextlib

    return contextlib.redirect_stdout(sys.stderr)


# ---------------------------------------------------------------------------------------------
# study, report, evaluate


def _study_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help="study TOML file, e.g. studies/ae_vs_vae.toml")
    p.add_argument("--out", required=True, metavar="RUNS_DIR", help="folder for the study's run folders, e.g. runs/ae_vs_vae")
    p.add_argument("--report", metavar="DIR", help="report folder, e.g. reports/ae_vs_vae (default: RUNS_DIR/report)")
    p.add_argument("--epochs", type=int, metavar="N", help="train every run for N epochs, e.g. 5 for a first look (default: the file's)")
    p.add_argument("--seeds", metavar="LIST", help="seeds to run, comma-separated, e.g. 0 or 0,1 (default: the file's)")
    p.add_argument("--data-dir", metavar="DIR", help="folder holding <Name>/raw/*-ubyte[.gz], e.g. ~/data "
                                                      "(default: $PYRO_VAE_DATA, the cache, a download, the MNIST sample)")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                   help="change a [base] setting, e.g. --set lr=3e-4 or --set train_limit=2000, or an [evaluation] "
                        "one, e.g. --set evaluation.num_samples=1000 (repeatable; the value is read as TOML; default: none)")
    p.add_argument("--tensorboard", action="store_true", help="write TensorBoard event files into each run's tensorboard/ folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _quick_argument(p)
    _execution_arguments(p)


def _execution_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=1, help="runs trained at once in local worker processes, e.g. 2 (default: 1, "
                   "one after another in this process)")
    p.add_argument("--threads", type=int, help="torch threads per run, e.g. 1 (default: the cores shared out among the workers)")
    p.add_argument("--ray", nargs="?", const="auto", metavar="ADDRESS", help="run each variant x seed as a task on the Ray "
                   "cluster at ADDRESS, e.g. 10.0.0.5:6379 (alone or 'auto': $RAY_ADDRESS, a running `ray start`, else a "
                   'local one; default: no Ray); needs pip install "pyro-vae[ray]"')
    p.add_argument("--cpus-per-run", type=float, help="CPUs one run asks of Ray, e.g. 2 (default: the study's [resources] cpus, else 1)")
    p.add_argument("--gpus-per-run", type=float, help="GPUs (or a share of one) one run asks of Ray, e.g. 0.5 (default: [resources] gpus, else 0)")


@command("study", "train, evaluate and report every variant x seed of a study", _study_arguments)
def _study(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pyro_vae import api
    from pyro_vae.study.overrides import parse_seeds

    settings = _parse_options(args.settings, "--set")
    settings.update({key: value for key, value in (("epochs", args.epochs), ("data_dir", args.data_dir)) if value is not None})
    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    execution = dict(workers=args.workers, threads=args.threads, ray=args.ray, cpus=args.cpus_per_run, gpus=args.gpus_per_run)
    with _stdout_for_the_result():
        _, report = api._run_study(args.study, args.out, settings, seeds, quick=args.quick, tensorboard=args.tensorboard,
                                   progress=not args.no_progress, plugin_records=args.plugin_records, execution=execution,
                                   resources_flags="--cpus-per-run/--gpus-per-run",
                                   report=Path(args.report) if args.report else Path(args.out) / "report",
                                   report_flag="--report" if args.report else None)
    print(report)
    return 0


def _report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="RUNS_DIR | RUN_DIR",
                   help="the folder a study wrote its runs into (e.g. runs/ae_vs_vae), or run folders to compare side "
                        "by side (e.g. runs/ae runs/vae; each is named after its folder)")
    p.add_argument("--out", required=True, metavar="DIR", help="report folder, e.g. runs/ae_vs_vae/report")
    p.add_argument("--self-contained", action="store_true", help="embed the figures in report.html: one file to send "
                   "(default: off, report.html links figures/)")
    _quick_argument(p)


@command("report", "build a report from finished runs: a study's (unfinished ones listed) or any run folders "
                   "side by side (no retraining)", _report_arguments)
def _report(args: argparse.Namespace) -> int:
    from pyro_vae import api

    with _stdout_for_the_result():
        report = api.build_report(args.runs[0] if len(args.runs) == 1 else args.runs, args.out, quick=args.quick,
                                  self_contained=args.self_contained)
    print(report)
    return 0


def _evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a trained run folder")
    p.add_argument("--num-samples", type=int, help="importance samples per image (K), e.g. 100 for a quick look (default: 1000)")
    p.add_argument("--likelihood-images", type=int, metavar="N",
                   help="estimate log p(x) on the first N test images only, e.g. 500 (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the evaluation's random draws, e.g. 1 (default: 0)")
    _quick_argument(p)
    p.add_argument("--json", action="store_true", help="print the whole evaluation as JSON instead of the summary")


def _quick_argument(p: argparse.ArgumentParser) -> None:
    from pyro_vae.evaluation.presets import QUICK  # the standard library only: no torch for parsing

    p.add_argument("--quick", action="store_true", help="a quick evaluation for a first look, stated in the report: "
                   + ", ".join(f"{k} {v}" for k, v in QUICK.items()) + " (default: off, the study's or the defaults)")


@command("evaluate", "evaluate a run: ELBO, log p(x), latent metrics, sample quality -> evaluation.json", _evaluate_arguments)
def _evaluate(args: argparse.Namespace) -> int:
    import json

    from pyro_vae import api

    for flag, value in (("--num-samples", args.num_samples), ("--likelihood-images", args.likelihood_images)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be at least 1, got {value}")
    values = api._eval_values(args.quick, args.seed, args.num_samples, args.likelihood_images)
    with _stdout_for_the_result():
        result = api._evaluate(args.run_dir, values, " (the --quick preset)" if args.quick else "")
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    from pathlib import Path

    from pyro_vae.evaluation.metrics import headline_summary
    from pyro_vae.training.runs import EVALUATION

    print(f"{args.run_dir}: {result['epochs_trained']} epoch(s) trained; every metric in {Path(args.run_dir) / EVALUATION}")
    print("\n".join(headline_summary(result)))
    return 0


def parser() -> argparse.ArgumentParser:
    from pyro_vae import __version__

    p = _Parser(prog="pyro-vae", description="Variational autoencoders as Pyro programs, and studies comparing them.")
    p.add_argument("--version", action="version", version=f"pyro-vae {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, (help_text, add_arguments, run) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(sp)
        sp.add_argument("--plugin", action="append", default=[], metavar="PATH_OR_MODULE",
                        help="import this .py file or module first: the components it registers become names, e.g. "
                             "examples/plugins/student_t_prior.py or mylab.priors (repeatable; default: none)")
        sp.set_defaults(run=run)
    return p


# What Ctrl-C leaves behind, per command (files are written whole or not at all, so nothing is half-written).
INTERRUPTED = {
    "train": "finished epochs are kept in the run folder (continue with --resume)",
    "report": "the report folder holds a whole report, the previous one or, if the stop came as it was moved in, "
              "the new one (run the command again to be sure)",
    "study": "finished epochs and evaluations are kept (run the same study command again to continue)",
}
INTERRUPTED_OTHERWISE = "no file was left half-written (run the command again)"


class Terminated(KeyboardInterrupt):
    """SIGTERM, stopped as Ctrl-C stops a command: the same clean-up (workers stopped, locks and
    semaphores released) and the same message of what was kept."""


def _terminate(signum, frame):
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    import signal

    args = None
    main_thread = threading.current_thread() is threading.main_thread()  # signal handlers live there only
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        args = parser().parse_args(argv)
        args.plugin_records = _load_plugins(args.plugin)
        return args.run(args)
    except UserError as e:
        print(f"pyro-vae: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        kept = INTERRUPTED.get(getattr(args, "command", None), INTERRUPTED_OTHERWISE)
        print(f"pyro-vae: {'stopped by SIGTERM' if isinstance(e, Terminated) else 'interrupted'}; {kept}", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------------------------------------
# bench (importing pyro_vae.bench loads no torch; torch loads when the bench runs)


def _bench_arguments(p: argparse.ArgumentParser) -> None:
    from pyro_vae.bench import add_arguments

    add_arguments(p)


@command("bench", "measure training throughput against plain PyTorch, batching, evaluation and study cost", _bench_arguments)
def _bench(args: argparse.Namespace) -> int:
    from pyro_vae.bench import main as bench_main

    return bench_main(args)


if __name__ == "__main__":
    sys.exit(main())
