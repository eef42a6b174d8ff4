"""Who is calling, what they may do, what every response carries, and how errors look.

Errors: every ``/api/*`` failure is ``{"error": code, "message": sentence}`` with the
status from ERROR_STATUS; anything unexpected is logged and answered 500, never with
a traceback.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any, TypeVar

from aiohttp import StreamReader, hdrs, web

from lanpair import errors
from lanpair.logs import redact
from lanpair.models import ANONYMOUS, OWNER, Caller
from lanpair.pairing import TOKEN_RE
from lanpair.server.keys import CALLER_KEY, SERVICES_KEY

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Handler)

COOKIE_NAME = "lanpair_device"
JSON_LIMIT_BYTES = 16 * 1024
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
HOST_RE = re.compile(r"(?P<name>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::[0-9]{1,5})?")

ERROR_STATUS: dict[type[errors.LanpairError], int] = {
    errors.BadRequest: 400,
    errors.UnknownCode: 401,
    errors.CodeExpired: 401,
    errors.NotPaired: 401,
    errors.NotOwner: 403,
    errors.NotFound: 404,
    errors.CodeUsed: 409,
    errors.OffsetMismatch: 409,
    errors.NameTaken: 409,
    errors.BodyTooLarge: 413,
    errors.UnsupportedMediaType: 415,
    errors.TooManyAttempts: 429,
    errors.ChecksumMismatch: 460,  # tus's "Checksum Mismatch"
    errors.InsufficientStorage: 507,
}

HTTP_CODES = {
    400: "bad_request",
    401: "not_paired",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
    429: "too_many_attempts",
    507: "insufficient_storage",
}

CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "media-src 'self' blob:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


class Access(StrEnum):
    """Who may call a route."""

    ANYONE = "anyone"
    DEVICE = "device"  # a paired device or the owner
    SELF = "self"  # the owner, or a device acting on itself (anyone else: 403)
    OWNER = "owner"


def access(level: Access, *, body: str = "json") -> Callable[[H], H]:
    """Declare who may call a handler, and the body it takes when it changes state
    ("json", "multipart" or "any"); a route without a declaration is refused."""

    def mark(handler: H) -> H:
        handler.lanpair_access = level  # type: ignore[attr-defined]
        handler.lanpair_body = body  # type: ignore[attr-defined]
        return handler

    return mark


def access_of(handler: object) -> Access | None:
    """Return a handler's declared access level."""
    level = getattr(handler, "lanpair_access", None)
    return level if isinstance(level, Access) else None


def caller(request: web.Request) -> Caller:
    """Return who made the request (set by the auth middleware)."""
    who: Caller = request.get(CALLER_KEY, ANONYMOUS)
    return who


def sender(request: web.Request) -> str:
    """Name who made the request, for a log line: the device's name, or this PC."""
    device = caller(request).device
    return repr(device.device_name) if device is not None else "this PC"


