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
from conftest import HAVE_FULL_DATA

from pyro_vae.errors import UserError
from pyro_vae.evaluation.metrics import METRICS, flat_metrics
from pyro_vae.io import read_toml
from pyro_vae.report import build as report
from pyro_vae.report.build import build_report
from pyro_vae.report.document import render_markdown
from pyro_vae.report.tables import PARETO_WARN
from pyro_vae.report.verdicts import claim_blocks
from pyro_vae.study.claims import CLAIM_RULE, MIN_SEEDS, Claim
from pyro_vae.study.runner import Study, run_study
from pyro_vae.study.statistics import HOLDS
from pyro_vae.training import runs

# The AE-vs-VAE claims as the shipped study file states them; with the two seeds of this test, claims 1
# and 3 declare that two seeds suffice and claim 2 keeps the default (so it is not judged).
AE_VS_VAE_CLAIMS = read_toml(Path(__file__).resolve().parents[2] / "studies" / "ae_vs_vae.toml")["claims"]
AE_VS_VAE_CLAIMS = {k: {**c, "min_seeds": 2} if k != "centre" else c for k, c in AE_VS_VAE_CLAIMS.items()}
# A one-epoch model on 600 images puts none of its reconstructions inside the real images' manifold, so the
# shipped primary (precision relative to the reconstructions') is undefined there; its re-encoding twin is not.
AE_VS_VAE_CLAIMS["holes"] = {**AE_VS_VAE_CLAIMS["holes"], "primary": "far_reencode_rise",
                             "secondary": [t for t in AE_VS_VAE_CLAIMS["holes"]["secondary"] if t != "far_reencode_rise"]}

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


def _page_refs(page: str) -> list[str]:
    return re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", page, flags=re.I)


def test_html_links_every_figure_stored_once_in_figures(built):
    _, _, out, _ = built
    page = (out / "report.html").read_text()
    figures = sorted((out / "figures").glob("*.png"))
    assert len(figures) >= 12
    refs = _page_refs(page)
    # Every image is a PNG of figures/ (committed once, not again inside the page); the one other link is the explorer.
    shown = [ref for ref in refs if ref != "explorer.html"]
    assert sorted(shown) == [f"figures/{png.name}" for png in figures] and refs.count("explorer.html") == 1
    assert "data:" not in page and (out / "explorer.html").is_file()
    assert "<link" not in page.lower() and "@import" not in page and "url(" not in page  # the CSS is inline
    assert page.count("<img ") == len(figures) and len(page.encode()) < 200_000
    assert "Tiny AE vs VAE &lt;check &amp; escape&gt;" in page and "<check & escape>" not in page


def test_self_contained_html_embeds_every_figure(built, tmp_path):
    _, runs_dir, out, _ = built
    build_report(runs_dir, tmp_path / "one-file", log=_quiet, self_contained=True)
    page = (tmp_path / "one-file" / "report.html").read_text()
    figures = sorted((tmp_path / "one-file" / "figures").glob("*.png"))
    refs = _page_refs(page)
    assert refs and all(ref.startswith("data:") or ref == "explorer.html" for ref in refs), [r[:40] for r in refs if not r.startswith("data:")]
    assert page.count("<img ") == len(figures)
    for png in figures:
        assert base64.b64encode(png.read_bytes()).decode() in page, png.name


def test_without_the_explorer_the_report_says_how_to_build_it(built, tmp_path):
    _, runs_dir, out, _ = built
    build_report(runs_dir, tmp_path / "committed", log=_quiet, explorer=False)
    folder = tmp_path / "committed"
    assert not (folder / "explorer.html").exists()
    for name in ("report.md", "report.html"):
        text = (folder / name).read_text()
        assert "explorer.html" in text and "not stored with this report" in text and "pyro-vae report" in text, name
    assert "explorer.html" not in _page_refs((folder / "report.html").read_text())  # said, not linked
    assert "](explorer.html)" not in (folder / "report.md").read_text()
    # Everything else is the report the default build wrote: the same figures, byte for byte.
    assert {p.name: p.read_bytes() for p in (folder / "figures").glob("*.png")} == \
           {p.name: p.read_bytes() for p in (out / "figures").glob("*.png")}


