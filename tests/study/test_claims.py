"""Claims as data: the [claims.NAME] tables of a study file, checked when read, and judged from numbers."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pyro_vae.errors import UserError
from pyro_vae.evaluation.metrics import expected_max_radius
from pyro_vae.io import read_toml
from pyro_vae.study.claims import FAILS, HOLDS, NOT_JUDGED, PARTLY, claim_verdict, judge_claims, parse_claims
from pyro_vae.study.spec import Study
from pyro_vae.study.statistics import BETTER, SAME, UNJUDGED, WORSE, compare_metric

STUDIES = Path(__file__).resolve().parents[2] / "studies"
AE_VS_VAE = read_toml(STUDIES / "ae_vs_vae.toml")
CLAIMS = parse_claims(AE_VS_VAE["claims"], ["AE", "MAP-AE", "VAE"], AE_VS_VAE["compare"], "ae_vs_vae.toml")

BASE = {"name": "tiny", "seeds": [0, 1], "base": {"dataset": "mnist", "epochs": 1},
        "variants": {"AE": {"guide": "delta", "beta": 0.0}, "VAE": {}, "flow": {"prior": "flow"}}}
GOOD_CLAIM = {"title": "Centred: {candidate} beats {baseline}", "text": "Codes of {candidate}.",
              "metrics": ["mean_norm", "gaussian_kl"]}


def _study(claims: dict, compare: dict | None = None) -> Study:
    return Study.from_dict({**BASE, "compare": compare or {}, "claims": claims}, "tiny.toml")


# ---------------------------------------------------------------------------------------------
# Reading and checking the tables


def test_every_shipped_study_reads_and_only_the_ae_vs_vae_ones_state_claims():
    for path in sorted(STUDIES.glob("*.toml")):
        specs = Study.load(path).claim_specs()
        if path.stem.startswith("ae_vs_vae"):
            assert [c.key for c in specs] == ["holes", "centre", "spread"], path.name
            assert all((c.baseline, c.candidate) == ("AE", "VAE") for c in specs), path.name
            assert specs[0].baseline_samplers == {"prior": ["prior", "box"]}
        else:
            assert specs == [], path.name


def test_claims_default_to_the_compare_table_and_may_name_their_own_variants():
    claims = {"centre": GOOD_CLAIM, "prior": {**GOOD_CLAIM, "baseline": "VAE", "candidate": "flow"}}
    specs = _study(claims, {"baseline": "AE", "candidate": "VAE"}).claim_specs()
    assert [(c.key, c.baseline, c.candidate) for c in specs] == [("centre", "AE", "VAE"), ("prior", "VAE", "flow")]
    assert specs[1].metrics == ["mean_norm", "gaussian_kl"] and specs[1].text == "Codes of {candidate}."
    # Without [compare], a claim naming both sides is complete.
    assert _study({"prior": claims["prior"]}).claim_specs()[0].candidate == "flow"


def test_the_study_file_keeps_its_claims_through_study_json(tmp_path):
    import json
    from dataclasses import asdict

    study = _study({"centre": GOOD_CLAIM}, {"baseline": "AE", "candidate": "VAE"})
    again = Study.from_dict(json.loads(json.dumps(asdict(study))), "study.json")
    assert again.claim_specs() == study.claim_specs()


@pytest.mark.parametrize("claims, compare, message", [
    ({"c": {**GOOD_CLAIM, "metrics": ["mean_norm", "nope"]}}, None, r"unknown metric 'nope' in \[claims.c\]"),
    ({"c": {**GOOD_CLAIM, "metric": ["mean_norm"]}}, None, r"unknown key\(s\) metric in \[claims.c\]"),
    ({"c": {**GOOD_CLAIM, "candidate": "VAE2"}}, {"baseline": "AE"}, r"candidate 'VAE2' in \[claims.c\].*not a variant"),
    ({"c": GOOD_CLAIM}, None, r"\[claims.c\] .*names no baseline"),
    ({"c": {**GOOD_CLAIM, "baseline": "VAE", "candidate": "VAE"}}, None, "with itself"),
    ({"c": {**GOOD_CLAIM, "metrics": []}}, {"baseline": "AE", "candidate": "VAE"}, "non-empty list"),
    ({"c": {"metrics": ["mean_norm"]}}, {"baseline": "AE", "candidate": "VAE"}, "has no title"),
    ({"c": {**GOOD_CLAIM, "metrics": ["eval_seconds"]}}, {"baseline": "AE", "candidate": "VAE"}, "cannot be judged"),
    ({"c": {**GOOD_CLAIM, "title": "{winner} wins"}}, {"baseline": "AE", "candidate": "VAE"}, r"names \{winner\}"),
    ({"c": {**GOOD_CLAIM, "metrics": ["prior_fid"], "baseline_samplers": {"prior": ["box", "grid"]}}},
     {"baseline": "AE", "candidate": "VAE"}, "must name sampler"),
    ({"c": {**GOOD_CLAIM, "baseline_samplers": {"prior": ["box"]}}}, {"baseline": "AE", "candidate": "VAE"},
     "none of the claim's metrics uses"),
    ({"c": "mean_norm"}, {"baseline": "AE", "candidate": "VAE"}, "must be a table"),
])
def test_bad_claims_are_one_line_user_errors(claims, compare, message):
    with pytest.raises(UserError, match=message) as error:
        _study(claims, compare)
    assert "\n" not in str(error.value) and "tiny.toml" in str(error.value)


def test_a_claim_pair_must_be_variants_of_the_study_even_from_compare():
    with pytest.raises(UserError, match="not a variant"):
        _study({"c": GOOD_CLAIM}, {"baseline": "AE", "candidate": "nope"})


# ---------------------------------------------------------------------------------------------
# The verdict logic on constructed numbers (the AE-vs-VAE claims of studies/ae_vs_vae.toml)


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
    good = judge_claims(CLAIMS, _values(True), context)
    assert [c.verdict for c in good] == [HOLDS, HOLDS, HOLDS]
    bad = judge_claims(CLAIMS, _values(False), context)
    assert [c.verdict for c in bad] == [FAILS, FAILS, FAILS]
    assert all(r["verdict"] == WORSE for c in bad for r in c.rows)
    # One centre metric turned around: claim 2 no longer holds, the others are untouched.
    mixed = _values(True)
    mixed["VAE"]["gaussian_kl"] = [x * 1e5 for x in mixed["VAE"]["gaussian_kl"]]
    verdicts = [c.verdict for c in judge_claims(CLAIMS, mixed, context)]
    assert verdicts == [HOLDS, FAILS, HOLDS]


def test_claim_one_gives_the_baseline_its_better_sampler():
    values = _values(True)
    values["AE"]["box_fid"] = [4.0, 4.1, 4.2]  # the AE's box samples beat the VAE's prior samples
    holes = judge_claims(CLAIMS, values)[0]
    fid = next(r for r in holes.rows if r["metric"] == "prior_fid")
    assert fid["baseline_metric"] == "box_fid" and fid["verdict"] == WORSE
    assert holes.verdict == FAILS
    values["AE"]["box_fid"] = [90.0, 91.0, 92.0]  # now the prior draws are the AE's better sampler
    fid = next(r for r in judge_claims(CLAIMS, values)[0].rows if r["metric"] == "prior_fid")
    assert fid["baseline_metric"] == "prior_fid" and fid["verdict"] == BETTER


def test_single_seed_studies_are_not_judged():
    values = {v: {k: x[:1] for k, x in d.items()} for v, d in _values(True).items()}
    assert [c.verdict for c in judge_claims(CLAIMS, values)] == [NOT_JUDGED] * 3


def test_max_radius_target_is_the_median_largest_norm():
    import numpy as np

    rng = np.random.default_rng(0)
    maxima = [np.linalg.norm(rng.standard_normal((2000, 2)), axis=1).max() for _ in range(400)]
    assert expected_max_radius(2000, 2) == pytest.approx(np.median(maxima), rel=0.03)