def client_address(request: web.Request) -> str:
    """Return the peer's address as the socket saw it (forwarding headers are never read)."""
    return request.remote or "unknown"


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into the JSON envelope (API) or a short page (everything else)."""
    try:
        return await handler(request)
    except errors.LanpairError as exc:
        status = _status_of(exc)
        if status >= 500 and status not in {507}:
            log.error("%s %s failed: %s", request.method, request.path, exc)
            return _error(request, 500, "internal", "lanpair hit an internal problem.")
        response = _error(request, status, exc.code, exc.message)
        if isinstance(exc, errors.TooManyAttempts):
            response.headers[hdrs.RETRY_AFTER] = str(round(exc.retry_after_s))
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = HTTP_CODES.get(exc.status, "http_error")
        message = {
            404: errors.NotFound.user_message(),
            405: f"{request.method} is not allowed here.",
            413: errors.BodyTooLarge.user_message(),
        }.get(exc.status, exc.reason)
        response = _error(request, exc.status, code, message)
        if exc.status == 405 and hdrs.ALLOW in exc.headers:
            response.headers[hdrs.ALLOW] = exc.headers[hdrs.ALLOW]
        return response
    except ConnectionResetError:
        # The client went away mid-request; nobody is left to read an answer.
        log.info("%s %s: the client went away", request.method, redact(request.path))
        return web.Response(status=400)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return _error(request, 500, "internal", "lanpair hit an internal problem.")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Decide who is calling and whether they may, before any body is read."""
    if request.match_info.http_exception is not None:
        return await handler(request)
    route = request.match_info.route
    level = (
        Access.ANYONE
        if isinstance(route.resource, web.StaticResource)
        else access_of(request.match_info.handler)
    )
    if level is None:
        log.error("route %s declares no access level; refusing it", route.resource)
        raise web.HTTPNotFound()
    if level is Access.ANYONE:
        _check_origin(request, state_changing_only=True)
        return await handler(request)
    who, by_cookie = await _identify(request)
    if (level is Access.OWNER and not who.owner) or (level is Access.SELF and not who.known):
        raise errors.NotOwner()
    if not who.known:
        raise errors.NotPaired()
    _check_origin(request, state_changing_only=not who.owner)
    if (who.owner or by_cookie) and request.method not in SAFE_METHODS:
        _require_body(request, getattr(request.match_info.handler, "lanpair_body", "json"))
    request[CALLER_KEY] = who
    return await handler(request)


async def _identify(request: web.Request) -> tuple[Caller, bool]:
    """Return the caller and whether its token came from the cookie."""
    services = request.app[SERVICES_KEY]
    token, by_cookie = _presented_token(request)
    if token is not None:
        device = await services.pairing.authenticate(token, client_address(request))
        return Caller(device=device), by_cookie
    if is_owner_request(request):
        return OWNER, False
    return ANONYMOUS, False