def test_markdown_links_every_figure_by_relative_path(built):
    _, _, out, _ = built
    text = (out / "report.md").read_text()
    linked = set(re.findall(r"\]\((figures/[^)]+\.png)\)", text))
    on_disk = {f"figures/{p.name}" for p in (out / "figures").glob("*.png")}
    assert linked == on_disk
    for name in ("codes", "prior_samples", "box_samples", "manifold", "reconstructions", "class_spread",
                 "class_spread_whitened", "training_curves", "marginals", "metric_prior_fid",
                 "codes_sampled", "fidelity_distance"):  # claim 2's sampled codes beside the means; claim 1's curve
        assert f"figures/{name}.png" in linked, name


def test_report_states_setup_and_tables(built):
    _, _, out, _ = built
    text = (out / "report.md").read_text()
    # The complete data has the official split; the package's sample, a split carved from its one file.
    split = "Split: official train/test files" if HAVE_FULL_DATA else "Split: carved from the test file only: stratified, seed 0"
    for phrase in ("## Setup", split, "600 training and 300 test images", "Binarisation: dynamic",
                   "K = 30", "test accuracy", "torch", "## All variants compared", "## All metrics",
                   "share in 95% ball", "prior FID", "seeds 0, 1"):
        assert phrase in text, phrase
    assert "—" in text  # undefined cells (test ELBO of the AE)


def _independent_verdict(spec: dict, results: list[dict]) -> tuple[str, float, float, float, int]:
    """The primary test recomputed from results.json with scipy alone: (outcome, estimate, low, high, seeds)."""
    from scipy import stats

    test = spec["primary"] if isinstance(spec["primary"], dict) else {"metric": spec["primary"]}
    key = test["metric"]
    by = {(r["variant"], r["seed"]): flat_metrics(r).get(key, math.nan) for r in results}
    sides = ("VAE",) if test.get("against") == "target" else ("AE", "VAE")
    if any(math.isnan(v) for (variant, _), v in by.items() if variant in sides):  # e.g. a ratio to no faithful reconstruction
        return "not judged", math.nan, math.nan, math.nan, 0
    if test.get("against") == "target":  # the VAE's seeds against the target, within the tolerance
        d, target, tol = [by[("VAE", s)] for s in (0, 1)], METRICS[key].target, test["tolerance"]
        d = [x - target for x in d]
    else:  # the VAE's improvement on each seed, paired (the shipped primaries compared have a side)
        sign = {"lower": 1.0, "higher": -1.0}[METRICS[key].better]
        d, tol = [sign * (by[("AE", s)] - by[("VAE", s)]) for s in (0, 1)], None
    n = len(d)
    if n < spec.get("min_seeds", MIN_SEEDS):
        return "not judged", math.nan, math.nan, math.nan, n
    mean, se = sum(d) / n, stats.tstd(d) / math.sqrt(n)
    low, high = mean - stats.t.ppf(0.975, n - 1) * se, mean + stats.t.ppf(0.975, n - 1) * se
    if tol is not None:
        outcome = "holds" if -tol < low and high < tol else "fails" if high < -tol or low > tol else "inconclusive"
    else:
        outcome = "holds" if low > 0 else "fails" if high < 0 else "inconclusive"
    return outcome, mean, low, high, n


