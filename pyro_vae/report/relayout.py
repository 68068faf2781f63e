"""Report folders written before figures were stored once, rewritten in today's layout without their runs.

    python -m pyro_vae.report.relayout reports/*

Such a report.html embedded every PNG of figures/ as a data: URI (each figure stored twice, 1-5 MB a
page). Each figure is re-encoded as pyro_vae.plots.saving writes figures now (a palette PNG without
metadata) and report.html links it by its path under figures/. A folder already in the layout is left
as it is; a page embedding an image that figures/ does not hold is refused (it is not a report's own).
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path

from pyro_vae.errors import UserError
from pyro_vae.io import atomic_write_bytes
from pyro_vae.plots.saving import optimised_png

PAGE = "report.html"
EMBEDDED = "data:image/png;base64,"


def relayout(folder: str | Path) -> bool:
    """Rewrite `folder` in the linked layout; False when it already was."""
    folder = Path(folder)
    page_path = folder / PAGE
    if not page_path.is_file():
        raise UserError(f"{folder} holds no {PAGE}: give report folders (e.g. reports/ae_vs_vae_mnist)")
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
            print(f"{folder}: {'relinked' if relayout(folder) else 'already in the layout'}")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
