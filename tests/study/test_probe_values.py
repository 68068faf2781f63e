"""Values an adversarial probe found that passed the study check and crashed later, after training: each is
now refused when the study file or flag is read (one line, exit 2, nothing written), or, where only the
data can tell, handled by the evaluation (too few training codes) or by the plugin loader (a plugin that
changes torch's default dtype or prints to stdout)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_vae import plugins
from pyro_vae.cli import main
from pyro_vae.components import GUIDES
from pyro_vae.config import TrainConfig, check_value
from pyro_vae.errors import UserError
from pyro_vae.evaluation.evaluate import EvalSettings, evaluate_run
from pyro_vae.evaluation.latent import logdet_spread
from pyro_vae.study.resources import check_resources

pytestmark = pytest.mark.usefixtures("one_thread")

HEAD = ('name = "probe"\nseeds = [0]\n[base]\ndataset = "mnist"\ntrain_limit = 200\ntest_limit = 60\n'
        'hidden_dim = 16\nepochs = 1\n')
TWO = '[variants.AE]\nguide = "delta"\nbeta = 0.0\n[variants.VAE]\n'
CLAIM = '[claims.c]\ntitle = "t"\nbaseline = "AE"\ncandidate = "VAE"\n'
PUBLISHED = '[published]\nsource = "paper"\nvalues = { VAE = -90.0 }\n'

# (name, study file text, what the one line must say)
STUDY_CASES = [
    ("knn_k huge", HEAD + TWO + "[evaluation]\nknn_k = 100000\n", "knn_k must be a whole number from 1 to 100, got 100000"),
    ("knn_k above half the test subset", HEAD + TWO + "[evaluation]\nknn_k = 40\n",
     "(test_limit = 60) has 60 test images, too few for evaluation setting knn_k = 40"),
    ("perturb_eps of a string", HEAD + TWO + '[evaluation]\nperturb_eps = ["x"]\n', "perturb_eps must be a non-empty list of numbers"),
    ("perturb_eps empty", HEAD + TWO + "[evaluation]\nperturb_eps = []\n", "perturb_eps must be a non-empty list of numbers"),
    ("perturb_eps nan", HEAD + TWO + "[evaluation]\nperturb_eps = [0.0, nan, 2.0]\n", "perturb_eps must be a non-empty list"),
    ("perturb_eps a number", HEAD + TWO + "[evaluation]\nperturb_eps = 1.0\n", "perturb_eps must be a non-empty list"),
    ("perturb_eps falling", HEAD + TWO + "[evaluation]\nperturb_eps = [2.0, 1.0, 0.0]\n", "perturb_eps must be rising sizes"),
    ("perturb_eps short of 1", HEAD + TWO + "[evaluation]\nperturb_eps = [0.0, 0.5]\n", "from 1 or less to 1 or more"),
    ("variant name of 300 characters", HEAD + f"[variants.{'A' * 300}]\n", "(300 characters) in"),
    ("variant name of 101 characters", HEAD + f"[variants.{'A' * 101}]\n", f"must be at most 100 letters"),
    ("guide given as a list", HEAD + '[variants.A]\nguide = ["delta"]\n', "guide must be a string, got ['delta']"),
    ("prior given as a number", HEAD + "[variants.A]\nprior = 5\n", "prior must be a string, got 5"),
    ("data_dir a number", HEAD + "data_dir = 5\n[variants.A]\n", "data-dir must be a string, got 5"),
    ("epochs inf", HEAD.replace("epochs = 1", "epochs = inf") + "[variants.A]\n", "epochs must be a whole number, got inf"),
    ("epochs nan", HEAD.replace("epochs = 1", "epochs = nan") + "[variants.A]\n", "epochs must be a whole number, got nan"),
    ("[compare] baseline a list", HEAD + TWO + '[compare]\nbaseline = ["AE"]\n', "baseline in [compare] of"),
    ("claim metric a list", HEAD + TWO + CLAIM + 'primary = { metric = ["mean_norm"] }\n', "metric in primary of [claims.c]"),
    ("claim candidate a list", HEAD + TWO + '[claims.c]\ntitle = "t"\nbaseline = "AE"\ncandidate = ["VAE"]\nprimary = "mean_norm"\n',
     "candidate in [claims.c]"),
    ("claim tolerance nan", HEAD + TWO + '[claims.c]\ntitle = "t"\ncandidate = "VAE"\n'
     'primary = { metric = "share_in_95", against = "target", tolerance = nan }\n', "tolerance in primary of [claims.c]"),
    ("claim tolerance inf", HEAD + TWO + '[claims.c]\ntitle = "t"\ncandidate = "VAE"\n'
     'primary = { metric = "share_in_95", against = "target", tolerance = inf }\n', "must be a number of at least 0 and finite"),
    ("claim against a list", HEAD + TWO + CLAIM + 'primary = { metric = "mean_norm", against = ["baseline"] }\n', "against in primary"),
    ("[published] metric a list", HEAD + TWO + PUBLISHED + 'metric = ["log_px_is"]\n', "metric in [published] of"),
    ("[published] note a number", HEAD + TWO + PUBLISHED + 'metric = "log_px_is"\nnote = 3\n', "note in [published] of"),
    ("[resources] cpus nan", HEAD + TWO + "[resources]\ncpus = nan\n", "cpus in [resources] of"),
    ("[resources] cpus inf", HEAD + TWO + "[resources]\ncpus = inf\n", "must be a number above 0 and finite, got inf"),
    ("[resources] gpus -inf", HEAD + TWO + "[resources]\ngpus = -inf\n", "gpus in [resources] of"),
    ("[resources] gpus a string", HEAD + TWO + '[resources]\ngpus = "half"\n', "gpus in [resources] of"),
]

# (name, extra flags of `pyro-vae study`, what the one line must say); the study file itself is good
FLAG_CASES = [
    ("--cpus-per-run inf", ["--ray", "--cpus-per-run", "inf"], "cpus in --cpus-per-run/--gpus-per-run must be a number above 0 and finite"),
    ("--cpus-per-run nan", ["--ray", "--cpus-per-run", "nan"], "cpus in --cpus-per-run/--gpus-per-run"),
    ("--gpus-per-run inf", ["--ray", "--gpus-per-run", "inf"], "gpus in --cpus-per-run/--gpus-per-run"),
    ("--gpus-per-run -1", ["--ray", "--gpus-per-run", "-1"], "gpus in --cpus-per-run/--gpus-per-run"),
    ("--set data_dir=5", ["--set", "data_dir=5"], "data-dir must be a string, got 5"),
    ("--set prior=[...]", ["--set", 'prior=["flow"]'], "prior must be a string"),
]


def _refused(tmp_path: Path, capsys, text: str, flags: list[str], expect: str) -> None:
    path = tmp_path / "probe.toml"
    path.write_text(text)
    out = tmp_path / "runs"
    capsys.readouterr()
    code = main(["study", str(path), "--out", str(out), "--no-progress", *flags])
    stdout, err = capsys.readouterr()
    assert code == 2 and stdout == "", (code, stdout, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyro-vae: error: "), err
    assert expect in lines[0], lines[0]
    assert not out.exists()  # no study.json, no run folder


@pytest.mark.parametrize("name, text, expect", STUDY_CASES, ids=[c[0] for c in STUDY_CASES])
def test_a_study_file_value_that_would_crash_after_training_is_refused_first(tmp_path, capsys, name, text, expect):
    _refused(tmp_path, capsys, text, [], expect)


@pytest.mark.parametrize("name, flags, expect", FLAG_CASES, ids=[c[0] for c in FLAG_CASES])
def test_a_flag_value_that_would_crash_after_training_is_refused_first(tmp_path, capsys, name, flags, expect):
    _refused(tmp_path, capsys, HEAD + TWO, flags, expect)


def test_a_variant_name_of_100_characters_is_read():
    from pyro_vae.study.spec import Study

    study = Study.from_dict({"name": "s", "base": {"epochs": 1, "hidden_dim": 8}, "variants": {"A" * 100: {}}}, "s.toml")
    assert list(study.variants) == ["A" * 100]


# ---------------------------------------------------------------------------------------------
# The checks themselves, where they are also reached without a study file


@pytest.mark.parametrize("values, expect", [
    ({"knn_k": 100000}, "knn_k must be a whole number from 1 to 100"),
    ({"knn_k": 2.0}, "knn_k must be a whole number"),
    ({"perturb_eps": []}, "perturb_eps must be a non-empty list"),
    ({"perturb_eps": ["x"]}, "perturb_eps must be a non-empty list"),
    ({"perturb_eps": [0.0, math.inf]}, "perturb_eps must be a non-empty list"),
    ({"perturb_eps": [-1.0, 1.0]}, "each of at least 0"),
    ({"perturb_eps": [0.0, 1.0, 1.0]}, "each once"),
    ({"grid_tol": math.inf}, "grid_tol must be a number of at least 1e-12 and finite, got inf"),
    ({"seed": 2**32}, "seed must be a whole number from 0 to 4294967295"),
    ({"train_codes": [10]}, "train_codes must be a whole number of at least 10 (or left out)"),
])
def test_evaluation_settings_are_checked_when_made(values, expect):
    with pytest.raises(UserError) as error:
        EvalSettings.from_dict(values)
    assert expect in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(UserError):
        EvalSettings(**values)  # made directly (the evaluate command): the same check


def test_names_given_as_lists_are_one_line_errors_not_type_errors():
    with pytest.raises(UserError, match=r"a guide is named by a string, got \['delta'\]; choose one of: .*delta"):
        GUIDES.check(["delta"])
    assert ["delta"] not in GUIDES
    for values, expect in (({"guide": ["delta"]}, "guide must be a string"), ({"data_dir": 5}, "data-dir must be a string"),
                           ({"device": ["cpu"]}, "device must be a string"), ({"latent_dim": None}, "latent-dim must be a number"),
                           ({"epochs": 1e400}, "epochs must be a whole number, got inf")):
        with pytest.raises(UserError, match=expect):
            TrainConfig.from_dict(values).validate()


@pytest.mark.parametrize("values", [{"cpus": math.nan}, {"cpus": math.inf}, {"cpus": 0}, {"cpus": -2}, {"cpus": "1"},
                                    {"cpus": True}, {"gpus": math.nan}, {"gpus": math.inf}, {"gpus": -0.5}, {"gpus": [1]}])
def test_resources_must_be_finite_numbers_of_at_least_zero(values):
    with pytest.raises(UserError, match=f"{next(iter(values))} in src must be a number"):
        check_resources(values, "src")
    assert check_resources({"cpus": 0.5, "gpus": 0}, "src") == {"cpus": 0.5, "gpus": 0}


def test_the_one_value_check_says_what_a_value_must_be():
    cases = [((5, str), "x must be a string, got 5"), ((math.nan, float), "x must be a finite number, got nan"),
             ((0, float, 0, None), "x must be a number above 0 and finite, got 0"),
             ((2.0, float, 0, 1), "x must be a number from 0 to 1, got 2.0"),
             ((10**30, int, 1, 100), "x must be a whole number from 1 to 100"), ((True, int, 0), "x must be a whole number"),
             (([], list), "x must be a non-empty list of finite numbers, got []")]
    for args, expect in cases:
        with pytest.raises(UserError) as error:
            check_value("x", *args, above=len(args) == 4 and args[3] is None)
        assert str(error.value).startswith(expect), str(error.value)
    assert check_value("x", None, int, 1, optional=True) is None and check_value("x", [0, 1.5], list, 0) == [0, 1.5]


# ---------------------------------------------------------------------------------------------
# Too few training images for the code-space measures: the evaluation completes and says what it left out


SMALL_EVAL = EvalSettings(num_samples=5, generated=50, pairs=20, hole_codes=50, hole_mass_draws=200, perturb_images=20,
                          null_draws=20, mmd_codes=50, bootstrap=5)


@pytest.fixture(scope="module")
def few_image_runs(tmp_path_factory) -> dict[tuple[int, int], Path]:
    from pyro_vae.training.trainer import train

    out = {}
    for images, latent_dim in ((1, 2), (2, 3), (3, 2)):
        cfg = TrainConfig(dataset="mnist", epochs=1, train_limit=images, test_limit=50, batch_size=10, hidden_dim=16,
                          latent_dim=latent_dim)
        out[images, latent_dim] = train(cfg, tmp_path_factory.mktemp(f"n{images}d{latent_dim}") / "run", progress=False,
                                        log=lambda m: None)
    return out


@pytest.mark.parametrize("images, latent_dim", [(1, 2), (2, 3), (3, 2)])
def test_a_run_on_too_few_training_images_is_evaluated_without_the_code_space_measures(few_image_runs, images, latent_dim):
    said = []
    result = evaluate_run(few_image_runs[images, latent_dim], SMALL_EVAL, log=said.append)
    note = result["code_space_skipped"]
    assert note.startswith(f"{images} training code(s), fewer than the 10") and f"in {latent_dim}-D" in note
    assert any(note in line for line in said)
    for missing in ("hole_precision", "hole_mass_fitted", "perturb_precision_drop", "code_spread", "aggregate_kl"):
        assert missing not in result
    for made in ("recon_bce", "prior_fid", "real_precision", "recon_precision", "null_p_mmd_normal", "logdet_spread_sd"):
        assert made in result
    saved = json.loads((few_image_runs[images, latent_dim] / "evaluation.json").read_text())["metrics"]
    assert saved["code_space_skipped"] == note and saved["convergence"] == {}


def test_the_report_says_which_measures_a_run_on_too_few_images_lacks(few_image_runs, tmp_path):
    from pyro_vae.report.build import build_runs_report

    run = few_image_runs[3, 2]
    evaluate_run(run, SMALL_EVAL, log=lambda m: None)
    build_runs_report([run], tmp_path / "report", log=lambda m: None)
    report = (tmp_path / "report" / "report.md").read_text()
    assert "Some code-space measures could not be made" in report and "3 training code(s), fewer than the 10" in report


def test_knn_k_beyond_the_test_images_is_refused_before_the_evaluation_works(few_image_runs):
    run = few_image_runs[1, 2]
    (run / "evaluation.json").unlink(missing_ok=True)
    with pytest.raises(UserError, match=r"has 50 test images, too few for evaluation setting knn_k = 30 .*needs 62 or more"):
        evaluate_run(run, EvalSettings(knn_k=30), log=lambda m: pytest.fail(f"work began: {m}"))
    assert not (run / "evaluation.json").exists()


def test_class_volumes_of_small_classes_survive_resamples_with_a_singular_support():
    """Seven codes a class: some bootstrap resamples repeat so few codes that the robust covariance is 0."""
    rng = np.random.default_rng(0)
    for seed in range(6):  # the last raised "The covariance matrix of the support data is equal to 0"
        found = logdet_spread(rng.standard_normal((14, 2)), np.repeat([0, 1], 7), bootstrap=10, seed=seed)
        assert np.isfinite(found["logdet_spread_sd"]) and found["logdet_spread_sd_low"] <= found["logdet_spread_sd_high"]
    same = logdet_spread(np.zeros((14, 2)), np.repeat([0, 1], 7), bootstrap=5)  # no volume at all: NaN, not an error
    assert math.isnan(same["logdet_spread_sd"])


# ---------------------------------------------------------------------------------------------
# Plugins that change torch's default dtype or print to stdout


from test_plugins import forget  # noqa: E402,F401  (the fixture: what a test's plugins registered is unregistered)


def test_a_plugin_that_sets_the_default_dtype_to_float64_is_refused_by_name(tmp_path, capsys, forget):
    path = tmp_path / "double.py"
    path.write_text("import torch\nfrom pyro_vae import register_prior\ntorch.set_default_dtype(torch.float64)\n"
                    "@register_prior('probe-double')\ndef double(z_dim, guide=None):\n    pass\n")
    code = main(["train", "--plugin", str(path), "--out", str(tmp_path / "run"), "--train-limit", "20", "--test-limit", "20",
                 "--epochs", "1", "--hidden-dim", "8", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"plugin {path} changed torch's default dtype to torch.float64 on import; pyro-vae needs torch.float32" in err
    assert torch.get_default_dtype() == torch.float32  # restored for whatever runs next
    from pyro_vae.components import PRIORS

    assert "probe-double" not in PRIORS and not (tmp_path / "run").exists()


def test_a_plugin_that_prints_on_import_leaves_stdout_to_the_command(tmp_path, capsys, forget, few_image_runs):
    path = tmp_path / "chatty.py"
    path.write_text("print('chatty plugin loaded')\n")
    plugins.load(str(path))
    out, err = capsys.readouterr()
    assert out == "" and "chatty plugin loaded" in err
    # and so `evaluate --json` prints JSON alone (a run on one training image: a quick evaluation)
    path.write_text("print('chatty plugin loaded, edited')\n")  # changed: imported again by the command
    code = main(["evaluate", str(few_image_runs[1, 2]), "--num-samples", "2", "--json", "--plugin", str(path)])
    out, err = capsys.readouterr()
    assert code == 0 and "chatty plugin loaded, edited" in err
    assert json.loads(out)["code_space_skipped"]
