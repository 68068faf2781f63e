"""`pyro-vae bench` and the training hot loop it measures.

No timing is asserted here (the machine is shared): only that the bench runs and reports, and that
its comparison is fair, i.e. the reference loop computes the project's loss and gradients.
"""

import argparse
import json
import math

import pytest
import torch
from conftest import SLICE_DATASET
from loss_check import assert_reference_matches

from pyro_vae.bench.options import DEFAULT_VARIANTS, Options, add_arguments
from pyro_vae.bench.study import bench_study, summarise_modes
from pyro_vae.bench.tables import table_rows
from pyro_vae.bench.targets import TARGET_STUDY_BYTES
from pyro_vae.bench.throughput import build_pair
from pyro_vae.cli import main

STUDY = """
name = "tiny"
seeds = [0]
[base]
dataset = "mnist"
epochs = 1
batch_size = 100
train_limit = 300
test_limit = 100
[variants.VAE]
guide = "gaussian"
[evaluation]
num_samples = 10
likelihood_images = 20
generated = 50
pairs = 20
"""


def quiet(msg):
    pass


def small_options(**overrides) -> Options:
    values = dict(device="cpu", threads=1, train_images=600, conv_images=128, repeats=1, eval_images=60, num_samples=30, quiet=True)
    values.update(overrides)
    return Options(**values).validate()


@pytest.fixture(scope="module")
def images():
    """600 real training images: Fashion-MNIST (the bench's default) where present, else the sample's MNIST."""
    from pyro_vae import data

    return data.load(SLICE_DATASET, train_limit=600, test_limit=60)


