"""Griffe extension: the package's folders without an ``__init__.py`` (``pyro_vae/training``,
``pyro_vae/evaluation``) are loaded as subpackages, as Python imports them; and a Google-style
``Example:`` section is read as ``Examples:`` (as Sphinx's napoleon reads it), so its ``>>>`` lines are
shown as code rather than parsed as Markdown.

Griffe skips a folder without ``__init__.py`` inside a regular package (it takes it for scripts), so
``::: pyro_vae.training.runs.Run`` would not be found. This adds each such folder as a namespace
subpackage and loads its modules into it; once the folders have an ``__init__.py`` it does nothing.
"""

from __future__ import annotations

import re
from pathlib import Path

from griffe import Extension, GriffeLoader, LoadingError, Module


EXAMPLE_HEADING = re.compile(r"^(\s*)Example:\s*$", re.M)


class NamespaceSubpackages(Extension):
    def on_object(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None and "Example:" in obj.docstring.value:
            obj.docstring.value = EXAMPLE_HEADING.sub(r"\1Examples:", obj.docstring.value)

    def on_package(self, *, pkg: Module, loader: GriffeLoader, **kwargs) -> None:
        if not pkg.is_package:
            return
        self._add_folders(pkg, Path(pkg.filepath).parent, loader)

    def _add_folders(self, parent: Module, folder: Path, loader: GriffeLoader) -> None:
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and p.name.isidentifier()):
            if (sub / "__init__.py").exists():
                if sub.name in parent.members:
                    self._add_folders(parent.members[sub.name], sub, loader)
                continue
            modules = sorted(p for p in sub.glob("*.py") if p.stem.isidentifier())
            if not modules or sub.name in parent.members:
                continue
            package = loader._create_module(sub.name, [sub])
            parent.set_member(sub.name, package)
            for path in modules:
                try:
                    module = loader._load_module(path.stem, path, submodules=False, parent=package)
                except LoadingError:
                    continue
                package.set_member(path.stem, module)
