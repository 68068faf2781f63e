"""The public Python API (issue 23): `pyro_vae.train/load_run/evaluate/run_study/build_report` and a
Run's encode/decode/sample, on what a notebook has (torch or numpy, flat or square, uint8 or float),
with a one-line UserError for anything else; every public name documented."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import torch

import pyro_vae as pv
from pyro_vae.errors import UserError

TINY = dict(epochs=1, train_limit=500, test_limit=200, hidden_dim=32, batch_size=100)


@pytest.fixture(scope="module")
def run(tmp_path_factory, one_thread):
    return pv.train(out=tmp_path_factory.mktemp("api") / "vae", guide="gaussian", seed=0, progress=False, **TINY)


@pytest.fixture(scope="module")
def images(run):
    return run.data().test_x[:16]


def _one_line(e: pytest.ExceptionInfo) -> str:
    message = str(e.value)
    assert "\n" not in message and message, message
    return message


# ---------------------------------------------------------------------------------------------
# train, load_run


def test_train_from_keywords_returns_a_run_with_its_folder(run):
    assert isinstance(run, pv.Run) and run.epoch == 1
    assert [m["epoch"] for m in run.metrics()] == [1] and "test_elbo" in run.metrics()[0]
    assert (run.path / "config.json").is_file() and (run.path / "checkpoint.pt").is_file()
    config = json.loads((run.path / "config.json").read_text())["config"]
    assert (config["hidden_dim"], config["train_limit"], config["guide"]) == (32, 500, "gaussian")
    assert len(run.data().train_x) == 500 and len(run.data().test_x) == 200


def test_train_from_a_train_config_keywords_override_and_the_config_is_not_changed(tmp_path, one_thread):
    cfg = pv.TrainConfig(guide="delta", beta=0.0, **TINY, network_options={"activation": "relu"})
    run = pv.train(cfg, out=tmp_path / "ae", latent_dim=3, force=True, progress=False)
    assert run.config.guide == "delta" and run.config.latent_dim == 3 and run.metrics()[-1]["epoch"] == 1
    assert cfg.latent_dim == 2  # the caller's config is left as it was
    assert (tmp_path / "ae" / "checkpoint.pt").is_file()
    mean, scale = run.encode(run.data().test_x[:4])
    assert mean.shape == (4, 3) and torch.all(scale == 0)  # a delta guide: a point mass


def test_train_from_a_dict_and_a_toml_file(tmp_path, one_thread):
    toml = tmp_path / "ae.toml"
    toml.write_text('guide = "delta"\nbeta = 0.0\nepochs = 1\ntrain_limit = 500\ntest_limit = 200\nhidden_dim = 16\n')
    assert pv.train(toml, out=tmp_path / "t", progress=False).config.hidden_dim == 16
    assert pv.train({"latent_dim": 4, **TINY}, out=tmp_path / "d", progress=False).config.latent_dim == 4


@pytest.mark.parametrize("kwargs, message", [
    (dict(epoch=1), "unknown setting 'epoch' in train's keywords; did you mean 'epochs'?"),
    (dict(guide="normalish"), "unknown guide 'normalish'; choose one of"),
    (dict(latent_dim=0), "latent-dim must be at least 1, got 0"),
    (dict(lr=-0.1), "lr must be positive"),
    (dict(epochs=0), "epochs must be at least 1"),
    (dict(epochs="two"), "epochs must be a number"),
    (dict(prior="mixture", prior_options={"componentz": 3}), "unknown option 'componentz' for prior 'mixture'"),
])
def test_a_bad_keyword_is_a_one_line_error_and_writes_nothing(tmp_path, kwargs, message):
    with pytest.raises(UserError) as e:
        pv.train(out=tmp_path / "run", progress=False, **{**TINY, **kwargs})
    assert message in _one_line(e)
    assert not (tmp_path / "run").exists()


def test_train_needs_out_and_a_config_it_can_read(tmp_path):
    with pytest.raises(UserError) as e:
        pv.train(epochs=1)
    assert "out" in _one_line(e)
    with pytest.raises(UserError) as e:
        pv.train(["guide"], out=tmp_path / "x")
    assert "got list" in _one_line(e)
    with pytest.raises(UserError) as e:
        pv.train(tmp_path / "none.toml", out=tmp_path / "x")
    assert "does not exist" in _one_line(e)


def test_load_run_round_trip_gives_identical_encodes(run, images):
    again = pv.load_run(run.path)
    assert again.epoch == run.epoch and again.config == run.config
    for a, b in zip(run.encode(images), again.encode(images)):
        assert torch.equal(a, b)
    assert torch.equal(run.sample(8, seed=3), again.sample(8, seed=3))


def test_load_run_of_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(UserError) as e:
        pv.load_run(tmp_path)
    assert "config.json does not exist" in _one_line(e)


def test_resume_continues_to_the_new_total(tmp_path, one_thread):
    run = pv.train(out=tmp_path / "r", progress=False, **TINY)
    resumed = pv.resume(run, epochs=2, progress=False)
    assert resumed.epoch == 2 and [m["epoch"] for m in resumed.metrics()] == [1, 2]


# ---------------------------------------------------------------------------------------------
# encode, decode, sample


def test_encode_takes_every_shape_dtype_and_array_kind_alike(run):
    u8 = torch.randint(0, 256, (6, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    floats = u8.float() / 255
    reference = run.encode(floats.reshape(6, 784))
    assert reference[0].shape == (6, 2) and reference[1].shape == (6, 2)
    for x in (u8, u8.reshape(6, 784), u8.reshape(6, 1, 28, 28), u8.numpy(), floats, floats.reshape(6, 1, 28, 28),
              floats.numpy(), floats.double().numpy().reshape(6, 784), floats.double()):
        mean, scale = run.encode(x)
        assert torch.allclose(mean, reference[0], atol=1e-6) and torch.allclose(scale, reference[1], atol=1e-6), type(x)
        assert mean.dtype == torch.float32
    assert torch.allclose(run.encode(floats.half())[0], reference[0], atol=1e-2)  # float16 rounds the pixels
    assert run.sample_posterior(u8, seed=1).shape == (6, 2)
    assert torch.equal(run.sample_posterior(u8, seed=1), run.sample_posterior(u8.numpy(), seed=1))
    empty = run.encode(np.zeros((0, 784), dtype=np.float32))
    assert empty[0].shape == (0, 2)


@pytest.mark.parametrize("x, got, needs", [
    (torch.zeros(3, 783), "got (3, 783)", "(N, 784), (N, 28, 28) or (N, 1, 28, 28)"),
    (torch.zeros(3, 3, 28, 28), "got (3, 3, 28, 28) (3 channels", "one channel"),
    (torch.zeros(3, 28, 28, 1), "got (3, 28, 28, 1) (channels last", "(N, 784)"),
    (torch.zeros(784), "got (784,)", "x[None]"),
    (np.array([["a"] * 784]), "dtype <U1", "uint8 (0..255) or float in [0, 1]"),
    (np.zeros((2, 784), dtype=object), "dtype object", "uint8"),
    (np.zeros((2, 784), dtype=np.complex64), "dtype complex64", "uint8"),
    (torch.zeros(2, 784, dtype=torch.bool), "got dtype bool", "uint8 (0..255) or floating point in [0, 1]"),
    (torch.zeros(2, 784, dtype=torch.int64), "got dtype int64", "uint8 (0..255) or floating point"),
    (np.zeros((2, 784), dtype=np.uint16), "got dtype uint16", "uint8"),
    (torch.full((2, 784), float("nan")), "got 1568 NaN or infinite values", "must be finite"),
    (torch.full((2, 784), 3.0), "got values from 3 to 3", "floats in [0, 1]"),
    (torch.full((2, 784), -0.5), "got values from -0.5 to -0.5", "floats in [0, 1]"),
    ([[0.0] * 784], "got list", "torch.tensor(x) or np.asarray(x)"),
    ("images", "got str", "torch tensor or a numpy array"),
])
def test_encode_refuses_what_it_cannot_read_saying_what_it_got_and_needs(run, x, got, needs):
    with pytest.raises(UserError) as e:
        run.encode(x)
    message = _one_line(e)
    assert message.startswith("encode: images") and got in message and needs in message, message


def test_decode_takes_codes_as_torch_or_numpy_and_checks_their_shape(run):
    z = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    pixels = run.decode(z)
    assert pixels.shape == (5, 784) and pixels.dtype == torch.float32 and 0 <= pixels.min() and pixels.max() <= 1
    assert torch.allclose(run.decode(z.double().numpy()), pixels) and torch.allclose(run.decode(z.double()), pixels)
    assert run.decode(torch.zeros(2, 2, dtype=torch.int64)).shape == (2, 784)
    mean, _ = run.encode(run.data().test_x[:3])
    assert run.decode(mean).shape == (3, 784)
    for bad, got in ((torch.zeros(5, 3), "got (5, 3)"), (torch.zeros(2), "got (2,) (one code without"),
                     (torch.zeros(1, 2, 1), "got (1, 2, 1)"), (torch.zeros(2, 2, dtype=torch.bool), "got dtype bool"),
                     (torch.tensor([[0.0, float("inf")]]), "1 NaN or infinite value"), ([[0.0, 0.0]], "got list"),
                     (np.array([["a", "b"]]), "dtype <U1")):
        with pytest.raises(UserError) as e:
            run.decode(bad)
        message = _one_line(e)
        assert message.startswith("decode: z") and got in message, message
        assert "(N, 2)" in message or "real numbers" in message, message


def test_sample_gives_images_in_the_unit_interval_seeded(run):
    samples = run.sample(64, seed=0)
    assert samples.shape == (64, 784) and samples.min() >= 0 and samples.max() <= 1
    assert torch.equal(samples, run.sample(64, seed=0)) and not torch.equal(samples, run.sample(64, seed=1))
    assert run.sample(np.int64(3)).shape == (3, 784)
    for bad in (-1, 2.5, "64", True):
        with pytest.raises(UserError) as e:
            run.sample(bad)
        assert "sample: n must be a whole number" in _one_line(e)
    with pytest.raises(UserError) as e:
        run.sample(2, seed=-1)
    assert "sample: seed" in _one_line(e)


# ---------------------------------------------------------------------------------------------
# evaluate, run_study, build_report


def test_evaluate_quick_writes_the_evaluation_and_returns_the_metrics(run, capsys):
    metrics = pv.evaluate(run.path, quick=True, num_samples=5, likelihood_images=50, generated=200, pairs=50,
                          train_codes=200, hole_codes=100, hole_mass_draws=500, null_draws=20, mmd_codes=50, bootstrap=2,
                          perturb_images=20)
    assert np.isfinite(metrics["test_elbo"]) and metrics["epochs_trained"] == 1
    saved = json.loads((run.path / "evaluation.json").read_text())
    assert saved["metrics"]["test_elbo"] == metrics["test_elbo"] and saved["settings"]["num_samples"] == 5
    assert "the quick preset" in capsys.readouterr().err
    with pytest.raises(UserError) as e:
        pv.evaluate(run, num_sample=5)
    assert "unknown evaluation setting 'num_sample'" in _one_line(e)


@pytest.mark.slow
def test_run_study_and_build_report_end_to_end(tmp_path, one_thread):
    study = tmp_path / "tiny.toml"
    study.write_text('name = "tiny"\ntitle = "Tiny"\nseeds = [0]\n\n[base]\nepochs = 1\ntrain_limit = 500\n'
                     'test_limit = 200\nhidden_dim = 32\n\n[variants.AE]\nguide = "delta"\nbeta = 0.0\n\n'
                     '[variants.VAE]\nguide = "gaussian"\n\n[evaluation]\ngenerated = 300\npairs = 100\n')
    with pytest.raises(UserError) as e:
        pv.run_study(study, out=tmp_path / "runs", epoch=1)
    assert "did you mean 'epochs'?" in _one_line(e) and not (tmp_path / "runs").exists()
    runs = pv.run_study(study, out=tmp_path / "runs", seeds=[0], quick=True, workers=1, progress=False)
    assert runs == tmp_path / "runs" and (runs / "AE" / "seed-0" / "evaluation.json").is_file()
    page = pv.build_report(runs, out=tmp_path / "report", self_contained=True, explorer=False)
    assert page == tmp_path / "report" / "report.html" and page.is_file() and "data:image/png;base64" in page.read_text()
    side = pv.build_report([runs / "AE" / "seed-0", pv.load_run(runs / "VAE" / "seed-0")], out=tmp_path / "side",
                           explorer=False)
    assert side.is_file()


def test_build_report_needs_runs_that_exist(tmp_path):
    with pytest.raises(UserError) as e:
        pv.build_report(tmp_path / "none", out=tmp_path / "report")
    assert "does not exist" in _one_line(e)


# ---------------------------------------------------------------------------------------------
# documentation


API_FUNCTIONS = ["train", "resume", "evaluate", "run_study", "build_report", "load_run"]


def test_every_public_name_and_run_method_has_a_docstring():
    import pyro_vae
    from pyro_vae import api

    assert set(API_FUNCTIONS) | {"Run", "UserError", "TrainConfig"} <= set(pyro_vae.__all__)
    for name in pyro_vae.__all__:
        obj = getattr(pyro_vae, name)
        doc = inspect.getdoc(obj) or ""
        assert doc and not doc.startswith(f"{name}("), f"pyro_vae.{name} has no docstring of its own"
        if name in API_FUNCTIONS or name.startswith("register_") or name in ("Run", "TrainConfig"):
            assert "Example" in doc, f"pyro_vae.{name}'s docstring has no example"
        if name in API_FUNCTIONS:
            assert "Args:" in doc and "Returns:" in doc, name
    assert set(api.__all__) <= set(pyro_vae.__all__)
    methods = [n for n, _ in inspect.getmembers(pyro_vae.Run) if not n.startswith("_")]
    assert {"encode", "decode", "sample", "sample_posterior", "sample_codes", "data", "metrics", "device"} <= set(methods)
    for name in methods:
        doc = inspect.getdoc(getattr(pyro_vae.Run, name)) or ""
        assert doc, f"Run.{name} has no docstring"
        if name in ("encode", "decode", "sample", "data"):
            assert "Example" in doc and "Returns:" in doc, name
    config_methods = [n for n, _ in inspect.getmembers(pyro_vae.TrainConfig, callable) if not n.startswith("_")]
    assert {"keys", "from_dict", "update", "validate", "to_dict"} <= set(config_methods)
    for name in config_methods:
        assert inspect.getdoc(getattr(pyro_vae.TrainConfig, name)), f"TrainConfig.{name} has no docstring"


def test_the_report_command_has_self_contained(tmp_path, capsys):
    from pyro_vae.cli import parser

    args = parser().parse_args(["report", "runs/q", "--out", str(tmp_path / "r"), "--self-contained"])
    assert args.self_contained is True