def test_verdicts_state_the_numbers_they_rest_on(built):
    from pyro_vae.report.tables import fmt_signed

    _, _, out, _ = built
    text = (out / "report.md").read_text()
    results = json.loads((out / "results.json").read_text())
    verdicts = [line[2:].replace("\\[", "[").replace("\\]", "]")  # Markdown escapes the brackets
                for line in text.splitlines() if line.startswith("> **Verdict: ")]
    assert len(verdicts) == 3
    for line, (key, spec) in zip(verdicts, AE_VS_VAE_CLAIMS.items()):
        outcome, mean, low, high, n = _independent_verdict(spec, results)
        assert line.startswith(f"**Verdict: {outcome}**"), (key, line)
        if outcome == "not judged":
            assert (f"rests on {n} seeds; needs at least {MIN_SEEDS}" in line if n else "no values for" in line), line
            continue
        assert f": {fmt_signed(mean)}, 95% interval [{fmt_signed(low)}, {fmt_signed(high)}]" in line, (key, line)
        assert f", {n} seeds" in line and "Secondary tests, Holm-corrected: " in line
    glance = text.split("## Verdicts at a glance")[1].split("##")[0]
    assert glance.count("Claim ") == 3 and "(2 seeds)" in glance and f"needs at least {MIN_SEEDS})" in glance
    from pyro_vae.report.verdicts import MEANING

    for line, claim_line in zip(verdicts, [ln for ln in glance.splitlines() if ln.startswith("- Claim ")]):
        outcome = line.split("**Verdict: ")[1].split("**")[0]
        assert f"**{outcome}**" in claim_line and MEANING[outcome] in claim_line, claim_line  # said in words, with its test
        assert "primary test " in claim_line
    assert CLAIM_RULE.split(":")[0] in text and "does not hold" not in text
    # Claims 1 and 3 are judged: their primaries' p-values Holm-adjusted across the study, beside the raw ones.
    assert "| claim | verdict | p | p (Holm, across the primaries) | at the Holm p |" in glance
    # Every number that depends on the count of training codes has its convergence table.
    assert "## Convergence in the number of training codes" in text and "| variant | N = 600 | moved |" in text
    assert "| test | metric | against |" in text and "| primary | KL(q(z) ‖ p(z)) | target 0 ± 0.1 |" in text


def test_pareto_warning_follows_the_numbers_at_the_sample_size_threshold(built):
    _, _, out, _ = built
    text = (out / "report.md").read_text()
    results = json.loads((out / "results.json").read_text())
    for variant in ("AE", "VAE"):
        evaluations = [r["evaluation"] for r in results if r["variant"] == variant]
        if variant == "VAE":  # K = 30: the threshold min(1 - 1/log10 30, 0.7) = 0.323, recorded and shown
            assert all(e["pareto_k_threshold"] == pytest.approx(1 - 1 / math.log10(30)) for e in evaluations)
        shares = [e.get("pareto_k_share_above_threshold") for e in evaluations]
        shares = [x for x in shares if isinstance(x, float)]
        flagged = any(line.startswith(f"> **⚠ Warning.** {variant}: ") and "Pareto k above 0.32 (the threshold" in line
                      for line in text.splitlines())
        assert flagged == (bool(shares) and sum(shares) / len(shares) > PARETO_WARN), variant
    assert "pareto\\_k\\_share\\_above\\_threshold" in text and "Pareto k threshold" in text


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
    from pyro_vae.study.claims import ClaimTest, Row
    from pyro_vae.study.statistics import compare, summarize

    def claim(key: str, baseline: str, candidate: str) -> Claim:
        test = compare({0: 3.0, 1: 4.0, 2: 3.5}, {0: 1.0, 1: 1.5, 2: 1.2}, "lower")
        row = Row("primary", ClaimTest("mean_norm"), "lower", None, summarize([3.0, 4.0, 3.5]), summarize([1.0, 1.5, 1.2]),
                  test, outcome=test.outcome)
        return Claim(key, f"{key} title", "why", test.outcome, [row], baseline, candidate, n=3)

    text = render_markdown(claim_blocks(
        [claim("a", "AE", "VAE"), claim("b", "AE", "VAE"), claim("c", "VAE", "flow")]))
    assert text.count("## Claims: ") == 2 and text.count(CLAIM_RULE.split(":")[0]) == 2
    assert "## Claims: VAE (candidate) against AE (baseline)" in text
    assert "## Claims: flow (candidate) against VAE (baseline)" in text
    assert [line for line in text.splitlines() if line.startswith("### ")] == [
        "### Claim 1. a title", "### Claim 2. b title", "### Claim 3. c title"]
    assert "| test | metric | against | VAE (mean ± sd) | flow (mean ± sd) | estimate | 95% interval |" in text
    assert text.count(f"**Verdict: {HOLDS}**") == 3 and "| primary | ‖mean code‖ | VAE, paired by seed |" in text


