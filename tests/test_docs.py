"""The README and the documentation site (issue 23): the README stays short, every `pyro-vae` command
shown parses with the package's own parser, every Python snippet runs, and the site builds in strict mode.

Commands: every line of a ```bash / ```sh / ```console / ```shell block, and every inline `pyro-vae ...`
span of more than a bare command name, in README.md and docs/**/*.md; a line may chain commands with
`&&`, `||`, `;` or `|` (`pip install . && pyro-vae study ...`) and set variables first
(`PYRO_VAE_DATA=... pyro-vae bench`). Each `pyro-vae` part is parsed by `pyro_vae.cli.parser()` without
running it; an unknown flag or a bad value fails the test naming the command.

Python snippets: the ```python blocks of one page run in the order they appear, each in a fresh
`python` process, all in one temporary folder per page that holds a copy of the repository's
`studies/` and `examples/` (so `"studies/ae_vs_vae.toml"` means what it means in a clone, and
`runs/...` is written inside the temporary folder, never into the checkout). Files carry over from one
snippet of a page to the next (the first trains `runs/vae`, a later one may load it); variables do not:
each snippet is complete, imports included, as a reader would copy it. They run with
OMP_WAIT_POLICY=PASSIVE and the suite's data and private cache (conftest), on tiny settings
(`epochs=1, train_limit=500, test_limit=200`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MAX_README_LINES = 150
SNIPPET_TIMEOUT_S = 600
SHELL_LANGS = {"bash", "sh", "console", "shell"}
PYTHON_LANGS = {"python", "py"}
COPIED_INTO_SNIPPET_FOLDER = ("studies", "examples")

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>```+|~~~+)[ \t]*(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)(?P=fence)[ \t]*$",
                   re.M | re.S)
INLINE = re.compile(r"(?<!`)`(pyro-vae\b[^`]*)`(?!`)")
CHAIN = {"&&", "||", ";", "|", "&"}
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def documents() -> list[Path]:
    return [README] + sorted(p for p in (REPO / "docs").rglob("*.md") if "_hooks" not in p.parts)


def _name(path: Path) -> str:
    return str(path.relative_to(REPO))


def code_blocks(text: str) -> list[tuple[str, str, int]]:
    """(language, body, line number of the opening fence) of every fenced block."""
    return [(m["lang"].lower(), m["body"], text.count("\n", 0, m.start()) + 1) for m in FENCE.finditer(text)]


def _split_chain(tokens: list[str]) -> list[list[str]]:
    parts, current = [], []
    for token in tokens:
        if token in CHAIN:
            parts.append(current)
            current = []
        else:
            current.append(token)
    return [p for p in parts + [current] if p]


def _tokens(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    return list(lexer)


def pyro_vae_commands(line: str) -> list[list[str]]:
    """The argument lists (program name dropped) of the `pyro-vae` commands on one shell line."""
    commands = []
    for part in _split_chain(_tokens(line)):
        while part and ASSIGNMENT.match(part[0]):
            part = part[1:]
        if part and part[0] == "pyro-vae":
            commands.append(part[1:])
    return commands


def shell_commands() -> list[tuple[str, str, list[str]]]:
    """(where, the command as written, its arguments) for every `pyro-vae` command the documents show."""
    found = []
    for path in documents():
        text = path.read_text(encoding="utf-8")
        for lang, body, start in code_blocks(text):
            if lang not in SHELL_LANGS:
                continue
            lines = body.replace("\\\n", " ").splitlines()
            for offset, line in enumerate(lines, 1):
                line = line.strip()
                if lang == "console" or line.startswith("$ "):
                    if not line.startswith("$ "):
                        continue  # a console block's output
                    line = line[2:]
                for args in pyro_vae_commands(line):
                    found.append((f"{_name(path)}:{start + offset}", line, args))
        prose = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
        for m in INLINE.finditer(prose):
            command = " ".join(m.group(1).split())
            line_no = prose.count("\n", 0, m.start()) + 1
            for args in pyro_vae_commands(command):
                if len(args) >= 2 or (args and args[0].startswith("-")):  # `pyro-vae report` alone names a command
                    found.append((f"{_name(path)}:{line_no} (inline)", command, args))
    return found


def python_snippets() -> dict[str, list[tuple[int, str]]]:
    """Per document, its Python blocks in order: (line of the fence, code)."""
    snippets = {}
    for path in documents():
        blocks = [(start, body) for lang, body, start in code_blocks(path.read_text(encoding="utf-8"))
                  if lang in PYTHON_LANGS]
        if blocks:
            snippets[_name(path)] = blocks
    return snippets


# ---------------------------------------------------------------------------------------------


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; at most {MAX_README_LINES} (move detail into docs/)"


def test_readme_links_point_at_files():
    """Relative links in the README (to docs pages, reports, figures) name files of the repository."""
    text = FENCE.sub("", README.read_text(encoding="utf-8"))
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    missing = [t for t in targets if not re.match(r"^[a-z]+:|^#", t) and not (REPO / t.split("#")[0]).exists()]
    assert targets and not missing, f"README.md links to missing files: {missing}"


def test_documents_show_commands_and_snippets():
    """The extraction itself finds what the pages show (a regex that matched nothing would pass every test)."""
    commands = shell_commands()
    assert any(where.startswith("README.md") for where, _, _ in commands)
    assert {"train", "study", "report", "evaluate", "bench"} <= {args[0] for _, _, args in commands if args}
    assert "README.md" in python_snippets()


def test_extraction_of_chained_and_prefixed_commands():
    assert pyro_vae_commands('pip install . && pyro-vae study s.toml --out r  # comment') == [["study", "s.toml", "--out", "r"]]
    assert pyro_vae_commands('PYRO_VAE_DATA=../d pyro-vae bench --variants "" --json b.json') == [
        ["bench", "--variants", "", "--json", "b.json"]]
    assert pyro_vae_commands("tensorboard --logdir runs/x") == []


def _parse(args: list[str]) -> str | None:
    """None when `pyro-vae ARGS` parses (or prints its help or version), else the parser's message."""
    from pyro_vae.cli import parser
    from pyro_vae.errors import UserError

    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
            parser().parse_args(args)
    except UserError as e:
        return str(e)
    except SystemExit as e:  # --help, --version: exit 0
        return None if e.code in (0, None) else f"exit {e.code}: {err.getvalue().strip()}"
    return None


