"""The study report: real tiny runs in, Markdown/HTML/JSON/CSV out, verdicts computed from numbers."""

from __future__ import annotations

import base64
import csv
import json
import math
import re
import shutil
from pathlib import Path

import pytest

from pyro_vae.errors import UserError
from pyro_vae.evaluation.metrics import flat_metrics
from pyro_vae.io import read_toml
from pyro_vae.report import build as report
from pyro_vae.report.build import build_report
from pyro_vae.report.document import render_markdown
from pyro_vae.report.tables import PARETO_WARN
from pyro_vae.study.claims import CLAIM_RULE, FAILS, HOLDS, PARTLY, Claim, judge_claims
from pyro_vae.study.runner import Study, run_study
from pyro_vae.training import runs

# The AE-vs-VAE claims exactly as the shipped study file states them.
AE_VS_VAE_CLAIMS = read_toml(Path(__file__).resolve().parents[2] / "studies" / "ae_vs_vae.toml")["claims"]

STUDY = {
    "name": "tiny", "title": "Tiny AE vs VAE <check & escape>", "seeds": [0, 1],
    "base": {"dataset": "mnist", "epochs": 1, "train_limit": 600, "test_limit": 300, "batch_size": 100},
    "variants": {"AE": {"guide": "delta", "beta": 0.0}, "VAE": {"guide": "gaussian", "beta": 1.0}},
    "compare": {"baseline": "AE", "candidate": "VAE"}, "claims": AE_VS_VAE_CLAIMS,
    "evaluation": {"num_samples": 30, "generated": 200, "pairs": 100, "likelihood_images": 100},
}


def _quiet(message: str) -> None:
    pass


@pytest.fixture(scope="module")
def study_runs(tmp_path_factory):
    runs_dir = tmp_path_factory.mktemp("study") / "runs"
    study = Study.from_dict(STUDY, "tiny.toml")
    run_study(study, runs_dir, progress=False, log=_quiet)
    return study, runs_dir


@pytest.fixture(scope="module")
def built(study_runs, tmp_path_factory):
    study, runs_dir = study_runs
    out = tmp_path_factory.mktemp("report") / "report"
    path = build_report(runs_dir, out, log=_quiet)
    return study, runs_dir, out, path


def _mtimes(study: Study, runs_dir: Path, name: str) -> dict:
    return {cell: (study.run_dir(runs_dir, *cell) / name).stat().st_mtime_ns for cell in study.cells()}


# ---------------------------------------------------------------------------------------------
# The files


