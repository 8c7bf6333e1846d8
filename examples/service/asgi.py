"""The bitsback HTTP service as an ASGI app: Starlette, served by uvicorn.

Same endpoints, semantics, limits and error mapping as the standard-library
``server.py`` beside it (which stays as the zero-dependency example); the model table,
the .npy parsing, the ``Limits`` and the model-from-header logic are *its* ``Service``
class, imported, not copied. What this file adds is the ASGI side:

* **Codec calls off the event loop.** Each request's CPU work (``np.load``, compress or
  decompress, ``np.save``) runs in a worker thread through ``anyio.to_thread.run_sync``
  with one ``CapacityLimiter`` per app, sized to the usable cores by default
  (``max_concurrent``). The loop only moves bytes, so ``/healthz`` answers while every
  worker is busy, and excess requests wait for a token instead of oversubscribing the
  cores. One ``Codec`` per model is shared by all workers (a Codec holds no per-call
  state; tests/test_concurrency.py).
* **Bodies bounded while they are read.** The body is streamed and kept only up to the
  limit (``max_body_mb``), so no request ever holds more than that in memory; chunked
  bodies are accepted on the same terms (``server.py`` answers them 411). Past the limit
  the answer is 413: at once, with ``Connection: close`` and nothing read, for a declared
  ``Content-Length`` above 4x the limit; otherwise after reading and dropping the rest
  (up to 4x the limit) so that a client still sending can read it, as server.py does.

Why Starlette rather than FastAPI: the service has three routes whose bodies are raw
bytes (.npy in, .bba out), not JSON models, so FastAPI's additions (pydantic validation,
OpenAPI schemas, dependency injection) would go unused while adding pydantic to the
install. Starlette is the layer FastAPI itself is built on: routing, streaming request
bodies and exception handlers, with anyio as its only dependency.

Run::

    python examples/service/asgi.py --port 8080 --models mnist-binary mnist-grey
    # or through uvicorn's own CLI, default models and limits:
    uvicorn --app-dir examples/service --factory asgi:create_app --port 8080

``--port 0`` picks a free port; the first stdout line is JSON with the address, as for
server.py.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterable, Mapping
from functools import partial
from pathlib import Path

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bitsback.codec import Model, resolve_model
from bitsback.errors import BitsbackError

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
from server import ClientError, Service  # noqa: E402  (examples/service/server.py)

log = logging.getLogger("bitsback.service")

DRAIN = 4   # oversized bodies up to DRAIN x the limit are read and dropped (as server.py does)
_STATUS_KIND = {404: "NotFound", 405: "MethodNotAllowed", 411: "LengthRequired", 413: "PayloadTooLarge"}


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def model_table(models: Mapping[str, str] | Iterable[str] | str) -> dict[str, str]:
    """``{served name: model}`` from a mapping or from ``NAME`` / ``NAME=DIR`` strings.

    A bare bundled name or directory is served under the model's own name (the name that
    .bba headers carry, so ``/decompress`` without ``?model=`` finds it).
    """
    if isinstance(models, Mapping):
        return dict(models)
    if isinstance(models, str):
        models = [models]
    table = {}
    for spec in models:
        alias, sep, where = spec.partition("=")
        if not sep:
            where, alias = spec, Model(resolve_model(spec)).name
        table[alias] = where
    return table


def _error(status: int, kind: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": kind, "message": message}, status_code=status, headers=headers)


class _TooLarge(ClientError):
    def __init__(self, message: str, close: bool):
        super().__init__(413, "PayloadTooLarge", message)
        self.close = close


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, kept only up to ``limit`` bytes.

    A declared length above ``DRAIN * limit`` is refused before one byte is read, with
    ``Connection: close``. A body that passes ``limit`` while streaming (declared length
    in between, or chunked) stops being kept at once, and what follows is read and
    dropped up to ``DRAIN * limit`` so that the client, which is still sending, can read
    the 413 (closing on unread data resets the connection: a client sending
    ``Connection: close``, as urllib does, then gets a broken pipe instead of the answer).
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            n = int(declared)
        except ValueError:
            n = -1
        if n < 0:
            raise ClientError(400, "BadRequest", f"bad Content-Length {declared!r}")
        if n > DRAIN * limit:
            raise _TooLarge(f"body of {n} bytes; the limit is {limit}", close=True)
    body, seen = bytearray(), 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen <= limit:
            body += chunk
        elif body:
            body = bytearray()                   # over: keep nothing more, drain the rest
        if seen > DRAIN * limit:
            break
    if seen > limit:
        size = f"body of {declared} bytes" if declared is not None else f"chunked body past {seen} bytes"
        raise _TooLarge(f"{size}; the limit is {limit}", close=seen > DRAIN * limit)
    if not body:
        raise ClientError(400, "BadRequest", "empty body")
    return bytes(body)


def create_app(models: Mapping[str, str] | Iterable[str] | str = ("mnist-binary",), *, max_body_mb: float = 64,
               max_images: int = 100_000, max_k_steps: int = 50, threads: int | None = None,
               max_concurrent: int | None = None) -> Starlette:
    """The ASGI app serving ``models`` (see :func:`model_table`); loads every Codec now.

    ``max_concurrent`` bounds the codec calls running at once (default: usable cores);
    ``threads`` is passed to ``bitsback.load``; the other limits are server.py's.
    """
    service = Service(model_table(models), threads=threads, max_body=int(max_body_mb * (1 << 20)),
                      max_images=max_images, max_k_steps=max_k_steps)
    tokens = max_concurrent or usable_cores()
    limiter = None   # created on first use, inside the server's event loop

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "models": sorted(service.codecs)})

    async def code(request: Request) -> Response:
        nonlocal limiter
        work = service.compress if request.url.path == "/compress" else service.decompress
        try:
            body = await _read_body(request, service.max_body)
            if limiter is None:
                limiter = anyio.CapacityLimiter(tokens)
            out = await anyio.to_thread.run_sync(partial(work, body, request.query_params.get("model")),
                                                 limiter=limiter)
        except ClientError as e:
            return _error(e.status, e.kind, str(e), {"Connection": "close"} if getattr(e, "close", False) else None)
        except BitsbackError as e:
            return _error(400, type(e).__name__, str(e))
        except ClientDisconnect:          # gone mid-body: nobody to answer, nothing to log
            return _error(400, "ClientDisconnect", "the client closed the connection mid-request")
        except Exception as e:  # noqa: BLE001 - a bug, not bad input: say so, keep serving
            log.exception("internal error on %s", request.url.path)
            return _error(500, "InternalError", f"{type(e).__name__}: {e}", {"Connection": "close"})
        return Response(out, media_type="application/octet-stream")

    async def http_error(request: Request, exc: HTTPException) -> Response:
        """Starlette's own 404/405 (unknown path, wrong method) as the service's JSON errors."""
        kind = _STATUS_KIND.get(exc.status_code, "HTTPError")
        hint = "; try /compress, /decompress, /healthz" if exc.status_code == 404 else ""
        return _error(exc.status_code, kind, f"{request.method} {request.url.path}: {exc.detail}{hint}",
                      dict(exc.headers or {}))

    app = Starlette(routes=[Route("/healthz", healthz, methods=["GET"]),
                            Route("/compress", code, methods=["POST"]),
                            Route("/decompress", code, methods=["POST"])],
                    exception_handlers={HTTPException: http_error})
    app.state.service = service
    app.state.max_concurrent = tokens
    return app


def listen(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket for uvicorn, bound now so that ``port=0`` can be reported.

    Made with ``proto=IPPROTO_TCP`` on purpose: asyncio sets ``TCP_NODELAY`` on accepted
    connections only when the socket's proto says TCP (``socket.create_server`` leaves it
    0), and without it Nagle's algorithm holds each response body behind its headers until
    the client's delayed ACK, about 40 ms later, on every request.
    """
    family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP,
                                                      flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        if os.name != "nt":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(addr)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def main(argv=None) -> int:
    import uvicorn

    ap = argparse.ArgumentParser(description="bitsback HTTP compression service (ASGI: Starlette + uvicorn)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    ap.add_argument("--models", nargs="+", default=["mnist-binary"],
                    help="bundled model names or exported model directories (NAME=DIR to rename)")
    ap.add_argument("--threads", type=int, default=None, help="passed to bitsback.load")
    ap.add_argument("--max-concurrent", type=int, default=None, help="codec calls at once (default: cores)")
    ap.add_argument("--max-body-mb", type=float, default=64)
    ap.add_argument("--max-images", type=int, default=100_000)
    ap.add_argument("--max-k-steps", type=int, default=50, help="refuse files asking for more K-step inference")
    ap.add_argument("--verbose", action="store_true", help="uvicorn's info log and access log")
    a = ap.parse_args(argv)
    app = create_app(a.models, max_body_mb=a.max_body_mb, max_images=a.max_images, max_k_steps=a.max_k_steps,
                     threads=a.threads, max_concurrent=a.max_concurrent)
    # Bind here so that --port 0 can be reported before uvicorn runs; connections that
    # arrive in between wait in the listen backlog.
    sock = listen(a.host, a.port)
    host, port = sock.getsockname()[:2]
    print(json.dumps({"listening": f"http://{host}:{port}", "models": sorted(app.state.service.codecs),
                      "server": f"uvicorn {uvicorn.__version__}", "max_concurrent": app.state.max_concurrent,
                      "started": time.strftime("%Y-%m-%dT%H:%M:%S")}), flush=True)
    config = uvicorn.Config(app, log_level="info" if a.verbose else "warning", access_log=a.verbose)
    uvicorn.Server(config).run(sockets=[sock])   # returns on SIGINT/SIGTERM after a graceful shutdown
    return 0


if __name__ == "__main__":
    sys.exit(main())
