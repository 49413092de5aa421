"""The explorer's web app (Starlette): the static page and its script, served from memory, and the JSON
API under ``/api/``. No route reads a path from a request; a body is read up to
``fields.MAX_BODY_BYTES``; every error is a 4xx answer ``{"error": "one line"}`` and the server keeps
serving. The Content-Security-Policy keeps the page from reaching any other host.

    GET  /api/info                 the model, the test set, per-dimension KL and activity, the limits
    GET  /api/map[?dims=i,j]       the test set's means in 2-D (PCA, or two dimensions) and the basis
    POST /api/example   {index}                    a test image (and its label) or sentence
    POST /api/encode    {input, method?}           posterior mean, log-variance, KL per dimension, reconstruction
    POST /api/decode    {z, method?}               a latent code (or a list of them) decoded
    POST /api/interpolate {a, b, steps?, mode?}    the decodings between two inputs (linear or spherical)
    POST /api/traverse  {dims, steps?, span?, base?}  a traversal grid, one row per dimension
    POST /api/sample    {n?, temperature?, seed?, method?}  samples from the prior
    POST /api/nearest   {z | input, k?}            the nearest test examples to a code
"""

from __future__ import annotations

import json
from importlib import resources

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from twinvae.explore import fields
from twinvae.explore.explorer import Explorer
from twinvae.explore.fields import BadRequest

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/explore.js": ("explore.js", "text/javascript; charset=utf-8"),
          "/explore.css": ("explore.css", "text/css; charset=utf-8")}
POST_ROUTES = ("example", "encode", "decode", "interpolate", "traverse", "sample", "nearest")


HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
           (b"cache-control", b"no-store")]


class SecurityHeaders:
    """ASGI middleware: every answer carries the policy (no other host), nosniff and no-store."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": list(message.get("headers", [])) + HEADERS}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _read_json(request: Request) -> dict:
    """The request's JSON object, read up to MAX_BODY_BYTES (an over-long body is refused unread)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > fields.MAX_BODY_BYTES):
        raise BadRequest(f"the request body is over {fields.MAX_BODY_BYTES} bytes", 413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > fields.MAX_BODY_BYTES:
            raise BadRequest(f"the request body is over {fields.MAX_BODY_BYTES} bytes", 413)
    try:
        value = json.loads(body.decode("utf-8")) if body else {}
    except (UnicodeDecodeError, ValueError) as e:
        raise BadRequest(f"the request body is not valid JSON ({str(e).splitlines()[0][:80]})") from None
    if not isinstance(value, dict):
        raise BadRequest("the request body must be a JSON object, e.g. {\"input\": 0}")
    return value


def _static_route(path: str, name: str, media_type: str) -> Route:
    content = resources.files("twinvae.explore").joinpath("static", name).read_bytes()

    async def serve(request: Request) -> Response:
        return Response(content, media_type=media_type)

    return Route(path, serve, methods=["GET"])


def build_app(explorer: Explorer) -> Starlette:
    """The app of one explorer. Model work runs in Starlette's thread pool (the event loop keeps
    accepting); ``Explorer`` serialises it."""
    from starlette.concurrency import run_in_threadpool

    def post_route(name: str) -> Route:
        method = getattr(explorer, name)

        async def handle(request: Request) -> Response:
            body = await _read_json(request)
            return JSONResponse(await run_in_threadpool(method, body))

        return Route(f"/api/{name}", handle, methods=["POST"])

    async def info(request: Request) -> Response:
        return JSONResponse(explorer.info())

    async def map_(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(explorer.map, dict(request.query_params)))

    routes = [_static_route(path, name, media) for path, (name, media) in STATIC.items()]
    routes += [Route("/api/info", info, methods=["GET"]), Route("/api/map", map_, methods=["GET"])]
    routes += [post_route(name) for name in POST_ROUTES]

    async def bad_request(request: Request, exc: BadRequest) -> Response:
        return _error(str(exc), exc.status)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        what = {404: f"no such page: {request.url.path} (the API is under /api/, see GET /api/info)",
                405: f"{request.method} is not allowed on {request.url.path}"}
        return _error(what.get(exc.status_code, str(exc.detail)), exc.status_code)

    async def refused_by_model(request: Request, exc: ValueError) -> Response:
        # twinvae.Model's own one-line ValueError: input the fields above let through
        return _error(str(exc).splitlines()[0] if str(exc) else "bad input", 400)

    return Starlette(routes=routes, middleware=[Middleware(SecurityHeaders)],
                     exception_handlers={BadRequest: bad_request, HTTPException: http_error,
                                         ValueError: refused_by_model})