def test_quick_bench_writes_the_table_and_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["bench", "--quick", "--dataset", SLICE_DATASET, "--threads", "1", "--train-images", "512", "--conv-images", "128", "--repeats", "1",
                 "--eval-images", "60", "--num-samples", "30", "--json", str(out), "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "train vae: project/reference" in printed and "batching: wait+gather" in printed and "batching: one binarisation draw" in printed and "eval grid" in printed
    report = json.loads(out.read_text())
    assert {"meta", "startup", "train", "batching", "eval", "study", "table"} <= set(report)
    startup = report["startup"]["items"]
    assert "startup: pyro-vae --help" in printed and list(startup) == ["pyro-vae --help", "pyro-vae train --epochs two (an argument error)"]
    assert startup["pyro-vae --help"]["exit_codes"] == [0] and startup["pyro-vae train --epochs two (an argument error)"]["exit_codes"] == [2]
    assert all(0 < r["median"] and isinstance(r["met"], bool) for r in startup.values())
    assert report["study"] is None and report["meta"]["device"] == "cpu" and report["meta"]["threads"] == 1
    assert list(report["train"]) == DEFAULT_VARIANTS
    for name, r in report["train"].items():
        for side in ("project", "reference"):
            assert r[side]["median"] > 0 and r[side]["min"] <= r[side]["median"] <= r[side]["max"], (name, side)
            assert r[side]["images_per_second"] > 0 and r[side]["first_epoch_seconds"] > 0
        assert r["ratio"] > 0 and r["images"] == (128 if name == "conv" else 512)
    assert report["train"]["vae"]["jit"] and not report["train"]["vae-eager"]["jit"] and report["train"]["ae"]["jit"]
    assert report["train"]["vae"]["target"] == pytest.approx(1.10) and isinstance(report["train"]["vae"]["met"], bool)
    b = report["batching"]
    assert b["total"]["median"] > 0 and 0 < b["share"] < 1 and b["binarise"]["median"] > 0 and b["gather"]["median"] > 0
    assert b["wait"]["median"] >= 0 and b["total"]["median"] == pytest.approx(b["wait"]["median"] + b["gather"]["median"], rel=0.5)
    e = report["eval"]
    assert e["images"] == 60 and e["num_samples"] == 30 and not e["targets_apply"]
    assert e["importance"]["median"] > 0 and math.isfinite(e["importance"]["mean_log_px"]) and e["importance"]["mean_log_px"] < 0
    assert e["floor"]["decoder_and_loglik_seconds"] > 0 and e["floor"]["decoder_matmul_flops"] == 2 * (2 * 400 + 400 * 784) * 60 * 30
    assert e["grid"]["median"] > 0 and e["grid"]["grid_points"] > 0 and e["grid"]["mean_log_px"] < 0
    # The exact log-likelihood is above the importance-sampling bound (up to the bound's noise).
    assert e["is_minus_grid_nats"] < 1.0
    assert all(set(row) == {"item", "median", "spread", "ratio", "target", "met", "note"} for row in report["table"])


def _options(*argv: str) -> Options:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return Options.from_args(p.parse_args(list(argv)))


def test_flags_and_fields_are_one_list():
    """Without flags the options are the dataclass defaults; --quick changes only the sizes it names."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    assert _options() == Options(device=device)
    quick = _options("--quick")
    assert (quick.train_images, quick.conv_images, quick.repeats, quick.eval_images, quick.num_samples) == (2000, 256, 2, 200, 100)
    assert _options("--quick", "--repeats", "5", "--train-images", "300").repeats == 5
    given = _options("--variants", " vae, ae ", "--run", "somewhere", "--no-eval", "--study-timeout", "9")
    assert given.variants == ["vae", "ae"] and given.run_dir == "somewhere" and not given.eval and given.study_timeout == 9.0
    assert _options("--variants", "").variants == []


def test_cuda_without_a_gpu_is_a_clear_error(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["bench", "--quick", "--device", "cuda"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


def test_unknown_variant_is_a_clear_error(capsys):
    assert main(["bench", "--quick", "--variants", "vae,gan"]) == 2
    assert "unknown variant(s) 'gan'" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["vae", "ae", "meanfield", "conv"])
def test_reference_computes_the_projects_loss_and_gradients(images, name):
    """Same weights, same batch, same noise: the plain-PyTorch loss is the project's loss."""
    count = 128 if name == "conv" else 600
    trainer, reference = build_pair(small_options(dataset=SLICE_DATASET), name, images, count, quiet)
    x = trainer.binarization.train(trainer.train_x[:64], 0, 1)
    assert_reference_matches(trainer, reference, x, what=name)
    assert trainer.jit_active == (name != "meanfield")


def test_study_item_measures_the_child_process(tmp_path):
    study = tmp_path / "tiny.toml"
    study.write_text(STUDY)
    result = bench_study(small_options(study=str(study), study_out=str(tmp_path / "runs")), quiet)
    assert result["returncode"] == 0, result["output_tail"]
    assert result["wall_seconds"] > 0 and result["cpu_seconds"] > 0 and not result["timed_out"]
    assert 50 * 2**20 < result["peak_rss_bytes"] < TARGET_STUDY_BYTES and result["met_memory"]
    assert (tmp_path / "runs" / "VAE" / "seed-0" / "checkpoint.pt").exists()
    modes = {mode: {**result, "wall_seconds": wall} for mode, wall in (("workers 1", 300.0), ("workers 2", 180.0), ("ray", 189.0))}
    summary = summarise_modes(modes, runs=9)
    assert summary["speedup_workers_2"] == pytest.approx(300 / 180)
    assert summary["ray_overhead_per_run"] == pytest.approx(2 * 9 / 9)  # (189 - 180) s over 9 runs in 2 slots
    # 300 runs on 10 two-core workers: 15 waves of (40 s per run + 2 s overhead); on 100: 2 waves.
    assert summary["projection"] == {10: pytest.approx(15 * 42.0), 100: pytest.approx(2 * 42.0)}
    rows = table_rows({"study": summary})
    assert [r["item"] for r in rows] == ["study --workers 1: wall time", "study --workers 2: wall time", "study --ray: wall time",
                                         "study: peak memory (max RSS)", "study: --workers 2 speed-up", "study: Ray overhead per run",
                                         "study: 300 runs on 10 two-core workers", "study: 300 runs on 100 two-core workers"]
    assert rows[4]["ratio"] == "1.67x" and rows[5]["median"] == "2 s"


@pytest.mark.slow
def test_peers_train_the_same_network_on_the_same_data_and_report_ratios_and_elbos(tmp_path, capsys):
    out = tmp_path / "peers.json"
    code = main(["bench", "--variants", "", "--no-eval", "--peers", "--dataset", SLICE_DATASET, "--train-images", "600", "--repeats", "1",
                 "--threads", "1", "--json", str(out), "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0 and "peer pyro-example: epoch" in printed
    peers = json.loads(out.read_text())["peers"]
    assert peers["epochs"] == 2 and peers["images"] == 600
    sides = peers["sides"]
    assert {"pyro-vae", "pyro-example"} <= set(sides) and sides["pyro-vae"]["ratio"] == 1.0
    for name, s in sides.items():
        assert s["epoch"]["median"] > 0 and s["ratio"] > 0, name
        # two epochs on 600 images: well above an untrained model's ELBO (about -550) and below 0
        assert -400 < s["test_elbo"] < 0, (name, s["test_elbo"])
    assert ("pythae" in sides) != ("pythae" in peers["skipped"])


def test_the_common_test_elbo_is_the_analytic_elbo():
    """On a model small enough to check by hand: one image, a known Gaussian posterior, a decoder with
    constant logits; the estimator must give log-likelihood minus the closed-form KL."""
    import torch

    from pyro_vae.bench.peers import test_elbo

    x = torch.tensor([[1.0, 0.0, 1.0]])
    loc, scale = torch.tensor([[0.5, -1.0]]), torch.tensor([[0.3, 2.0]])
    logits = torch.tensor([0.2, -0.4, 1.0])
    got = test_elbo(lambda xb: (loc, scale), lambda z: logits.expand(*z.shape[:-1], 3), x)
    kl = float(0.5 * (scale**2 + loc**2 - 1).sum() - scale.log().sum())
    loglik = float(-torch.nn.functional.binary_cross_entropy_with_logits(logits, x[0], reduction="sum"))
    assert got == pytest.approx(loglik - kl, abs=1e-5)


def test_the_twin_trains_beside_the_project_and_lands_near_it(tmp_path, capsys):
    out = tmp_path / "twin.json"
    code = main(["bench", "--variants", "", "--no-eval", "--twin", "--twin-epochs", "2", "--twin-seeds", "0,1",
                 "--twin-datasets", "mnist", "--train-images", "600", "--threads", "1", "--json", str(out), "--quiet"])
    assert code == 0 and "twin mnist: project - twin test ELBO" in capsys.readouterr().out
    twin = json.loads(out.read_text())["twin"]
    assert [(r["dataset"], r["seed"], r["epochs"]) for r in twin["rows"]] == [("mnist", 0, 2), ("mnist", 1, 2)]
    for r in twin["rows"]:
        # the same start, data and optimiser: after 2 short epochs the two differ by gradient noise only
        assert -400 < r["project"] < 0 and abs(r["difference"]) < 5, r
    s = twin["summary"]["mnist"]
    assert s["seeds"] == 2 and s["met"] == (abs(s["mean_difference"]) <= 0.5)


def test_twin_options_are_checked():
    assert main(["bench", "--twin", "--twin-seeds", "x"]) == 2
    assert main(["bench", "--twin", "--twin-datasets", "cifar", "--variants", "", "--no-eval"]) == 2
