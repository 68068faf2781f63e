import hashlib
import json

import pytest
import torch
from conftest import HAVE_FULL_DATA, small_config

from pyro_vae.errors import DivergedError, UserError
from pyro_vae.training import runs
from pyro_vae.training.runs import load_run
from pyro_vae.training.trainer import resume, train


def quiet(msg):
    pass


def test_a_few_hundred_steps_lower_the_loss_clearly(tmp_path):
    cfg = small_config(epochs=6, train_limit=3000, batch_size=64, lr=2e-3)  # 6 x 47 = 282 steps
    run = train(cfg, tmp_path / "run", progress=False, log=quiet)
    metrics = runs.read_metrics(run)
    assert [m["epoch"] for m in metrics] == list(range(1, 7))
    first, last = metrics[0], metrics[-1]
    assert last["test_elbo"] > first["test_elbo"] + 10, metrics
    assert last["train_elbo"] > first["train_elbo"] + 20, metrics
    assert -220 < last["test_elbo"] < -120  # a 2-D MNIST VAE lands here, nowhere near 0 or -544 (uniform pixels)


def test_run_folder_contents(tmp_path):
    run = train(small_config(guide="delta", beta=0.0), tmp_path / "ae", progress=False, log=quiet)
    # On the official split (the complete data) nothing more; on the split carved from the sample, its indices.
    carved = [] if HAVE_FULL_DATA else ["split.json"]
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "config.json", "metrics.jsonl", *carved]
    record = json.loads((run / "config.json").read_text())
    assert record["config"]["guide"] == "delta" and record["config"]["beta"] == 0.0
    assert record["data"]["origin"] == "PYRO_VAE_DATA"
    if HAVE_FULL_DATA:
        assert record["data"]["split"] == "official train/test files"
    else:
        assert record["data"]["split"].startswith("carved from the test file only")
        split = json.loads((run / "split.json").read_text())
        assert len(split["train"]) == 1000 and len(split["test"]) == 300
    assert record["data"]["train_count"] == 1000 and record["data"]["test_count"] == 300
    assert {"torch", "pyro", "torchvision", "python", "pyro_vae"} <= set(record["versions"])
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1 and set(state) == {"epoch", "model", "optimizer", "rng", "metrics", "run_id"}
    assert state["run_id"] == record["run_id"] and len(record["run_id"]) == 32
    assert state["metrics"] == runs.read_metrics(run)[0]  # the checkpoint carries its epoch's line
    loaded = load_run(run)
    x = torch.rand(5, 784)
    assert torch.equal(loaded.encode(x)[0], loaded.encode(x)[0]) and loaded.sample(4).shape == (4, 784)


def test_a_carved_split_is_written_to_split_json(tmp_path, test_split_only_root):
    cfg = small_config(data_dir=str(test_split_only_root))
    run = train(cfg, tmp_path / "vae", progress=False, log=quiet)
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "config.json", "metrics.jsonl", "split.json"]
    record = json.loads((run / "config.json").read_text())
    assert record["data"]["origin"] == "--data-dir" and "carved" in record["data"]["split"]
    split = json.loads((run / "split.json").read_text())
    assert len(split["train"]) == 1000 and len(split["test"]) == 300
    assert not set(split["train"]) & set(split["test"]) and max(split["train"] + split["test"]) < 10000


def test_resume_gives_identical_parameters(tmp_path):
    cfg = small_config(epochs=2)
    straight = train(cfg, tmp_path / "straight", progress=False, log=quiet)
    cfg.epochs = 1
    split = train(cfg, tmp_path / "split", progress=False, log=quiet)
    resume(split, epochs=2, progress=False, log=quiet)
    a = torch.load(straight / "checkpoint.pt", weights_only=True)
    b = torch.load(split / "checkpoint.pt", weights_only=True)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert runs.read_metrics(straight) == [dict(m, epoch_seconds=s["epoch_seconds"]) for m, s in zip(runs.read_metrics(split), runs.read_metrics(straight))]
    assert json.loads((split / "config.json").read_text())["config"]["epochs"] == 2


def test_same_seed_same_numbers_other_seed_other_numbers(tmp_path):
    a = runs.read_metrics(train(small_config(), tmp_path / "a", progress=False, log=quiet))
    b = runs.read_metrics(train(small_config(), tmp_path / "b", progress=False, log=quiet))
    c = runs.read_metrics(train(small_config(seed=1), tmp_path / "c", progress=False, log=quiet))
    assert a[0]["test_elbo"] == b[0]["test_elbo"] and a[0]["train_elbo"] == b[0]["train_elbo"]
    assert a[0]["test_elbo"] != c[0]["test_elbo"]


