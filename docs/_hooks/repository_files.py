"""MkDocs hook: files of the repository that live outside docs/ become part of the site.

- every committed report, ``reports/NAME/``: ``report.md`` as a page, ``report.html``, ``results.json``,
  ``results.csv`` and ``figures/*.png`` copied beside it, so the docs link ``reports/NAME/report.md`` as
  the README does and the reports are published with the docs;
- the tutorial notebook ``examples/tutorial.ipynb`` as the page ``tutorial.ipynb`` (rendered by
  mkdocs-jupyter, which is why this runs before the plugins' own ``on_files``).

Pages in docs/ link these files where they lie in the repository (``../reports/NAME/report.md``,
``../examples/tutorial.ipynb``), so the links also work where GitHub shows docs/; such a link is pointed
at the file's place in the site.

A report's ``explorer.html`` is not committed (it is built from the runs' checkpoints by
``pyro-vae report``), so a report page's link to it becomes a note saying so instead of a broken link.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

REPORT_FILES = ("report.md", "report.html", "results.json", "results.csv")
TUTORIAL = Path("examples/tutorial.ipynb")  # the site's tutorial.ipynb
EXPLORER_LINK = re.compile(r"\[([^\]]*)\]\(explorer\.html\)")
LINK_TARGET = re.compile(r"(\]\()([^)\s#]+)(#[^)\s]*)?(\))")


def _repository(config) -> Path:
    return Path(config.config_file_path).resolve().parent


def _add(files: Files, config, src_uri: str, src_dir: Path) -> None:
    """The file ``src_dir/src_uri`` as the site's ``src_uri`` (a real source file, as mkdocs-jupyter needs)."""
    if files.get_file_from_path(src_uri) is None:
        files.append(File(src_uri, src_dir=str(src_dir), dest_dir=config.site_dir,
                          use_directory_urls=config.use_directory_urls))


@event_priority(100)  # before mkdocs-jupyter turns .ipynb files into pages
def on_files(files: Files, config) -> Files:
    repo = _repository(config)
    for report in sorted((repo / "reports").glob("*/report.md")):
        folder = report.parent
        for name in REPORT_FILES:
            if (folder / name).is_file():
                _add(files, config, f"reports/{folder.name}/{name}", repo)
        for figure in sorted((folder / "figures").glob("*.png")):
            _add(files, config, f"reports/{folder.name}/figures/{figure.name}", repo)
    if (repo / TUTORIAL).is_file():
        _add(files, config, TUTORIAL.name, repo / TUTORIAL.parent)
    return files


def _site_uri(repo_path: str) -> str | None:
    """Where a repository file published by on_files lies in the site, or None."""
    if repo_path.startswith("reports/"):
        return repo_path
    if repo_path == TUTORIAL.as_posix():
        return TUTORIAL.name
    return None


def _repository_links(markdown: str, page) -> str:
    """Links from a page of docs/ to ../reports/... or ../examples/tutorial.ipynb, pointed at the site's copies."""
    here = posixpath.dirname(page.file.src_uri)

    def point(m: re.Match) -> str:
        target = m.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or not target.startswith("../"):
            return m.group(0)
        repo_path = posixpath.normpath(posixpath.join("docs", here, target))
        uri = _site_uri(repo_path)
        if uri is None:
            return m.group(0)
        return m.group(1) + posixpath.relpath(uri, here or ".") + (m.group(3) or "") + m.group(4)

    return LINK_TARGET.sub(point, markdown)


SETTINGS_MARKER = "<!-- train-settings-table -->"


def settings_table() -> str:
    """Every TrainConfig setting as the CLI offers it: flag, default, help (made from the dataclass, as
    `pyro-vae train --help` is, so it cannot drift from the code)."""
    from pyro_vae import cli

    names = cli._choices()  # the registered names the help texts mention ({guides}, ...)
    rows = ["| flag (TOML key: the name with `_`) | default | what it sets |", "|---|---|---|"]
    for flag, name, kind, default, text in cli.train_flags():
        shown = "" if kind is dict else "none" if default is None else f"`{default}`"
        text = text.format(**names).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
        rows.append(f"| `{flag}{' KEY=VALUE' if kind is dict else ''}` | {shown} | {text} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, page, config, files: Files) -> str:
    uri = page.file.src_uri
    if SETTINGS_MARKER in markdown:
        markdown = markdown.replace(SETTINGS_MARKER, settings_table())
    if not (uri.startswith("reports/") and uri.endswith("/report.md")):
        return markdown if uri == TUTORIAL.name else _repository_links(markdown, page)
    if files.get_file_from_path(uri.removesuffix("report.md") + "explorer.html") is not None:
        return markdown
    return EXPLORER_LINK.sub(r"`explorer.html` (not published: `pyro-vae report` builds it from the runs' "
                             r"checkpoints, which are not committed)", markdown)
