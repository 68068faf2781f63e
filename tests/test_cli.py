import json
import subprocess
import sys

import pytest

from pyro_vae.cli import main

SMALL = ["--train-limit", "500", "--test-limit", "200", "--no-progress"]


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--guide", "normalish"], "unknown guide 'normalish'; choose one of: gaussian, delta"),
        (["--prior", "laplace"], "unknown prior 'laplace'; choose one of: standard-normal"),
        (["--objective", "elbo"], "unknown objective 'elbo'; choose one of: trace, meanfield"),
        (["--dataset", "cifar10"], "unknown dataset 'cifar10'; choose one of: mnist, fashion-mnist"),
        (["--network", "resnet"], "unknown network 'resnet'; choose one of: mlp, conv"),
        (["--binarize", "half"], "unknown binarisation 'half'; choose one of: dynamic, fixed, none"),
        (["--latent-dim", "0"], "latent-dim must be at least 1, got 0"),
        (["--lr", "-0.1"], "lr must be positive, got -0.1"),
        (["--beta", "-1"], "beta must be 0 or more"),
        (["--epochs", "two"], "argument --epochs: invalid int value: 'two'"),
        (["--train-limit", "0"], "train-limit must be a positive number of images"),
        (["--device", "tpu"], "unknown device 'tpu'; choose one of: cpu, cuda"),
        (["--prior", "vamp", "--guide", "delta"], "vamp"),
        (["--prior", "mixture", "--prior-option", "componentz=3"], "unknown option 'componentz' for prior 'mixture'"),
        (["--prior-option", "oops"], "--prior-option takes KEY=VALUE"),
    ],
)
def test_bad_settings_get_one_line_errors(capsys, tmp_path, argv, message):
    code, out, err = run_cli(capsys, "train", "--out", str(tmp_path / "run"), *SMALL, *argv)
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv, suggestion", [
    (["train", "--epcohs", "5"], "did you mean --epochs?"),
    (["train", "--epoch", "2", "--latent", "3"], "did you mean --epochs?"),  # a prefix is not a flag
    (["study", "s.toml", "--out", "o", "--wrokers", "2"], "did you mean --workers?"),
    (["evaluate", "r", "--nmu-samples=3"], "did you mean --num-samples?"),
])
def test_a_mistyped_flag_is_refused_with_the_nearest_one(capsys, tmp_path, argv, suggestion):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and "unrecognized arguments: " in err and suggestion in err and err.count("\n") == 1
    assert "Traceback" not in err and not list(tmp_path.iterdir())


def test_what_needs_no_data_is_checked_before_the_data(capsys, tmp_path, monkeypatch):
    """With PYRO_VAE_DATA pointing at an empty folder, loading data would fail: these errors must come first."""
    monkeypatch.setenv("PYRO_VAE_DATA", str(tmp_path / "empty"))
    code, _, err = run_cli(capsys, "train", "--out", str(tmp_path / "run"), "--prior", "vamp", "--guide", "delta")
    assert code == 2 and "prior 'vamp'" in err and "guide 'delta'" in err and not (tmp_path / "run").exists()
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("mine")
    code, _, err = run_cli(capsys, "train", "--out", str(tmp_path / "used"))
    assert code == 2 and "is not empty; pass --force" in err
    code, _, err = run_cli(capsys, "train", "--out", str(tmp_path / "used"), "--force")
    assert code == 2 and "not part of a run (notes.txt)" in err
    assert (tmp_path / "used" / "notes.txt").read_text() == "mine"


