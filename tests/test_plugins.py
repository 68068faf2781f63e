"""Plugins: a researcher's file or module registers components by name; runs record it (path, sha256)
and re-import it when read back; a faulty plugin is a one-line error naming it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pyro_vae import plugins
from pyro_vae.cli import main
from pyro_vae.components import PRIORS
from pyro_vae.errors import UserError
from pyro_vae.model import build_vae
from pyro_vae.training import runs

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--train-limit", "500", "--test-limit", "200", "--batch-size", "100", "--hidden-dim", "32", "--no-progress"]

LAPLACE = '''
import pyro.distributions as dist
import torch
from torch import nn
from pyro_vae import register_prior

@register_prior("{name}")
class Laplace(nn.Module):
    def __init__(self, z_dim, guide=None, *, scale: float = 1.0):
        super().__init__()
        self.register_buffer("loc", torch.zeros(z_dim + {extra}))
        self.register_buffer("scale", torch.full((z_dim + {extra},), float(scale)))

    def forward(self):
        return dist.Laplace(self.loc, self.scale).to_event(1)
'''

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def forget():
    """Unregister what a test's plugins registered, so names do not leak into other tests."""
    before = set(plugins._LOADED)
    yield
    for key in set(plugins._LOADED) - before:
        plugins._unregister(plugins._LOADED.pop(key)["names"])


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def cli(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def run_python(code: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO)] + list((env_extra or {}).pop("PATHS", []))), **(env_extra or {}))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_a_plugin_registers_with_checked_options_and_is_loaded_once(tmp_path, forget):
    path = write(tmp_path / "laplace.py", LAPLACE.format(name="test-laplace", extra=0))
    record = plugins.load(str(path))
    assert record["names"] == [("prior", "test-laplace")] and record["path"] == str(path.resolve())
    assert plugins.load(str(path)) is record  # a second import would register the name twice
    assert "test-laplace" in PRIORS
    from conftest import small_config

    vae = build_vae(small_config(prior="test-laplace", prior_options={"scale": 2.0}))
    assert float(vae.prior().base_dist.scale[0]) == 2.0
    with pytest.raises(UserError, match="unknown option 'scal' for prior 'test-laplace'.*valid options: scale"):
        build_vae(small_config(prior="test-laplace", prior_options={"scal": 2.0}))


@pytest.mark.parametrize("source, message", [
    ("x = 1 / 0\n", r"plugin .*broken\.py raised ZeroDivisionError on import: division by zero \(line 1\)"),
    ("from pyro_vae import register_guide\n@register_guide('gaussian')\nclass G: pass\n",
     r"plugin .*broken\.py: guide 'gaussian' is registered twice .*register it under another name"),
    ("import no_such_module_here\n", r"plugin .*broken\.py raised ModuleNotFoundError on import: No module named 'no_such_module_here'"),
])
def test_a_faulty_plugin_is_a_one_line_error_naming_it(tmp_path, forget, source, message):
    path = write(tmp_path / "broken.py", "from pyro_vae import register_prior\n"
                 "@register_prior('half-registered')\nclass P: pass\n" + source if "gaussian" in source else source)
    with pytest.raises(UserError, match=message) as err:
        plugins.load(str(path))
    assert "\n" not in str(err.value)
    assert "half-registered" not in PRIORS  # a failed import leaves nothing registered


def test_missing_plugins_are_errors(tmp_path, capsys):
    code, err = cli(capsys, "train", "--plugin", tmp_path / "nope.py", "--out", tmp_path / "r", *SMALL)
    assert code == 2 and "plugin" in err and "nope.py does not exist" in err and err.count("\n") == 1
    code, err = cli(capsys, "report", tmp_path, "--out", tmp_path / "rep", "--plugin", "no_such_lab.priors")
    assert code == 2 and "plugin module 'no_such_lab.priors' cannot be found" in err


def test_a_part_of_the_wrong_shape_is_named_when_the_model_is_built(tmp_path, capsys, forget):
    path = write(tmp_path / "wide.py", LAPLACE.format(name="test-wide", extra=1))
    code, err = cli(capsys, "train", "--plugin", path, "--prior", "test-wide", "--out", tmp_path / "r", *SMALL)
    assert code == 2 and err.count("\n") == 1
    assert f"plugin {path}: prior 'test-wide' returns a distribution of batch shape () and event shape (3,), not () and (2,)" in err
    assert not (tmp_path / "r").exists()


def test_a_plugin_raising_in_its_constructor_is_named(tmp_path, capsys, forget):
    path = write(tmp_path / "raising.py", '''
        from pyro_vae import register_guide

        @register_guide("test-raising")
        class Raising:
            deterministic = False
            def __init__(self, z_dim, make_encoder):
                raise RuntimeError("no encoder for you")
        ''')
    code, err = cli(capsys, "train", "--plugin", path, "--guide", "test-raising", "--out", tmp_path / "r", *SMALL)
    assert code == 2 and err.count("\n") == 1
    assert f"plugin {path}: guide 'test-raising' raised RuntimeError: no encoder for you (line 8)" in err