# ---------------------------------------------------------------------------------------------
# Rebuilding: evaluate what lacks it, never retrain


def test_rebuild_does_not_retrain_or_reevaluate(built):
    study, runs_dir, out, _ = built
    checkpoints, evaluations = _mtimes(study, runs_dir, runs.CHECKPOINT), _mtimes(study, runs_dir, runs.EVALUATION)
    messages = []
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    build_report(runs_dir, out, log=messages.append)
    assert _mtimes(study, runs_dir, runs.CHECKPOINT) == checkpoints
    assert _mtimes(study, runs_dir, runs.EVALUATION) == evaluations
    assert any("already evaluated" in m for m in messages)
    # The same runs give the same bytes: a rebuild of a committed report adds nothing to git.
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert sorted(after) == sorted(before)
    assert [name for name in before if after[name] != before[name]] == []


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
    # No claim has the seeds it needs once AE seed 1 is missing: no verdict, and the reason said.
    verdicts = re.findall(r"\*\*Verdict: ([^*]+)\*\*(.*)", text)
    assert len(verdicts) == len(AE_VS_VAE_CLAIMS)
    assert [v for v, _ in verdicts] == ["not judged"] * 3
    # holes and spread pair AE with VAE (1 pair left); centre tests the VAE alone against a target (2 seeds, needs 3)
    assert ["rests on 1 seed; needs at least 2" in verdicts[0][1], "rests on 2 seeds; needs at least 3" in verdicts[1][1],
            "rests on 1 seed; needs at least 2" in verdicts[2][1]] == [True] * 3
    with pytest.raises(UserError):
        build_report(tmp_path / "nowhere", tmp_path / "report2", log=_quiet)


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
    from pyro_vae.report.document import (
        Bullets,
        Cell,
        Heading,
        Paragraph,
        Table,
        render_html,
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


def test_published_numbers_stand_beside_ours(study_runs, tmp_path):
    """A [published] table: each row's published value, ours from results.json, their difference, the
    epochs and steps trained, and the ordering of the rows we ran against the paper's."""
    study, runs_dir = study_runs
    copy = tmp_path / "runs"
    shutil.copytree(runs_dir, copy)
    record = json.loads((copy / "study.json").read_text())
    record["published"] = {"source": "A paper, Table 9", "metric": "recon_bce", "values": {"AE": 100.0, "VAE": 120.0, "IWAE-50": 80.0},
                           "note": "Their budget was larger."}
    (copy / "study.json").write_text(json.dumps(record))
    build_report(copy, tmp_path / "report", log=_quiet)
    text = (tmp_path / "report" / "report.md").read_text()
    section = text[text.index("## Against the published numbers"):]
    section = section[: section.index("\n## ", 1)]
    assert "A paper, Table 9. Their budget was larger." in section
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    ours = {v: sum(r["evaluation"]["recon_bce"] for r in results if r["variant"] == v) / 2 for v in ("AE", "VAE")}
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in section.splitlines()
            if line.startswith("| ") and not line.startswith("| row")}
    assert rows["IWAE-50"][1] == "not run here"
    for v, published in (("AE", 100.0), ("VAE", 120.0)):
        assert rows[v][0] == f"{published:g}" and "(95%, 2 seeds)" in rows[v][1]
        assert float(rows[v][2].replace("−", "-").replace("+", "")) == pytest.approx(ours[v] - published, rel=1e-3)
        assert rows[v][3] == "1" and rows[v][4] == "6"  # 1 epoch of 600 images at batch 100
    # recon_bce: lower is better, yet the published order sorts by value (VAE above AE); the check reports ours.
    gap = ours["VAE"] - ours["AE"]
    assert f"VAE − AE: ours {'+' if gap > 0 else '−'}" in section and "published +20" in section


