"""Static checks of repository files: the web page's ES modules (imports that resolve, no cycle, small
modules, only the documented page-level names), its Plotly config (nothing sent off the machine), the
CI script's browser requirement, and the ``shared`` marker on tests that read ../shared."""

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
STATIC = REPO / "src" / "hitlseg" / "server" / "static"
JS = STATIC / "js"
CI_RUN = REPO / ".ci" / "run"

#: Options of PLOTLY_CONFIG that keep chart data on this machine, as they appear in js/charts.js.
PRIVATE_OPTIONS = ('displaylogo: false', 'showSendToCloud: false', 'showEditInChartStudio: false',
                   'plotlyServerURL: ""')
#: The names the modules put on ``window`` (and the module that owns each): the browser tests read
#: them through ``page.evaluate`` and a person can in the console. Nothing else is page-level.
WINDOW_NAMES = {"app": "state.js", "editor": "editor.js", "timeLeft": "jobs.js", "encodeLabels": "codec.js"}
MAX_MODULE_LINES = 400
IMPORT = re.compile(r'^import \{([^}]*)\} from "([^"]+)";', re.M)
EXPORT = re.compile(r"^export (?:async )?(?:function|const|let|class) ([\w$]+)", re.M)
TOP_LEVEL = re.compile(r"^(?:export )?(?:async )?(?:function|const|let|class) ([\w$]+)", re.M)


def modules() -> dict[str, str]:
    """The page's modules, by file name."""
    return {path.name: path.read_text() for path in sorted(JS.glob("*.js"))}


def js_code(source: str) -> str:
    """``source`` without comments, the text of strings, template literals and regular expressions
    blanked (the expressions inside ``${...}`` kept): what is left names identifiers only."""
    out, i, n = [], 0, len(source)
    braces = []  # for each open "{": True when it opened a template's "${"
    while i < n:
        char, two = source[i], source[i:i + 2]
        if two == "//":
            i = source.find("\n", i) % (n + 1)
            continue
        if two == "/*":
            i = source.index("*/", i) + 2
            out.append(" ")
            continue
        if char in "\"'":
            end = i + 1
            while source[end] != char:
                end += 2 if source[end] == "\\" else 1
            out.append(char * 2)
            i = end + 1
            continue
        if char == "/" and re.search(r"[(,=:!&|?;{}]\s*$|\breturn\s*$", "".join(out[-3:]) or "("):
            end = i + 1  # a regular expression literal: up to its closing "/" outside a class
            in_class = False
            while in_class or source[end] != "/":
                if source[end] == "\\":
                    end += 1
                elif source[end] in "[]":
                    in_class = source[end] == "["
                end += 1
            out.append('""')
            i = end + 1
            while i < n and source[i].isalpha():  # its flags
                i += 1
            continue
        if char == "`" or (char == "}" and braces and braces[-1]):
            if char == "}":
                braces.pop()
            end = i + 1  # template text up to its end or the next "${"
            while source[end] != "`" and source[end:end + 2] != "${":
                end += 2 if source[end] == "\\" else 1
            out.append('""')
            if source[end] == "`":
                i = end + 1
            else:
                braces.append(True)
                i = end + 2
                out.append("(")
            continue
        if char == "{":
            braces.append(False)
        elif char == "}" and braces:
            braces.pop()
        out.append(char)
        i += 1
    return "".join(out)


def identifiers(code: str) -> set[str]:
    """Names in ``code`` that are not properties (after a dot)."""
    return set(re.findall(r"(?<![\w$.])([A-Za-z_$][\w$]*)(?![\w$])", code))