def test_a_plugin_failing_inside_the_training_loop_is_named_and_the_last_checkpoint_kept(tmp_path, capsys, forget):
    """An objective that passes the model check and raises at its 8th call, in the second epoch's
    training steps (5 steps per epoch): one line naming the plugin and its line, no traceback, and
    the first epoch's checkpoint kept."""
    path = write(tmp_path / "tiring.py", '''
        import pyro
        from pyro_vae import register_objective

        class Tiring:
            def __init__(self, num_particles):
                self.calls, self.elbo = 0, pyro.infer.Trace_ELBO(num_particles=num_particles)

            def differentiable_loss(self, model, guide, x):
                self.calls += 1
                if self.calls == 8:
                    raise FloatingPointError("tired after seven calls")
                return self.elbo.differentiable_loss(model, guide, x)

        register_objective("test-tiring")(Tiring)
        ''')
    code, err = cli(capsys, "train", "--plugin", path, "--objective", "test-tiring", "--epochs", "3", "--out", tmp_path / "r", *SMALL)
    assert code == 2 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last == f"pyro-vae: error: plugin {path}: objective 'test-tiring' raised FloatingPointError: tired after seven calls (line 12)", err
    assert len(runs.read_metrics(tmp_path / "r")) == 1 and (tmp_path / "r" / "checkpoint.pt").exists()


def test_a_fault_in_the_loop_outside_any_plugin_is_not_blamed_on_one(tmp_path, forget):
    path = write(tmp_path / "laplace.py", LAPLACE.format(name="test-innocent", extra=0))
    plugins.load_all([str(path)])
    from pyro_vae.config import TrainConfig

    cfg = TrainConfig(prior="test-innocent")
    with pytest.raises(KeyError, match="ours"):
        with plugins.blamed(cfg, in_plugin_code=True):
            raise KeyError("ours")
    with pytest.raises(UserError, match="prior 'test-innocent' raised KeyError"):
        with plugins.blamed(cfg):  # building a model: blamed on the plugin the config uses
            raise KeyError("ours")


@pytest.mark.slow
def test_runs_record_their_plugins_and_reimport_them(tmp_path, capsys, forget):
    """A TOML's plugins (relative to it) and a module plugin: recorded with sha256, re-imported by a
    fresh process reading the run, refused once changed or missing."""
    lab = tmp_path / "lab"
    write(lab / "mylab_priors.py", LAPLACE.format(name="test-lab-laplace", extra=0))
    guide_src = (REPO / "examples" / "plugins" / "low_rank_guide.py").read_text()
    write(tmp_path / "cfg" / "guides" / "lowrank.py", guide_src.replace('"low-rank"', '"test-low-rank"'))
    write(tmp_path / "cfg" / "run.toml", 'plugins = ["guides/lowrank.py"]\nguide = "test-low-rank"\nepochs = 1\n'
          'prior = "test-lab-laplace"\nguide_options = { rank = 2 }\n')
    sys.path.insert(0, str(lab))
    try:
        code, err = cli(capsys, "train", "--config", tmp_path / "cfg" / "run.toml", "--plugin", "mylab_priors",
                        "--out", tmp_path / "run", *SMALL)
    finally:
        sys.path.remove(str(lab))
    assert code == 0, err
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["plugins"]
    assert [r["plugin"] for r in recorded] == ["mylab_priors", str((tmp_path / "cfg" / "guides" / "lowrank.py").resolve())]
    assert recorded[0]["path"] == str((lab / "mylab_priors.py").resolve()) and len(recorded[1]["sha256"]) == 64

    read_back = (f"from pyro_vae import load_run; run = load_run({str(tmp_path / 'run')!r}); "
                 "print(type(run.vae.prior).__name__, type(run.vae.encoder_guide).__name__)")
    done = run_python(read_back, {"PATHS": [str(lab)]})
    assert done.returncode == 0 and done.stdout.split() == ["Laplace", "LowRankGuide"], done.stderr
    resumed = subprocess.run([sys.executable, "-m", "pyro_vae.cli", "train", "--resume", str(tmp_path / "run"), "--epochs", "2",
                              "--no-progress"], capture_output=True, text=True, timeout=300,
                             env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(lab)])))
    assert resumed.returncode == 0, resumed.stderr

    lowrank = tmp_path / "cfg" / "guides" / "lowrank.py"
    lowrank.write_text(lowrank.read_text() + "\n# edited\n")
    evaluated = subprocess.run([sys.executable, "-m", "pyro_vae.cli", "evaluate", str(tmp_path / "run")], capture_output=True,
                               text=True, timeout=300, env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(lab)])))
    assert evaluated.returncode == 2 and evaluated.stderr.count("\n") == 1
    assert f"plugin {lowrank.resolve()} has changed since {tmp_path / 'run'} was trained with it" in evaluated.stderr
    lowrank.unlink()
    missing = run_python(read_back, {"PATHS": [str(lab)]})
    assert missing.returncode != 0 and f"plugin {lowrank.resolve()} that {tmp_path / 'run'} was trained with is missing" in missing.stderr