def test_non_empty_folder_needs_force(tmp_path):
    run = train(small_config(), tmp_path / "run", progress=False, log=quiet)
    with pytest.raises(UserError, match="not empty; pass --force"):
        train(small_config(), run, progress=False, log=quiet)
    train(small_config(seed=3), run, force=True, progress=False, log=quiet)
    assert json.loads((run / "config.json").read_text())["config"]["seed"] == 3
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("precious")
    with pytest.raises(UserError, match=r"holds files that are not part of a run \(notes.txt\)"):
        train(small_config(), other, force=True, progress=False, log=quiet)
    assert (other / "notes.txt").read_text() == "precious"


def test_force_never_deletes_what_is_not_a_run_file(tmp_path):
    """A folder with a config.json and a source tree is not a run: --force refuses it whole."""
    p = tmp_path / "p"
    (p / "src").mkdir(parents=True)
    (p / "src" / "main.py").write_text("x")
    (p / "config.json").write_text("{}")
    before = {f: f.read_bytes() for f in p.rglob("*") if f.is_file()}
    with pytest.raises(UserError, match=r"not part of a run \(src\)"):
        train(small_config(), p, force=True, progress=False, log=quiet)
    assert {f: f.read_bytes() for f in p.rglob("*") if f.is_file()} == before


def test_a_second_process_on_a_locked_run_folder_gets_a_one_line_error(tmp_path):
    import subprocess
    import sys

    run = train(small_config(), tmp_path / "run", progress=False, log=quiet)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pyro_vae.training import runs\n"
         "with runs.locked(sys.argv[1]):\n    print('locked', flush=True); time.sleep(60)", str(run)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = (run / "checkpoint.pt").read_bytes()
        for attempt in (lambda: resume(run, 2, progress=False, log=quiet),
                        lambda: train(small_config(), run, force=True, progress=False, log=quiet)):
            with pytest.raises(UserError, match=f"in use by process {holder.pid}") as e:
                attempt()
            assert "\n" not in str(e.value)
        assert (run / "checkpoint.pt").read_bytes() == before
    finally:
        holder.kill()
        holder.wait()
    # the kernel released the dead holder's lock: the folder is usable again
    resume(run, 2, progress=False, log=quiet)
    assert len(runs.read_metrics(run)) == 2 and not (run / runs.LOCK).exists()


def test_leftover_temporary_files_are_swept_when_a_run_folder_is_opened(tmp_path):
    run = train(small_config(), tmp_path / "run", progress=False, log=quiet)
    orphan = run / ".checkpoint.pt.abc123.tmp"
    orphan.write_bytes(b"half a checkpoint")
    resume(run, 2, progress=False, log=quiet)
    assert not orphan.exists()


