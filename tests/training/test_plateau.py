"""Training until the bound stops improving: the plateau rule, its lr cuts, its stop, and resuming it."""

import pytest
import torch
from conftest import small_config

from pyro_vae.config import TrainConfig
from pyro_vae.errors import UserError
from pyro_vae.study.cells import make_cell
from pyro_vae.training import runs
from pyro_vae.training.plateau import Plateau, PlateauState
from pyro_vae.training.trainer import resume, train


def quiet(msg):
    pass


def test_the_rule_cuts_then_stops_on_plateaus():
    rule = Plateau(patience=2, delta=0.5, cuts=1, factor=0.1)
    #          1     2     3     4: +0.1  5: +0.2  6: +1.4 7      8
    bounds = [-10, -9.0, -8.4, -8.3, -8.2, -7.0, -7.1, -6.9]
    states = [rule.replay(bounds[:n]) for n in range(1, len(bounds) + 1)]
    assert [s.cuts for s in states] == [0, 0, 0, 0, 1, 1, 1, 1]  # epochs 4 and 5 gained 0.1 and 0.2 over epoch 3's -8.4
    assert [s.stopped for s in states] == [False] * 7 + [True]  # after the cut: 7 and 8 gain no 0.5 over -7.0
    assert (states[-1].best, states[-1].best_epoch) == (-7.0, 6)
    assert rule.lr_factor(states[4]) == pytest.approx(0.1) and rule.lr_factor(PlateauState()) == 1


def test_small_gains_add_up_against_the_last_improvement():
    # 0.15 nats an epoch never beats the previous epoch by 0.2, but beats the last improvement every other epoch.
    rule = Plateau(patience=2, delta=0.2, cuts=0, factor=0.5)
    state = rule.replay([0.15 * i for i in range(40)])
    assert not state.stopped and state.cuts == 0
    assert rule.replay([0.15 * i for i in range(10)] + [1.35] * 2).stopped


def test_a_run_stops_at_its_plateau_and_marks_the_epoch(tmp_path):
    # A gain of 1e6 nats is never reached: epoch 1 improves on nothing, then each epoch is a plateau of patience 1.
    cfg = small_config(epochs=10, plateau_patience=1, plateau_delta=1e6, plateau_cuts=2, plateau_factor=0.5, lr=2e-3)
    logged = []
    run = train(cfg, tmp_path / "run", progress=False, log=logged.append)
    metrics = runs.read_metrics(run)
    assert [m["lr"] for m in metrics] == pytest.approx([2e-3, 2e-3, 1e-3, 5e-4])  # two cuts, then the stop
    assert [bool(m.get("stopped")) for m in metrics] == [False, False, False, True]
    assert metrics[-1]["stopped"].startswith("plateau: test_elbo no gain of more than 1e+06 nats")
    assert sum("lr cut to" in line for line in logged) == 2 and "stopped" in logged[-1]
    assert runs.is_complete(run) and torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 4
    # A study finds nothing left to train; resuming with more epochs trains none.
    assert make_cell("V", 0, run, cfg, {}).epochs_left == 0
    resume(run, epochs=20, progress=False, log=logged.append)
    assert len(runs.read_metrics(run)) == 4 and "nothing to train, --epochs changes nothing" in logged[-1]
    assert runs.read_config(run)[0].epochs == 10  # config.json still says what the run was trained with


def test_without_patience_every_epoch_trains():
    cfg = small_config(epochs=3)
    assert Plateau.of(cfg) is None
    assert runs.epochs_left([{"epoch": 1}], 3) == 2 and runs.epochs_left([{"epoch": 2, "stopped": "plateau"}], 3) == 0


