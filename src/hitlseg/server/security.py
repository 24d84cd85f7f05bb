"""What stands between the network and the project: token, host check, body limit, JSON errors.

* **Token.** Required whenever the server listens on a non-loopback address (a token is generated
  with :func:`secrets.token_urlsafe` when none is given), and whenever one is given explicitly.
  A request carries it as ``Authorization: Bearer TOKEN``, as ``?token=TOKEN`` (the URL printed
  at startup; the answer then sets an HttpOnly, SameSite=Strict cookie so that the page's own
  requests need nothing more) or as that cookie.
* **Host check.** Without a token (loopback only), a request must name a loopback host in its
  ``Host`` header (``127.0.0.1``, ``localhost``, ``[::1]``): a web page elsewhere cannot reach the
  server through DNS rebinding.
* **Body limit.** Request bodies larger than ``max_body`` bytes are refused with 413, whether the
  client declares the size (``Content-Length``) or streams it (the body is read up to the limit
  before the application sees it).
* **Errors.** Every error is JSON ``{"error": message}``: bad input 400, unknown ids 404, stale
  versions 409, malformed requests 422, oversized bodies 413, missing token 401.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import secrets
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

from hitlseg.errors import ConflictError, InputError

COOKIE_NAME = "hitlseg_token"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")

log = logging.getLogger("hitlseg.server")


class NotFoundError(InputError):
    """An id (image, model, job, marker version) that the project does not hold: answered with 404."""


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (``127.0.0.0/8``, ``::1``)."""
    host = (host or "").strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    """A fresh random access token."""
    return secrets.token_urlsafe(24)


def _host_name(value: str) -> str:
    value = value.strip().lower()
    if value.startswith("["):  # [::1]:8000
        return value[1:value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        return value.rsplit(":", 1)[0]
    return value


async def _send_json(send, status: int, payload: dict, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(payload).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        + list(headers or []),
    })
    await send({"type": "http.response.body", "body": body})


class GuardMiddleware:
    """Pure ASGI middleware: host check, token, and request-body limit (see the module docstring).

    Parameters
    ----------
    app : ASGI application
    token : str or None
        Required token, or None when the server is open (loopback only).
    max_body : int
        Largest accepted request body, in bytes.
    check_host : bool
        Refuse ``Host`` headers that are not loopback names (DNS-rebinding protection).
    """

    def __init__(self, app, *, token: str | None, max_body: int, check_host: bool):
        self.app = app
        self.token = token
        self.max_body = int(max_body)
        self.check_host = check_host

    def _given_token(self, scope, headers: dict[str, str]) -> tuple[str | None, bool]:
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip(), False
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if query.get("token"):
            return query["token"][0], True
        cookie = headers.get("cookie")
        if cookie:
            jar = SimpleCookie()
            try:
                jar.load(cookie)
            except Exception:  # a malformed cookie header is no token
                return None, False
            if COOKIE_NAME in jar:
                return jar[COOKIE_NAME].value, False
        return None, False

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.check_host:
            host = _host_name(headers.get("host", ""))
            if host not in LOOPBACK_NAMES:
                await _send_json(send, 403, {"error": f"Host {headers.get('host', '')!r} is not served: this server "
                                             "answers requests addressed to 127.0.0.1 or localhost only"})
                return
        set_cookie = False
        if self.token is not None:
            given, from_query = self._given_token(scope, headers)
            if given is None or not secrets.compare_digest(given.encode(), self.token.encode()):
                what = "a wrong token" if given is not None else "no token"
                await _send_json(send, 401, {"error": f"unauthorized: {what}; open the URL printed by 'hitlseg serve' "
                                             "(it ends with ?token=...) or send 'Authorization: Bearer TOKEN'"},
                                 [(b"www-authenticate", b"Bearer")])
                return
            set_cookie = from_query

        length = headers.get("content-length")
        if length is not None:
            try:
                declared = int(length)
                if declared < 0:
                    raise ValueError
            except ValueError:
                await _send_json(send, 400, {"error": f"Content-Length: {length!r} is not a byte count"})
                return
            if declared > self.max_body:
                await _send_json(send, 413, {"error": f"request body of {declared} bytes exceeds the limit of "
                                             f"{self.max_body} bytes"})
                return
        if scope.get("method") in BODY_METHODS:
            chunks, size = [], 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_body:
                    await _send_json(send, 413, {"error": f"request body exceeds the limit of {self.max_body} bytes"})
                    return
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            body = b"".join(chunks)
            replayed = False

            async def receive_buffered():
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            app_receive = receive_buffered
        else:
            app_receive = receive

        if set_cookie:
            cookie = f"{COOKIE_NAME}={self.token}; HttpOnly; SameSite=Strict; Path=/".encode("latin-1")

            async def send_with_cookie(message):
                if message["type"] == "http.response.start":
                    message = {**message, "headers": list(message.get("headers", [])) + [(b"set-cookie", cookie)]}
                await send(message)

            await self.app(scope, app_receive, send_with_cookie)
        else:
            await self.app(scope, app_receive, send)


def install_error_handlers(app) -> None:
    """Answer every error with JSON ``{"error": message}`` and the right status."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(InputError)
    async def input_error(request, exc: InputError):
        if isinstance(exc, NotFoundError):
            return JSONResponse({"error": str(exc)}, status_code=404)
        if isinstance(exc, ConflictError):
            payload = {"error": str(exc)}
            for name in ("image_id", "base_version", "latest_version"):
                if hasattr(exc, name):
                    payload[name] = getattr(exc, name)
            return JSONResponse(payload, status_code=409)
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc: RequestValidationError):
        problems = []
        for item in exc.errors():
            where = ".".join(str(part) for part in item.get("loc", ()) if part != "body") or "body"
            problems.append(f"{where}: {item.get('msg', 'invalid')}")
        message = "invalid request: " + "; ".join(problems) if problems else "invalid request"
        return JSONResponse({"error": message}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc: StarletteHTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"not found: {request.url.path}"
        return JSONResponse({"error": detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def server_error(request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)
