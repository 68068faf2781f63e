"""--tensorboard: event files in RUN_DIR/tensorboard/, read back with TensorBoard's own reader."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pyro_vae.cli import main

REPO = Path(__file__).resolve().parents[2]
SMALL = ["--train-limit", "500", "--test-limit", "200", "--batch-size", "100", "--hidden-dim", "32", "--no-progress"]

pytestmark = pytest.mark.usefixtures("one_thread")


def events(run: Path):
    from pyro_vae.training.tensorboard import require

    require()  # the reader too, on TensorBoard's TensorFlow stub
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def test_event_files_hold_the_curves_and_images(tmp_path, capsys):
    pytest.importorskip("tensorboard", reason="needs the tensorboard extra: pip install -e '.[tensorboard]'")
    assert main(["train", "--epochs", "2", "--tensorboard", "--out", str(tmp_path / "tb"), *SMALL]) == 0
    assert main(["train", "--epochs", "2", "--out", str(tmp_path / "plain"), *SMALL]) == 0
    capsys.readouterr()
    metrics = [json.loads(line) for line in (tmp_path / "tb" / "metrics.jsonl").read_text().splitlines()]
    plain = [json.loads(line) for line in (tmp_path / "plain" / "metrics.jsonl").read_text().splitlines()]
    assert [m["train_elbo"] for m in metrics] == [m["train_elbo"] for m in plain]  # writing events changes no number

    acc = events(tmp_path / "tb")
    scalars = set(acc.Tags()["scalars"])
    assert {"bound/train", "bound/test", "reconstruction/train", "reconstruction/test", "kl/train", "kl/test",
            "train/learning_rate", "train/epoch_seconds", "train/beta"} <= scalars
    for tag, key in (("bound/train", "train_elbo"), ("bound/test", "test_elbo"), ("train/epoch_seconds", "epoch_seconds")):
        logged = acc.Scalars(tag)
        assert [e.step for e in logged] == [1, 2]
        assert [e.value for e in logged] == pytest.approx([m[key] for m in metrics], rel=1e-6)
    assert [e.value for e in acc.Scalars("train/learning_rate")] == pytest.approx([1e-3, 1e-3])
    # The terms make the (negative) bound: reconstruction + KL is about -ELBO on the test images.
    for e_rec, e_kl, m in zip(acc.Scalars("reconstruction/test"), acc.Scalars("kl/test"), metrics):
        assert e_kl.value > 0 and e_rec.value > 50
        assert e_rec.value + e_kl.value == pytest.approx(-m["test_elbo"], rel=0.05)
    for tag in ("images/prior_samples", "images/reconstructions"):
        images = acc.Images(tag)
        assert [i.step for i in images] == [1, 2] and images[0].width > 200 and images[0].encoded_image_string[:4] == b"\x89PNG"

    # --force replaces a run with its event files; a foreign file still stops it
    assert main(["train", "--epochs", "1", "--force", "--out", str(tmp_path / "tb"), *SMALL]) == 0
    assert not (tmp_path / "tb" / "tensorboard").exists()


def test_a_run_stopped_on_its_plateau_gets_its_last_images(tmp_path, capsys):
    pytest.importorskip("tensorboard", reason="needs the tensorboard extra: pip install -e '.[tensorboard]'")
    plateau = ["--plateau-patience", "1", "--plateau-delta", "1e6", "--plateau-cuts", "1"]  # stops at epoch 3
    assert main(["train", "--epochs", "30", "--tensorboard", "--out", str(tmp_path / "tb"), *plateau, *SMALL]) == 0
    acc = events(tmp_path / "tb")
    assert [e.step for e in acc.Scalars("bound/test")] == [1, 2, 3]
    assert [e.value for e in acc.Scalars("train/learning_rate")] == pytest.approx([1e-3, 1e-3, 3e-4])
    assert [i.step for i in acc.Images("images/prior_samples")] == [1, 3]


def test_without_tensorboard_the_flag_is_a_one_line_error(tmp_path):
    code = ("import sys; sys.modules['tensorboard'] = None; from pyro_vae.cli import main; "
            f"sys.exit(main(['train', '--tensorboard', '--out', {str(tmp_path / 'r')!r}, *{SMALL!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "--tensorboard needs the tensorboard package: pip install 'pyro-vae[tensorboard]'" in done.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="checks a TensorFlow install (pyro-vae[keras])")
def test_tensorboard_logging_keeps_an_installed_tensorflow_out_of_the_training_process(tmp_path):
    pytest.importorskip("tensorboard", reason="needs the tensorboard extra: pip install -e '.[tensorboard]'")
    # TensorBoard imports a TensorFlow it finds, and TensorFlow inside a torch training process crashed it
    # (a segmentation fault in the first epoch of examples/plugins/study.toml)
    code = ("import sys; from pyro_vae.cli import main; "
            f"code = main(['train', '--epochs', '1', '--tensorboard', '--out', {str(tmp_path / 'r')!r}, *{SMALL!r}]); "
            "print('tensorflow loaded:', 'tensorflow' in sys.modules); sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "tensorflow loaded: False" in done.stdout
    assert any((tmp_path / "r" / "tensorboard").glob("events.out.tfevents.*"))