def test_a_related_studys_verdicts_stand_beside_ours(study_runs, built, tmp_path):
    """A [related] table: the other study's claims judged from its results.json by its own study file,
    beside ours claim by claim, with the file's explanation; calibrated on values whose verdicts are known."""
    study, runs_dir = study_runs
    theirs = []
    for seed in (0, 1, 2):  # three seeds of made-up values: spread holds (VAE 0.5 below AE), centre fails (KL 0.5)
        for row in [r for r in json.loads((built[2] / "results.json").read_text()) if r["seed"] == 0]:  # AE, VAE
            vae = row["variant"] == "VAE"
            row["seed"] = seed
            row["evaluation"]["logdet_spread_sd"] = (0.5 if vae else 1.0) + 0.01 * seed
            if vae:
                row["evaluation"]["aggregate_kl"] = 0.5 + 0.01 * seed
            theirs.append(row)
    other = tmp_path / "other.json"
    other.write_text(json.dumps(theirs))
    copy = tmp_path / "runs"
    shutil.copytree(runs_dir, copy)
    record = json.loads((copy / "study.json").read_text())
    here = Path(__file__).resolve().parents[2] / "studies"
    record["related"] = {"study": "ae_vs_vae.toml", "results": str(other), "why": "The data differ, and so the weights.",
                         "metrics": ["logdet_spread_sd", "recon_bce"]}
    for bad, problem in (({"study": "ae_vs_vae.toml"}, "needs study, results and why"),
                         ({**record["related"], "metrics": ["nats"]}, "unknown metric 'nats'")):
        with pytest.raises(UserError, match=problem):
            Study.from_dict({**record, "related": bad}, str(here / "x.toml"))
    assert Study.from_dict(record, str(here / "x.toml")).related["study"] == str(here / "ae_vs_vae.toml")  # the file's folder
    record["related"]["study"] = str(here / "ae_vs_vae.toml")
    (copy / "study.json").write_text(json.dumps(record))
    build_report(copy, tmp_path / "report", log=_quiet)
    text = (tmp_path / "report" / "report.md").read_text()
    section = text[text.index("## Against the study ae\\_vs\\_vae"):]
    section = section[: section.index("\n## ", 1)]
    assert "The data differ, and so the weights." in section and "its 6 runs, seeds 0, 1, 2" in section
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in section.splitlines() if line[:3] in ("| 1", "| 2", "| 3")]
    assert [r[0][:2] for r in rows] == ["1.", "2.", "3."]
    spread, centre = rows[2], rows[1]
    assert spread[4] == "**holds**" and spread[1] != "**holds**" and spread[7] == "differs"  # ours: 2 seeds of 1 epoch
    assert float(spread[6].split()[0].replace("+", "")) == pytest.approx(0.5) and spread[6].endswith(", 3 seeds")
    assert centre[4] == "**fails**" and float(centre[6].split()[0].replace("+", "")) == pytest.approx(0.51)  # mean 0.51: outside the target 0 ± 0.1
    spread_row = next(line for line in section.splitlines() if line.startswith("| sd of class log-volumes"))
    assert [c.strip() for c in spread_row.split("|")[1:-1]][2:5:2] == ["1.010 ± 0.010", "0.510 ± 0.010"]  # AE, VAE there

    (copy / "study.json").write_text(json.dumps({**record, "related": {**record["related"], "results": str(tmp_path / "gone.json")}}))
    build_report(copy, tmp_path / "report2", log=_quiet)
    assert "gone.json is not on this machine, so its verdicts are not set beside these" in (tmp_path / "report2" / "report.md").read_text()


def test_a_bad_published_table_is_refused_when_the_study_is_read():
    for table, problem in (({"source": "x", "metric": "log_px_is"}, "needs source, metric and values"),
                           ({"source": "x", "metric": "nats", "values": {"VAE": 1.0}}, "unknown metric 'nats'"),
                           ({"source": "x", "metric": "log_px_is", "values": {"VAE": "high"}}, "variant name = number")):
        with pytest.raises(UserError, match=problem):
            Study.from_dict({**STUDY, "published": table}, "bad.toml")