def test_an_interrupted_atomic_write_leaves_no_temporary_file_and_the_old_file_intact(tmp_path):
    import errno

    from pyro_vae.io import WriteError, atomic_write

    target = tmp_path / "checkpoint.pt"
    target.write_bytes(b"good")

    def full_disk(f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(WriteError, match=f"cannot write {target}: the disk is full"):
        atomic_write(target, full_disk)
    assert target.read_bytes() == b"good" and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_resume_refuses_fewer_epochs_than_trained(tmp_path):
    run = train(small_config(epochs=2), tmp_path / "run", progress=False, log=quiet)
    config = (run / "config.json").read_bytes()
    with pytest.raises(UserError, match="has trained 2 epochs already"):
        resume(run, 1, progress=False, log=quiet)
    assert (run / "config.json").read_bytes() == config


def test_bad_data_leaves_an_existing_run_untouched(tmp_path):
    run = train(small_config(), tmp_path / "run", progress=False, log=quiet)
    before = (run / "checkpoint.pt").read_bytes()
    with pytest.raises(UserError):
        train(small_config(data_dir=str(tmp_path / "nowhere")), run, force=True, progress=False, log=quiet)
    assert (run / "checkpoint.pt").read_bytes() == before


def test_nan_stops_with_step_and_epoch_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    run = train(small_config(), tmp_path / "run", progress=False, log=quiet)
    digest = hashlib.sha256((run / "checkpoint.pt").read_bytes()).hexdigest()
    from pyro_vae.training import trainer as train_mod

    real_build = train_mod.build_objective

    class PoisonedAtStep3:
        def __init__(self, inner):
            self.inner, self.calls = inner, 0

        def differentiable_loss(self, model, guide, x):
            loss = self.inner.differentiable_loss(model, guide, x)
            self.calls += 1
            return loss * float("nan") if self.calls == 3 else loss

    monkeypatch.setattr(train_mod, "build_objective", lambda cfg: PoisonedAtStep3(real_build(cfg)))
    with pytest.raises(DivergedError, match="loss became nan at step 3 of epoch 2; the checkpoint of epoch 1"):
        resume(run, epochs=2, progress=False, log=quiet)
    assert hashlib.sha256((run / "checkpoint.pt").read_bytes()).hexdigest() == digest
    assert [m["epoch"] for m in runs.read_metrics(run)] == [1]
    assert not [p for p in run.iterdir() if ".tmp" in p.name]


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(UserError, match="config.json does not exist"):
        resume(run, progress=False, log=quiet)


def test_kl_annealing_raises_beta_linearly(tmp_path):
    run = train(small_config(epochs=4, beta_warmup_epochs=3, beta=0.5), tmp_path / "run", progress=False, log=quiet)
    assert [m["beta"] for m in runs.read_metrics(run)] == [0.5 / 3, 0.5 * 2 / 3, 0.5, 0.5]


def test_flushing_denormals_changes_no_loss_or_gradient_on_a_fixed_batch(mnist_small):
    import pyro

    from pyro_vae.model import build_vae
    from pyro_vae.training.numerics import flush_denormals

    cfg = small_config()
    x = torch.bernoulli(mnist_small.train_x[:200], generator=torch.Generator().manual_seed(0))

    def loss_and_grads():
        pyro.set_rng_seed(0)
        vae = build_vae(cfg)
        loss = pyro.infer.Trace_ELBO().differentiable_loss(vae.model, vae.guide, x)
        return loss.detach(), [g.clone() for g in torch.autograd.grad(loss, list(vae.parameters()))]

    plain_loss, plain_grads = loss_and_grads()
    with flush_denormals():
        flushed_loss, flushed_grads = loss_and_grads()
        assert torch.tensor(1e-40) * 1 == 0  # the setting is on inside the block
    assert torch.tensor(1e-40) * 1 != 0  # and off again after it
    assert torch.equal(plain_loss, flushed_loss)
    assert all(torch.allclose(a, b, rtol=0, atol=1e-30) for a, b in zip(plain_grads, flushed_grads))


def test_a_failed_metrics_write_is_told_truly_and_resume_restores_the_line(tmp_path, monkeypatch):
    """The checkpoint of epoch 2 is written, its metrics line is not (a full disk, say): the message says
    so, and --resume puts the line back from the checkpoint, so metrics.jsonl has no gap."""
    from pyro_vae.io import WriteError

    real = runs.append_metrics

    def failing(run, line):
        if line["epoch"] == 2:
            raise WriteError(f"cannot write {run / runs.METRICS}: No space left on device")
        real(run, line)

    monkeypatch.setattr(runs, "append_metrics", failing)
    with pytest.raises(WriteError, match="the checkpoint of epoch 2 was written, its line in metrics.jsonl was not"):
        train(small_config(epochs=3), tmp_path / "run", progress=False, log=quiet)
    assert [m["epoch"] for m in runs.read_metrics(tmp_path / "run")] == [1]
    lost = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["metrics"]
    monkeypatch.setattr(runs, "append_metrics", real)
    resume(tmp_path / "run", progress=False, log=quiet)
    metrics = runs.read_metrics(tmp_path / "run")
    assert [m["epoch"] for m in metrics] == [1, 2, 3] and metrics[1] == lost


def test_written_files_get_the_modes_plain_files_get(tmp_path):
    """Atomic writes go through mkstemp (0600); the file renamed into place has open()'s mode instead,
    so a report or run folder can be shared like any other file."""
    import os

    from pyro_vae.io import atomic_write_bytes

    from pyro_vae import io

    old = os.umask(0o022)
    io._default_mode.cache_clear()  # the umask is read once per process
    try:
        path = atomic_write_bytes(tmp_path / "report.md", b"# hi\n")
    finally:
        os.umask(old)
        io._default_mode.cache_clear()
    assert path.read_bytes() == b"# hi\n" and (path.stat().st_mode & 0o777) == 0o644