def test_missing_out_and_bad_config_files(capsys, tmp_path):
    assert run_cli(capsys, "train", *SMALL)[2].startswith("pyro-vae: error: --out RUN_DIR is required")
    code, _, err = run_cli(capsys, "train", "--config", str(tmp_path / "none.toml"), "--out", str(tmp_path / "r"))
    assert code == 2 and "does not exist" in err
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = [")
    assert "is not valid TOML" in run_cli(capsys, "train", "--config", str(bad), "--out", str(tmp_path / "r"))[2]
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("epocs = 3\n")
    err = run_cli(capsys, "train", "--config", str(unknown), "--out", str(tmp_path / "r"))[2]
    assert "unknown setting 'epocs'" in err and "epochs" in err
    typed = tmp_path / "typed.toml"
    typed.write_text("latent_dim = 2.5\n")
    assert "latent-dim must be a whole number" in run_cli(capsys, "train", "--config", str(typed), "--out", str(tmp_path / "r"))[2]


def test_toml_config_with_flag_override_and_resume(capsys, tmp_path):
    cfg = tmp_path / "ae.toml"
    cfg.write_text('guide = "delta"\nbeta = 0.0\nepochs = 1\nlatent-dim = 3\n')
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "--config", str(cfg), "--latent-dim", "2", "--out", str(run), *SMALL)
    assert code == 0, err
    resolved = json.loads((run / "config.json").read_text())["config"]
    assert (resolved["guide"], resolved["beta"], resolved["latent_dim"], resolved["epochs"]) == ("delta", 0.0, 2, 1)
    assert "epoch 1/1" in err
    code, _, err = run_cli(capsys, "train", "--resume", str(run), "--guide", "gaussian")
    assert code == 2 and "drop guide" in err
    code, _, err = run_cli(capsys, "train", "--resume", str(run), "--epochs", "2", "--no-progress")
    assert code == 0 and "resuming" in err
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def test_component_options_from_flags(capsys, tmp_path):
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--prior", "mixture", "--prior-option", "components=3", "--epochs", "1", "--out", str(run), *SMALL)
    assert code == 0, err
    assert json.loads((run / "config.json").read_text())["config"]["prior_options"] == {"components": 3}


