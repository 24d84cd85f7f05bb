"""``create_app``: the FastAPI application over one project.

The app holds a :class:`~hitlseg.server.deps.ServerState` (``app.state.hitlseg``): the project,
the selection loop, the model service, the job runner and the picture renderer. Routers (one per
resource) reach it through the dependency :func:`hitlseg.server.deps.state`; they import only
:mod:`hitlseg.server.deps` and other leaf modules, never this one, which sits on top: it builds the
state and includes the routers. The page is ``/`` (``static/index.html``) with its files under
``/static``; Plotly.js is served from the installed ``plotly`` Python package
(``/static/vendor/plotly.min.js``), never from a CDN. OpenAPI: ``/openapi.json`` (3.1) and ``/docs``
(Swagger UI 5 from the ``fastapi-offline`` package, see :mod:`hitlseg.server.docs`).
"""

from __future__ import annotations

import json
import logging
import math
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np

from hitlseg.errors import InputError
from hitlseg.server.deps import ServerState, state  # noqa: F401 (re-exported: older callers import them here)
from hitlseg.server.docs import MISSING as DOCS_MISSING, SWAGGER_ASSETS, docs_html, swagger_path
from hitlseg.server.security import GuardMiddleware, NotFoundError, install_error_handlers, is_loopback, new_token

log = logging.getLogger("hitlseg.server")

DEFAULT_MAX_BODY = 20 * 1024 * 1024
STATIC = Path(__file__).resolve().parent / "static"


