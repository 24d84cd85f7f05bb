"""``hitlseg serve`` and ``hitlseg demo``: the web interface on a project."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from pathlib import Path

from hitlseg.cli import args as argtypes
from hitlseg.defaults import DEFAULT_PROJECTION, PROJECTIONS
from hitlseg.parallel.executor import add_execution_arguments, executor_from_args

DEFAULT_PORT = 8000
DEMO_CLASS_NAMES = ["Cytoplasm", "Nucleus"]


def register(commands) -> None:
    """Add the ``serve`` and ``demo`` commands to the sub-parser ``commands``."""
    serve = commands.add_parser("serve", help="open the web interface on a project",
                                description="Serve the interactive marking and selection loop of a project. "
                                            "Binds 127.0.0.1 by default; bound elsewhere, it requires a token "
                                            "(--token, or one is generated and printed in the URL).")
    serve.add_argument("project", help="project folder (create one with 'hitlseg project init')")
    _common(serve)
    serve.add_argument("--classes", type=argtypes.positive_int, default=None,
                       help="object classes offered by the marker editor (default: from masks and markers, at least 1)")
    serve.add_argument("--class-names", default=None, help="comma-separated names of the object classes")
    serve.set_defaults(func=run_serve)

    demo = commands.add_parser("demo", help="create the WBC demo project (once) and open the web interface on it",
                               description="Create a project over the bundled white-blood-cell images in a user "
                                           "data folder (reused when it exists) and serve it.")
    demo.add_argument("--dir", default=None,
                      help="project folder (default: $XDG_DATA_HOME/hitlseg/demo or ~/.local/share/hitlseg/demo)")
    _common(demo)
    demo.set_defaults(func=run_demo)


def _common(parser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=argtypes.port, default=DEFAULT_PORT,
                        help=f"port (default {DEFAULT_PORT}; 0 picks a free one)")
    parser.add_argument("--token", default=None,
                        help="access token (required off loopback; generated when not given)")
    parser.add_argument("--no-browser", action="store_true", help="do not open a web browser")
    parser.add_argument("--max-body-mb", type=argtypes.positive_float, default=20.0, help="largest request body in MB (default 20)")
    parser.add_argument("--seed", type=argtypes.seed, default=0, help="seed of FLIM fitting, projection and training (default 0)")
    parser.add_argument("--projection", default=DEFAULT_PROJECTION, choices=list(PROJECTIONS),
                        help="2D projection of the Selection view: t-SNE (openTSNE), PCA or UMAP (umap-learn, the "
                             f"hitlseg[umap] extra; its first layout compiles for about 6 s) (default {DEFAULT_PROJECTION})")
    parser.add_argument("--quality-model", metavar="FILE", default=None,
                        help="quality model ('hitlseg quality train'): the Model view then shows each prediction's "
                             "predicted quality and ranks the images worst first")
    add_execution_arguments(parser)  # the selection session and the Improve view's scoring on Dask workers


def demo_dir() -> Path:
    """Where ``hitlseg demo`` keeps its project: ``$XDG_DATA_HOME/hitlseg/demo`` or ``~/.local/share/hitlseg/demo``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "hitlseg" / "demo"


def open_demo_project(folder: Path):
    """The demo project in ``folder``, created from the bundled WBC images when it does not exist yet."""
    from hitlseg.datasets import DEMO_ROOT
    from hitlseg.errors import InputError
    from hitlseg.project import DB_NAME, Project
    from hitlseg.validate import check_output_dir

    if (folder / DB_NAME).is_file():
        return Project.open(folder), False
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise InputError(f"{folder}: exists and is not a hitlseg project; choose another folder with --dir")
    check_output_dir(folder, "--dir")
    return Project.init(folder, dataset=DEMO_ROOT, copy=True, name="WBC demo"), True


def run_serve(args) -> int:
    from hitlseg.project import Project

    names = [n.strip() for n in args.class_names.split(",")] if args.class_names else None
    project = Project.open(args.project)
    return serve(project, args, classes=args.classes, class_names=names)


def run_demo(args) -> int:
    folder = Path(args.dir) if args.dir else demo_dir()
    project, created = open_demo_project(folder)
    what = "created" if created else "reusing"
    print(f"hitlseg: {what} the demo project in {project.root} ({len(project)} white-blood-cell images)", flush=True)
    if args.port:
        url = running_elsewhere(project, args.host, args.port)
        if url is not None:  # one project, one server: a second would race the first on its jobs
            print(f"hitlseg: the demo is already being served at {url} (port {args.port}); "
                  "opening it instead of starting a second server on the same project", flush=True)
            project.close()
            if not args.no_browser:
                open_browser(url)
            return 0
    return serve(project, args, classes=2, class_names=DEMO_CLASS_NAMES, fallback_port=True)


