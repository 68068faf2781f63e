"""examples/plugins end to end, as a user runs them: a study whose variants each use one example plugin
(prior, guide, likelihood, objective, network) trains 1 epoch on a real MNIST slice, is evaluated and
reported, and a second process rebuilds the report from the run folders alone."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "plugins"
KINDS = {"student-t-prior": ("prior", "student-t"), "low-rank-guide": ("guide", "low-rank"),
         "robust-likelihood": ("likelihood", "robust-bernoulli"), "weighted-objective": ("objective", "weighted-elbo"),
         "deep-network": ("network", "deep-mlp")}


def pyro_vae(*argv) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "pyro_vae.cli", *map(str, argv)], capture_output=True, text=True, env=env,
                          timeout=900, cwd=REPO)


@pytest.mark.slow
def test_every_example_plugin_trains_evaluates_and_reports(tmp_path):
    pytest.importorskip("tensorboard", reason="needs the tensorboard extra: pip install -e '.[tensorboard]'")
    runs = tmp_path / "runs"
    done = pyro_vae("study", EXAMPLES / "study.toml", "--out", runs, "--tensorboard", "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    for variant, (kind, name) in KINDS.items():
        run = runs / variant / "seed-0"
        record = json.loads((run / "config.json").read_text())
        assert record["config"][kind] == name
        assert sorted(Path(r["path"]).name for r in record["plugins"]) == sorted(p.name for p in EXAMPLES.glob("*.py"))
        evaluation = json.loads((run / "evaluation.json").read_text())["metrics"]
        # one epoch on 1,000 images already beats a fair coin per pixel (784 log 2 = 543 nats)
        assert evaluation["epochs_trained"] == 1 and -784 * math.log(2) < evaluation["log_px_exact"] < -100, (variant, evaluation)
        assert any((run / "tensorboard").glob("events.out.tfevents.*"))
    report = runs / "report"
    assert all(v in (report / "report.md").read_text() for v in KINDS)
    explorer = (report / "explorer.html").read_text()
    assert all(f'"name":"{v}"' in explorer for v in KINDS) and (report / "explorer.html").stat().st_size < 5e6

    again = pyro_vae("report", runs, "--out", tmp_path / "again")  # a fresh process: the plugins come from config.json
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((tmp_path / "again" / "results.json").read_text()) == json.loads((report / "results.json").read_text())