def jsonable(value):
    """Plain JSON values: numpy scalars and arrays converted, NaN as null, infinities as +-1e308."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else math.copysign(1e308, value)
    if isinstance(value, Path):
        return str(value)
    return value


def _json_response_class():
    from fastapi.responses import JSONResponse

    class SafeJSONResponse(JSONResponse):
        """JSON without NaN (not valid JSON) and with numpy values converted."""

        def render(self, content) -> bytes:
            return json.dumps(jsonable(content), ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()

    return SafeJSONResponse


def detect_classes(project, sample: int = 20) -> int:
    """Object classes of a project: the largest label of up to ``sample`` ground-truth masks and of
    the saved markers (marker label c+1 is class c); at least 1."""
    classes = 1
    with_masks = [info["id"] for info in project.images() if info["has_mask"]]
    if with_masks:
        picks = sorted(set(np.linspace(0, len(with_masks) - 1, min(sample, len(with_masks))).round().astype(int).tolist()))
        for index in picks:
            try:
                mask = project.mask(with_masks[index])
            except InputError:
                continue
            if mask is not None and mask.size:
                classes = max(classes, int(mask.max()))
    for image_id in project.latest_versions():
        for entry in project.marker_history(image_id):
            labels = [int(k) for k in entry["class_counts"]]
            if labels:
                classes = max(classes, max(labels) - 1)
    return classes


def create_app(project, *, token: str | None = None, host: str = "127.0.0.1", max_body: int = DEFAULT_MAX_BODY,
               classes: int | None = None, class_names: list[str] | None = None, seed: int = 0, k: int = 5,
               projection: str = "tsne", prepare: bool = True, eval_limit: int = 50, device=None,
               check_host: bool | None = None, session_options: dict | None = None,
               quality_model: str | Path | None = None, executor=None):
    """The web application over ``project``.

    Parameters
    ----------
    project : Project or path
        An open :class:`~hitlseg.project.Project`, or its folder (opened here and closed at shutdown).
    token : str, optional
        Access token. When the server is bound to a non-loopback ``host`` and no token is given,
        one is generated (``app.state.hitlseg.token``); a token given on loopback is required too.
    host : str
        The address the server binds (decides whether a token is required).
    max_body : int
        Largest request body in bytes (413 beyond).
    classes : int, optional
        Object classes offered by the marker editor (default: detected from masks and markers).
    class_names : list of str, optional
        Names of the object classes (default "Class 1", "Class 2", ...).
    seed, k, projection : selection loop options (seed also seeds FLIM fitting and training;
        projection one of :data:`hitlseg.selection.projection.METHODS`).
    prepare : bool
        Build the selection session in a background job at startup: superpixels of a new project are
        computed (once, into the project) before the first "learn filters", and the logged rounds of
        an existing one are replayed.
    eval_limit : int
        Held-out images evaluated after training (when the project has ground truth).
    device : str, optional
        Torch device for models.
    check_host : bool, optional
        Refuse non-loopback ``Host`` headers (default: when no token is required).
    session_options : dict, optional
        Further options of :class:`~hitlseg.selection.SelectionSession`.
    quality_model : path, optional
        A quality model file (``hitlseg quality train``): the app then shows each prediction's
        predicted quality and ranks images worst first (:mod:`hitlseg.server.quality`).
    executor : hitlseg.parallel.Executor, optional
        Where per-image work runs (``hitlseg serve --workers N``): a distributed one streams the
        selection session on its Dask workers and scores the Improve view's pool there. The
        caller closes it.
    """
    from fastapi import FastAPI
    from fastapi.responses import FileResponse, Response
    from fastapi.staticfiles import StaticFiles

    from hitlseg import __version__
    from hitlseg.project import Project
    from hitlseg.server.imaging import Renderer
    from hitlseg.server.jobs import JobRunner, fail_stale_runs
    from hitlseg.server.loop import SelectionLoop
    from hitlseg.server.active import ImproveService
    from hitlseg.server.live import LiveService
    from hitlseg.server.routers import active, images, jobs, live, markers, models, selection, weak
    from hitlseg.server.quality import QualityService
    from hitlseg.server.training import ModelService
    from hitlseg.server.weak import WeakService
    from hitlseg.selection.projection import check_method

    check_method(projection)  # here, not when the loop's session is built in the background
    owns = not isinstance(project, Project)
    if owns:
        project = Project.open(project)
    if isinstance(max_body, bool) or not isinstance(max_body, int) or max_body < 1024:
        raise InputError(f"max_body: must be an integer of at least 1024 bytes, got {max_body!r}")
    if token is not None and (not isinstance(token, str) or len(token) < 8):
        raise InputError("token: must be a string of at least 8 characters")
    if token is None and not is_loopback(host):
        token = new_token()
    if classes is None:
        classes = detect_classes(project)
    if isinstance(classes, bool) or not isinstance(classes, int) or not 1 <= classes <= 254:
        raise InputError(f"classes: must be an integer in 1..254, got {classes!r}")
    names = list(class_names or [])
    if len(names) > classes:
        raise InputError(f"class_names: {len(names)} names for {classes} classes")
    names += [f"Class {c}" for c in range(len(names) + 1, classes + 1)]

    shared = ServerState(
        project=project, token=token, host=host, max_body=max_body, classes=classes, class_names=names,
        renderer=Renderer(project),
        loop=SelectionLoop(project, seed=seed, k=k, projection=projection, session_options=session_options,
                           classes=classes, class_names=names, executor=executor),
        models=ModelService(project, classes, seed=seed, eval_limit=eval_limit, device=device, class_names=names),
        jobs=JobRunner(project), owns_project=owns,
        options={"seed": seed, "k": k, "projection": projection, "version": __version__},
    )
    shared.improve = ImproveService(project, shared.models, seed=seed, executor=executor)
    shared.live = LiveService(project, classes)
    shared.weak = WeakService(project, seed=seed, device=device)
    try:
        shared.quality = QualityService(project, shared.models, quality_model, device=device)
    except Exception:
        if owns:
            project.close()
        raise

    @asynccontextmanager
    async def lifespan(app):
        shared.jobs.start()
        try:
            stale = fail_stale_runs(project)
            if stale:
                log.warning("marked %d interrupted run(s) as failed: %s", len(stale), stale)
        except Exception:  # pragma: no cover - never block startup on bookkeeping
            log.exception("could not check for interrupted runs")
        if prepare and len(project) >= 2:
            shared.jobs.submit("prepare", shared.loop.restore, {"rounds": len(shared.loop.logged_rounds())})
        yield
        ended = shared.jobs.stop()
        if owns and ended:  # never close connections a job still uses
            project.close()

    app = FastAPI(
        title="hitlseg",
        version=__version__,
        description="Human-in-the-loop segmentation with FLIM: images, versioned markers, the selection loop, "
                    "models and background jobs of one project. Every error is JSON {\"error\": message}.",
        lifespan=lifespan,
        default_response_class=_json_response_class(),
        docs_url=None,  # served below: Swagger UI 5 from the fastapi-offline package, never a CDN
        redoc_url=None,
    )
    app.state.hitlseg = shared
    install_error_handlers(app)
    app.add_middleware(GuardMiddleware, token=token, max_body=max_body,
                       check_host=(token is None) if check_host is None else check_host)
    for module in (images, markers, live, selection, models, active, weak, jobs):
        app.include_router(module.router)
    app.include_router(models.quality_router)

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})

    @app.get("/static/vendor/plotly.min.js", include_in_schema=False)
    def plotly_js():
        path = plotly_path()
        if path is None:
            raise NotFoundError("plotly.min.js: the 'plotly' Python package is not installed "
                                "(pip install 'hitlseg[web]')")
        return FileResponse(path, media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})

    @app.get("/docs", include_in_schema=False)
    def docs():
        if swagger_path("swagger-ui-bundle.js") is None:
            raise NotFoundError(f"/docs: {DOCS_MISSING}")
        return docs_html(app.openapi_url, "hitlseg API")

    @app.get("/static/vendor/swagger/{name}", include_in_schema=False)
    def swagger_asset(name: str):
        path = swagger_path(name)
        if path is None:
            raise NotFoundError(f"{name}: not a Swagger UI asset ({DOCS_MISSING})")
        return FileResponse(path, media_type=SWAGGER_ASSETS[name], headers={"Cache-Control": "max-age=86400"})

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon():
        return Response(status_code=204)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def plotly_path() -> Path | None:
    """``plotly.min.js`` shipped in the ``plotly`` Python package's data, or None."""
    try:
        from importlib.resources import files

        path = Path(str(files("plotly") / "package_data" / "plotly.min.js"))
    except (ModuleNotFoundError, TypeError):
        return None
    return path if path.is_file() else None
