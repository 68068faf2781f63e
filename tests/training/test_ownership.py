"""Whose files a run folder holds: a checkpoint says which run made it, and a study's run folders are
the study's while it runs."""

import json
import shutil
import subprocess
import sys
import time

import pytest
from conftest import small_config

from pyro_vae.cli import main
from pyro_vae.errors import UserError
from pyro_vae.training import runs
from pyro_vae.training.runs import load_run
from pyro_vae.training.trainer import resume, train


def quiet(msg):
    pass


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("seeds")
    return [train(small_config(seed=s, train_limit=300, test_limit=100), root / f"seed-{s}", progress=False, log=quiet)
            for s in (0, 1)]


def test_every_run_gets_its_own_id_and_its_checkpoints_carry_it(two_seeds):
    ids = [json.loads((run / runs.CONFIG).read_text())["run_id"] for run in two_seeds]
    assert ids[0] != ids[1]
    for run, run_id in zip(two_seeds, ids):
        assert runs.load_checkpoint(run, run_id=run_id)["run_id"] == run_id


def test_a_checkpoint_copied_from_another_run_is_refused(tmp_path, two_seeds):
    mine, other = tmp_path / "mine", two_seeds[1]
    shutil.copytree(two_seeds[0], mine)
    shutil.copy(other / runs.CHECKPOINT, mine / runs.CHECKPOINT)  # same shapes, another seed
    before = {p.name: p.read_bytes() for p in mine.iterdir()}
    with pytest.raises(UserError, match="belongs to another run"):
        load_run(mine)  # what evaluate opens
    with pytest.raises(UserError, match="belongs to another run"):
        resume(mine, 2, progress=False, log=quiet)
    assert {p.name: p.read_bytes() for p in mine.iterdir()} == before  # nothing written


def test_a_checkpoint_without_an_id_is_refused_by_a_run_with_one(tmp_path, two_seeds):
    import torch

    run = tmp_path / "run"
    shutil.copytree(two_seeds[0], run)
    state = torch.load(run / runs.CHECKPOINT, weights_only=True)
    del state["run_id"]
    torch.save(state, run / runs.CHECKPOINT)
    with pytest.raises(UserError, match="its run id none"):
        load_run(run)


def test_runs_made_before_ids_existed_still_load(tmp_path, two_seeds):
    import torch

    run = tmp_path / "old"
    shutil.copytree(two_seeds[0], run)
    record = json.loads((run / runs.CONFIG).read_text())
    del record["run_id"]
    (run / runs.CONFIG).write_text(json.dumps(record))
    state = torch.load(run / runs.CHECKPOINT, weights_only=True)
    del state["run_id"]
    torch.save(state, run / runs.CHECKPOINT)
    assert load_run(run).epoch == 1


def _study_folder(tmp_path, two_seeds):
    study = tmp_path / "study"
    (study / "VAE").mkdir(parents=True)
    shutil.copytree(two_seeds[0], study / "VAE" / "seed-0")
    (study / runs.STUDY_FILE).write_text(json.dumps({"name": "s"}))
    return study


def test_a_run_of_a_running_study_is_refused_to_other_processes(tmp_path, two_seeds, monkeypatch):
    study = _study_folder(tmp_path, two_seeds)
    run = study / "VAE" / "seed-0"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pyro_vae.training import runs\n"
                               f"with runs.locked({str(study)!r}):\n print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = (run / runs.METRICS).read_bytes()
        monkeypatch.chdir(run)
        for argv in (["train", "--resume", str(run), "--epochs", "2", "--no-progress"],
                     ["train", "--resume", ".", "--epochs", "2", "--no-progress"],  # the same folder, named otherwise
                     ["train", "--resume", f"../../VAE/{run.name}/../{run.name}", "--epochs", "2", "--no-progress"],
                     ["evaluate", str(run), "--num-samples", "2"]):
            with pytest.raises(UserError, match=f"is a run of the study in .*process {holder.pid} is running"):
                with runs.locked(argv[2] if argv[1] == "--resume" else argv[1]):
                    pass
            assert main(argv) == 2
        assert (run / runs.METRICS).read_bytes() == before and not (run / runs.EVALUATION).exists()
    finally:
        holder.kill()
        holder.wait()
    with runs.locked(run):  # the study gone (its lock released with its process), the run is free again
        pass


def test_the_study_itself_and_its_workers_may_lock_its_runs(tmp_path, two_seeds):
    study = _study_folder(tmp_path, two_seeds)
    run = study / "VAE" / "seed-0"
    with runs.locked(study):
        with runs.locked(run):  # the study's own process
            pass
        worker = subprocess.run([sys.executable, "-c", "from pyro_vae.training import runs\n"
                                 f"with runs.locked({str(run)!r}): print('ok')"], capture_output=True, text=True)
        assert worker.stdout.strip() == "ok", worker.stderr  # a worker it started inherits the right
