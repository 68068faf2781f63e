"""The package's layers: a module imports only from its own layer or the ones below it, so that
components know nothing of training, evaluation nothing of reports, and so on up."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pyro_vae"

# Lowest first. A module not named here is an error, so a new module must be given its place.
LAYERS = [
    {"errors", "registry", "io"},
    {"data"},
    {"components", "plugins"},
    {"config", "model"},
    {"training"},
    {"evaluation"},
    {"plots"},
    {"study"},
    {"report"},
    {"api"},
    {"bench", "cli"},
]
LEVEL = {name: i for i, names in enumerate(LAYERS) for name in names}


def _room(module: str) -> str:
    """'pyro_vae.evaluation.grid' -> 'evaluation'; the package itself -> ''."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(source: str, rel: Path) -> list[tuple[int, str]]:
    """Every pyro_vae module imported anywhere in the source of pyro_vae/`rel` (function-level imports too)."""
    tree = ast.parse(source)
    package = ".".join(("pyro_vae",) + rel.with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("pyro_vae")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base == "pyro_vae":  # `from pyro_vae import plots` imports the module plots
                found += [(node.lineno, f"pyro_vae.{a.name}") for a in node.names]
            elif base.startswith("pyro_vae"):
                found.append((node.lineno, base))
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_from_a_layer_above_its_own(path):
    own = _room("pyro_vae." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
    assert own in LEVEL, f"{path.relative_to(PACKAGE)} belongs to no layer; add its room to LAYERS"
    upward = [(line, module) for line, module in _imports(path.read_text(), path.relative_to(PACKAGE))
              if _room(module) and _room(module) != "__version__" and LEVEL.get(_room(module), 99) > LEVEL[own]]
    assert not upward, f"{path.relative_to(PACKAGE)} imports from a higher layer: {upward}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_is_over_500_lines(path):
    assert len(path.read_text().splitlines()) <= 500


def test_the_layer_check_sees_every_form_of_import():
    source = "from pyro_vae.training import runs\nfrom .. import report\ndef f():\n    from ..evaluation.grid import x\n"
    assert _imports(source, Path("components/priors.py")) == [
        (1, "pyro_vae.training"), (2, "pyro_vae.report"), (4, "pyro_vae.evaluation.grid")]