def test_console_script_and_torchvision_import():
    """The installed entry point works, and torchvision imports with the installed torch."""
    import torchvision  # noqa: F401  (the CUDA wheels need matching torch; CI must catch a mismatch)

    done = subprocess.run([sys.executable, "-m", "pyro_vae.cli", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("pyro-vae ")
    done = subprocess.run(["pyro-vae", "train", "--guide", "nope", "--out", "/nonexistent/x"], capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr and "unknown guide 'nope'" in done.stderr


@pytest.mark.slow
def test_progress_in_a_pipe_is_one_plain_line_per_epoch(tmp_path):
    done = subprocess.run(["pyro-vae", "train", "--out", str(tmp_path / "run"), "--epochs", "2", "--train-limit", "500",
                           "--test-limit", "200"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr and "batch/s" not in done.stderr
    assert [line.split(":")[0] for line in done.stderr.splitlines() if line.startswith("epoch ")] == ["epoch 1/2", "epoch 2/2"]


def test_evaluate_prints_a_short_summary_and_writes_the_json(tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli(capsys, "train", "--out", str(run), "--epochs", "1", *SMALL)[0] == 0
    settings = ["--num-samples", "5", "--likelihood-images", "50"]
    code, out, err = run_cli(capsys, "evaluate", str(run), *settings)
    assert code == 0, err
    saved = json.loads((run / "evaluation.json").read_text())["metrics"]
    lines = out.splitlines()
    assert 3 <= len(lines) <= 6 and str(run / "evaluation.json") in lines[0]
    assert "(nats / image): " in out and f"test ELBO {saved['test_elbo']:.4g}," in out and f"log p(x) exact {saved['log_px_exact']:.4g}" in out
    assert f"Gaussian KL to N(0,I) {saved['gaussian_kl']:.4g}" in out and "prior FID" in out
    code, out, _ = run_cli(capsys, "evaluate", str(run), "--json", *settings)
    assert code == 0 and json.loads(out)["recon_bce"] == pytest.approx(saved["recon_bce"])


def test_every_train_config_field_has_a_flag_with_help_and_its_default():
    import dataclasses

    from pyro_vae.cli import parser
    from pyro_vae.config import TrainConfig

    train = parser()._subparsers._group_actions[0].choices["train"]
    actions = {a.dest: a for a in train._actions}
    shown = " ".join(train.format_help().split())  # as printed, registry names filled in
    assert "{" not in shown and "guide: gaussian, delta, full-rank, iaf (default: gaussian)" in shown
    for f in dataclasses.fields(TrainConfig):
        assert f.name in actions, f"TrainConfig.{f.name} has no flag on `pyro-vae train`"
        action = actions[f.name]
        assert action.help, f.name
        if not isinstance(f.default, dict) and f.default not in (None, dataclasses.MISSING):
            assert f"(default: {f.default})" in action.help, f.name
    assert "--test-fraction" in actions["test_fraction"].option_strings
    assert "--objective-option" in actions["objective_options"].option_strings


def test_a_flag_reaches_the_config(tmp_path, capsys):
    code, _, _ = run_cli(capsys, "train", "--out", str(tmp_path / "run"), "--epochs", "1", "--test-fraction", "0.25",
                         "--objective", "renyi", "--objective-option", "alpha=0.25", *SMALL)
    assert code == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert config["test_fraction"] == 0.25 and config["objective_options"] == {"alpha": 0.25}


def _all_flags() -> set[str]:
    from pyro_vae.cli import parser

    top = parser()
    flags = {s for a in top._actions for s in a.option_strings}
    for sub in top._subparsers._group_actions[0].choices.values():
        flags |= {s for a in sub._actions for s in a.option_strings}
    return flags


def _command_flags() -> dict[str, set[str]]:
    from pyro_vae.cli import parser

    top = parser()
    return {name: {s for a in sub._actions for s in a.option_strings}
            for name, sub in top._subparsers._group_actions[0].choices.items()}


# Modules whose every message speaks to one command's user.
_MODULE_COMMAND = {"study/overrides.py": "study", "bench/options.py": "bench", "bench/run.py": "bench"}


def test_a_command_s_messages_name_only_its_own_flags():
    """Messages written for one command (inside its `@command` function in cli.py, or in a module only
    that command uses) name only flags that command has: `study` must not send a user to --resume."""
    import ast
    import re
    from pathlib import Path

    import pyro_vae

    flags, root = _command_flags(), Path(pyro_vae.__file__).parent
    checked = 0

    def check(tree, command: str, where: str):
        nonlocal checked
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", node.value):
                    checked += 1
                    assert flag in flags[command], f"{where}:{node.lineno} names {flag}, which `pyro-vae {command}` lacks"

    for node in ast.parse((root / "cli.py").read_text()).body:
        if isinstance(node, ast.FunctionDef):
            for deco in node.decorator_list:
                if isinstance(deco, ast.Call) and getattr(deco.func, "id", "") == "command":
                    check(node, deco.args[0].value, "cli.py")
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).as_posix()
        owner = next((c for prefix, c in _MODULE_COMMAND.items() if rel.startswith(prefix)), None)
        if owner:
            check(ast.parse(path.read_text()), owner, rel)
    assert checked > 10, "the scan found too few flags to mean anything"


def test_every_flag_a_message_names_exists():
    """Every `--flag` written in the package's strings (error messages, notes, help) is a flag some
    command has, so no message sends a user to a flag that does not exist."""
    import ast
    import re
    from pathlib import Path

    import pyro_vae

    flags = _all_flags()
    named = {}
    for path in Path(pyro_vae.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", node.value):
                    named.setdefault(flag, f"{path.name}:{node.lineno}")
    assert named, "the scan found no flags at all"
    missing = {flag: where for flag, where in named.items() if flag not in flags}
    assert not missing, f"messages name flags no command has: {missing}"


@pytest.mark.parametrize("name", ["study", "report", "evaluate", "bench"])
def test_help_gives_each_option_an_example_and_its_default(name):
    from pyro_vae.cli import parser

    sub = parser()._subparsers._group_actions[0].choices[name]
    shown = " ".join(sub.format_help().split())
    for action in sub._actions:
        if not action.option_strings or action.nargs == 0:  # positionals are named in the usage; switches have no value
            continue
        text = " ".join((action.help or "").split())
        assert "e.g. " in text, f"{name} {action.option_strings[0]}: no example in {text!r}"
        assert action.required or "default" in text, f"{name} {action.option_strings[0]}: no default in {text!r}"
        assert text.split("(default")[0].strip() in shown


def test_study_overrides_are_checked_like_the_file(capsys, tmp_path):
    study = "studies/ae_vs_vae.toml"
    for argv, message in [
        (["--set", "lrr=3"], "unknown setting 'lrr' in --set"),
        (["--set", "lr=-1"], "lr must be positive"),
        (["--set", "guide=delta"], "variant AE of studies/ae_vs_vae.toml sets guide itself"),
        (["--set", "seed=3"], "use --seeds 0,1"),
        (["--seeds", "0,x"], "--seeds takes whole numbers"),
        (["--seeds", "1,1"], "distinct whole numbers"),
        (["--epochs", "0"], "at least 1 epoch"),
        (["--set", "prior=vamp", "--set", "latent_dim=3"], "guide 'delta' has none"),
        (["--set", "evaluation.num_sample=10"], "unknown evaluation setting 'evaluation.num_sample' in --set; valid: evaluation.num_samples"),
        (["--set", "evaluation.num_samples=0"], "evaluation setting num_samples"),
    ]:
        code, _, err = run_cli(capsys, "study", study, "--out", str(tmp_path / "runs"), *argv)
        assert code == 2 and message in err and err.count("\n") == 1, (argv, err)
        assert not (tmp_path / "runs").exists(), argv


@pytest.mark.parametrize("argv", [["--help"], ["study", "--help"], ["train", "--bogus"], ["nosuchcommand"]])
def test_help_and_argument_errors_import_neither_torch_nor_pyro(argv):
    """What keeps `pyro-vae --help` and a typo under a second: torch and Pyro load only when a command
    runs (the bench times it; this says why it is fast)."""
    code = ("import sys\nfrom pyro_vae.cli import main\ntry:\n    main(%r)\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'pyro', 'numpy') if m in sys.modules))" % argv)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip().splitlines()[-1] == "[]", (done.stdout, done.stderr)


PRINTING_PRIOR = '''
import pyro.distributions as dist
import torch
from torch import nn

from pyro_vae import register_prior

print("plugin imported")


@register_prior("chatty")
class ChattyPrior(nn.Module):
    def __init__(self, z_dim, guide=None):
        super().__init__()
        self.register_buffer("loc", torch.zeros(z_dim))

    def forward(self):
        print("a prior is made")
        return dist.Normal(self.loc, 1.0).to_event(1)
'''


def test_evaluate_says_what_it_evaluates_and_how_long_it_will_take_and_quick_is_recorded(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PYRO_VAE_CACHE", str(tmp_path / "cache"))  # nothing of this kind timed yet
    run = tmp_path / "run"
    assert run_cli(capsys, "train", "--out", str(run), "--epochs", "1", *SMALL)[0] == 0
    code, out, err = run_cli(capsys, "evaluate", str(run), "--quick", "--likelihood-images", "40")
    assert code == 0, err
    first = err.splitlines()[0]
    assert first.startswith(f"evaluating 1 run ({run}): log p(x) with K = 100 on the first 40 test images, 1000 generated")
    assert "no estimate yet" in first and "the --quick preset" in first
    settings = json.loads((run / "evaluation.json").read_text())["settings"]
    from pyro_vae.evaluation.presets import QUICK

    assert settings == {**settings, **QUICK, "likelihood_images": 40}  # the preset, the flag over it, in the record
    code, out, err = run_cli(capsys, "evaluate", str(run), "--quick", "--likelihood-images", "40")
    assert code == 0 and "; about " in err.splitlines()[0] and "took here before" in err.splitlines()[0]


def test_evaluate_json_stays_json_when_a_plugin_prints(tmp_path):
    plugin = tmp_path / "chatty.py"
    plugin.write_text(PRINTING_PRIOR)
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "pyro_vae.cli", "train", "--plugin", str(plugin), "--prior", "chatty",
                           "--out", str(run), "--epochs", "1", *SMALL], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([sys.executable, "-m", "pyro_vae.cli", "evaluate", str(run), "--json", "--num-samples", "5",
                           "--likelihood-images", "20"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["epochs_trained"] == 1  # nothing but the JSON on stdout
    assert "a prior is made" in done.stderr and "plugin imported" in done.stderr  # the plugin's words, kept on stderr


QUICK_STUDY = """
name = "q"
seeds = [0]
[base]
dataset = "mnist"
epochs = 1
train_limit = 500
test_limit = 200
[variants.VAE]
guide = "gaussian"
[evaluation]
generated = 300
"""


def test_study_quick_evaluates_with_the_preset_says_so_and_will_not_replace_a_full_evaluation(tmp_path, capsys):
    from pyro_vae.evaluation.presets import QUICK

    study = tmp_path / "q.toml"
    study.write_text(QUICK_STUDY)
    code, out, err = run_cli(capsys, "study", str(study), "--out", str(tmp_path / "quick"), "--quick", "--no-progress")
    assert code == 0, err
    settings = json.loads((tmp_path / "quick" / "VAE" / "seed-0" / "evaluation.json").read_text())["settings"]
    assert settings["num_samples"] == QUICK["num_samples"] and settings["bootstrap"] == QUICK["bootstrap"]
    assert settings["generated"] == 300  # the file asked for fewer than the preset: its value stands
    report = (tmp_path / "quick" / "report" / "report.md").read_text()
    assert "evaluation → the quick preset (--quick: num" in report and "K = 100 samples per image" in report
    # A study evaluated at its own settings: --quick on its report would give those numbers up, so it is refused.
    code, _, err = run_cli(capsys, "study", str(study), "--out", str(tmp_path / "full"), "--no-progress")
    assert code == 0, err
    evaluation = (tmp_path / "full" / "VAE" / "seed-0" / "evaluation.json").read_bytes()
    code, out, err = run_cli(capsys, "report", str(tmp_path / "full"), "--out", str(tmp_path / "r"), "--quick")
    assert code == 2 and err.strip().endswith("--quick would replace that evaluation with a quicker one: drop --quick"), err
    assert (tmp_path / "full" / "VAE" / "seed-0" / "evaluation.json").read_bytes() == evaluation and not (tmp_path / "r").exists()


def test_study_overrides_record_only_what_differs_from_the_file():
    """`--seeds 0,1,2` on a file of those seeds (or `--set` of the file's own value) changes nothing, so the
    report does not warn that the command line changed the study."""
    from pyro_vae.study.overrides import with_overrides
    from pyro_vae.study.spec import Study

    study = Study.load("studies/ae_vs_vae.toml")
    assert with_overrides(study, "f", {}, list(study.seeds)) is study
    assert with_overrides(study, "f", {"lr": study.base["lr"]}, None) is study
    assert with_overrides(study, "f", {"batch_size": 128 if study.base.get("batch_size", 128) != 128 else 64}, None) is not study
    changed = with_overrides(study, "f", {"lr": study.base["lr"]}, [0])
    assert changed.overrides == {"seeds": [0]} and changed.seeds == [0]
    again = with_overrides(study, "f", {"lr": study.base["lr"] * 3}, list(study.seeds))
    assert again.overrides == {"settings": {"lr": study.base["lr"] * 3}} and again.seeds == study.seeds


def test_study_evaluation_overrides_change_the_evaluation_table_and_are_recorded():
    """`--set evaluation.num_samples=1000` changes the study's [evaluation] table, not its [base], and is
    recorded (the report states it); the file's own value changes nothing."""
    from pyro_vae.study.overrides import with_overrides
    from pyro_vae.study.spec import Study

    study = Study.load("studies/vampprior.toml")
    assert study.eval_settings().num_samples == 5000
    assert with_overrides(study, "f", {"evaluation.num_samples": 5000}, None) is study
    changed = with_overrides(study, "f", {"evaluation.num_samples": 1000, "evaluation.likelihood_images": 2000, "epochs": 30}, None)
    settings = changed.eval_settings()
    assert (settings.num_samples, settings.likelihood_images) == (1000, 2000)
    assert changed.config("VampPrior", 0).epochs == 30 and "evaluation.num_samples" not in changed.base
    assert changed.overrides == {"settings": {"epochs": 30, "evaluation.num_samples": 1000, "evaluation.likelihood_images": 2000}}
    assert Study.from_dict(__import__("dataclasses").asdict(changed), "again").eval_settings() == settings  # study.json keeps it
