"""What stands between the network and the project: host check, cross-site refusal, token, body
limit, JSON errors.

* **Host check.** Without a token (loopback only), a request must name a loopback host in its
  ``Host`` header (``127.0.0.1``, ``localhost``, ``[::1]``, any case): a web page elsewhere cannot
  reach the server through DNS rebinding. The header is parsed strictly: ``[IPv6]`` or a host
  name / IPv4 address, optionally followed by ``:PORT`` (digits only); anything else
  (``[::1].evil.com``, ``localhost:abc``, ``localhost:8000:1``, an empty header) is no loopback
  name and is refused with 403.
* **Cross-site requests.** A state-changing request (``POST``, ``PUT``, ``PATCH``, ``DELETE``) is
  refused with 403 when a browser marks it as coming from another site: an ``Origin`` header whose
  host and port are not the ``Host`` the request was sent to (``Origin: null`` included), or
  ``Sec-Fetch-Site: cross-site``; ``Sec-Fetch-Site: same-site`` (another port or subdomain) passes
  only with a matching ``Origin``, ``same-origin`` and ``none`` pass, other values are refused. A
  request with neither header (curl, scripts, the Python client, the test client) passes: only
  browsers send them, and a browser always sends them on a cross-site ``POST``, as it does on the
  page's own (same-origin) requests. So a page on another site (or on another
  port of this machine) cannot start jobs or overwrite markers through a "simple" cross-site
  request (``text/plain`` or form bodies need no CORS preflight), token or not; reads (``GET``) are
  not affected (without CORS headers the foreign page cannot read the answer). Behind a reverse
  proxy, forward the browser's ``Host`` header unchanged (else every page request is cross-site).
* **Token.** Required whenever the server listens on a non-loopback address (a token is generated
  with :func:`secrets.token_urlsafe` when none is given), and whenever one is given explicitly.
  A request carries it as ``Authorization: Bearer TOKEN``, as ``?token=TOKEN`` (the URL printed
  at startup; the answer then sets an HttpOnly, SameSite=Strict cookie so that the page's own
  requests need nothing more) or as that cookie.
* **Body limit.** Request bodies larger than ``max_body`` bytes are refused with 413, whether the
  client declares the size (``Content-Length``) or streams it (the body is read up to the limit
  before the application sees it). A ``Content-Length`` that is not a byte count is refused with
  400, and so is a ``Content-Length``, ``Host``, ``Origin``, ``Sec-Fetch-Site`` or
  ``Authorization`` header repeated with different values: the headers are read from the raw
  list, so one value cannot hide behind another.
* **Errors.** Every error the application answers is JSON ``{"error": message}``: bad input 400,
  missing token 401, refused host or cross-site request 403, unknown ids 404, stale versions 409,
  oversized bodies 413, malformed requests and out-of-range numbers (ids beyond the 64-bit range
  that SQLite stores, see :mod:`hitlseg.server.params`) 422. Storage failures while the server
  reads or writes (an :class:`OSError`): 507 when the disk is full or a quota is exceeded
  (``ENOSPC``, ``EDQUOT``; ``{"error": "PATH: no space left on device"}``), 503 when the project's
  files cannot be written at all (``EACCES``, ``EPERM``, ``EROFS``: permission denied, read-only
  file system; the operator must fix the storage, the request may then be repeated), 500 for any
  other I/O error, each naming the file and the cause (SQLite's "database or disk is full",
  read-only and I/O errors are answered the same way). A failed write leaves the project as it
  was (e.g. the previous marker version stays the latest). Anything else unexpected is a 500
  ``"internal error: ..."``. Requests that uvicorn itself rejects before the application sees
  them (unparsable HTTP: a malformed request line or header, conflicting ``Content-Length`` or
  ``Transfer-Encoding`` framing; with its h11 parser also a repeated ``Host``) get uvicorn's
  plain-text ``400 Bad Request`` instead, which the application cannot change; the middleware's
  own header checks then serve other ASGI servers and in-process clients.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import re
import secrets
import sqlite3
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

from hitlseg.errors import ConflictError, InputError

COOKIE_NAME = "hitlseg_token"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")
#: Headers a request may carry once only (repeated with different values: 400).
SINGLE_HEADERS = ("content-length", "host", "origin", "sec-fetch-site", "authorization")
#: ``Sec-Fetch-Site`` values that may change state (``same-site`` only with a matching ``Origin``).
FETCH_SITES = ("same-origin", "same-site", "none")
DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}
_PORT = r"(?::([0-9]{1,5}))?"
_IPV6_HOST = re.compile(r"\[([0-9a-f:.]+)\]" + _PORT)
_NAME_HOST = re.compile(r"([a-z0-9_-]+(?:\.[a-z0-9_-]+)*)" + _PORT)
_ORIGIN = re.compile(r"([a-z][a-z0-9+.-]*)://(.+)")
#: errno values of a full disk (507) and of storage that cannot be written at all (503).
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
NOT_WRITABLE = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})

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


def parse_host(value: str | None) -> tuple[str, int | None] | None:
    """``(name, port)`` of a ``Host`` header value, or None when it is malformed.

    Accepted: ``[IPv6]`` or a host name / IPv4 address (labels of letters, digits, ``-`` and
    ``_`` separated by single dots), optionally followed by ``:PORT`` (1 to 65535, digits only).
    The name comes back lower-case, an IPv6 address without its brackets.

    Parameters
    ----------
    value : str or None
        The header value (``host[:port]``), or the host part of an ``Origin``.

    Returns
    -------
    tuple of (str, int or None), or None
    """
    text = (value or "").strip().lower()
    match = _IPV6_HOST.fullmatch(text)
    if match is not None:
        try:
            ipaddress.IPv6Address(match.group(1))
        except ValueError:
            return None
    else:
        match = _NAME_HOST.fullmatch(text)
        if match is None:
            return None
    port = match.group(2)
    if port is not None and not 1 <= int(port) <= 65535:
        return None
    return match.group(1), None if port is None else int(port)


def _origin_key(name_port: tuple[str, int | None], scheme: str) -> tuple[str, int | None]:
    name, port = name_port
    return name, None if port == DEFAULT_PORTS.get(scheme) else port


def same_origin(origin: str, host: str, scheme: str = "http") -> bool:
    """True when ``origin`` (an ``Origin`` header) names the host and port of ``host`` (the ``Host`` header).

    A port equal to its scheme's default counts as no port (``http://localhost`` is
    ``localhost:80``). ``null``, paths and anything malformed never match.

    Parameters
    ----------
    origin : str
        ``scheme://host[:port]``.
    host : str
        The ``Host`` header of the request.
    scheme : str
        Scheme the request arrived with (ASGI ``scope["scheme"]``).
    """
    match = _ORIGIN.fullmatch((origin or "").strip().lower())
    if match is None:
        return False
    given, own = parse_host(match.group(2)), parse_host(host)
    if given is None or own is None:
        return False
    return _origin_key(given, match.group(1)) == _origin_key(own, scheme)


def cross_site_reason(headers: dict[str, str], scheme: str = "http") -> str | None:
    """Why a state-changing request counts as cross-site (see the module docstring), or None when it may pass.

    Parameters
    ----------
    headers : dict
        Lower-case header names to values (``host``, ``origin``, ``sec-fetch-site``).
    scheme : str
        Scheme the request arrived with.
    """
    host = headers.get("host", "")
    origin = headers.get("origin")
    if origin is not None and not same_origin(origin, host, scheme):
        return f"Origin {origin!r} is not this server ({host!r})"
    site = headers.get("sec-fetch-site")
    if site is not None:
        site = site.strip().lower()
        if site not in FETCH_SITES:
            return f"Sec-Fetch-Site: {site!r}"
        if site == "same-site" and origin is None:
            return "Sec-Fetch-Site: 'same-site' without an Origin header"
    return None


def read_headers(scope) -> tuple[dict[str, str], str | None]:
    """Lower-case header names to values from the raw ASGI list, and what is wrong with them (or None).

    A header of :data:`SINGLE_HEADERS` repeated with different values is an error; repeated
    ``Cookie`` headers are joined with ``"; "``; of other repeated headers the first value is kept
    (what Starlette's ``request.headers`` gives the routes).
    """
    values: dict[str, list[str]] = {}
    for key, value in scope.get("headers", []):
        values.setdefault(key.decode("latin-1").lower(), []).append(value.decode("latin-1"))
    for name in SINGLE_HEADERS:
        given = values.get(name, [])
        if len({v.strip() for v in given}) > 1:
            shown = ", ".join(repr(v) for v in given[:4])
            return {}, f"{name.title()} repeated with different values ({shown}): one value only"
    headers = {name: given[0] for name, given in values.items()}
    if "cookie" in values:
        headers["cookie"] = "; ".join(values["cookie"])
    return headers, None


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
        headers, problem = read_headers(scope)
        if problem is not None:
            await _send_json(send, 400, {"error": problem})
            return
        if self.check_host:
            parsed = parse_host(headers.get("host"))
            if parsed is None or parsed[0] not in LOOPBACK_NAMES:
                await _send_json(send, 403, {"error": f"Host {headers.get('host', '')!r} is not served: this server "
                                             "answers requests addressed to 127.0.0.1 or localhost only"})
                return
        if scope.get("method") in BODY_METHODS:
            reason = cross_site_reason(headers, scope.get("scheme", "http"))
            if reason is not None:
                await _send_json(send, 403, {"error": f"cross-site request refused: {reason}; this server changes "
                                             "its project only on requests from its own page or from scripts"})
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


def storage_error(exc: OSError, operation: str = "storage") -> tuple[int, str]:
    """HTTP status and message of a failed read or write (see the module docstring's Errors).

    Parameters
    ----------
    exc : OSError
        The error; its ``filename`` (else ``operation``) is named in the message.
    operation : str
        What failed, when the error names no file (e.g. ``"PUT /api/images/x/markers"``).

    Returns
    -------
    status : int
        507 for a full disk or quota, 503 for storage that cannot be written, 500 otherwise.
    message : str
    """
    where = str(exc.filename) if exc.filename is not None else operation
    cause = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno in NO_SPACE:
        quota = " (disk quota exceeded)" if exc.errno == errno.EDQUOT else ""
        return 507, f"{where}: no space left on device{quota}; free some space, then repeat the request"
    if exc.errno in NOT_WRITABLE:
        return 503, (f"{where}: the project's storage cannot be written ({cause}); check the file permissions "
                     "and that the file system is mounted writable, then repeat the request")
    return 500, f"{where}: I/O error ({type(exc).__name__}: {cause})"


#: SQLite result codes (``sqlite3.Error.sqlite_errorcode & 0xff``) that are storage failures, as errno values.
SQLITE_STORAGE = {13: errno.ENOSPC, 8: errno.EROFS, 10: errno.EIO}  # SQLITE_FULL, SQLITE_READONLY, SQLITE_IOERR


def sqlite_storage_error(exc: sqlite3.Error) -> OSError | None:
    """The :class:`OSError` equivalent of a SQLite disk-full / read-only / I/O error, or None for other errors."""
    code = getattr(exc, "sqlite_errorcode", None)
    number = SQLITE_STORAGE.get(code & 0xFF) if isinstance(code, int) else None
    if number is None:
        return None
    return OSError(number, f"{exc} ({getattr(exc, 'sqlite_errorname', 'SQLite error')})", "the project database")


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

    def server_error_response(request, exc: Exception):
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)

    def storage_response(request, exc: OSError, cause: Exception | None = None):
        status, message = storage_error(exc, f"{request.method} {request.url.path}")
        log.error("%s %s: %s", request.method, request.url.path, message,
                  exc_info=(cause or exc) if status == 500 else None)
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(OSError)
    async def os_error(request, exc: OSError):
        return storage_response(request, exc)

    @app.exception_handler(sqlite3.Error)
    async def database_error(request, exc: sqlite3.Error):
        equivalent = sqlite_storage_error(exc)
        if equivalent is not None:
            return storage_response(request, equivalent, exc)
        return server_error_response(request, exc)

    @app.exception_handler(Exception)
    async def server_error(request, exc: Exception):
        return server_error_response(request, exc)