def test_report_files_exist(built):
    _, _, out, path = built
    assert path == out / "report.html"
    for name in ("report.md", "report.html", "results.json", "results.csv"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not [p for p in out.rglob("*") if ".tmp" in p.name], "temporary files left behind"


def test_results_json_has_one_entry_per_run(built):
    study, _, out, _ = built
    results = json.loads((out / "results.json").read_text())  # strict JSON: no NaN/Infinity tokens
    assert [(r["variant"], r["seed"]) for r in results] == study.cells()
    for r in results:
        assert {"config", "data", "versions", "final_train_elbo", "final_test_elbo", "evaluation"} <= set(r)
        assert r["data"]["train_count"] == 600 and r["data"]["test_count"] == 300
        assert r["config"]["guide"] == study.variants[r["variant"]]["guide"]
        for key in ("prior_fid", "box_fid", "gaussian_kl", "share_in_95", "white_spread_ratio", "recon_bce", "log_px_exact"):
            assert key in r["evaluation"], key
    by_variant = {r["variant"]: r["evaluation"] for r in results}
    assert "test_elbo" in by_variant["VAE"] and "test_elbo" not in by_variant["AE"]


def test_results_csv_has_one_row_per_run_and_metric_columns(built):
    study, _, out, _ = built
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(study.cells())
    assert [(r["variant"], int(r["seed"])) for r in rows] == study.cells()
    for column in ("guide", "beta", "latent_dim", "epochs", "lr", "recon_bce", "log_px_exact", "test_elbo", "prior_fid",
                   "prior_confidence", "prior_label_entropy", "box_fid", "mid_same_fid", "mid_diff_confidence",
                   "mean_norm", "gaussian_kl", "share_in_95", "max_abs_skewness", "max_radius", "spread_ratio",
                   "spread_cv", "silhouette", "white_spread_ratio", "white_spread_cv", "final_test_elbo"):
        assert column in rows[0], column
    for r in rows:
        float(r["prior_fid"]), float(r["share_in_95"])
        assert (r["test_elbo"] == "") == (r["variant"] == "AE")  # undefined for the delta guide


def test_html_is_self_contained_and_embeds_every_figure(built):
    _, _, out, _ = built
    page = (out / "report.html").read_text()
    figures = sorted((out / "figures").glob("*.png"))
    assert len(figures) >= 12
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", page, flags=re.I)
    assert refs and all(ref.startswith("data:") for ref in refs), [r[:40] for r in refs if not r.startswith("data:")]
    assert "<link" not in page.lower() and "@import" not in page and "url(" not in page
    assert page.count("<img ") == len(figures)
    for png in figures:
        assert base64.b64encode(png.read_bytes()).decode() in page, png.name
    assert "Tiny AE vs VAE &lt;check &amp; escape&gt;" in page and "<check & escape>" not in page


def test_markdown_links_every_figure_by_relative_path(built):
    _, _, out, _ = built
    text = (out / "report.md").read_text()
    linked = set(re.findall(r"\]\((figures/[^)]+\.png)\)", text))
    on_disk = {f"figures/{p.name}" for p in (out / "figures").glob("*.png")}
    assert linked == on_disk
    for name in ("codes", "prior_samples", "box_samples", "manifold", "reconstructions", "class_spread",
                 "class_spread_whitened", "training_curves", "marginals", "metric_prior_fid"):
        assert f"figures/{name}.png" in linked, name


def test_report_states_setup_and_tables(built):
    _, _, out, _ = built
    text = (out / "report.md").read_text()
    for phrase in ("## Setup", "Split: official train/test files", "600 training and 300 test images", "Binarisation: dynamic",
                   "K = 30", "test accuracy", "torch", "## All variants compared", "## All metrics",
                   "share in 95% ball", "prior FID", "seeds 0, 1"):
        assert phrase in text, phrase
    assert "—" in text  # undefined cells (test ELBO of the AE)


def test_verdicts_are_present_and_match_the_numbers(built):
    study, _, out, _ = built
    text = (out / "report.md").read_text()
    results = json.loads((out / "results.json").read_text())
    values: dict = {}
    for r in results:
        for m, x in flat_metrics(r).items():
            values.setdefault(r["variant"], {}).setdefault(m, []).append(x)
    context = {v: {"n_classes": 10, "n_codes": 300, "latent_dim": 2} for v in study.variants}
    claims = judge_claims(study.claim_specs(), values, context)
    assert len(claims) == 3
    for claim in claims:
        assert claim.verdict in (HOLDS, PARTLY, FAILS)  # 2 seeds each: every metric is judged
        assert f"Verdict: the claim {claim.verdict}" in text
        assert len(claim.rows) >= 5
    assert text.count("Verdict: the claim") == 3
    assert CLAIM_RULE.split(":")[0] in text


def test_pareto_warning_follows_the_numbers(built):
    _, _, out, _ = built
    text = (out / "report.md").read_text()
    results = json.loads((out / "results.json").read_text())
    for variant in ("AE", "VAE"):
        shares = [r["evaluation"].get("pareto_k_share_above_0_7") for r in results if r["variant"] == variant]
        shares = [x for x in shares if isinstance(x, float)]
        flagged = f"{variant}: " in text and any(
            line.startswith(f"> **⚠ Warning.** {variant}: ") and "Pareto k above 0.7" in line for line in text.splitlines())
        assert flagged == (bool(shares) and sum(shares) / len(shares) > PARETO_WARN), variant


def test_setup_warns_loudly_about_the_embedded_sample(built):
    study, _, out, _ = built
    results = json.loads((out / "results.json").read_text())
    for r in results:
        r["data"] = {**r["data"], "origin": "embedded", "note": "using the MNIST sample shipped with pyro-vae"}
    text = render_markdown(report._setup_blocks(study, results, {}))
    assert "> **⚠ Warning.** The data is the MNIST sample shipped inside pyro-vae" in text
    assert "EMBEDDED IN THE PACKAGE" in text


@pytest.mark.parametrize("drop", [("claims",), ("claims", "compare")])
def test_study_without_claims_gets_no_verdicts(study_runs, tmp_path, drop):
    study, runs_dir = study_runs
    copy = tmp_path / "runs"
    shutil.copytree(runs_dir, copy)
    record = json.loads((copy / "study.json").read_text())
    for key in drop:
        record[key] = {}  # a [compare] table alone no longer brings the AE-vs-VAE claims
    (copy / "study.json").write_text(json.dumps(record))
    build_report(copy, tmp_path / "report", log=_quiet)
    text = (tmp_path / "report" / "report.md").read_text()
    assert "states no claims" in text and "Verdict:" not in text and "## Claims" not in text
    assert "## All variants compared" in text


def test_claims_of_two_pairs_get_a_section_each_numbered_throughout():
    def claim(key: str, baseline: str, candidate: str) -> Claim:
        return Claim(key, f"{key} title", "why", HOLDS, [], baseline, candidate)

    text = render_markdown(report._claim_blocks(
        [claim("a", "AE", "VAE"), claim("b", "AE", "VAE"), claim("c", "VAE", "flow")]))
    assert text.count("## Claims: ") == 2 and text.count(CLAIM_RULE.split(":")[0]) == 2
    assert "## Claims: VAE (candidate) against AE (baseline)" in text
    assert "## Claims: flow (candidate) against VAE (baseline)" in text
    assert [line for line in text.splitlines() if line.startswith("### ")] == [
        "### Claim 1. a title", "### Claim 2. b title", "### Claim 3. c title"]
    assert "| metric | better | VAE (mean ± sd) | flow (mean ± sd) |" in text


# ---------------------------------------------------------------------------------------------
# Rebuilding: evaluate what lacks it, never retrain


def test_rebuild_does_not_retrain_or_reevaluate(built):
    study, runs_dir, out, _ = built
    checkpoints, evaluations = _mtimes(study, runs_dir, runs.CHECKPOINT), _mtimes(study, runs_dir, runs.EVALUATION)
    messages = []
    build_report(runs_dir, out, log=messages.append)
    assert _mtimes(study, runs_dir, runs.CHECKPOINT) == checkpoints
    assert _mtimes(study, runs_dir, runs.EVALUATION) == evaluations
    assert any("already evaluated" in m for m in messages)


def test_missing_evaluation_is_recomputed_without_retraining(study_runs, tmp_path):
    study, runs_dir = study_runs
    checkpoints, metrics = _mtimes(study, runs_dir, runs.CHECKPOINT), _mtimes(study, runs_dir, runs.METRICS)
    evaluations = _mtimes(study, runs_dir, runs.EVALUATION)
    victim = study.run_dir(runs_dir, "VAE", 1)
    before = json.loads((victim / runs.EVALUATION).read_text())["metrics"]
    (victim / runs.EVALUATION).unlink()
    build_report(runs_dir, tmp_path / "again", log=_quiet)
    assert (victim / runs.EVALUATION).is_file()
    assert _mtimes(study, runs_dir, runs.CHECKPOINT) == checkpoints
    assert _mtimes(study, runs_dir, runs.METRICS) == metrics
    after = _mtimes(study, runs_dir, runs.EVALUATION)
    assert [c for c in study.cells() if after[c] != evaluations[c]] == [("VAE", 1)]
    again = json.loads((victim / runs.EVALUATION).read_text())["metrics"]
    assert again["recon_bce"] == pytest.approx(before["recon_bce"])  # same checkpoint, same numbers
    assert (tmp_path / "again" / "report.html").is_file()


def test_partial_study_reports_what_finished_and_judges_no_claim_short_of_runs(study_runs, tmp_path):
    study, runs_dir = study_runs
    copy = tmp_path / "runs"
    shutil.copytree(runs_dir, copy)
    (study.run_dir(copy, "AE", 1) / runs.CHECKPOINT).unlink()  # unfinished
    messages = []
    build_report(copy, tmp_path / "report", log=messages.append)
    assert not (study.run_dir(copy, "AE", 1) / runs.CHECKPOINT).exists()  # nothing was trained
    assert any("AE/seed-1 is missing or unfinished" in m for m in messages)
    text = (tmp_path / "report" / "report.md").read_text()
    title, top = text.split("\n\n")[:2]
    assert title.startswith("# ") and "Partial report: 3 of 4 runs have finished" in top and "AE seed 1" in top
    rows = json.loads((tmp_path / "report" / "results.json").read_text())
    assert sorted((r["variant"], r["seed"]) for r in rows) == [("AE", 0), ("VAE", 0), ("VAE", 1)]
    # Every claim compares AE with VAE, and AE has 1 of its 2 runs: no verdict, and the reason said.
    verdicts = re.findall(r"\*\*Verdict: the claim ([^*]+)\*\* \(([^)]*)\)", text)
    assert len(verdicts) == len(AE_VS_VAE_CLAIMS)
    assert all(v == "not judged" and "waiting for runs: AE 1 of 2 finished" in why for v, why in verdicts)
    assert not re.search(r"\| \**(better|worse|no clear difference)\** \|$", text, re.M)  # no metric verdict either
    with pytest.raises(UserError):
        build_report(tmp_path / "nowhere", tmp_path / "report2", log=_quiet)


def test_claims_wait_for_the_runs_the_study_plans():
    spec = report.Study.from_dict(STUDY, "tiny.toml").claim_specs()[1]  # centre: AE vs VAE
    values = {"AE": {"mean_norm": [5.0, 5.1, 4.9], "gaussian_kl": [3.0, 3.1, 2.9], "share_in_95": [0.5, 0.6, 0.55]},
              "VAE": {"mean_norm": [0.1, 0.12, 0.11], "gaussian_kl": [0.1, 0.12, 0.11], "share_in_95": [0.95, 0.94, 0.95]}}
    assert judge_claims([spec], values, runs={"AE": (3, 3), "VAE": (3, 3)})[0].verdict == HOLDS
    waiting = judge_claims([spec], values, runs={"AE": (3, 3), "VAE": (3, 4)})[0]
    assert waiting.verdict == "not judged" and waiting.note == "waiting for runs: VAE 3 of 4 finished"
    assert {r["verdict"] for r in waiting.rows} == {"not judged"}


def test_loose_run_folders_are_compared_side_by_side(study_runs, tmp_path):
    study, runs_dir = study_runs
    loose = tmp_path / "loose"
    for name, (variant, seed) in {"ae": ("AE", 0), "vae": ("VAE", 1), "vae-short": ("VAE", 0)}.items():
        shutil.copytree(study.run_dir(runs_dir, variant, seed), loose / name)
    (loose / "vae-short" / runs.CHECKPOINT).unlink()
    evaluations = {n: (loose / n / runs.EVALUATION).stat().st_mtime_ns for n in ("ae", "vae")}
    out = report.build_runs_report([loose / "ae", loose / "vae", loose / "vae-short"], tmp_path / "report", log=_quiet)
    assert {n: (loose / n / runs.EVALUATION).stat().st_mtime_ns for n in ("ae", "vae")} == evaluations  # not re-evaluated
    text = (tmp_path / "report" / "report.md").read_text()
    assert out.is_file() and "Partial report: 2 of 3 runs have finished" in text and "vae-short seed 0" in text
    assert "carry no claims" in text and "Verdict:" not in text
    assert "| variant | guide | beta |" in text and "| ae | delta | 0 |" in text and "| vae | gaussian | 1 |" in text
    rows = json.loads((tmp_path / "report" / "results.json").read_text())
    assert [(r["variant"], r["seed"]) for r in rows] == [("ae", 0), ("vae", 1)]
    with pytest.raises(UserError, match="not a run folder"):
        report.build_runs_report([loose / "ae", tmp_path], tmp_path / "r2", log=_quiet)
    with pytest.raises(UserError, match="both be called"):
        report.build_runs_report([loose / "ae", loose / "ae"], tmp_path / "r3", log=_quiet)


# ---------------------------------------------------------------------------------------------
# Rendering


def test_renderers_escape_their_input(tmp_path):
    from pyro_vae.report.document import Bullets, Cell, Heading, Paragraph, Table, render_html

    blocks = [Heading(1, "A <b> & B"), Paragraph(["x < y & ", ("code", "a|b"), " ", ("b", "*bold*")], "warning"),
              Bullets(["<script>alert(1)</script>"]),
              Table(["name", "value"], [["a|b_c", Cell("1.5", bold=True)]], caption="cap <i>", numeric=(1,))]
    page = render_html(blocks, "t<itle>", tmp_path)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "A &lt;b&gt; &amp; B" in page and "<strong>1.5</strong>" in page and 'class="num"' in page
    assert "<title>t&lt;itle&gt;</title>" in page
    md = render_markdown(blocks)
    assert "| a\\|b\\_c | **1.5** |" in md and "|---|---:|" in md
    assert "`a|b`" in md and "**\\*bold\\***" in md and "> **⚠ Warning.**" in md


def test_number_formatting():
    from pyro_vae.report.tables import fmt, fmt_pm
    from pyro_vae.study.statistics import Summary

    assert fmt(None) == "—" and fmt(math.nan) == "—" and fmt(math.inf) == "∞"
    assert fmt(-98.1234) == "−98.12" and fmt(3) == "3" and fmt(0.95) == "0.9500"
    assert fmt_pm(Summary([1.0, 2.0], -98.1234, 0.456, 2)) == "−98.12 ± 0.46"
    assert fmt_pm(Summary([1.0], 0.5, 0.0, 1)) == "0.5000"


# ---------------------------------------------------------------------------------------------
# Config columns


def test_every_train_config_field_has_a_report_column_or_a_reason(built):
    import dataclasses

    from pyro_vae.config import TrainConfig
    from pyro_vae.report.tables import CONFIG_COLUMNS, CONFIG_EXCLUDED, VARIANT_COLUMNS

    names = [f.name for f in dataclasses.fields(TrainConfig)]
    assert set(CONFIG_EXCLUDED) <= set(names), "an exclusion names no TrainConfig field"
    assert all(reason for reason in CONFIG_EXCLUDED.values())
    for name in names:
        assert (name in CONFIG_COLUMNS) != (name in CONFIG_EXCLUDED), name
    assert CONFIG_COLUMNS == [n for n in names if n in CONFIG_COLUMNS]  # field order
    assert {n for n in names if n.endswith("_options")} <= set(VARIANT_COLUMNS)
    _, _, out, _ = built
    with open(out / "results.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header[3:3 + len(CONFIG_COLUMNS)] == CONFIG_COLUMNS
