"""What the report says: the study file's text beside the command line's changes, counts agreeing with
their nouns, tables that scroll in their own box, each dataset's own class names, and a nan shown,
never silently dropped from a mean."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from pyro_vae.config import TrainConfig
from pyro_vae.data import EMBEDDED_ROOT
from pyro_vae.evaluation.evaluate import EVALUATION_ARRAYS, EvalSettings, evaluate_run
from pyro_vae.report import build as report
from pyro_vae.report import figures
from pyro_vae.report.build import build_report, build_runs_report
from pyro_vae.report.document import render_markdown
from pyro_vae.report.tables import fmt
from pyro_vae.study.overrides import with_overrides
from pyro_vae.study.runner import Study, run_study
from pyro_vae.training import runs
from pyro_vae.training.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL_EVAL = {"num_samples": 5, "generated": 50, "pairs": 20, "likelihood_images": 20}
TINY = {"dataset": "mnist", "epochs": 1, "train_limit": 300, "test_limit": 100, "batch_size": 100, "hidden_dim": 16}
STUDY = {"name": "tiny", "title": "Tiny", "seeds": [0], "variants": {"VAE": {}}, "evaluation": SMALL_EVAL,
         "description": "Each run trains 30 epochs, about three minutes on a laptop.", "base": {**TINY, "epochs": 2}}


def quiet(message: str) -> None:
    pass


@pytest.fixture(scope="module")
def study_runs(tmp_path_factory, one_thread) -> tuple[Study, Path]:
    """The study file's 2 epochs and 1 seed changed on the command line to 1 epoch and 2 seeds."""
    study = with_overrides(Study.from_dict(STUDY, "tiny.toml"), "tiny.toml", {"epochs": 1}, seeds=[0, 1])
    runs_dir = run_study(study, tmp_path_factory.mktemp("study") / "runs", progress=False, log=quiet)
    return study, runs_dir


@pytest.fixture(scope="module")
def built(study_runs) -> Path:
    _, runs_dir = study_runs
    return build_report(runs_dir, runs_dir / "report", log=quiet).parent


def _paragraphs(out: Path) -> list[str]:
    return (out / "report.md").read_text().split("\n\n")


# ---------------------------------------------------------------------------------------------
# The study file's text and the command line's changes


def test_the_description_is_marked_as_the_study_files_with_the_changes_beside_it(built):
    paragraphs = _paragraphs(built)
    i = next(i for i, p in enumerate(paragraphs) if "Each run trains 30 epochs" in p)
    assert paragraphs[i].startswith("**The study file's description**, written for the file's own settings: ")
    assert paragraphs[i + 1].startswith("> **⚠ Warning.** The text above describes the study file's settings, not this study's")
    assert "the command line changed epochs → 1, seeds → 0, 1." in paragraphs[i + 1]
    assert "Study tiny: 1 variant (VAE) × 2 seeds" in paragraphs[i + 2]


def test_a_description_without_changes_is_shown_as_written():
    study = Study.from_dict(STUDY, "tiny.toml")
    assert render_markdown(report._description_blocks(study)) == STUDY["description"] + "\n"


def test_counts_agree_with_their_nouns(built, study_runs, tmp_path):
    _, runs_dir = study_runs
    one = build_runs_report([runs_dir / "VAE" / "seed-0"], tmp_path / "one", log=quiet).with_suffix(".md").read_text()
    for text in (built / "report.md").read_text(), one:
        assert "(s)" not in text
        assert not re.search(r"\b1 (seeds|runs|epochs|variants|particles|run folders)\b", text), text
    for phrase in ("1 run folder compared side by side", "Training: 1 epoch, ", "with 1 particle; seed 0.", "over 1 run "):
        assert phrase in one, phrase
    assert "with 1 particle; seeds 0, 1." in (built / "report.md").read_text()


def test_every_table_of_the_page_scrolls_in_its_own_box(built):
    page = (built / "report.html").read_text()
    widest = max(len(re.findall("<th>", t)) for t in re.findall(r"<thead>.*?</thead>", page))
    assert widest >= 15  # the headline table: wider than the page
    assert page.count("<table") == page.count('<div class="scroll"><table') > 3
    assert re.search(r"\.scroll \{ overflow-x: auto; \}", page)


def test_a_wide_table_scrolls_in_its_box_not_the_page_in_a_browser(built):
    from test_explorer import CHROMIUM, _browser

    with _browser()() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto((built / "report.html").as_uri())
        widths = page.evaluate("""() => ({page: document.documentElement.scrollWidth,
            boxes: Array.from(document.querySelectorAll(".scroll")).map(b => [b.scrollWidth, b.clientWidth])})""")
        browser.close()
    assert widths["page"] <= 1400  # the page itself never scrolls sideways
    assert any(inner > shown for inner, shown in widths["boxes"]), widths  # the headline table scrolls in its box


# ---------------------------------------------------------------------------------------------
# A nan in metrics.jsonl


