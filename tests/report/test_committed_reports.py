"""The reports committed in reports/: made on the official train/test split (none on a split carved from
the test file or on the embedded sample), every number traceable to results.json, and stored once: figures
linked, not embedded, and no explorer.html (its decodes come from checkpoints that are not committed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPORTS = sorted(p.parent for p in (Path(__file__).resolve().parents[2] / "reports").glob("*/results.json"))


def test_there_are_committed_reports():
    assert len(REPORTS) >= 2


@pytest.mark.parametrize("report", REPORTS, ids=lambda p: p.name)
def test_a_committed_report_rests_on_the_official_split(report):
    results = json.loads((report / "results.json").read_text())
    assert results, report
    for row in results:
        data = row["data"]
        assert data["origin"] != "embedded" and data["split"] == "official train/test files", (report.name, row["run"])
        assert row["evaluation"] and row["training_curve"], (report.name, row["run"])
        finished = len(row["training_curve"]) == row["config"]["epochs"] or row["training_curve"][-1].get("stopped")
        assert finished, "a report on an unfinished run"
    text = (report / "report.md").read_text()
    for figure in (report / "figures").glob("*.png"):
        assert f"figures/{figure.name}" in text, figure.name
    page = (report / "report.html").read_text()
    assert "data:" not in page and not (report / "explorer.html").exists(), report.name
    assert "](explorer.html)" not in text and 'href="explorer.html"' not in page, report.name
    if any(row["config"]["latent_dim"] == 2 for row in results):  # says how to build it from the runs
        assert "explorer.html` is not stored with this report" in text, report.name


def test_a_full_rebuild_of_every_committed_report_adds_at_most_10_mb():
    """Each file is stored once (report.html links figures/, no explorer.html), so rebuilding every committed
    report from new runs adds at most what the reports hold on disk to the repository's pack."""
    root = Path(__file__).resolve().parents[2] / "reports"
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and p.name != "explorer.html")
    assert total <= 10 * 2**20, f"reports/ holds {total / 2**20:.1f} MiB; a full rebuild would add that much"
