"""The README's commands end to end, on small real data (slow: tens of seconds)."""

import json
import subprocess

import pytest

TINY_STUDY = """
name = "tiny"
seeds = [0, 1]
[base]
dataset = "mnist"
epochs = 2
train_limit = 800
test_limit = 300
[variants.AE]
guide = "delta"
beta = 0.0
[variants.VAE]
guide = "gaussian"
[compare]
baseline = "AE"
candidate = "VAE"
[claims.centre]
title = "Centred: {candidate} beats {baseline}"
primary = "gaussian_kl"
secondary = ["mean_norm", "share_in_95"]
min_seeds = 2
[evaluation]
num_samples = 30
generated = 200
pairs = 100
"""


def cli(*argv):
    return subprocess.run(["pyro-vae", *argv], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_study_then_report_from_the_command_line(tmp_path):
    study = tmp_path / "tiny.toml"
    study.write_text(TINY_STUDY)
    runs_dir = tmp_path / "runs"
    done = cli("study", str(study), "--out", str(runs_dir), "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "study tiny: 4 runs (2 variants x 2 seeds)" in done.stderr and "left" in done.stderr
    report = runs_dir / "report"
    for name in ("report.md", "report.html", "results.json", "results.csv"):
        assert (report / name).stat().st_size > 0, name
    rows = json.loads((report / "results.json").read_text())
    assert sorted((r["variant"], r["seed"]) for r in rows) == [("AE", 0), ("AE", 1), ("VAE", 0), ("VAE", 1)]
    checkpoint = runs_dir / "VAE" / "seed-0" / "checkpoint.pt"
    stamp = checkpoint.stat().st_mtime_ns
    # Running the study again trains nothing; `report` rebuilds without retraining.
    again = cli("study", str(study), "--out", str(runs_dir), "--no-progress")
    assert again.returncode == 0 and again.stderr.count("complete, skipped") == 4
    rebuilt = cli("report", str(runs_dir), "--out", str(tmp_path / "report2"))
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert checkpoint.stat().st_mtime_ns == stamp
    # The verdict the report states is the one the numbers give: paired t over the two seeds, by scipy alone.
    from scipy import stats

    kl = {(r["variant"], r["seed"]): r["evaluation"]["gaussian_kl"] for r in rows}
    improvement = [kl[("AE", s)] - kl[("VAE", s)] for s in (0, 1)]
    low, high = stats.ttest_1samp(improvement, 0.0).confidence_interval(0.95)
    outcome = "holds" if low > 0 else "fails" if high < 0 else "inconclusive"
    text = (tmp_path / "report2" / "report.md").read_text()
    assert f"> **Verdict: {outcome}** — primary test Gaussian KL to N(0,I) of VAE against AE" in text
    assert "2 seeds" in text.split("> **Verdict: ")[1].splitlines()[0]
    from pyro_vae.report.verdicts import MEANING

    assert f"- Claim 1 (Centred: VAE beats AE): **{outcome}** (2 seeds): {MEANING[outcome]}; primary test Gaussian KL" in text


@pytest.mark.slow
def test_study_refuses_a_changed_run(tmp_path):
    study = tmp_path / "tiny.toml"
    study.write_text(TINY_STUDY.replace("seeds = [0, 1]", "seeds = [0]").replace("[variants.VAE]\n", "[variants.VAE]\nlr = 0.01\n", 1))
    first = cli("train", "--guide", "gaussian", "--epochs", "1", "--train-limit", "800", "--test-limit", "300",
                "--out", str(tmp_path / "runs" / "VAE" / "seed-0"), "--no-progress")
    assert first.returncode == 0, first.stderr
    done = cli("study", str(study), "--out", str(tmp_path / "runs"), "--no-progress")
    assert done.returncode == 2 and "was trained with lr=0.001, the study now says 0.01" in done.stderr


@pytest.mark.slow
@pytest.mark.full_data
def test_readme_train_command_on_fashion_mnist(tmp_path):
    """`pyro-vae train --dataset fashion-mnist ...` on the full 60,000 images: the test bound improves."""
    done = cli("train", "--dataset", "fashion-mnist", "--guide", "delta", "--beta", "0", "--epochs", "2",
               "--out", str(tmp_path / "ae"), "--no-progress")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in (tmp_path / "ae" / "metrics.jsonl").read_text().splitlines()]
    assert lines[1]["test_elbo"] > lines[0]["test_elbo"]


@pytest.mark.slow
def test_quick_path_on_the_embedded_sample_then_loose_runs_report(tmp_path):
    """The README's first command as a newcomer runs it: no data configured (the download fails offline and
    the MNIST sample in the package is used), study overrides on the command line, then `report RUN...`."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "PYRO_VAE_DATA"}
    env["PYRO_VAE_CACHE"] = str(tmp_path / "cache")
    runs_dir = tmp_path / "quick"
    done = subprocess.run(["pyro-vae", "study", "studies/ae_vs_vae.toml", "--epochs", "1", "--seeds", "0", "--quick",
                           "--set", "train_limit=1500", "--set", "test_limit=400", "--out", str(runs_dir)],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    assert "study ae_vs_vae: 3 runs (3 variants x 1 seed), 3 epochs to train" in done.stderr
    assert done.stderr.count("download of mnist failed (Error downloading") == 1 and ".gz:)" not in done.stderr
    assert "\r" not in done.stderr  # stderr is a pipe: no progress-bar frames
    study = json.loads((runs_dir / "study.json").read_text())
    assert study["overrides"] == {"settings": {"train_limit": 1500, "test_limit": 400, "epochs": 1}, "seeds": [0],
                                  "evaluation": "quick"}
    assert study["seeds"] == [0] and study["base"]["epochs"] == 1
    for variant in ("AE", "MAP-AE", "VAE"):
        record = json.loads((runs_dir / variant / "seed-0" / "config.json").read_text())
        assert record["config"]["epochs"] == 1 and record["data"]["origin"] == "embedded"
    text = (runs_dir / "report" / "report.md").read_text().replace("\\_", "_")  # Markdown escapes underscores
    assert "EMBEDDED IN THE PACKAGE" in text and "Changed on the command line: train_limit → 1500, test_limit → 400, epochs → 1, seeds → 0, evaluation → the quick preset" in text
    assert text.count("**Verdict: not judged**") == 3 and "rests on 1 seed; needs at least 3" in text

    loose = cli("report", str(runs_dir / "AE" / "seed-0"), str(runs_dir / "VAE" / "seed-0"), "--out", str(tmp_path / "side"))
    assert loose.returncode == 0, loose.stderr
    side = (tmp_path / "side" / "report.md").read_text().replace("\\_", "_")
    assert "2 run folders compared side by side" in side and "AE-seed-0" in side and "VAE-seed-0" in side
