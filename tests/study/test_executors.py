"""Where a study's cells run: local worker processes and a real two-node Ray cluster on this machine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyro_vae.cli import main

TINY = """
name = "tiny"
seeds = [0, 1]
[base]
dataset = "mnist"
epochs = 1
train_limit = 2000
test_limit = 300
[variants.AE]
guide = "delta"
beta = 0.0
[variants.VAE]
guide = "gaussian"
[evaluation]
num_samples = 30
generated = 200
pairs = 100
"""
CELLS = [("AE", 0), ("AE", 1), ("VAE", 0), ("VAE", 1)]


def study(tmp_path: Path, text: str = TINY) -> str:
    path = tmp_path / "tiny.toml"
    path.write_text(text)
    return str(path)


def cli(*argv, env=None, **kwargs):
    return subprocess.run([sys.executable, "-m", "pyro_vae.cli", *argv], capture_output=True, text=True, timeout=600,
                          env=env, **kwargs)


def numbers(runs: Path, cells=CELLS) -> dict:
    """Every run's metrics and evaluation, less the clock readings and its own path."""
    found = {}
    for variant, seed in cells:
        run = runs / variant / f"seed-{seed}"
        metrics = [{k: v for k, v in m.items() if k != "epoch_seconds"} for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]
        evaluation = json.loads((run / "evaluation.json").read_text())["metrics"]
        assert evaluation["run"] == str(run)  # a run made elsewhere names its place in RUNS_DIR
        found[variant, seed] = (metrics, {k: v for k, v in evaluation.items() if k not in ("eval_seconds", "run")})
    return found


# --- errors: one line, before anything runs -----------------------------------------------------------------


def test_missing_ray_is_one_line_saying_how_to_install(tmp_path):
    blocked = "import sys; sys.modules['ray'] = None; from pyro_vae.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", blocked, "study", study(tmp_path), "--out", str(tmp_path / "runs"), "--ray"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ['pyro-vae: error: --ray needs the ray package, which is not installed; '
                                                'install it with: pip install "pyro-vae[ray]"']