def _presented_token(request: web.Request) -> tuple[str | None, bool]:
    path_token = request.match_info.get("token")
    if path_token:
        return path_token, False
    # The seed's /api/pairing/revoke/<token>: a token there is a credential too.
    target = request.match_info.get("target", "")
    if TOKEN_RE.fullmatch(target):
        return target, False
    authorization = request.headers.get(hdrs.AUTHORIZATION, "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip(), False
    cookie = request.cookies.get(COOKIE_NAME)
    if cookie:
        return cookie, True
    return None, False


def is_owner_request(request: web.Request) -> bool:
    """Return whether the request comes from this PC, under one of lanpair's own names."""
    services = request.app[SERVICES_KEY]
    if client_address(request) not in services.owner_addresses:
        return False
    return _host_is_ours(request)


def _host_is_ours(request: web.Request) -> bool:
    services = request.app[SERVICES_KEY]
    match = HOST_RE.fullmatch(request.headers.get(hdrs.HOST, ""))
    if match is None:
        return False
    name = match["name"].strip("[]").lower().removesuffix(".")
    return name in services.site.own_names() or name in services.owner_addresses


def _check_origin(request: web.Request, *, state_changing_only: bool) -> None:
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None or (state_changing_only and request.method in SAFE_METHODS):
        return
    if origin != f"{request.scheme}://{request.headers.get(hdrs.HOST, '')}":
        raise errors.CrossOrigin()


def _require_body(request: web.Request, kind: str) -> None:
    """Refuse bodies a cross-site form could send without a CORS preflight (CSRF)."""
    wanted = {"json": "application/json", "multipart": "multipart/form-data"}.get(kind)
    if wanted is not None and media_type(request) != wanted:
        raise errors.UnsupportedMediaType(
            f"This endpoint takes a {wanted} body." if wanted != "application/json" else None
        )


async def next_chunk(content: StreamReader) -> bytes:
    """Return the body's next network chunk as it came; b"" at its end.

    StreamReader.read(n) and readany() join what is buffered into a new bytes object: a
    copy of every byte of an upload (9% of the event loop's time in a 1 GiB TLS upload).
    A coroutine, not an async generator: a generator left suspended when a request ends
    early keeps the request's objects alive until it is finalized (measured: RSS grew
    ~3 MiB per 500 uploads).
    """
    while True:
        chunk, at_chunk_end = await content.readchunk()
        if chunk or not at_chunk_end:  # (b"", True) only marks the end of an HTTP chunk
            return chunk


def media_type(request: web.BaseRequest) -> str:
    """Return the body's media type, lower-case, without parameters ("" if none).

    Not aiohttp's ``request.content_type``: that parses with the email package (~1 ms per
    header on a small machine) and caches by the whole header, which a multipart boundary
    makes new on every upload: a fifth of the event loop's time with small files.
    """
    return request.headers.get(hdrs.CONTENT_TYPE, "").partition(";")[0].strip().lower()


async def read_json(request: web.Request, *, limit: int = JSON_LIMIT_BYTES) -> dict[str, Any]:
    """Read a small JSON object body. Raises UnsupportedMediaType, BodyTooLarge, BadRequest."""
    if media_type(request) != "application/json":
        raise errors.UnsupportedMediaType()
    if request.content_length is not None and request.content_length > limit:
        raise errors.BodyTooLarge(f"The request body is over {limit // 1024} KiB.")
    body = bytearray()
    async for chunk in request.content.iter_chunked(8192):
        body += chunk
        if len(body) > limit:
            raise errors.BodyTooLarge(f"The request body is over {limit // 1024} KiB.")
    if not body:
        return {}
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise errors.BadRequest("The request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise errors.BadRequest("The request body must be a JSON object.")
    return data


def whole_number(text: str, max_digits: int = 18) -> int | None:
    """Return ``text`` read as a whole number of ASCII digits, or None if it is not one.

    ``str.isdigit`` alone takes "²" (which ``int`` refuses) and Arabic-Indic digits (which it
    reads).
    """
    if text.isascii() and text.isdigit() and len(text) <= max_digits:
        return int(text)
    return None


def field(data: dict[str, Any], name: str, kind: type) -> Any:
    """Return a required field of the given JSON type. Raises BadRequest."""
    if name not in data:
        raise errors.BadRequest(f"The field {name!r} is missing.")
    value = data[name]
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise errors.BadRequest(f"The field {name!r} must be a {kind.__name__}.")
    return value


def set_device_cookie(
    response: web.StreamResponse, request: web.Request, token: str, max_age_s: float
) -> None:
    """Keep a device's token in the browser: HttpOnly, SameSite=Strict, Secure under TLS."""
    response.set_cookie(
        COOKIE_NAME,
        token,
        max_age=max(0, int(max_age_s)),
        path="/",
        httponly=True,
        secure=request.secure,
        samesite="Strict",
    )


def json_response(data: Any, status: int = 200) -> web.Response:
    """Answer with JSON that is never cached."""
    response = web.json_response(data, status=status)
    response.headers[hdrs.CACHE_CONTROL] = "no-store"
    return response


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Put the security headers on every response, errors and static files included."""
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CSP)
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = "no-referrer"
    headers["X-Frame-Options"] = "DENY"
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    headers["Cross-Origin-Resource-Policy"] = "same-origin"


def _status_of(exc: errors.LanpairError) -> int:
    for kind in type(exc).__mro__:
        if kind in ERROR_STATUS:
            return ERROR_STATUS[kind]
    return 500


def _error(request: web.Request, status: int, code: str, message: str) -> web.Response:
    if request.path.startswith("/api/") or "application/json" in request.headers.get(
        hdrs.ACCEPT, ""
    ):
        return json_response({"error": code, "message": message}, status=status)
    return web.Response(
        status=status,
        text=_ERROR_PAGE.format(status=status, message=_escape(message)),
        content_type="text/html",
    )


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_ERROR_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>lanpair: {status}</title><link rel="icon" href="/static/favicon.svg">
<link rel="stylesheet" href="/static/style.css"></head>
<body><main><h1>{status}</h1><p>{message}</p></main></body></html>
"""
