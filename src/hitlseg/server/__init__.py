"""The web application: a FastAPI server over a project, and its page (plain HTML/JS, Plotly.js).

``create_app(project)`` builds the app; ``hitlseg serve PROJECT`` and ``hitlseg demo`` run it with
uvicorn. Resources have one router each (:mod:`hitlseg.server.routers`): images, markers,
selection, models and jobs; they share :class:`~hitlseg.server.deps.ServerState` through
:mod:`hitlseg.server.deps`, and :mod:`hitlseg.server.app` sits on top of them. Long work runs as
background jobs (:mod:`hitlseg.server.jobs`). Security (token off loopback, host check, cross-site
refusal, body limit, JSON errors including storage failures) lives in :mod:`hitlseg.server.security`.

The names below are imported on first use, so that importing a submodule (a router, the
security layer) does not import the app module.
"""

from __future__ import annotations

__all__ = ["DEFAULT_MAX_BODY", "ServerState", "create_app"]


def __getattr__(name: str):
    if name in ("DEFAULT_MAX_BODY", "create_app"):
        from hitlseg.server import app

        return getattr(app, name)
    if name == "ServerState":
        from hitlseg.server.deps import ServerState

        return ServerState
    raise AttributeError(f"module 'hitlseg.server' has no attribute {name!r}")