def imports_of(source: str) -> dict[str, list[str]]:
    """``{specifier: [names]}`` of a module's ``import { ... } from "..."`` lines."""
    return {spec: [name.strip() for name in names.split(",") if name.strip()]
            for names, spec in IMPORT.findall(source)}


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
    source = "\n".join(modules().values())
    calls = plotly_calls(source)
    drawing = [(name, args) for name, args in calls if name in ("newPlot", "react", "plot")]
    assert len(drawing) >= 2  # the projection and the improve chart
    for name, args in drawing:
        assert len(args) == 4, f"Plotly.{name}({args[0]}, ...) passes no config"
        assert args[3].startswith("plotlyConfig("), f"Plotly.{name}({args[0]}, ...) config: {args[3][:60]}"
    charts = (JS / "charts.js").read_text()
    constant = re.search(r"const PLOTLY_CONFIG = Object\.freeze\(\{(.*?)\n\}\);", charts, re.S)
    assert constant, "js/charts.js defines no PLOTLY_CONFIG"
    body = constant.group(1)
    for option in PRIVATE_OPTIONS:
        assert option in body, option
    assert re.search(r'modeBarButtonsToRemove: Object\.freeze\(\["sendChartToCloud", "sendDataToCloud"\]\)', body)
    # the chart's own options come first, so they cannot switch these back on
    assert "return { ...options, ...PLOTLY_CONFIG," in charts
    assert source.count("PLOTLY_CONFIG") == 4 and source.count("displaylogo") == 1  # set in one place only
    assert "export function plotlyConfig" in charts and "export const PLOTLY_CONFIG" not in charts