def test_parse_rejects_unknown_flags():
    assert _parse(["train", "--epochs", "1", "--out", "r"]) is None
    assert _parse(["train", "--help"]) is None
    assert "unrecognized arguments: --no-such-flag" in _parse(["train", "--no-such-flag", "--out", "r"])
    assert _parse(["study", "s.toml", "--epochs", "three", "--out", "r"]) is not None


COMMANDS = shell_commands()


@pytest.mark.parametrize("where, command, args", COMMANDS, ids=[where for where, _, _ in COMMANDS])
def test_command_parses(where, command, args):
    problem = _parse(args)
    assert problem is None, f"{where}: `{command}` does not parse: {problem}"


@pytest.fixture(scope="module")
def snippet_env() -> dict[str, str]:
    env = dict(os.environ)  # the suite's PYRO_VAE_DATA and private PYRO_VAE_CACHE (conftest)
    env.update(OMP_WAIT_POLICY="PASSIVE", MPLBACKEND="Agg", PYTHONPATH=os.pathsep.join(
        [str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])))
    return env


@pytest.mark.slow
@pytest.mark.parametrize("document", sorted(python_snippets()))
def test_python_snippets_run(document, tmp_path, snippet_env):
    folder = tmp_path / "work"
    folder.mkdir()
    for name in COPIED_INTO_SNIPPET_FOLDER:
        shutil.copytree(REPO / name, folder / name, ignore=shutil.ignore_patterns("__pycache__"))
    for line, code in python_snippets()[document]:
        script = tmp_path / f"snippet_line_{line}.py"
        script.write_text(code, encoding="utf-8")
        try:
            done = subprocess.run([sys.executable, str(script)], cwd=folder, env=snippet_env, capture_output=True,
                                  text=True, timeout=SNIPPET_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{document}: the Python snippet at line {line} ran past {SNIPPET_TIMEOUT_S} s")
        assert done.returncode == 0, (f"{document}: the Python snippet at line {line} failed (exit {done.returncode}):\n"
                                      f"{code}\n--- stderr ---\n{done.stderr[-4000:]}")


@pytest.mark.slow
def test_docs_build_in_strict_mode(tmp_path):
    missing = [m for m in ("mkdocs", "mkdocstrings_handlers.python", "mkdocs_jupyter") if importlib.util.find_spec(m.split(".")[0]) is None
               or importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"the docs tools are not installed ({', '.join(missing)}): pip install -e \".[docs]\"")
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", NO_MKDOCS_2_WARNING="1")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(REPO / "mkdocs.yml"),
                           "--site-dir", str(tmp_path / "site")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stderr[-6000:]}"
    site = tmp_path / "site"
    for page in ("index.html", "api/index.html", "tutorial/index.html", "reports/index.html",
                 "reports/ae_vs_vae_mnist/report/index.html", "reports/ae_vs_vae_mnist/figures/codes.png"):
        assert (site / page).is_file(), f"the site lacks {page}"
    api = (site / "api/index.html").read_text(encoding="utf-8")
    for name in ("pyro_vae.training.runs.Run", "pyro_vae.api.train", "pyro_vae.api.evaluate", "pyro_vae.api.run_study",
                 "pyro_vae.api.build_report", "pyro_vae.training.runs.load_run"):
        assert name in api, f"the API reference lacks {name}"
