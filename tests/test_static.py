"""Static checks of repository files: the web page's Plotly config (nothing sent off the machine),
the CI script's browser requirement, and the ``shared`` marker on tests that read ../shared."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
APP_JS = REPO / "src" / "hitlseg" / "server" / "static" / "app.js"
CI_RUN = REPO / ".ci" / "run"

#: Options of PLOTLY_CONFIG that keep chart data on this machine, as they appear in app.js.
PRIVATE_OPTIONS = ('displaylogo: false', 'showSendToCloud: false', 'showEditInChartStudio: false',
                   'plotlyServerURL: ""')


def js_arguments(source: str, start: int) -> list[str]:
    """The top-level arguments of the call whose "(" is at ``start`` (strings and brackets skipped)."""
    assert source[start] == "("
    args, depth, current, i = [], 0, [], start + 1
    while True:
        char = source[i]
        if char in "\"'`":  # a string: copy up to its closing quote
            end = i + 1
            while source[end] != char:
                end += 2 if source[end] == "\\" else 1
            current.append(source[i:end + 1])
            i = end + 1
            continue
        if char in "([{":
            depth += 1
        elif char in ")]}":
            if depth == 0:
                args.append("".join(current).strip())
                return args
            depth -= 1
        elif char == "," and depth == 0:
            args.append("".join(current).strip())
            current = []
            i += 1
            continue
        current.append(char)
        i += 1


def plotly_calls(source: str) -> list[tuple[str, list[str]]]:
    return [(m.group(1), js_arguments(source, m.end() - 1))
            for m in re.finditer(r"Plotly\.(newPlot|react|plot|update|relayout|restyle)\s*\(", source)]


def test_every_plotly_chart_passes_the_shared_private_config():
    source = APP_JS.read_text()
    calls = plotly_calls(source)
    drawing = [(name, args) for name, args in calls if name in ("newPlot", "react", "plot")]
    assert len(drawing) >= 2  # the projection and the improve chart
    for name, args in drawing:
        assert len(args) == 4, f"Plotly.{name}({args[0]}, ...) passes no config"
        assert args[3].startswith("plotlyConfig("), f"Plotly.{name}({args[0]}, ...) config: {args[3][:60]}"
    constant = re.search(r"const PLOTLY_CONFIG = Object\.freeze\(\{(.*?)\n\}\);", source, re.S)
    assert constant, "app.js defines no PLOTLY_CONFIG"
    body = constant.group(1)
    for option in PRIVATE_OPTIONS:
        assert option in body, option
    assert re.search(r'modeBarButtonsToRemove: Object\.freeze\(\["sendChartToCloud", "sendDataToCloud"\]\)', body)
    # the chart's own options come first, so they cannot switch these back on
    assert "return { ...options, ...PLOTLY_CONFIG," in source
    assert source.count("PLOTLY_CONFIG") == 4 and source.count("displaylogo") == 1  # set in one place only


def test_plotly_config_values_in_node():
    """Evaluate the constant and the helper with Node (when installed): the values Plotly receives."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    source = APP_JS.read_text()
    start = source.index("const PLOTLY_CONFIG")
    end = source.index("\n}\n", source.index("function plotlyConfig")) + 3
    script = source[start:end] + (
        'console.log(JSON.stringify([plotlyConfig(), plotlyConfig({ showSendToCloud: true, displaylogo: true, '
        'plotlyServerURL: "https://example.org", responsive: true, modeBarButtonsToRemove: ["lasso2d"] })]));')
    out = subprocess.run([node, "-e", script], capture_output=True, text=True, timeout=60, check=True).stdout
    plain, overridden = json.loads(out)
    for config in (plain, overridden):
        assert config["displaylogo"] is False and config["showSendToCloud"] is False
        assert config["showEditInChartStudio"] is False and config["plotlyServerURL"] == ""
        assert {"sendChartToCloud", "sendDataToCloud"} <= set(config["modeBarButtonsToRemove"])
    assert overridden["responsive"] is True and "lasso2d" in overridden["modeBarButtonsToRemove"]


def test_bundled_plotly_knows_the_options_used():
    """The Plotly.js served at /static/vendor/plotly.min.js understands the keys and button names of
    PLOTLY_CONFIG (so a Plotly upgrade that renames them shows up here)."""
    from hitlseg.server.app import plotly_path

    path = plotly_path()
    if path is None:
        pytest.skip("the plotly package is not installed")
    bundle = Path(path).read_text(encoding="utf-8", errors="replace")
    version = re.search(r"plotly\.js v(\d+)\.(\d+)\.(\d+)", bundle[:500])
    assert version, "no version banner in plotly.min.js"
    for key in ("showSendToCloud", "plotlyServerURL", "displaylogo", "modeBarButtonsToRemove"):
        assert f"{key}:{{valType" in bundle, f"plotly.js v{'.'.join(version.groups())} has no config key {key}"
    # every mode-bar button that sends the chart to the cloud is one PLOTLY_CONFIG removes
    cloud_buttons = set(re.findall(r'name:"(\w*Cloud\w*)"', bundle))
    assert cloud_buttons and cloud_buttons <= {"sendChartToCloud", "sendDataToCloud"}, cloud_buttons


