"""The API docs page (``/docs``): Swagger UI from an installed Python package, never from a CDN.

FastAPI emits an OpenAPI **3.1** document (``/openapi.json``); Swagger UI reads 3.1 from version 5.0
on (4.x shows "Unable to render this definition"). The assets come from the ``fastapi-offline``
package (the ``web`` extra), whose ``static/`` folder ships Swagger UI 5 (``swagger-ui-bundle.js``,
``swagger-ui.css``); they are served as ``/static/vendor/swagger/NAME``. The page turns off Swagger
UI's online validator badge (``validatorUrl: null``), which would otherwise load a picture from
another site, so that the page fetches nothing but this server's own URLs.
"""

from __future__ import annotations

import re
from pathlib import Path

#: The URL prefix the assets are served under.
ASSET_URL = "/static/vendor/swagger"
SWAGGER_ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css"}
#: The first Swagger UI that reads OpenAPI 3.1.
MIN_SWAGGER_UI = (5, 0, 0)
MISSING = ("the API docs page needs Swagger UI 5 from the 'fastapi-offline' package "
           "(pip install 'hitlseg[web]'); the OpenAPI document itself is at /openapi.json")


def assets_folder() -> Path | None:
    """The folder of Swagger UI files in the installed ``fastapi-offline`` package, or None."""
    try:
        from importlib.resources import files

        folder = Path(str(files("fastapi_offline") / "static"))
    except (ModuleNotFoundError, TypeError):
        return None
    return folder if folder.is_dir() else None


def swagger_path(name: str) -> Path | None:
    """A Swagger UI asset by file name (only those of :data:`SWAGGER_ASSETS`), or None."""
    if name not in SWAGGER_ASSETS:
        return None
    folder = assets_folder()
    if folder is None:
        return None
    path = folder / name
    return path if path.is_file() else None


def swagger_ui_version(path: str | Path | None = None) -> tuple[int, ...] | None:
    """The Swagger UI version built into ``swagger-ui-bundle.js`` (its ``PACKAGE_VERSION``), or None."""
    path = swagger_path("swagger-ui-bundle.js") if path is None else Path(path)
    if path is None or not path.is_file():
        return None
    text = path.read_text(encoding="utf-8", errors="replace")
    found = re.search(r'PACKAGE_VERSION:"(\d+)\.(\d+)\.(\d+)', text)
    return tuple(int(part) for part in found.groups()) if found else None


def docs_html(openapi_url: str, title: str):
    """The Swagger UI page over ``openapi_url``, with its assets under :data:`ASSET_URL`."""
    from fastapi.openapi.docs import get_swagger_ui_html

    page = get_swagger_ui_html(openapi_url=openapi_url, title=title,
                               swagger_js_url=f"{ASSET_URL}/swagger-ui-bundle.js",
                               swagger_css_url=f"{ASSET_URL}/swagger-ui.css",
                               swagger_favicon_url="/favicon.ico",
                               swagger_ui_parameters={"validatorUrl": None})
    page.headers["Cache-Control"] = "no-cache"
    return page
