"""The API docs page (``/docs``): Swagger UI >= 5 (reads OpenAPI 3.1) from an installed package, no CDN."""

from __future__ import annotations

import re

import pytest

from hitlseg.server import create_app
from hitlseg.server import docs as docs_module
from hitlseg.server.docs import MIN_SWAGGER_UI, swagger_path, swagger_ui_version
from hitlseg.server.testing import client

PROJECT_IMAGES = 2


def local_assets(page: str) -> list[str]:
    """The URLs a docs page loads (scripts, style sheets, icons), each checked to be on this server."""
    urls = re.findall(r'<(?:script|link)[^>]*(?:src|href)="([^"]+)"', page)
    assert urls
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
    return urls


def test_docs_page_serves_swagger_ui_5_from_the_package(http):
    assert http.get("/openapi.json").json()["openapi"].startswith("3.1")  # what Swagger UI 4 cannot render
    page = http.get("/docs")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert not re.search(r"https?://|//cdn", page.text), "the docs page names another site"
    assert "url: '/openapi.json'" in page.text and '"validatorUrl": null' in page.text  # no validator badge
    urls = local_assets(page.text)
    assert {"/static/vendor/swagger/swagger-ui-bundle.js", "/static/vendor/swagger/swagger-ui.css"} <= set(urls)
    script = http.get("/static/vendor/swagger/swagger-ui-bundle.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert "SwaggerUIBundle" in script.text
    assert script.content == swagger_path("swagger-ui-bundle.js").read_bytes()  # the package's own copy
    version = re.search(r'PACKAGE_VERSION:"(\d+)\.(\d+)\.(\d+)', script.text)
    assert version and tuple(map(int, version.groups())) >= MIN_SWAGGER_UI, version
    assert swagger_ui_version() == tuple(map(int, version.groups()))
    style = http.get("/static/vendor/swagger/swagger-ui.css")
    assert style.status_code == 200 and "text/css" in style.headers["content-type"] and ".swagger-ui" in style.text
    for name in ("redoc.standalone.js", "favicon.png", "swagger-ui-bundle.js.map"):  # only the two named files
        missing = http.get(f"/static/vendor/swagger/{name}")
        assert missing.status_code == 404 and "not a Swagger UI asset" in missing.json()["error"], name
    assert http.get("/static/vendor/swagger/..%2F..%2Fapp.py").status_code == 404


def test_docs_page_and_assets_pass_the_token_guard(project):
    app = create_app(project, host="0.0.0.0", prepare=False)
    token = app.state.hitlseg.token
    with client(app, base_url="http://192.168.1.5:8000") as http:
        for path in ("/docs", "/static/vendor/swagger/swagger-ui-bundle.js", "/openapi.json"):
            assert http.get(path).status_code == 401, path
        page = http.get("/docs", params={"token": token})  # the printed URL, with /docs instead of /
        assert page.status_code == 200 and page.headers["set-cookie"].startswith(f"hitlseg_token={token}")
        for url in local_assets(page.text) + ["/openapi.json"]:  # what the page then loads, with the cookie
            answer = http.get(url)
            assert answer.status_code in (200, 204), url  # the favicon answers 204
        assert http.get("/openapi.json").json()["paths"]["/api/images"]


def test_docs_page_without_the_package_says_what_to_install(http, monkeypatch):
    monkeypatch.setattr(docs_module, "assets_folder", lambda: None)  # fastapi-offline not installed
    assert swagger_path("swagger-ui-bundle.js") is None and swagger_ui_version() is None
    for path in ("/docs", "/static/vendor/swagger/swagger-ui-bundle.js"):
        answer = http.get(path)
        assert answer.status_code == 404 and "hitlseg[web]" in answer.json()["error"], path


@pytest.mark.parametrize("text, version", [('x={PACKAGE_VERSION:"5.32.6",GIT_COMMIT:"g1"}', (5, 32, 6)),
                                           ('PACKAGE_VERSION:"4.15.5"', (4, 15, 5)), ("no version here", None)])
def test_swagger_ui_version_is_read_from_the_bundle(tmp_path, text, version):
    (tmp_path / "bundle.js").write_text(text)
    assert swagger_ui_version(tmp_path / "bundle.js") == version
