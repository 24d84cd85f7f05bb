"""Server: the module layout — routers depend on ``hitlseg.server.deps``, never on the app that includes them."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SERVER = Path(__file__).resolve().parents[1] / "src" / "hitlseg" / "server"
ROUTERS = sorted(p for p in (SERVER / "routers").glob("*.py") if p.name != "__init__.py")


def imported_modules(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports (``from X import y`` counts as X and X.y)."""
    package = "hitlseg.server.routers" if path.parent.name == "routers" else "hitlseg.server"
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def test_the_routers_are_found():
    assert {p.stem for p in ROUTERS} >= {"active", "images", "jobs", "markers", "models", "selection"}


@pytest.mark.parametrize("path", ROUTERS + [SERVER / "deps.py"], ids=lambda p: p.name)
def test_no_router_imports_the_app(path):
    names = imported_modules(path)
    assert "hitlseg.server.app" not in names, f"{path.name} imports hitlseg.server.app"
    if path.name != "deps.py":
        assert "hitlseg.server.deps" in names  # the state comes from the leaf module
    else:
        assert not {n for n in names if n.startswith("hitlseg.server.routers")}


def test_the_check_sees_every_spelling_of_the_import(tmp_path):
    """A check that cannot fail is no check: each way of importing the app is found."""
    fake = tmp_path / "routers" / "fake.py"
    fake.parent.mkdir()
    for line in ("from hitlseg.server.app import state", "import hitlseg.server.app",
                 "from hitlseg.server import app", "from ..app import ServerState", "from .. import app"):
        fake.write_text(line + "\n")
        assert "hitlseg.server.app" in imported_modules(fake), line
    fake.write_text("from ..deps import state\nfrom hitlseg.server.imaging import check_view\n")
    assert "hitlseg.server.app" not in imported_modules(fake)


def test_routers_import_before_the_app_in_a_fresh_interpreter():
    modules = ", ".join(f"hitlseg.server.routers.{p.stem}" for p in ROUTERS)
    code = (
        "import sys\n"
        f"import {modules}\n"
        "assert 'hitlseg.server.app' not in sys.modules, 'importing a router imported the app'\n"
        "from hitlseg.server.routers import markers\n"
        "from hitlseg.server.deps import ServerState, state\n"
        "from hitlseg.server.app import ServerState as from_app, create_app\n"
        "from hitlseg.server import ServerState as from_package, create_app as created\n"
        "assert from_app is ServerState is from_package and created is create_app\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