def test_an_interrupted_run_resumes_where_the_rule_stood(tmp_path):
    cfg = small_config(epochs=10, plateau_patience=1, plateau_delta=1e6, plateau_cuts=2, plateau_factor=0.5)
    straight = train(cfg, tmp_path / "straight", progress=False, log=quiet)
    cfg.epochs = 2  # stopped by the ceiling after the first cut, before the second
    split = train(cfg, tmp_path / "split", progress=False, log=quiet)
    resume(split, epochs=10, progress=False, log=quiet)
    a, b = runs.read_metrics(straight), runs.read_metrics(split)
    assert [(m["lr"], m["test_elbo"], m.get("stopped")) for m in a] == [(m["lr"], m["test_elbo"], m.get("stopped")) for m in b]
    sa = torch.load(straight / "checkpoint.pt", weights_only=True)["model"]
    sb = torch.load(split / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_the_validation_bound_is_watched_when_there_is_one(tmp_path):
    cfg = small_config(epochs=5, validation=100, plateau_patience=1, plateau_delta=1e6)
    metrics = runs.read_metrics(train(cfg, tmp_path / "run", progress=False, log=quiet))
    assert len(metrics) == 2 and metrics[-1]["stopped"].startswith("plateau: valid_elbo")


@pytest.mark.parametrize("setting, value, problem", [
    ("plateau_factor", 1.0, "plateau-factor must be between 0 and 1"),
    ("plateau_factor", 0.0, "plateau-factor must be between 0 and 1"),
    ("plateau_delta", -0.1, "plateau-delta must be a finite number"),
    ("plateau_delta", float("nan"), "plateau-delta must be a finite number"),
    ("plateau_patience", -1, "plateau-patience must be at least 0"),
    ("plateau_cuts", -2, "plateau-cuts must be at least 0"),
])
def test_bad_plateau_settings_are_one_line_errors(setting, value, problem):
    with pytest.raises(UserError, match=problem):
        TrainConfig.from_dict({setting: value}).validate()


def test_the_report_says_where_the_rule_stopped_each_run():
    from pyro_vae.report.build import _epochs_text

    config = small_config(epochs=200, plateau_patience=5, plateau_delta=0.2, plateau_cuts=2).to_dict()
    curve = lambda n, stopped: [{"epoch": e, "test_elbo": -100.0} for e in range(1, n)] + [{"epoch": n, "test_elbo": -99.0, **stopped}]
    rows = [{"config": config, "training_curve": curve(87, {"stopped": "plateau"})},
            {"config": config, "training_curve": curve(200, {})}]
    text = _epochs_text(rows)
    assert text.startswith("87-200 epochs (median 143.5), each run trained until the test bound stopped improving "
                           "(no gain of more than 0.2 nats")
    assert "multiplied by 0.3 instead)" in text and "the test bound decided when to stop" in text
    assert "at most 200 epochs; 1 of 2 runs stopped by a rule, the others at their limit (no validation" in text
    rows[1]["training_curve"][-1]["stopped"] = "plateau"
    assert "; all 2 runs stopped by the rule (no validation" in _epochs_text(rows)
    rows[1]["config"] = small_config(epochs=200, plateau_patience=3).to_dict()
    assert "the variants under different plateau rules or none" in _epochs_text(rows)
    assert _epochs_text([{"config": small_config(epochs=7).to_dict(), "training_curve": curve(7, {})}]) == "7 epochs"


def test_a_bound_that_is_not_a_number_is_an_error_not_a_plateau(tmp_path, monkeypatch):
    from pyro_vae.errors import DivergedError
    from pyro_vae.training import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "objective_per_image", lambda *a, **k: float("nan"))
    cfg = small_config(epochs=3, plateau_patience=1, plateau_delta=1e6)
    with pytest.raises(DivergedError, match="the test bound became nan at epoch 1; no checkpoint was written"):
        train(cfg, tmp_path / "run", progress=False, log=quiet)


def test_a_study_says_its_epochs_are_a_ceiling_under_the_rule(tmp_path):
    from pyro_vae.study.runner import _epochs_to_train

    ruled = make_cell("V", 0, tmp_path / "a", small_config(epochs=200, plateau_patience=5), {})
    plain = make_cell("A", 0, tmp_path / "b", small_config(epochs=30), {})
    assert _epochs_to_train([plain]) == "30 epochs"
    assert _epochs_to_train([ruled, plain]) == "at most 230 epochs (runs stop when their bound stops improving)"
