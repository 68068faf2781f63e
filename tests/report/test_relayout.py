"""An older report folder (report.html embedding its figures) rewritten in the linked layout."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.figure import Figure as MplFigure
from PIL import Image

from pyro_vae.errors import UserError
from pyro_vae.report.build import explorer_paragraph
from pyro_vae.report.document import Figure, Heading, render_html, render_markdown
from pyro_vae.report.relayout import main, relayout


def _old_report(folder):
    (folder / "figures").mkdir(parents=True)
    for name, colour in (("a", "tab:blue"), ("b", "tab:red")):
        fig = MplFigure(figsize=(3, 2))
        fig.subplots().scatter(np.arange(20), np.arange(20) ** 0.5, c=colour)
        fig.savefig(folder / "figures" / f"{name}.png", format="png", dpi=60)  # RGBA with metadata, as they were
    blocks = [Heading(1, "old"), Figure("figures/a.png", "first"), Figure("figures/b.png", "second")]
    (folder / "report.html").write_text(render_html(blocks, "old", folder, self_contained=True))


def test_an_embedding_report_is_relinked_and_its_figures_redone(tmp_path, capsys):
    _old_report(tmp_path)
    before = {n: np.asarray(Image.open(tmp_path / "figures" / f"{n}.png").convert("RGB"), int) for n in "ab"}
    size = (tmp_path / "report.html").stat().st_size
    assert relayout(tmp_path) is True
    page = (tmp_path / "report.html").read_text()
    assert "data:" not in page and 'src="figures/a.png"' in page and 'src="figures/b.png"' in page
    assert (tmp_path / "report.html").stat().st_size < size / 5
    for name, pixels in before.items():
        image = Image.open(tmp_path / "figures" / f"{name}.png")
        assert image.mode == "P" and "Software" not in image.info
        assert np.abs(np.asarray(image.convert("RGB"), int) - pixels).mean() < 1
    assert relayout(tmp_path) is False  # already in the layout: left alone
    assert main([str(tmp_path)]) == 0 and "already in the layout" in capsys.readouterr().out


def test_a_page_embedding_a_foreign_image_is_left_as_it_was(tmp_path):
    _old_report(tmp_path)
    (tmp_path / "figures" / "b.png").write_bytes(b"not the embedded one")
    page = (tmp_path / "report.html").read_bytes()
    a = (tmp_path / "figures" / "a.png").read_bytes()
    with pytest.raises(UserError, match="embeds an image that .* does not hold"):
        relayout(tmp_path)
    assert (tmp_path / "report.html").read_bytes() == page and (tmp_path / "figures" / "a.png").read_bytes() == a


def test_not_a_report_folder_is_a_one_line_error(tmp_path, capsys):
    assert main([str(tmp_path)]) == 1
    assert "holds no report.html" in capsys.readouterr().err


def test_a_report_with_its_explorer_loses_it_and_says_how_to_build_it(tmp_path, capsys):
    blocks = [Heading(1, "with explorer"), explorer_paragraph(True)]
    (tmp_path / "figures").mkdir()
    (tmp_path / "report.html").write_text(render_html(blocks, "with explorer", tmp_path))
    (tmp_path / "report.md").write_text(render_markdown(blocks))
    (tmp_path / "explorer.html").write_text("<html>decodes</html>")
    assert relayout(tmp_path) is True
    expected = [Heading(1, "with explorer"), explorer_paragraph(False)]  # what build_report(..., explorer=False) writes
    assert (tmp_path / "report.md").read_text() == render_markdown(expected)
    assert (tmp_path / "report.html").read_text() == render_html(expected, "with explorer", tmp_path)
    assert not (tmp_path / "explorer.html").exists()
    assert relayout(tmp_path) is False and main([str(tmp_path)]) == 0 and "already in the layout" in capsys.readouterr().out