def test_plotly_config_values_in_node():
    """Evaluate the constant and the helper with Node (when installed): the values Plotly receives."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    source = (JS / "charts.js").read_text().replace("export function", "function")
    assert "export" not in js_code(source)
    script = source + (
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


# -- the page's ES modules ---------------------------------------------------------------------------


def test_page_loads_the_modules_without_a_build_step():
    """index.html loads Plotly.js (deferred) then js/main.js as a module, which runs after it; no inline
    handlers, no app.js left."""
    page = (STATIC / "index.html").read_text()
    scripts = re.findall(r"<script([^>]*)></script>", page)
    assert [re.search(r'src="([^"]+)"', attrs).group(1) for attrs in scripts] == [
        "/static/vendor/plotly.min.js", "/static/js/main.js"]
    assert " defer" in scripts[0] and 'type="module"' in scripts[1]
    assert not re.search(r"<script(?![^>]*src=)", page)  # no inline script
    assert not re.search(r"\son[a-z]+=", page)  # no inline handler: the modules add listeners
    assert not (STATIC / "app.js").exists() and "app.js" not in page
    assert "main.js" in modules() and len(modules()) >= 8


def test_module_imports_resolve_and_form_no_cycle():
    """Every import is a relative ``./NAME.js`` of this folder (no package, no CDN) naming only what that
    module exports, each imported name is used, every module is reached from main.js, and no module
    imports itself back (so evaluation order never meets a half-initialised module)."""
    found = modules()
    graph = {}
    for name, source in found.items():
        lines = [line for line in source.splitlines() if line.startswith("import")]
        assert len(lines) == len(IMPORT.findall(source)), f"{name}: an import of another form"
        assert not re.search(r"\bimport\s*\(", js_code(source)), f"{name}: a dynamic import"
        code = js_code(IMPORT.sub("", source))
        graph[name] = []
        for spec, names in imports_of(source).items():
            assert re.fullmatch(r"\./[a-z-]+\.js", spec), f"{name} imports {spec!r}"
            target = spec[2:]
            assert target in found, f"{name} imports {spec}, which does not exist"
            exported = set(EXPORT.findall(found[target]))
            assert set(names) <= exported, f"{name}: {set(names) - exported} not exported by {target}"
            unused = set(names) - identifiers(code)
            assert not unused, f"{name} imports {unused} from {target} and never uses them"
            graph[name].append(target)
    reached, todo = set(), ["main.js"]
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo += graph[name]
    assert reached == set(found), f"not imported by any module: {set(found) - reached}"

    def visit(name, path):
        assert name not in path, f"import cycle: {' -> '.join(path + [name])}"
        for target in graph[name]:
            visit(target, path + [name])

    visit("main.js", [])


def test_modules_name_only_what_they_import_or_declare():
    """A top-level name of another module used in a module is imported there (the modules share no
    scope: a missing import is a ReferenceError at run time only)."""
    found = modules()
    declared = {name: set(TOP_LEVEL.findall(source)) for name, source in found.items()}
    for name, source in found.items():
        local = declared[name] | {n for names in imports_of(source).values() for n in names}
        used = identifiers(js_code(IMPORT.sub("", source)))
        elsewhere = set().union(*(names for other, names in declared.items() if other != name))
        missing = (used & elsewhere) - local
        assert not missing, f"{name} uses {sorted(missing)} without importing them"
        assert not re.search(r"^\s*var ", source, re.M), f"{name}: var"


def test_modules_are_small():
    for name, source in modules().items():
        lines = source.count("\n")
        assert lines <= MAX_MODULE_LINES, f"js/{name}: {lines} lines (at most {MAX_MODULE_LINES})"
        assert source.startswith("/* "), f"js/{name} does not open with a comment saying what it holds"
        assert not re.search(r"https?://", source), f"js/{name} names a URL"


def test_only_the_documented_names_are_page_level():
    """The modules put exactly WINDOW_NAMES on ``window``, each once in its own module after a comment
    saying who uses it (the browser tests, the console); every page-level name a browser test evaluates is one
    of them."""
    assigned = {}
    for name, source in modules().items():
        code = js_code(source)
        assert not re.search(r"\b(?:globalThis|self)\b", code), f"{name}: globalThis or self"
        for match in re.finditer(r"\bwindow\.([\w$]+)\s*=(?!=)", code):
            assert match.group(1) not in assigned, f"window.{match.group(1)} assigned twice"
            assigned[match.group(1)] = name
        for line, before in zip(source.splitlines()[1:], source.splitlines()):
            if re.match(r"window\.\w+ = ", line):
                assert before.startswith("// ") and "console" in before, f"{name}: {line} has no comment"
    assert assigned == WINDOW_NAMES
    # what the browser tests evaluate in the page: top-level names of the modules it may use
    tree = ast.parse((REPO / "tests" / "test_browser.py").read_text())
    snippets = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and getattr(node.func, "attr", None) in ("evaluate", "wait_for_function")
                and node.args):
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                snippets.append(arg.value)
            elif isinstance(arg, ast.JoinedStr):
                snippets.append(" ".join(v.value for v in arg.values if isinstance(v, ast.Constant)))
    assert len(snippets) > 30
    used = set().union(*(identifiers(js_code(snippet)) for snippet in snippets))
    top_level = set().union(*(TOP_LEVEL.findall(source) for source in modules().values()))
    assert used & top_level <= set(WINDOW_NAMES), f"tests evaluate {sorted((used & top_level) - set(WINDOW_NAMES))}"
    assert {"editor", "timeLeft", "encodeLabels"} <= used


def test_js_code_blanks_strings_comments_and_template_text():
    code = js_code('const a = "api"; // editor\n/* app */ b(`x ${enc(c)} ${`y ${d}`} api`) / e; f(/["\\/]`/g);')
    assert identifiers(code) == {"const", "a", "b", "enc", "c", "d", "e", "f"}


def test_modules_are_served_as_javascript(http):
    """Each module is served under /static/js/ with a JavaScript MIME type (a browser refuses a module
    sent as text/plain), from the installed package's folder; no Content-Security-Policy blocks them."""
    from hitlseg.server.app import STATIC as served

    page = http.get("/")
    policy = page.headers.get("content-security-policy")
    if policy is not None:  # none is sent now; one added later must let the page's own scripts run
        scripts = re.search(r"(?:script-src|default-src)([^;]*)", policy)
        assert scripts and "'self'" in scripts.group(1), policy
    for name in modules():
        assert (served / "js" / name).is_file()
        answer = http.get(f"/static/js/{name}")
        assert answer.status_code == 200, name
        assert answer.headers["content-type"].split(";")[0] in ("text/javascript", "application/javascript"), name
        assert answer.text == (JS / name).read_text()
    assert http.get("/static/app.js").status_code == 404


def test_package_data_covers_the_modules():
    import tomllib
    from pathlib import PurePosixPath

    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["hitlseg"]
    for name in modules():
        path = PurePosixPath("server/static/js") / name
        assert any(path.full_match(p) if hasattr(path, "full_match") else
                   re.fullmatch(re.escape(p).replace(r"\*\*/\*", ".+").replace(r"\*", "[^/]+"), str(path))
                   for p in patterns), path


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
    """pyproject's dependencies and ``web`` and ``umap`` extras declare every distribution src/ imports, and
    nothing src/ does not import (python-multipart was declared and unused; threadpoolctl used and
    undeclared)."""
    import importlib.metadata as metadata
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = project["dependencies"] + project["optional-dependencies"]["web"] + project["optional-dependencies"]["umap"]
    declared = {_normal(Requirement(r).name) for r in runtime}
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
