"""The CLI's contract for bad input, as a whole (issue 13): every case below runs through
`pyro_vae.cli.main` and must exit non-zero with exactly one line on stderr naming the problem, no
traceback, nothing on stdout, and every file the case started with byte-identical (no file added,
none removed, no half-written one left)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
from conftest import DATA_ROOT

from pyro_vae.cli import main

TINY = ["--dataset", "mnist", "--train-limit", "200", "--test-limit", "60", "--hidden-dim", "16", "--no-progress"]
STUDY_HEAD = 'name = "s"\nseeds = [0]\n[base]\ndataset = "mnist"\ntrain_limit = 200\ntest_limit = 60\nhidden_dim = 16\nepochs = 1\n'


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """One real one-epoch run every case copies (and damages) instead of training its own."""
    run = tmp_path_factory.mktemp("base") / "run"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(run)]) == 0
    return run


@pytest.fixture(scope="module")
def holder():
    """A second process holding the lock of a folder: `holder(folder)` returns its pid."""
    processes = []

    def hold(folder: Path) -> int:
        p = subprocess.Popen([sys.executable, "-c", "import sys, time; from pyro_vae.training import runs\n"
                              "with runs.locked(sys.argv[1]):\n    print('locked', flush=True); time.sleep(120)", str(folder)],
                             stdout=subprocess.PIPE, text=True)
        processes.append(p)
        assert p.stdout.readline().strip() == "locked"
        return p.pid

    yield hold
    for p in processes:
        p.kill()
        p.wait()


@dataclass
class Case:
    name: str
    setup: Callable  # (case folder, base run, holder, monkeypatch) -> argv
    expect: str  # what the one line must say (the problem and the fix)


def _copy(base: Path, root: Path) -> Path:
    run = root / "run"
    shutil.copytree(base, run)
    return run


def _edit_config(base, root, edit) -> Path:
    run = _copy(base, root)
    record = json.loads((run / "config.json").read_text())
    edit(record)
    (run / "config.json").write_text(json.dumps(record))
    return run


def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def _study(root: Path, text: str) -> list[str]:
    return ["study", str(_write(root / "s.toml", text)), "--out", str(root / "out"), "--no-progress"]


def _foreign_folder(root: Path) -> Path:
    _write(root / "p" / "src" / "main.py", "x\n")
    _write(root / "p" / "config.json", "{}")
    return root / "p"


def _symlink(root: Path, base: Path) -> Path:
    run = _copy(base, root)
    (root / "link").symlink_to(run)
    return root / "link"


def _checkpoint(base: Path, root: Path, state) -> Path:
    run = _copy(base, root)
    torch.save(state(torch.load(run / "checkpoint.pt", weights_only=True)), run / "checkpoint.pt")
    return run


def _narrowed(state: dict) -> dict:
    state["model"] = {k: v[..., :1] for k, v in state["model"].items()}
    return state


def _labels_over_nine(root: Path) -> Path:
    import gzip

    raw = root / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    shutil.copy(DATA_ROOT / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz", raw)
    labels = bytearray(gzip.decompress((DATA_ROOT / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    labels[8 + 5] = 12
    (raw / "t10k-labels-idx1-ubyte").write_bytes(bytes(labels))
    return root / "data"


def _tamper_hash(record: dict) -> None:
    record["data"]["test_file"]["images_sha256"] = "0" * 64


CASES = [
    # run folders: --force, locks, symlinks, paths
    Case("force on a folder with foreign files", lambda r, b, h, m: ["train", *TINY, "--epochs", "1", "--force", "--out", str(_foreign_folder(r))],
         "not part of a run"),
    Case("force on a symlink", lambda r, b, h, m: ["train", *TINY, "--epochs", "1", "--force", "--out", str(_symlink(r, b))],
         "symbolic link"),
    Case("resume while another process holds the run", lambda r, b, h, m: ["train", "--resume", str(_copy(b, r)), "--epochs", "2", "--no-progress"],
         "in use by process"),
    Case("train --force while another process holds the run", lambda r, b, h, m: ["train", *TINY, "--force", "--out", str(_copy(b, r))],
         "in use by process"),
    Case("study on a folder another study holds", lambda r, b, h, m: _study(r, STUDY_HEAD + "[variants.A]\n"),
         "in use by process"),
    Case("resume to fewer epochs than trained", lambda r, b, h, m: ["train", "--resume", str(_copy(b, r)), "--epochs", "0", "--no-progress"],
         "trained 1 epochs already"),
    Case("overlong --out", lambda r, b, h, m: ["train", *TINY, "--out", str(r / ("a" * 300) / "run")], "too long"),
    Case("a report over a file", lambda r, b, h, m: ["report", str(r), "--out", str(_write(r / "report", "x"))], "is not a folder"),
    Case("study --report over a file, before any training", lambda r, b, h, m: _study(r, STUDY_HEAD + "[variants.A]\n")
         + ["--report", str(_write(r / "rep", "x"))], "is not a folder; choose another --report"),
    Case("report --out under a file", lambda r, b, h, m: ["report", str(_copy(b, r)), "--out", str(_write(r / "f", "x") / "rep")],
         "is not a folder; choose another --out"),
    Case("overlong report --out", lambda r, b, h, m: ["report", str(_copy(b, r)), "--out", str(r / ("a" * 300) / "rep")],
         "cannot be used (File name too long)"),
    Case("overlong study --report, before any training", lambda r, b, h, m: _study(r, STUDY_HEAD + "[variants.A]\n")
         + ["--report", str(r / ("a" * 300) / "rep")], "cannot be used (File name too long); choose another --report"),
    Case("evaluate a folder that does not exist", lambda r, b, h, m: ["evaluate", str(r / "typo" / "run")], "does not exist"),
    Case("report of a run whose config.json is a list", lambda r, b, h, m: ["report", str(_write(_copy(b, r) / "config.json", "[]").parent),
         "--out", str(r / "rep")], "config.json is damaged"),
    Case("report of a file instead of a study folder", lambda r, b, h, m: ["report", str(_write(r / "f", "x")), "--out", str(r / "rep")],
         "does not exist"),
    # damaged run files
    Case("checkpoint holding {}", lambda r, b, h, m: ["evaluate", str(_checkpoint(b, r, lambda s: {}))], "checkpoint.pt is damaged"),
    Case("checkpoint of the wrong shape", lambda r, b, h, m: ["evaluate", str(_checkpoint(b, r, _narrowed))], "does not fit the model"),
    Case("checkpoint of the wrong shape, resumed", lambda r, b, h, m: ["train", "--resume", str(_checkpoint(b, r, _narrowed)), "--epochs", "2"],
         "does not fit the model"),
    Case("config.json a list", lambda r, b, h, m: ["evaluate", str(_write(_copy(b, r) / "config.json", "[]").parent)], "config.json is damaged"),
    Case("config.json without data", lambda r, b, h, m: ["train", "--resume", str(_edit_config(b, r, lambda d: d.pop("data")))],
         "config.json is damaged"),
    Case("edited latent_dim", lambda r, b, h, m: ["train", "--resume", str(_edit_config(b, r, lambda d: d["config"].update(latent_dim=3))), "--epochs", "2"],
         "was config.json edited"),
    Case("half-written metrics line", lambda r, b, h, m: ["train", "--resume", str(_write(_copy(b, r) / "metrics.jsonl",
         (b / "metrics.jsonl").read_text() + '{"epoch": 2, "tra').parent), "--epochs", "2"], "metrics.jsonl line 2 is damaged"),
    Case("non-UTF-8 config.json", lambda r, b, h, m: ["evaluate", str(_write(_copy(b, r) / "config.json", b"\xff\xfe{}").parent)], "not UTF-8"),
    Case("non-UTF-8 metrics.jsonl", lambda r, b, h, m: ["train", "--resume", str(_write(_copy(b, r) / "metrics.jsonl", b"\xff\n").parent), "--epochs", "2"],
         "metrics.jsonl line 1 is damaged"),
    Case("non-UTF-8 study.json", lambda r, b, h, m: ["report", str(_write(r / "runs" / "study.json", b"\xff").parent), "--out", str(r / "rep")],
         "not UTF-8"),
    Case("evaluate on data other than config.json records", lambda r, b, h, m: ["evaluate", str(_edit_config(b, r, _tamper_hash))],
         "differs from the data"),
    Case("cuda run resumed without --device", lambda r, b, h, m: ["train", "--resume", str(_edit_config(b, r, lambda d: d["config"].update(device="cuda"))), "--epochs", "2"],
         "--device cpu"),
    # config files and the environment
    Case("Latin-1 TOML", lambda r, b, h, m: ["train", "--config", str(_write(r / "c.toml", 'dataset = "caf\xe9"\n'.encode("latin-1"))), "--out", str(r / "o")],
         "not UTF-8"),
    Case("Latin-1 study file", lambda r, b, h, m: ["study", str(_write(r / "s.toml", b'name = "caf\xe9"\n')), "--out", str(r / "o")], "not UTF-8"),
    Case("--config naming a folder", lambda r, b, h, m: ["train", "--config", str(r), "--out", str(r / "o")], "is a folder"),
    Case("PYRO_VAE_CACHE naming a file", lambda r, b, h, m: m.setenv("PYRO_VAE_CACHE", str(_write(r / "cachefile", "x"))) or
         ["train", *TINY, "--out", str(r / "o")], "PYRO_VAE_CACHE"),
    Case("labels outside 0-9", lambda r, b, h, m: ["train", *TINY, "--data-dir", str(_labels_over_nine(r)), "--out", str(r / "o")],
         "labels must be 0-9"),
    Case("a test set under 4 images", lambda r, b, h, m: ["train", *TINY, "--test-limit", "3", "--out", str(r / "o")], "raise --test-limit"),
    Case("allocation failure", lambda r, b, h, m: ["train", *TINY, "--hidden-dim", "1000000000000", "--out", str(r / "o")],
         "does not fit in memory"),
    Case("--beta inf", lambda r, b, h, m: ["train", *TINY, "--beta", "inf", "--out", str(r / "o")], "beta must be a finite number, got inf"),
    Case("--lr inf", lambda r, b, h, m: ["train", *TINY, "--lr", "inf", "--out", str(r / "o")], "lr must be a finite number, got inf"),
    Case("--seed -1", lambda r, b, h, m: ["train", *TINY, "--seed", "-1", "--out", str(r / "o")], "seed must be a whole number from 0"),
    Case("--seed 2**32", lambda r, b, h, m: ["train", *TINY, "--seed", str(2**32), "--out", str(r / "o")], "seed must be a whole number from 0"),
    Case("--likelihood-images -495", lambda r, b, h, m: ["evaluate", str(_copy(b, r)), "--likelihood-images", "-495"],
         "--likelihood-images must be at least 1"),
    Case("evaluate --seed -1", lambda r, b, h, m: ["evaluate", str(_copy(b, r)), "--seed", "-1"], "seed must be a whole number"),
    # study files: validated when read, before anything trains or is written
    Case("study epochs = 0", lambda r, b, h, m: _study(r, STUDY_HEAD + "[variants.A]\nepochs = 0\n"), "a study trains at least 1"),
    Case("[evaluation] num_samples = 'many'", lambda r, b, h, m: _study(r, STUDY_HEAD + '[variants.A]\n[evaluation]\nnum_samples = "many"\n'),
         "num_samples must be a whole number"),
    Case("[evaluation] num_samples = 0", lambda r, b, h, m: _study(r, STUDY_HEAD + "[variants.A]\n[evaluation]\nnum_samples = 0\n"),
         "num_samples must be a whole number"),
    Case("[evaluation] likelihood_images = -495", lambda r, b, h, m: _study(r, STUDY_HEAD + "[variants.A]\n[evaluation]\nlikelihood_images = -495\n"),
         "likelihood_images"),
    Case("[evaluation] grid_tol = 0", lambda r, b, h, m: _study(r, STUDY_HEAD + "[variants.A]\n[evaluation]\ngrid_tol = 0\n"), "grid_tol"),
    Case("[evaluation] generated = 1", lambda r, b, h, m: _study(r, STUDY_HEAD + "[variants.A]\n[evaluation]\ngenerated = 1\n"), "generated"),
    Case("[evaluation] pairs = true", lambda r, b, h, m: _study(r, STUDY_HEAD + "[variants.A]\n[evaluation]\npairs = true\n"), "pairs"),
    Case("[evaluation] unknown key", lambda r, b, h, m: _study(r, STUDY_HEAD + "[variants.A]\n[evaluation]\nsamples = 3\n"), "unknown evaluation setting"),
    Case("vamp prior with the delta guide", lambda r, b, h, m: _study(r, STUDY_HEAD + '[variants.A]\nguide = "delta"\nprior = "vamp"\n'),
         "[variants.A]"),
    Case("variant named 'A\\n'", lambda r, b, h, m: _study(r, STUDY_HEAD + '[variants."A\\n"]\n'), "variant name"),
    Case("variant named study.json", lambda r, b, h, m: _study(r, STUDY_HEAD + '[variants."study.json"]\n'), "variant name"),
    Case("variant named report", lambda r, b, h, m: _study(r, STUDY_HEAD + "[variants.report]\n"), "variant name"),
    Case("seeds [true, false]", lambda r, b, h, m: _study(r, STUDY_HEAD.replace("seeds = [0]", "seeds = [true, false]") + "[variants.A]\n"),
         "seeds in"),
    Case("seeds [-1]", lambda r, b, h, m: _study(r, STUDY_HEAD.replace("seeds = [0]", "seeds = [-1]") + "[variants.A]\n"), "seeds in"),
    Case("seeds [2**32]", lambda r, b, h, m: _study(r, STUDY_HEAD.replace("seeds = [0]", f"seeds = [{2**32}]") + "[variants.A]\n"), "seeds in"),
    Case("seeds not a list", lambda r, b, h, m: _study(r, STUDY_HEAD.replace("seeds = [0]", "seeds = 3") + "[variants.A]\n"), "seeds in"),
    Case("unknown key in [compare]", lambda r, b, h, m: _study(r, STUDY_HEAD + '[variants.A]\n[variants.B]\nbeta = 2.0\n[compare]\nbaseline = "A"\nbasline = "B"\n'),
         "unknown key(s) basline in [compare]"),
    Case("seed in [base]", lambda r, b, h, m: _study(r, STUDY_HEAD + "seed = 3\n[variants.A]\n"), "sets seed"),
    Case("seed in a variant", lambda r, b, h, m: _study(r, STUDY_HEAD + "[variants.A]\nseed = 3\n"), "sets seed"),
    Case("[base] not a table", lambda r, b, h, m: _study(r, 'name = "s"\nbase = 3\n[variants.A]\n'), "[base]"),
    Case("a study with a train setting that cannot be", lambda r, b, h, m: _study(r, STUDY_HEAD + "[variants.A]\nbeta = inf\n"), "beta"),
]


def _snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() and not p.is_symlink() else None)
            for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gives_one_line_and_changes_nothing(case, tmp_path, base_run, holder, monkeypatch, capsys):
    argv = case.setup(tmp_path, base_run, holder, monkeypatch)
    if "in use by process" in case.expect:
        target = Path(argv[argv.index("--out") + 1] if "--out" in argv else argv[argv.index("--resume") + 1])
        pid = holder(target)
        case = Case(case.name, case.setup, f"in use by process {pid}")
    before = _snapshot(tmp_path)
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    assert code != 0 and out == "", (code, out)
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyro-vae: error: "), err
    assert case.expect in lines[0], lines[0]
    assert _snapshot(tmp_path) == before, "files changed"
