"""The report folder: a build replaces only what earlier builds wrote there, one build at a time, and
a report appears whole or not at all (a killed build leaves the previous one as it was)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from pyro_vae.cli import main
from pyro_vae.config import TrainConfig
from pyro_vae.errors import UserError
from pyro_vae.evaluation.evaluate import EvalSettings, evaluate_run
from pyro_vae.report import folder as report_folder
from pyro_vae.report.build import build_runs_report, check_report_folder
from pyro_vae.report.folder import MANIFEST, STAGING
from pyro_vae.training import runs
from pyro_vae.training.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL_EVAL = {"num_samples": 5, "generated": 50, "pairs": 20, "likelihood_images": 20}


def quiet(message: str) -> None:
    pass


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` by relative path, with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, one_thread) -> Path:
    cfg = TrainConfig(dataset="mnist", epochs=1, train_limit=300, test_limit=100, batch_size=100, hidden_dim=16)
    run = train(cfg, tmp_path_factory.mktemp("run") / "run", progress=False, log=quiet)
    evaluate_run(run, EvalSettings.from_dict(SMALL_EVAL), log=quiet)
    return run


@pytest.fixture(scope="module")
def built(tiny_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report"
    build_runs_report([tiny_run], out, log=quiet)
    return out


@pytest.fixture
def earlier(built, tmp_path) -> Path:
    """A copy of a built report to build into again."""
    return Path(shutil.copytree(built, tmp_path / "report"))


def test_a_build_records_its_files_and_leaves_nothing_else(built):
    listed = json.loads((built / MANIFEST).read_text())["files"]
    assert sorted(listed) == sorted(set(_files(built)) - {MANIFEST})
    assert {"report.md", "report.html", "results.json", "results.csv", "explorer.html", "figures/codes.png"} <= set(listed)
    assert not (built / STAGING).exists() and not (built / runs.LOCK).exists()


@pytest.mark.parametrize("mine", [
    {"results.json": b'{"my": "numbers"}\n', "report.md": b"# my notes\n", "figures/plot.png": b"my plot"},
    {"results.json": b"[1, 2, 3]\n"},
    {"notes.txt": b"keep me\n"},
], ids=["report-named files", "a results.json of another schema", "any other file"])
def test_a_folder_of_the_users_own_files_is_refused_untouched(tiny_run, tmp_path, capsys, mine):
    out = tmp_path / "mine"
    for name, data in mine.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    with pytest.raises(UserError, match="holds files that no report wrote there .*choose another --out"):
        build_runs_report([tiny_run], out, log=quiet)
    assert main(["report", str(tiny_run), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pyro-vae: error: ") and len(err.splitlines()) == 1 and all(n.split("/")[0] in err for n in mine)
    assert _files(out) == mine  # nothing replaced, nothing added


@pytest.mark.parametrize("extra", ["notes.txt", "figures/mine.png", "old/report.md"])
def test_a_report_folder_holding_a_file_of_the_users_is_refused(earlier, tiny_run, extra):
    (earlier / extra).parent.mkdir(parents=True, exist_ok=True)
    (earlier / extra).write_bytes(b"the user's")
    before = _files(earlier)
    with pytest.raises(UserError, match=f"holds files that no report wrote there \\({extra.split('/')[0]}"):
        build_runs_report([tiny_run], earlier, log=quiet)
    assert _files(earlier) == before


def test_study_report_folder_is_refused_before_training(tmp_path):
    (tmp_path / "rep").mkdir()
    (tmp_path / "rep" / "results.json").write_text("{}")
    with pytest.raises(UserError, match="choose another --report"):
        check_report_folder(tmp_path / "rep", "--report")  # what `study --report` calls before it trains
    check_report_folder(tmp_path / "new" / "rep", "--report")  # a missing folder is fine, and not made
    check_report_folder(tmp_path / "empty", "--report")
    assert not (tmp_path / "new").exists() and not (tmp_path / "empty").exists()


def test_a_rebuild_replaces_exactly_the_earlier_builds_files(earlier, tiny_run):
    manifest = json.loads((earlier / MANIFEST).read_text())
    (earlier / "figures" / "gone.png").write_bytes(b"a figure this build no longer draws")
    (earlier / "report.md").write_text("the earlier build's\n")
    outside = earlier.parent / "outside.txt"
    outside.write_text("not the report's, whatever a manifest says\n")
    (earlier / MANIFEST).write_text(json.dumps({"files": manifest["files"] + ["figures/gone.png", "../outside.txt"]}))
    build_runs_report([tiny_run], earlier, log=quiet)
    assert not (earlier / "figures" / "gone.png").exists() and outside.is_file()
    assert (earlier / "report.md").read_text().startswith("# Runs compared: run")
    assert sorted(json.loads((earlier / MANIFEST).read_text())["files"]) == sorted(manifest["files"])
    assert not (earlier / STAGING).exists() and not (earlier / runs.LOCK).exists()


def test_a_report_built_before_manifests_is_rebuilt_but_not_a_foreign_results_json(earlier, tiny_run, tmp_path):
    """Like the committed reports/*: the report's files only, and a results.json of the report's own schema."""
    (earlier / MANIFEST).unlink()
    foreign = Path(shutil.copytree(earlier, tmp_path / "foreign"))
    build_runs_report([tiny_run], earlier, log=quiet)
    assert (earlier / MANIFEST).is_file() and (earlier / "report.html").is_file()
    (foreign / "results.json").write_text(json.dumps([{"variant": "mine", "seed": 0}]))
    before = _files(foreign)
    with pytest.raises(UserError, match="holds files that no report wrote there"):
        build_runs_report([tiny_run], foreign, log=quiet)
    assert _files(foreign) == before


def test_a_stale_build_folder_is_swept(earlier, tiny_run):
    (earlier / STAGING / "figures").mkdir(parents=True)
    (earlier / STAGING / "figures" / "half.png").write_bytes(b"what a killed build left")
    build_runs_report([tiny_run], earlier, log=quiet)
    assert not (earlier / STAGING).exists() and not list(earlier.rglob("half.png"))


def test_a_build_killed_while_moving_in_is_cleaned_up_by_the_next(earlier, tiny_run):
    """SIGKILL half-way through the moves: a file it moved in is listed only by the manifest still in
    its staging folder. The next build removes that file (it draws no such figure), not refuses it."""
    (earlier / STAGING).mkdir()
    (earlier / "figures" / "moved.png").write_bytes(b"moved in by the killed build")
    listed = json.loads((earlier / MANIFEST).read_text())["files"]
    (earlier / STAGING / MANIFEST).write_text(json.dumps({"files": listed + ["figures/moved.png"]}))
    build_runs_report([tiny_run], earlier, log=quiet)
    assert not (earlier / "figures" / "moved.png").exists() and not (earlier / STAGING).exists()


def _report_process(run: Path, out: Path) -> subprocess.Popen:
    """`pyro-vae report RUN --out OUT` in a process of its own, once it is drawing figures (the numbers written)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    p = subprocess.Popen([sys.executable, "-m", "pyro_vae.cli", "report", str(run), "--out", str(out)],
                         stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    for line in p.stderr:
        if "report: drawing figures" in line:
            return p
    raise AssertionError(f"the report process ended early: {p.wait()}")


@pytest.mark.slow
def test_a_second_build_on_the_folder_is_refused_naming_the_first(earlier, tiny_run):
    p = _report_process(tiny_run, earlier)
    try:
        with pytest.raises(UserError, match=f"{earlier} is in use by process {p.pid}"):
            build_runs_report([tiny_run], earlier, log=quiet)
    finally:
        err = p.stderr.read()
        assert p.wait(timeout=120) == 0, err
    assert (earlier / "report.md").read_text().startswith("# Runs compared: run")
    assert not (earlier / STAGING).exists() and not (earlier / runs.LOCK).exists()


@pytest.mark.slow
def test_sigterm_during_a_build_leaves_the_previous_report_as_it_was(earlier, tiny_run):
    for name in ("report.md", "results.json"):  # marks of the previous build, which a new one would replace
        (earlier / name).write_text(f"the previous build's {name}\n")
    before = _files(earlier)
    p = _report_process(tiny_run, earlier)  # it has written its results.json: aside, not over the previous one
    p.send_signal(signal.SIGTERM)
    err = p.stderr.read()
    assert p.wait(timeout=60) != 0 and "Traceback" not in err, err
    left = _files(earlier)  # a process killed outright leaves its lock file and build folder: swept by the next build
    assert {k: v for k, v in left.items() if k != runs.LOCK and not k.startswith(f"{STAGING}/")} == before
    build_runs_report([tiny_run], earlier, log=quiet)
    assert (earlier / "report.md").read_text().startswith("# Runs compared: run")
    assert not (earlier / STAGING).exists() and not (earlier / runs.LOCK).exists()


def test_signals_wait_until_the_files_are_in_place():
    done = []

    def stop(signum, frame):
        raise KeyboardInterrupt

    saved = signal.signal(signal.SIGTERM, stop)
    try:
        with pytest.raises(KeyboardInterrupt):
            with report_folder._signals_held():
                os.kill(os.getpid(), signal.SIGTERM)
                done.append("the block ran to its end")
        assert done == ["the block ran to its end"]
        assert signal.getsignal(signal.SIGTERM) is stop  # the handler is back
    finally:
        signal.signal(signal.SIGTERM, saved)
