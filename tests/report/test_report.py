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
from pyro_vae.report import build as report
from pyro_vae.report.build import (
    BETTER,
    FAILS,
    HOLDS,
    NOT_JUDGED,
    PARTLY,
    SAME,
    UNJUDGED,
    WORSE,
    build_report,
    claim_verdict,
    compare_metric,
    judge_claims,
)
from pyro_vae.study.runner import Study, run_study
from pyro_vae.training import runs

STUDY = {
    "name": "tiny", "title": "Tiny AE vs VAE <check & escape>", "seeds": [0, 1],
    "base": {"dataset": "mnist", "epochs": 1, "train_limit": 600, "test_limit": 300, "batch_size": 100},
    "variants": {"AE": {"guide": "delta", "beta": 0.0}, "VAE": {"guide": "gaussian", "beta": 1.0}},
    "compare": {"baseline": "AE", "candidate": "VAE"},
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
        for m, x in report.flat_metrics(r).items():
            values.setdefault(r["variant"], {}).setdefault(m, []).append(x)
    context = {v: {"n_classes": 10, "n_codes": 300, "latent_dim": 2} for v in study.variants}
    claims = judge_claims(values, "AE", "VAE", context)
    assert len(claims) == 3
    for claim in claims:
        assert claim.verdict in (HOLDS, PARTLY, FAILS)  # 2 seeds each: every metric is judged
        assert f"Verdict: the claim {claim.verdict}" in text
        assert len(claim.rows) >= 5
    assert text.count("Verdict: the claim") == 3
    assert report.CLAIM_RULE.split(":")[0] in text


def test_pareto_warning_follows_the_numbers(built):
    _, _, out, _ = built
    text = (out / "report.md").read_text()
    results = json.loads((out / "results.json").read_text())
    for variant in ("AE", "VAE"):
        shares = [r["evaluation"].get("pareto_k_share_above_0_7") for r in results if r["variant"] == variant]
        shares = [x for x in shares if isinstance(x, float)]
        flagged = f"{variant}: " in text and any(
            line.startswith(f"> **⚠ Warning.** {variant}: ") and "Pareto k above 0.7" in line for line in text.splitlines())
        assert flagged == (bool(shares) and sum(shares) / len(shares) > report.PARETO_WARN), variant


def test_setup_warns_loudly_about_the_embedded_sample(built):
    study, _, out, _ = built
    results = json.loads((out / "results.json").read_text())
    for r in results:
        r["data"] = {**r["data"], "origin": "embedded", "note": "using the MNIST sample shipped with pyro-vae"}
    text = report.render_markdown(report._setup_blocks(study, results, {}))
    assert "> **⚠ Warning.** The data is the MNIST sample shipped inside pyro-vae" in text
    assert "EMBEDDED IN THE PACKAGE" in text


def test_study_without_compare_gets_no_verdicts(study_runs, tmp_path):
    study, runs_dir = study_runs
    copy = tmp_path / "runs"
    shutil.copytree(runs_dir, copy)
    record = json.loads((copy / "study.json").read_text())
    record["compare"] = {}
    (copy / "study.json").write_text(json.dumps(record))
    build_report(copy, tmp_path / "report", log=_quiet)
    text = (tmp_path / "report" / "report.md").read_text()
    assert "no \\[compare\\] table" in text and "Verdict:" not in text
    assert "## All variants compared" in text


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


def test_unfinished_run_is_an_error_not_a_training(study_runs, tmp_path):
    study, runs_dir = study_runs
    copy = tmp_path / "runs"
    shutil.copytree(runs_dir, copy)
    (study.run_dir(copy, "AE", 1) / runs.CHECKPOINT).unlink()
    with pytest.raises(UserError, match="missing or unfinished"):
        build_report(copy, tmp_path / "report", log=_quiet)
    assert not (study.run_dir(copy, "AE", 1) / runs.CHECKPOINT).exists()
    with pytest.raises(UserError):
        build_report(tmp_path / "nowhere", tmp_path / "report2", log=_quiet)


# ---------------------------------------------------------------------------------------------
# The verdict logic on constructed numbers


@pytest.mark.parametrize("better, target, base, cand, expected", [
    ("lower", None, [10.0, 11.0, 10.5], [1.0, 1.2, 0.9], BETTER),
    ("lower", None, [1.0, 1.2, 0.9], [10.0, 11.0, 10.5], WORSE),
    ("lower", None, [1.0, 3.0, 2.0], [1.5, 2.5, 2.2], SAME),
    ("higher", None, [0.2, 0.25, 0.22], [0.9, 0.92, 0.91], BETTER),
    ("higher", None, [0.9, 0.92, 0.91], [0.2, 0.25, 0.22], WORSE),
    ("target", 0.95, [0.30, 0.35, 0.32], [0.94, 0.95, 0.96], BETTER),
    ("target", 0.95, [0.99, 0.999, 1.0], [0.94, 0.95, 0.96], BETTER),  # overshooting is also a miss
    ("target", 0.95, [0.94, 0.95, 0.96], [0.5, 0.55, 0.6], WORSE),
    ("lower", None, [5.0, 5.0], [5.0, 5.0], SAME),  # no spread at all: the floor keeps it undecided
    ("lower", None, [5.0], [1.0], UNJUDGED),  # one seed: no spread to judge against
    ("lower", None, [math.inf, 3.0], [1.0, 1.1], BETTER),  # a collapsed (infinite-KL) baseline
])
def test_compare_metric(better, target, base, cand, expected):
    assert compare_metric(base, cand, better, target)["verdict"] == expected


def test_compare_metric_uses_two_standard_errors():
    # difference 1.0; sd 1 on both sides with 4 seeds: SE = sqrt(1/4 + 1/4) = 0.707, 2 SE = 1.41 > 1
    base = [0.0, 1.0, 2.0, 2.0]
    cand = [x - 1.0 for x in base]
    result = compare_metric(base, cand, "lower")
    assert result["improvement"] == pytest.approx(1.0)
    assert result["threshold"] > 1.0 and result["verdict"] == SAME
    tight = compare_metric([x * 0.1 for x in base], [x * 0.1 - 1.0 for x in base], "lower")
    assert tight["verdict"] == BETTER and tight["threshold"] < 1.0


@pytest.mark.parametrize("verdicts, expected", [
    ([BETTER, BETTER, BETTER], HOLDS),
    ([BETTER, SAME, BETTER], PARTLY),
    ([BETTER, WORSE, BETTER], FAILS),
    ([SAME, SAME], FAILS),
    ([WORSE], FAILS),
    ([UNJUDGED, UNJUDGED], NOT_JUDGED),
    ([BETTER, UNJUDGED], PARTLY),
    ([], NOT_JUDGED),
])
def test_claim_verdict(verdicts, expected):
    assert claim_verdict(verdicts) == expected


def _values(good: bool) -> dict:
    """Per-seed values where the candidate (VAE) is clearly better (good=True) or clearly worse."""
    ideal = {"prior_fid": 5.0, "prior_confidence": 0.95, "prior_label_entropy": math.log(10), "box_fid": 5.0,
             "box_confidence": 0.95, "box_label_entropy": math.log(10), "mid_same_fid": 5.0,
             "mid_same_confidence": 0.95, "mid_diff_fid": 5.0, "mid_diff_confidence": 0.95, "mean_norm": 0.01,
             "gaussian_kl": 0.01, "share_in_95": 0.95, "max_abs_skewness": 0.05, "max_radius": 3.5,
             "white_spread_ratio": 1.1, "white_spread_cv": 0.05, "spread_ratio": 1.1, "spread_cv": 0.05,
             "silhouette": 0.6}
    poor = {"prior_fid": 80.0, "prior_confidence": 0.5, "prior_label_entropy": 1.0, "box_fid": 60.0,
            "box_confidence": 0.6, "box_label_entropy": 1.2, "mid_same_fid": 50.0, "mid_same_confidence": 0.6,
            "mid_diff_fid": 70.0, "mid_diff_confidence": 0.5, "mean_norm": 4.0, "gaussian_kl": 30.0,
            "share_in_95": 0.2, "max_abs_skewness": 2.0, "max_radius": 40.0, "white_spread_ratio": 4.0,
            "white_spread_cv": 0.5, "spread_ratio": 5.0, "spread_cv": 0.6, "silhouette": 0.1}
    jitter = [-0.01, 0.0, 0.01]

    def seeds(d):
        return {k: [v * (1 + j) for j in jitter] for k, v in d.items()}

    return {"AE": seeds(poor), "VAE": seeds(ideal)} if good else {"AE": seeds(ideal), "VAE": seeds(poor)}


def test_judge_claims_flip_with_the_numbers():
    context = {v: {"n_classes": 10, "n_codes": 2000, "latent_dim": 2} for v in ("AE", "VAE")}
    good = judge_claims(_values(True), "AE", "VAE", context)
    assert [c.verdict for c in good] == [HOLDS, HOLDS, HOLDS]
    bad = judge_claims(_values(False), "AE", "VAE", context)
    assert [c.verdict for c in bad] == [FAILS, FAILS, FAILS]
    assert all(r["verdict"] == WORSE for c in bad for r in c.rows)
    # One centre metric turned around: claim 2 no longer holds, the others are untouched.
    mixed = _values(True)
    mixed["VAE"]["gaussian_kl"] = [x * 1e5 for x in mixed["VAE"]["gaussian_kl"]]
    verdicts = [c.verdict for c in judge_claims(mixed, "AE", "VAE", context)]
    assert verdicts == [HOLDS, FAILS, HOLDS]


def test_claim_one_gives_the_baseline_its_better_sampler():
    values = _values(True)
    values["AE"]["box_fid"] = [4.0, 4.1, 4.2]  # the AE's box samples beat the VAE's prior samples
    holes = judge_claims(values, "AE", "VAE")[0]
    fid = next(r for r in holes.rows if r["metric"] == "prior_fid")
    assert fid["baseline_metric"] == "box_fid" and fid["verdict"] == WORSE
    assert holes.verdict == FAILS
    values["AE"]["box_fid"] = [90.0, 91.0, 92.0]  # now the prior draws are the AE's better sampler
    fid = next(r for r in judge_claims(values, "AE", "VAE")[0].rows if r["metric"] == "prior_fid")
    assert fid["baseline_metric"] == "prior_fid" and fid["verdict"] == BETTER


def test_single_seed_studies_are_not_judged():
    values = {v: {k: x[:1] for k, x in d.items()} for v, d in _values(True).items()}
    assert [c.verdict for c in judge_claims(values, "AE", "VAE")] == [NOT_JUDGED] * 3


def test_max_radius_target_is_the_median_largest_norm():
    import numpy as np

    rng = np.random.default_rng(0)
    maxima = [np.linalg.norm(rng.standard_normal((2000, 2)), axis=1).max() for _ in range(400)]
    assert report.expected_max_radius(2000, 2) == pytest.approx(np.median(maxima), rel=0.03)


# ---------------------------------------------------------------------------------------------
# Rendering


def test_renderers_escape_their_input(tmp_path):
    from pyro_vae.report.build import (
        Bullets,
        Cell,
        Heading,
        Paragraph,
        Table,
        render_html,
        render_markdown,
    )

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
    from pyro_vae.report.build import Summary, _fmt, _fmt_pm

    assert _fmt(None) == "—" and _fmt(math.nan) == "—" and _fmt(math.inf) == "∞"
    assert _fmt(-98.1234) == "−98.12" and _fmt(3) == "3" and _fmt(0.95) == "0.9500"
    assert _fmt_pm(Summary([1.0, 2.0], -98.1234, 0.456, 2)) == "−98.12 ± 0.46"
    assert _fmt_pm(Summary([1.0], 0.5, 0.0, 1)) == "0.5000"
