"""Report folders written before figures were stored once, rewritten in today's layout without their runs.

    python -m pyro_vae.report.relayout reports/*

Such a report.html embedded every PNG of figures/ as a data: URI (each figure stored twice, 1-5 MB a
page). Each figure is re-encoded as pyro_vae.plots.saving writes figures now (a palette PNG without
metadata) and report.html links it by its path under figures/. A folder already in the layout is left
as it is; a page embedding an image that figures/ does not hold is refused (it is not a report's own).

Committed reports go without explorer.html (build_report(..., explorer=False)): its decodes come from the
runs' checkpoints, which are not committed, and it adds megabytes at every rebuild. A folder holding one
has it removed, and report.md and report.html say, as a report built without it does, how to build it.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

from pyro_vae.errors import UserError
from pyro_vae.io import atomic_write_bytes
from pyro_vae.plots.saving import optimised_png
from pyro_vae.report.build import explorer_paragraph
from pyro_vae.report.document import paragraph_html, render_markdown
from pyro_vae.report.explorer import FILE as EXPLORER
from pyro_vae.report.folder import MANIFEST

PAGE = "report.html"
EMBEDDED = "data:image/png;base64,"


def relayout(folder: str | Path) -> bool:
    """Rewrite `folder` in the linked layout, without explorer.html; False when it already was."""
    folder = Path(folder)
    page_path = folder / PAGE
    if not page_path.is_file():
        raise UserError(f"{folder} holds no {PAGE}: give report folders (e.g. reports/ae_vs_vae_mnist)")
    linked = _link_figures(folder, page_path)
    return _drop_explorer(folder) or linked


def _drop_explorer(folder: Path) -> bool:
    """Replace the explorer's link by the line on how to build it, then remove explorer.html."""
    changed = False
    for name, render in (("report.md", lambda p: render_markdown([p]).rstrip("\n")), (PAGE, paragraph_html)):
        path = folder / name
        text = path.read_text() if path.is_file() else ""
        if render(explorer_paragraph(True)) in text:
            atomic_write_bytes(path, text.replace(render(explorer_paragraph(True)), render(explorer_paragraph(False))).encode("utf-8"))
            changed = True
    manifest = folder / MANIFEST
    if manifest.is_file() and EXPLORER in (listed := json.loads(manifest.read_text()))["files"]:
        listed["files"].remove(EXPLORER)
        atomic_write_bytes(manifest, (json.dumps(listed, indent=2) + "\n").encode("utf-8"))
        changed = True
    if (folder / EXPLORER).is_file():  # last: stopped before it, the pages no longer link it
        (folder / EXPLORER).unlink()
        changed = True
    return changed


def _link_figures(folder: Path, page_path: Path) -> bool:
    page = page_path.read_text()
    if EMBEDDED not in page:
        return False
    figures = sorted((folder / "figures").glob("*.png"))
    for png in figures:
        page = page.replace(EMBEDDED + base64.b64encode(png.read_bytes()).decode("ascii"), f"figures/{png.name}")
    if EMBEDDED in page:
        raise UserError(f"{page_path} embeds an image that {folder / 'figures'} does not hold; left as it was")
    new = {png: optimised_png(png.read_bytes()) for png in figures}
    atomic_write_bytes(page_path, page.encode("utf-8"))  # first: stopped after it, the page links figures that exist
    for png, data in new.items():
        atomic_write_bytes(png, data)
    return True


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m pyro_vae.report.relayout REPORT_DIR...", file=sys.stderr)
        return 2
    try:
        for folder in argv:
            print(f"{folder}: {'rewritten' if relayout(folder) else 'already in the layout'}")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
