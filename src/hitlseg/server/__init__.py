"""The web application: a FastAPI server over a project, and its page (plain HTML/JS, Plotly.js).

``create_app(project)`` builds the app; ``hitlseg serve PROJECT`` and ``hitlseg demo`` run it with
uvicorn. Resources have one router each (:mod:`hitlseg.server.routers`): images, markers,
selection, models and jobs; long work runs as background jobs (:mod:`hitlseg.server.jobs`).
Security (token off loopback, host check, cross-site refusal, body limit, JSON errors
including storage failures) lives in :mod:`hitlseg.server.security`.
"""

from hitlseg.server.app import DEFAULT_MAX_BODY, ServerState, create_app

__all__ = ["DEFAULT_MAX_BODY", "ServerState", "create_app"]