def bind(host: str, port: int, fallback: bool = False) -> socket.socket:
    """A listening-ready socket bound to ``host:port`` (another free port when ``fallback`` and it is taken)."""
    from hitlseg.errors import InputError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        if fallback and port != 0:
            sock.close()
            other = bind(host, 0)
            print(f"hitlseg: port {port} is busy ({exc.strerror or exc}); serving on port {other.getsockname()[1]} "
                  f"instead (choose one with --port)", flush=True)
            return other
        sock.close()
        raise InputError(f"--host/--port: cannot listen on {host}:{port} ({exc.strerror or exc}); "
                         "choose another port with --port") from None
    # listen now: the URL is printed before uvicorn starts, and a browser or script that connects
    # in between must wait in the backlog, not be refused (seen on a loaded 2-core machine)
    sock.listen(2048)
    return sock


def served_project(host: str, port: int, timeout: float = 2.0) -> dict | None:
    """What a hitlseg server at ``host:port`` serves (its ``/api/project``), or None when nothing
    answers there as hitlseg does (another program, a token required, no answer in ``timeout``)."""
    import json
    import urllib.request

    try:
        with urllib.request.urlopen(url_of(host, port, None) + "api/project", timeout=timeout) as answer:
            data = json.loads(answer.read(1 << 20))
    except (OSError, ValueError):  # refused, 401/404 (HTTPError is an OSError), timeout, not JSON
        return None
    return data if isinstance(data, dict) and "created_at" in data and "name" in data else None


def running_elsewhere(project, host: str, port: int) -> str | None:
    """The URL of a server already serving ``project`` at ``host:port`` (None when the port is free or
    holds something else), so a second ``hitlseg demo`` opens it instead of serving the project twice."""
    probe = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        busy = probe.connect_ex(("127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host),
                                 port)) == 0
    except OSError:
        busy = False
    finally:
        probe.close()
    if not busy:
        return None
    served = served_project(host, port)
    if served and served.get("created_at") == project.meta.get("created_at") and served.get("name") == project.name:
        return url_of(host, port, None)
    return None


def url_of(host: str, port: int, token: str | None) -> str:
    """The page's URL (with the token when one is required)."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


def open_browser(url: str) -> bool:
    """Open ``url`` in a web browser when one can be shown; silently False otherwise (headless machines)."""
    import webbrowser

    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
                                                 or os.environ.get("BROWSER")):
        return False
    try:
        return bool(webbrowser.open(url))
    except Exception:
        return False


def serve(project, args, *, classes=None, class_names=None, fallback_port: bool = False) -> int:
    """Serve ``project`` with uvicorn until interrupted (per-image work where ``--workers``/``--scheduler`` say)."""
    executor = executor_from_args(args)  # an unreachable scheduler fails here, before the server starts
    with executor:
        return _serve(project, args, executor, classes, class_names, fallback_port)


def _serve(project, args, executor, classes, class_names, fallback_port: bool) -> int:
    import uvicorn

    from hitlseg.server import create_app
    from hitlseg.server.security import is_loopback

    app = create_app(project, token=args.token, host=args.host, max_body=int(args.max_body_mb * 1024 * 1024),
                     classes=classes, class_names=class_names, seed=args.seed, projection=args.projection,
                     quality_model=args.quality_model, executor=executor)
    token = app.state.hitlseg.token
    sock = bind(args.host, args.port, fallback=fallback_port)
    port = sock.getsockname()[1]
    url = url_of(args.host, port, token)
    print(f"hitlseg: serving project {project.name!r} ({len(project)} images) at {url}", flush=True)
    if not is_loopback(args.host):
        print(f"hitlseg: listening on {args.host}, reachable from other machines; the token is required", flush=True)
    if executor.distributed:
        print(f"hitlseg: per-image work runs on a {executor.description}", flush=True)
    print("hitlseg: press Ctrl+C to stop", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=3))
    if not args.no_browser:
        def when_started():
            deadline = time.monotonic() + 30
            while not server.started and time.monotonic() < deadline:
                time.sleep(0.05)
            if server.started:
                open_browser(url)

        threading.Thread(target=when_started, daemon=True).start()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        if app.state.hitlseg.jobs.idle:  # a job cut short may still hold a connection: leave it to the exit
            project.close()
    return 0