@pytest.mark.parametrize("argv, message", [
    (["--workers", "0"], "--workers must be at least 1"),
    (["--workers", str((os.cpu_count() or 1) + 1)], "exceeds the"),
    (["--workers", "1", "--threads", str((os.cpu_count() or 1) + 1)], "exceeds the"),
    (["--workers", "2", "--ray"], "give one of them"),
    (["--ray", "--cpus-per-run", "0"], "cpus in --cpus-per-run/--gpus-per-run must be a number above 0"),
])
def test_bad_execution_flags(tmp_path, capsys, argv, message):
    assert main(["study", study(tmp_path), "--out", str(tmp_path / "runs"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs" / "AE").exists()


def test_resources_table_is_checked(tmp_path, capsys):
    assert main(["study", study(tmp_path, TINY + "[resources]\ncpu = 1\n"), "--out", str(tmp_path / "runs")]) == 2
    assert "unknown resource(s) cpu in [resources]" in capsys.readouterr().err


# --- local worker processes ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_workers_twice_give_the_same_numbers_as_one(tmp_path):
    file = study(tmp_path)
    for name, flags in (("a", ["--workers", "2"]), ("b", ["--workers", "2"]), ("one", ["--workers", "1", "--threads", "1"])):
        done = cli("study", file, "--out", str(tmp_path / name), "--no-progress", *flags)
        assert done.returncode == 0, done.stderr
    first = numbers(tmp_path / "a")
    assert first == numbers(tmp_path / "b") == numbers(tmp_path / "one")
    assert (tmp_path / "a" / "report" / "results.json").exists()


@pytest.mark.slow
def test_a_killed_two_worker_study_resumes_without_retraining_finished_runs(tmp_path):
    # Quick runs finish first; the Long ones are still training when the study is killed.
    text = TINY.replace('[variants.AE]', '[variants.Quick]').replace('[variants.VAE]', '[variants.Long]\nepochs = 8')
    file, runs = study(tmp_path, text), tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "pyro_vae.cli", "study", file, "--out", str(runs), "--no-progress", "--workers", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    quick = [runs / "Quick" / f"seed-{s}" for s in (0, 1)]
    deadline = time.monotonic() + 400
    while not (all((q / "evaluation.json").exists() for q in quick) and (runs / "Long" / "seed-0" / "metrics.jsonl").exists()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() is not None else "too slow"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers, mid-training
    proc.wait()
    proc.stderr.close()
    stamps = {q: (q / "checkpoint.pt").stat().st_mtime_ns for q in quick}
    long_done = len((runs / "Long" / "seed-0" / "metrics.jsonl").read_text().splitlines())
    assert long_done < 8, "the study finished before it could be killed"

    done = cli("study", file, "--out", str(runs), "--no-progress", "--workers", "2")
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("complete, skipped") == 2
    assert f"Long seed 0: trained epochs {long_done + 1}-8" in done.stderr
    assert all((q / "checkpoint.pt").stat().st_mtime_ns == stamps[q] for q in quick)
    for seed in (0, 1):
        assert [m["epoch"] for m in map(json.loads, (runs / "Long" / f"seed-{seed}" / "metrics.jsonl").read_text().splitlines())] == list(range(1, 9))


# --- a real two-node Ray cluster ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("ray")
    from pyro_vae.study.local_ray import LocalCluster

    with LocalCluster(nodes=2, cpus=1) as running:
        yield running


@pytest.mark.slow
def test_ray_cluster_runs_give_the_numbers_of_one_local_worker(tmp_path, cluster):
    file = study(tmp_path)
    on_ray = cli("study", file, "--out", str(tmp_path / "ray"), "--no-progress", "--ray", cluster.address, env=cluster.env)
    assert on_ray.returncode == 0, on_ray.stderr
    assert "1 CPUs, 0 GPUs and 1 threads per run, 2 at a time" in on_ray.stderr
    assert on_ray.stderr.count("evaluated in") == 4 and "left)" in on_ray.stderr
    here = cli("study", file, "--out", str(tmp_path / "here"), "--no-progress", "--workers", "1", "--threads", "1")
    assert here.returncode == 0, here.stderr
    assert numbers(tmp_path / "ray") == numbers(tmp_path / "here")
    rows = json.loads((tmp_path / "ray" / "report" / "results.json").read_text())
    assert sorted((r["variant"], r["seed"]) for r in rows) == CELLS


@pytest.mark.slow
def test_ray_task_whose_worker_dies_is_retried_and_the_study_completes(tmp_path, cluster):
    file, runs = study(tmp_path), tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "pyro_vae.cli", "study", file, "--out", str(runs), "--no-progress", "--ray",
                             cluster.address], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cluster.env)
    deadline, killed = time.monotonic() + 300, None
    while killed is None:
        assert proc.poll() is None and time.monotonic() < deadline, "no task seen running"
        pids = cluster.worker_pids("run_shipped")
        if pids:
            killed = pids[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert err.count("evaluated in") == 4
    for variant, seed in CELLS:  # every run once: one epoch, one evaluation
        run = runs / variant / f"seed-{seed}"
        assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
        assert json.loads((run / "evaluation.json").read_text())["metrics"]["epochs_trained"] == 1
    assert sorted((r["variant"], r["seed"]) for r in json.loads((runs / "report" / "results.json").read_text())) == CELLS


@pytest.mark.slow
def test_a_user_error_in_a_ray_task_fails_the_study_with_its_line(tmp_path, cluster):
    # A run to resume whose checkpoint is damaged: only the task, opening it, finds out.
    from pyro_vae.study.spec import Study

    file, runs = study(tmp_path, TINY.replace("seeds = [0, 1]", "seeds = [0]").replace("epochs = 1", "epochs = 2")), tmp_path / "runs"
    run = runs / "AE" / "seed-0"
    run.mkdir(parents=True)
    cfg = Study.load(file).config("AE", 0).to_dict()
    (run / "config.json").write_text(json.dumps({"config": {**cfg, "epochs": 1}, "data": {}, "versions": {}}))
    (run / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "train_elbo": -1.0, "test_elbo": -1.0}) + "\n")
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")
    done = cli("study", file, "--out", str(runs), "--no-progress", "--ray", cluster.address, env=cluster.env)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("pyro-vae: error: AE seed 0: ")
    assert "checkpoint is damaged" in done.stderr


@pytest.mark.slow
def test_sigterm_stops_a_two_worker_study_says_what_it_kept_and_leaks_nothing(tmp_path):
    text = TINY.replace("epochs = 1", "epochs = 40").replace("train_limit = 2000", "train_limit = 500")
    file, runs = study(tmp_path, text), tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "pyro_vae.cli", "study", file, "--out", str(runs), "--workers", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    first = runs / "AE" / "seed-0" / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not first.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() is not None else "too slow"
        time.sleep(0.1)
    workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    proc.send_signal(signal.SIGTERM)  # to the driver only, as a scheduler or `kill` sends it
    stderr = proc.communicate(timeout=60)[1]
    assert proc.returncode == 143, stderr
    last = stderr.strip().splitlines()
    assert last[-1] == ("pyro-vae: stopped by SIGTERM; finished epochs and evaluations are kept "
                        "(run the same study command again to continue)"), stderr
    assert "stopped; kept: AE seed 0 " in stderr and "/40 epochs" in stderr
    assert "leaked" not in stderr and "Traceback" not in stderr, stderr
    time.sleep(1)
    alive = [pid for pid in workers if Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()]
    assert workers and not alive  # the workers stopped with the driver
    assert not (runs / ".lock").exists()
    kept = len(first.read_text().splitlines())
    assert 1 <= kept < 40


@pytest.mark.slow
def test_a_study_offline_says_once_that_the_download_failed(tmp_path):
    """No data configured, none in the cache, no network: the driver tries the download once and says so
    once; its two workers inherit the failure."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYRO_VAE_DATA", "PYRO_VAE_FAILED_DOWNLOADS")}
    if (Path(env["PYRO_VAE_CACHE"]) / "data" / "MNIST" / "raw").exists():  # the session's cache, for its classifiers
        env["PYRO_VAE_CACHE"] = str(tmp_path / "cache")
    done = subprocess.run([sys.executable, "-m", "pyro_vae.cli", "study", study(tmp_path), "--out", str(tmp_path / "runs"),
                           "--no-progress", "--workers", "2", "--seeds", "0", "--set", "train_limit=500"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    if "origin" in done.stderr and "download" in json.loads((tmp_path / "runs" / "AE" / "seed-0" / "config.json").read_text())["data"]["origin"]:
        pytest.skip("this machine can download MNIST")  # pragma: no cover
    assert done.stderr.count("download of mnist failed") == 1, done.stderr
