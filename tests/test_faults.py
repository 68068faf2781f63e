"""Faults that must not lose data or give silently wrong results (issue 13): a full disk, a read-only
folder, a tampered decompression cache, NaN in the first epoch, resuming on another device, Ctrl-C
in evaluate, a damaged evaluation.json, a study whose variants use different data."""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import DATA_ROOT, HAVE_FULL_DATA, REPO, SLICE_DATASET, small_config

from pyro_vae import data
from pyro_vae.cli import main
from pyro_vae.errors import DivergedError, UserError
from pyro_vae.training import runs
from pyro_vae.training.trainer import resume, train

TINY = ["--dataset", "mnist", "--train-limit", "200", "--test-limit", "60", "--hidden-dim", "16", "--no-progress"]


def quiet(msg):
    pass


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def _one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyro-vae: error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def one_epoch(tmp_path) -> Path:
    run = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(run)]) == 0
    return run


def _error_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.startswith("pyro-vae:")]


def test_a_full_disk_during_training_is_one_line_and_keeps_the_last_good_checkpoint(one_epoch, monkeypatch, capsys):
    before = _files(one_epoch)
    calls = []

    def fsync_then_full(fd):  # resume's first two writes (metrics, config) pass; the checkpoint of epoch 2 hits a full disk
        calls.append(fd)
        if len(calls) > 2:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("pyro_vae.io.os.fsync", fsync_then_full)
    capsys.readouterr()
    assert main(["train", "--resume", str(one_epoch), "--epochs", "2", "--no-progress"]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert f"cannot write {one_epoch / 'checkpoint.pt'}: the disk is full" in line
    assert "epoch 2 is lost, the checkpoint of epoch 1 is kept: continue with --resume" in line
    after = _files(one_epoch)
    assert after["checkpoint.pt"] == before["checkpoint.pt"] and after["metrics.jsonl"] == before["metrics.jsonl"]
    assert not [p for p in one_epoch.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()
    resume(one_epoch, 2, progress=False, log=quiet)  # once there is room, the run continues
    assert [m["epoch"] for m in runs.read_metrics(one_epoch)] == [1, 2]


@pytest.fixture
def small_filesystem(tmp_path):
    """`small_filesystem(bytes)`: a real file system of that size (tmpfs), where mounting is allowed."""
    mounts = []

    def mount(size: int) -> Path:
        folder = tmp_path / f"disk{len(mounts)}"
        folder.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True).returncode:
            pytest.skip("cannot mount a small file system here")
        mounts.append(folder)
        return folder

    yield mount
    for folder in mounts:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_real_full_disk_keeps_epoch_one_and_leaves_no_temporary_file(one_epoch, small_filesystem, capsys):
    size = (one_epoch / "checkpoint.pt").stat().st_size
    run = small_filesystem(size + size // 2 + 65536) / "run"  # room for one checkpoint, not for the next beside it
    assert main(["train", *TINY, "--epochs", "3", "--out", str(run)]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert "the disk is full" in line and "the checkpoint of epoch 1 is kept" in line
    assert [m["epoch"] for m in runs.read_metrics(run)] == [1]
    assert runs.load_checkpoint(run, run_id=runs.read_config(run)[1]["run_id"])["epoch"] == 1
    carved = [] if HAVE_FULL_DATA else ["split.json"]  # the sample's carved split keeps its indices beside the run
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "config.json", "metrics.jsonl", *carved]


def test_a_read_only_run_folder_is_refused_before_the_work(one_epoch, tmp_path, capsys):
    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(["mount", "--bind", "-o", "ro", str(one_epoch), str(mount)], capture_output=True).returncode:
        pytest.skip("cannot bind-mount read-only here")
    try:
        if os.access(mount, os.W_OK) and not os.statvfs(mount).f_flag & os.ST_RDONLY:
            pytest.skip("the bind mount is not read-only here")
        for argv in (["train", "--resume", str(mount), "--epochs", "2", "--no-progress"], ["evaluate", str(mount)]):
            capsys.readouterr()
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert _one_error_line(err) and "read-only" in err or "not writable" in err, err
            assert "epoch" not in err.split("error:")[0] and "classifier" not in err
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_an_overlong_path_is_one_line(tmp_path, capsys):
    assert main(["train", *TINY, "--out", str(tmp_path / ("x" * 5000))]) == 2
    assert "too long" in _one_error_line(capsys.readouterr().err)


# ---------------------------------------------------------------------------------------------
# the decompression cache


def _cached(name: str) -> Path:
    (path,) = (data.cache_dir() / "idx").rglob(name)
    return path


def test_a_tampered_or_truncated_cached_file_is_rebuilt_and_what_was_read_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("PYRO_VAE_CACHE", str(tmp_path / "cache"))
    good = data.load("mnist", test_limit=50)
    cached = _cached("t10k-images-idx3-ubyte")
    truth = hashlib.sha256(gzip.decompress((DATA_ROOT / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz").read_bytes())).hexdigest()
    assert good.provenance["test_file"]["images_content_sha256"] == truth
    blob = bytearray(cached.read_bytes())
    blob[-5000:] = bytes(255 - b for b in blob[-5000:])  # same size, other pixels
    cached.write_bytes(bytes(blob))
    again = data.load("mnist", test_limit=50)
    assert torch.equal(again.test_x, good.test_x) and torch.equal(again.train_x, good.train_x)
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == truth  # rebuilt from the .gz
    cached.write_bytes(cached.read_bytes()[:-1000])  # truncated: rebuilt too, never blamed on the good .gz
    assert torch.equal(data.load("mnist", test_limit=50).test_x, good.test_x)
    assert again.provenance["test_file"]["images_content_sha256"] == truth


def test_the_recorded_content_hash_is_of_the_bytes_actually_read(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(gzip.decompress((DATA_ROOT / "MNIST" / "raw" / f"{name}.gz").read_bytes()))
    plain = bytearray((raw / "t10k-images-idx3-ubyte").read_bytes())
    plain[-1] ^= 0xFF
    (raw / "t10k-images-idx3-ubyte").write_bytes(bytes(plain))
    loaded = data.load("mnist", tmp_path)
    assert loaded.provenance["test_file"]["images_content_sha256"] == hashlib.sha256(bytes(plain)).hexdigest()


def test_evaluate_refuses_a_config_whose_data_hash_differs(one_epoch, capsys):
    record = json.loads((one_epoch / "config.json").read_text())
    record["data"]["test_file"]["images_content_sha256"] = "f" * 64
    (one_epoch / "config.json").write_text(json.dumps(record))
    capsys.readouterr()
    assert main(["evaluate", str(one_epoch)]) == 2
    assert "differs from the data" in _one_error_line(capsys.readouterr().err)
    assert not (one_epoch / "evaluation.json").exists()


# ---------------------------------------------------------------------------------------------
# messages that misled


def test_nan_in_the_first_epoch_says_no_checkpoint_was_written(tmp_path, monkeypatch):
    from pyro_vae.training import trainer as train_mod

    real_build = train_mod.build_objective

    class Poisoned:
        def __init__(self, inner):
            self.inner = inner

        def differentiable_loss(self, model, guide, x):
            return self.inner.differentiable_loss(model, guide, x) * float("nan")

    monkeypatch.setattr(train_mod, "build_objective", lambda cfg: Poisoned(real_build(cfg)))
    with pytest.raises(DivergedError, match="of epoch 1; no epoch finished, so .* holds no checkpoint") as e:
        train(small_config(), tmp_path / "run", progress=False, log=quiet)
    assert "epoch 0" not in str(e.value) and not (tmp_path / "run" / "checkpoint.pt").exists()


def test_beta_inf_is_refused_before_training(capsys, tmp_path):
    assert main(["train", *TINY, "--beta", "inf", "--out", str(tmp_path / "o")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "beta must be a finite number, got inf" in line and "--lr" not in line


def test_a_cuda_run_resumes_on_the_cpu_with_device(one_epoch, capsys):
    record = json.loads((one_epoch / "config.json").read_text())
    record["config"]["device"] = "cuda"
    (one_epoch / "config.json").write_text(json.dumps(record))
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal without --device cannot be shown")
    capsys.readouterr()
    assert main(["train", "--resume", str(one_epoch), "--epochs", "2", "--no-progress"]) == 2
    assert "--device cpu" in _one_error_line(capsys.readouterr().err)
    assert main(["train", "--resume", str(one_epoch), "--epochs", "2", "--device", "cpu", "--no-progress"]) == 0
    assert [m["epoch"] for m in runs.read_metrics(one_epoch)] == [1, 2]
    assert json.loads((one_epoch / "config.json").read_text())["config"]["device"] == "cuda"  # what it was made on


def test_a_damaged_evaluation_json_says_to_delete_it_and_evaluate_again(one_epoch):
    from pyro_vae.evaluation.evaluate import read_evaluation

    for damage in (b'{"metrics": {"a"', b"\xff\xfe", b"[]"):
        (one_epoch / "evaluation.json").write_bytes(damage)
        with pytest.raises(UserError, match=f"delete it and run `pyro-vae evaluate {one_epoch}`") as e:
            read_evaluation(one_epoch)
        assert "\n" not in str(e.value)


@pytest.mark.slow
def test_ctrl_c_in_evaluate_does_not_talk_of_epochs(one_epoch):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    # A shell's background job (nohup, `&`) inherits SIGINT ignored, and Python then installs no
    # KeyboardInterrupt handler: give the child the default disposition, as a terminal's would have.
    p = subprocess.Popen([sys.executable, "-m", "pyro_vae.cli", "evaluate", str(one_epoch)], stderr=subprocess.PIPE, text=True, env=env,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in p.stderr:  # interrupt once the evaluation is under way
        if "sample-quality classifier" in line:
            break
    p.send_signal(signal.SIGINT)
    err = p.stderr.read()
    assert p.wait(timeout=60) == 130, err
    assert "pyro-vae: interrupted; no file was left half-written (run the command again)" in err
    assert "epoch" not in err and "--resume" not in err and "Traceback" not in err
    assert not [q for q in one_epoch.iterdir() if q.name.endswith(".tmp") or q.name == runs.LOCK]


# ---------------------------------------------------------------------------------------------
# a study whose variants use different data


@pytest.mark.slow
def test_each_run_is_evaluated_on_its_own_data_and_the_report_lists_it(tmp_path):
    from pyro_vae.report.build import build_report
    from pyro_vae.study.runner import run_study
    from pyro_vae.study.spec import Study

    # The other variant's data: Fashion-MNIST where the complete data is present, else MNIST's sample
    # with the train/test split carved by another seed (other images, other test labels).
    other_split_seed = 0 if HAVE_FULL_DATA else 1
    study = Study.from_dict({
        "name": "mixed", "seeds": [0],
        "base": {"epochs": 1, "train_limit": 300, "hidden_dim": 16, "batch_size": 100},
        "variants": {"digits": {"dataset": "mnist", "test_limit": 60},
                     "other": {"dataset": SLICE_DATASET, "split_seed": other_split_seed, "test_limit": 80, "latent_dim": 10}},
        "evaluation": {"num_samples": 5, "generated": 50, "pairs": 20, "likelihood_images": 20},
    }, "mixed.toml")
    runs_dir = run_study(study, tmp_path / "runs", progress=False, log=quiet)
    for variant, count, dataset, split_seed in (("digits", 60, "mnist", 0), ("other", 80, SLICE_DATASET, other_split_seed)):
        run = study.run_dir(runs_dir, variant, 0)
        cfg, record = runs.read_config(run)
        own = data.load(dataset, train_limit=300, test_limit=count, split_seed=split_seed)
        import numpy as np

        arrays = np.load(run / "evaluation.npz")
        assert len(arrays["labels"]) == count and np.array_equal(arrays["labels"], own.test_y.numpy())
    html = build_report(runs_dir, tmp_path / "report", log=quiet).read_text()
    assert "digits seed 0" in html and "other seed 0" in html and SLICE_DATASET in html
    assert "300 training / 60 test images" in html and "300 training / 80 test images" in html


@contextlib.contextmanager
def _held(folder):
    """Another process holding `folder`'s lock for the duration of the block; yields its pid."""
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pyro_vae.training import runs\n"
                               "with runs.locked(sys.argv[1]):\n    print('locked', flush=True); time.sleep(60)", str(folder)],
                              stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


def test_a_second_study_on_a_locked_study_folder_names_the_holder(tmp_path, capsys):
    folder = tmp_path / "runs"
    with _held(folder) as pid:
        capsys.readouterr()
        assert main(["study", str(REPO / "studies" / "ae_vs_vae.toml"), "--out", str(folder), "--no-progress"]) == 2
        assert f"in use by process {pid}" in _one_error_line(capsys.readouterr().err)
        assert sorted(p.name for p in folder.iterdir()) == [runs.LOCK]  # no study.json written


def test_a_report_while_another_process_holds_the_study_folder_names_the_holder(tmp_path, capsys):
    folder = tmp_path / "runs"
    folder.mkdir()
    (folder / "study.json").write_text("{}")
    with _held(folder) as pid:
        capsys.readouterr()
        assert main(["report", str(folder), "--out", str(tmp_path / "report")]) == 2
        assert f"in use by process {pid}" in _one_error_line(capsys.readouterr().err)
        assert not (tmp_path / "report").exists() and (folder / "study.json").read_text() == "{}"