# -- CI and the browser tests ------------------------------------------------------------------------


def test_ci_installs_debian_chromium_and_requires_the_browser_tests():
    from tests import test_browser

    script = CI_RUN.read_text()
    assert str(test_browser.CHROMIUM) == "/usr/bin/chromium"
    assert "command -v chromium" not in script  # another chromium on PATH is not the one the tests launch
    assert "[ ! -x /usr/bin/chromium ]" in script and "apt-get install -y -qq chromium" in script
    assert f"export {test_browser.REQUIRE_BROWSER}=1" in script
    assert script.index(f"export {test_browser.REQUIRE_BROWSER}=1") < script.index("make test")


def test_missing_browser_fails_when_required_and_skips_otherwise(monkeypatch):
    from tests import test_browser

    monkeypatch.delenv(test_browser.REQUIRE_BROWSER, raising=False)
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        test_browser.browser_unavailable("Chromium is not installed")
    monkeypatch.setenv(test_browser.REQUIRE_BROWSER, "0")
    with pytest.raises(pytest.skip.Exception):
        test_browser.browser_unavailable("Chromium is not installed")
    monkeypatch.setenv(test_browser.REQUIRE_BROWSER, "1")
    with pytest.raises(pytest.fail.Exception, match="must run here"):
        test_browser.browser_unavailable("Chromium is not installed")


# -- tests that read ../shared ---------------------------------------------------------------------


def test_tests_reading_shared_data_carry_the_shared_marker():
    """``-m "not shared"`` must leave out every test that reads ../shared (the ``shared`` fixture)."""
    unmarked = []
    for path in sorted((REPO / "tests").glob("test_*.py")):
        tree = ast.parse(path.read_text())
        module_marked = "mark.shared" in "".join(ast.unparse(n) for n in tree.body
                                                 if isinstance(n, ast.Assign) and "pytestmark" in ast.unparse(n))
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef) or not node.name.startswith("test"):
                continue
            calls = {getattr(c.func, "id", getattr(c.func, "attr", None)) for c in ast.walk(node) if isinstance(c, ast.Call)}
            uses = "shared" in [a.arg for a in node.args.args] or "shared_dataset" in calls
            marked = module_marked or any("mark.shared" in ast.unparse(d) for d in node.decorator_list)
            if uses and not marked:
                unmarked.append(f"{path.name}::{node.name}")
    assert not unmarked, f"read ../shared without @pytest.mark.shared: {unmarked}"


# -- declared dependencies -------------------------------------------------------------------------

#: Imported by hitlseg but declared through FastAPI, whose own requirements pin them to the versions
#: that FastAPI release supports.
THROUGH_FASTAPI = {"starlette", "pydantic"}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported_top_level_names() -> set[str]:
    """Top-level modules imported (or opened with ``importlib.resources.files``) anywhere in src/hitlseg."""
    names = set()
    for path in (REPO / "src" / "hitlseg").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
            elif (isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("files", "import_module")
                  and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                names.add(node.args[0].value.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "hitlseg"}


def test_runtime_dependencies_are_exactly_the_imported_ones():
    """pyproject's dependencies and ``web`` extra declare every distribution src/ imports, and
    nothing src/ does not import (python-multipart was declared and unused; threadpoolctl used and
    undeclared)."""
    import importlib.metadata as metadata
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {_normal(Requirement(r).name) for r in project["dependencies"] + project["optional-dependencies"]["web"]}
    by_module = metadata.packages_distributions()
    imported = {}
    for module in _imported_top_level_names():
        distributions = by_module.get(module)
        if not distributions:
            pytest.skip(f"{module} is not installed, so its distribution is unknown")
        imported[module] = _normal(distributions[0])
    fastapi_requires = {_normal(Requirement(r).name) for r in metadata.requires("fastapi") or []
                        if "extra ==" not in r}
    undeclared = {m: d for m, d in imported.items() if d not in declared and d not in THROUGH_FASTAPI}
    assert not undeclared, f"imported in src/ but not declared in pyproject.toml: {undeclared}"
    assert {d for d in imported.values() if d in THROUGH_FASTAPI} <= fastapi_requires
    unused = declared - set(imported.values())
    assert not unused, f"declared in pyproject.toml but never imported in src/: {sorted(unused)}"