def test_a_nan_in_metrics_jsonl_is_shown_not_dropped_from_the_mean(study_runs, tmp_path):
    study, runs_dir = study_runs
    copy = Path(shutil.copytree(runs_dir, tmp_path / "runs", ignore=shutil.ignore_patterns("report")))
    metrics = copy / "VAE" / "seed-1" / runs.METRICS
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    lines[-1]["test_elbo"] = math.nan
    metrics.write_text("".join(json.dumps(line) + "\n" for line in lines))  # json writes NaN
    out = build_report(copy, tmp_path / "report", log=quiet).parent
    results = json.loads((out / "results.json").read_text())
    kept = next(r["final_test_elbo"] for r in results if r["seed"] == 0)
    assert [r["final_test_elbo"] for r in results if r["seed"] == 1] == ["nan"]
    text = (out / "report.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| final test bound | final\\_test\\_elbo |"))
    assert row.split(" | ")[-1] == f"{fmt(kept)} (nan in 1 of 2 seeds) |"  # the mean of seed 0, and the nan said
    warning = next(line for line in text.splitlines() if line.startswith("> **⚠ Warning.** Not a number (nan)"))
    warning = warning.replace("\\_", "_")  # Markdown's escapes
    assert f"VAE seed 1 ({study.run_dir(copy, 'VAE', 1)}): final test bound (final_test_elbo)" in warning
    assert "VAE seed 0" not in warning


# ---------------------------------------------------------------------------------------------
# Runs of different datasets side by side


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory, one_thread) -> tuple[Path, Path, Path]:
    """A run on MNIST and one on a Fashion-MNIST stand-in (the MNIST sample's files in a FashionMNIST
    folder, given with data_dir), evaluated, and their report side by side."""
    root = tmp_path_factory.mktemp("fashion")
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(EMBEDDED_ROOT / "MNIST" / "raw" / name, raw / name)
    folder = tmp_path_factory.mktemp("runs")
    digits = train(TrainConfig(**TINY), folder / "digits", progress=False, log=quiet)
    clothes = train(TrainConfig(**{**TINY, "dataset": "fashion-mnist", "data_dir": str(root)}), folder / "clothes",
                    progress=False, log=quiet)
    for run in (digits, clothes):
        evaluate_run(run, EvalSettings.from_dict(SMALL_EVAL), log=quiet)
    out = build_runs_report([digits, clothes], folder / "report", log=quiet).parent
    return digits, clothes, out


def _texts(fig) -> str:
    import matplotlib.text

    return " ".join(t.get_text() for t in fig.findobj(matplotlib.text.Text))


def test_each_dataset_is_labelled_with_its_own_classes(two_datasets):
    digits, clothes, out = two_datasets
    results = json.loads((out / "results.json").read_text())
    arrays = {}
    for name, run in (("digits", digits), ("clothes", clothes)):
        with np.load(run / EVALUATION_ARRAYS) as npz:
            arrays[name] = {k: npz[k] for k in npz.files}
    inputs = figures._Inputs("0", ["digits", "clothes"], arrays, {r["variant"]: r["config"] for r in results},
                             results, {}, 1)
    for kind in ("codes", "class_spread"):
        drawn = dict(figures.FIGURES[kind](inputs))
        assert list(drawn) == [f"{kind}_mnist", f"{kind}_fashion-mnist"]
        (mnist, _), (fashion, caption) = drawn[f"{kind}_mnist"](), drawn[f"{kind}_fashion-mnist"]()
        assert "T-shirt" not in _texts(mnist) and "Trouser" not in _texts(mnist)
        assert "T-shirt" in _texts(fashion) and "Trouser" in _texts(fashion)
        assert caption.endswith(" (fashion-mnist: clothes)")
    text = (out / "report.md").read_text()
    for name in ("codes_mnist", "codes_fashion-mnist", "class_spread_mnist", "class_spread_fashion-mnist"):
        assert f"(figures/{name}.png)" in text and (out / "figures" / f"{name}.png").is_file(), name
    assert not (out / "figures" / "codes.png").exists()
    page = (out / "explorer.html").read_text()  # one classifier and one set of classes: the first dataset's variants
    data = json.loads(re.search(r'id="explorer-data">(.*?)</script>', page, re.S).group(1))
    assert data["classes"] == [str(i) for i in range(10)] and [v["name"] for v in data["variants"]] == ["digits"]
    assert {"own", "shared"} <= set(data["variants"][0])  # decodes over its own box and the shared one


def test_setup_names_every_dataset_and_its_folder(two_datasets):
    digits, clothes, out = two_datasets
    text = (out / "report.md").read_text().replace("\\_", "_")
    line = next(line for line in text.splitlines() if line.startswith("- Data: "))
    for run in (digits, clothes):
        data = runs.read_config(run)[1]["data"]
        assert f"**{data['dataset']}** from " in line and f"({data['raw_dir']})" in line, line
    assert "**fashion-mnist** from the folder given with --data-dir" in line
    assert "; fashion-mnist test file t10k-images-idx3-ubyte.gz" in text and " Files: mnist " in text
