"""examples/tutorial.ipynb, executed as a reader would run it (a fresh kernel, every cell in order), on the
MNIST sample that ships in the package: it trains an AE, a VAE and a VampPrior VAE, draws the four
pictures and builds a report. Its figures must be there and its report written."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from pyro_vae.data import EMBEDDED_ROOT

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "tutorial.ipynb"

pytestmark = pytest.mark.slow


def _execute(tmp_path: Path):
    nbformat = pytest.importorskip("nbformat", reason="needs the test extra (pip install -e '.[test]'): nbformat")
    nbclient = pytest.importorskip("nbclient", reason="needs the test extra (pip install -e '.[test]'): nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    env = dict(os.environ, PYRO_VAE_DATA=str(EMBEDDED_ROOT), PYRO_VAE_CACHE=str(tmp_path / "cache"),
               OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1", MPLBACKEND="module://matplotlib_inline.backend_inline")
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=env)
    return nb


def _text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


def test_the_tutorial_runs_and_shows_its_figures(tmp_path):
    nb = _execute(tmp_path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    pictures = [c for c in code if any("image/png" in o.get("data", {}) for o in c.outputs)]
    # the two code spaces, the sampled codes, box decodes, prior draws, the grid, the prior swap, the report's figure
    assert len(pictures) >= 7, [c.source[:60] for c in code]
    bounds = [float(b) for c in code for b in re.findall(r"test bound (-?\d+\.\d) nats", _text(c))]
    assert len(bounds) == 3 and all(-400 < b < -80 for b in bounds), bounds  # AE (its reconstruction), VAE, VampPrior
    report = tmp_path / "tutorial-runs" / "report"
    assert (report / "report.html").is_file() and (report / "report.md").is_file()
    assert not (report / "explorer.html").exists()  # the notebook asks for none
    text = (report / "report.md").read_text()
    assert all(name in text for name in ("ae", "vae", "vamp")), text[:400]
