"""What the routers share: the :class:`ServerState` of an app and the :func:`state` dependency.

A leaf module: it imports nothing of the server but :mod:`hitlseg.server.security`, so that the
routers (:mod:`hitlseg.server.routers`) import from here and never from :mod:`hitlseg.server.app`,
which sits on top of them (it builds the state and includes the routers).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.requests import Request

from hitlseg.server.security import NotFoundError


@dataclass
class ServerState:
    """Everything the routers share (``app.state.hitlseg``): the project, the selection loop, the model
    service, the job runner, the picture renderer and the options the app was built with."""

    project: object
    token: str | None
    host: str
    max_body: int
    classes: int
    class_names: list[str]
    renderer: object
    loop: object
    models: object
    jobs: object
    improve: object = None
    live: object = None
    quality: object = None
    weak: object = None
    owns_project: bool = False
    options: dict = field(default_factory=dict)

    def require_image(self, image_id: str) -> dict:
        """The image's registration, or 404."""
        if image_id not in self.project:
            raise NotFoundError(f"image {image_id!r} not found in this project")
        return self.project.image_info(image_id)

    def public_info(self, info: dict) -> dict:
        """What the page may know about an image (no file paths)."""
        return {"id": info["id"], "shape": list(info["shape"]), "channels": info["channels"], "ndim": info["ndim"],
                "has_mask": info["has_mask"], "group": info["group"]}


def state(request: Request) -> ServerState:
    """The :class:`ServerState` of the app serving ``request`` (a FastAPI dependency)."""
    return request.app.state.hitlseg
