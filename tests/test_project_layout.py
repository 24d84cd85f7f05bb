"""The project store's modules: the mixins never import the core, so there is no import circle.

(Importing any of them still runs ``hitlseg/project/__init__.py``, which imports the core; hence a
check of the modules' own imports rather than of ``sys.modules``.)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import hitlseg.project
from hitlseg.project import Project
from hitlseg.project.arrays import ArrayStore
from hitlseg.project.markers import MarkerStore
from hitlseg.project.runs import RunStore

PACKAGE = Path(hitlseg.project.__file__).parent


def _imported(module: str) -> set[str]:
    """Every module an ``import`` or ``from ... import`` of ``hitlseg/project/<module>.py`` names."""
    names = set()
    for node in ast.walk(ast.parse((PACKAGE / f"{module}.py").read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            names |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return names


@pytest.mark.parametrize("module", ["_sql", "markers", "arrays", "runs"])
def test_a_store_module_does_not_import_the_core(module):
    imported = _imported(module)
    assert "hitlseg.project.store" not in imported
    assert "hitlseg.project" not in imported  # from hitlseg.project import Project: the core again


def test_project_is_composed_of_the_mixins():
    assert Project.__mro__[1:4] == (MarkerStore, ArrayStore, RunStore)
    for name, owner in [("save_markers", MarkerStore), ("put_array", ArrayStore), ("start_run", RunStore)]:
        assert getattr(Project, name) is getattr(owner, name)
