"""A small HTTP compression service around one shared ``bitsback.Codec`` per model.

Standard library only (``http.server.ThreadingHTTPServer``): one thread per connection,
HTTP/1.1 keep-alive, and every model's Codec shared by all threads (a Codec holds no
per-call state; see tests/test_concurrency.py).

Endpoints
---------
``POST /compress[?model=NAME]``
    Body: ``.npy`` bytes of uint8 images, shape (N, *image_shape) or one image.
    Returns the ``.bba`` bytes (``application/octet-stream``).
``POST /decompress[?model=NAME]``
    Body: ``.bba`` bytes. Returns ``.npy`` bytes of the images. The model defaults to the
    one named in the file's header.
``GET /healthz``
    ``{"status": "ok", "models": [...]}``.

Bad input never gets a 500: it gets ``400`` (or ``404``/``405``/``411``/``413``) with a JSON
body ``{"error": "<ExceptionType>", "message": "..."}``. Request bodies are bounded
(``--max-body-mb``), decoded files are bounded by ``--max-images`` and ``--max-k-steps``
(passed to the container's ``Limits``), and pickled .npy payloads are refused.

Run::

    python examples/service/server.py --port 8080 --models mnist-binary mnist-grey
    curl -s --data-binary @images.npy localhost:8080/compress > images.bba
    curl -s --data-binary @images.bba localhost:8080/decompress > back.npy
"""

from __future__ import annotations

import argparse
import io
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import numpy as np

import bitsback
from bitsback import container, zoo
from bitsback.errors import BitsbackError, FormatError


class ClientError(Exception):
    def __init__(self, status: int, kind: str, message: str):
        super().__init__(message)
        self.status, self.kind = status, kind


class Service:
    """The models a server holds and the limits it applies; independent of HTTP."""

    def __init__(self, models: dict[str, str], threads: int | None = None, max_body: int = 64 << 20,
                 max_images: int = 100_000, max_k_steps: int = 50):
        self.codecs = {name: bitsback.load(path, device="cpu", threads=threads) for name, path in models.items()}
        self.default = next(iter(self.codecs))
        self.max_body = max_body
        # K-step files cost K Adam steps per image to decode (and import torch); a 100-byte
        # file may ask for Limits' default 10 000, so a service bounds K much lower.
        self.limits = container.Limits(max_images=max_images, max_k_steps=max_k_steps)
        self.max_images = max_images

    def codec(self, name: str | None):
        name = name or self.default
        codec = self.codecs.get(name)
        if codec is None:
            raise ClientError(400, "UnknownModel", f"model {name!r} is not served here; served: {sorted(self.codecs)}")
        return codec

    def compress(self, body: bytes, model: str | None) -> bytes:
        try:
            images = np.load(io.BytesIO(body), allow_pickle=False)
        except Exception as e:  # numpy raises ValueError/OSError/EOFError/... for bad .npy bytes
            raise ClientError(400, "BadRequest", f"body is not a .npy array: {type(e).__name__}: {e}") from None
        if images.ndim >= 3 and images.shape[0] > self.max_images:
            raise ClientError(413, "TooManyImages", f"{len(images)} images; this server takes at most {self.max_images}")
        return self.codec(model).compress(images)

    def decompress(self, body: bytes, model: str | None) -> bytes:
        if model is None:
            header, _ = container.unpack(body, self.limits)
            name = header["model"]["name"]
            codec = self.codecs.get(name) or self.codec(None)
        else:
            codec = self.codec(model)
        images = codec.decompress(body, limits=self.limits)
        buf = io.BytesIO()
        np.save(buf, images)
        return buf.getvalue()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "bitsback-service/1"
    service: Service = None        # set by make_server
    quiet = True

    def setup(self):
        super().setup()
        # Headers and body go out in two writes; with Nagle's algorithm the body waits for
        # the client's delayed ACK (~40 ms a request on Linux loopback).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):  # noqa: D401 - quiet by default
        if not self.quiet:
            super().log_message(fmt, *args)

    def _send(self, status: int, body: bytes, ctype: str, extra: dict | None = None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, kind: str, message: str):
        self._send(status, json.dumps({"error": kind, "message": message}).encode(), "application/json")

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise ClientError(411, "LengthRequired", "send a Content-Length (chunked bodies are not accepted)")
        length = self.headers.get("Content-Length")
        if length is None:
            raise ClientError(411, "LengthRequired", "send a Content-Length")
        try:
            n = int(length)
        except ValueError:
            raise ClientError(400, "BadRequest", f"bad Content-Length {length!r}") from None
        if n < 0:
            raise ClientError(400, "BadRequest", f"bad Content-Length {length!r}")
        if n > self.service.max_body:
            if n <= 4 * self.service.max_body:   # drain it so the client can read the 413
                left = n
                while left > 0:
                    chunk = self.rfile.read(min(left, 1 << 20))
                    if not chunk:
                        break
                    left -= len(chunk)
            raise ClientError(413, "PayloadTooLarge", f"body of {n} bytes; the limit is {self.service.max_body}")
        body = self.rfile.read(n)
        if len(body) != n:
            raise ClientError(400, "BadRequest", "body shorter than its Content-Length")
        if not body:
            raise ClientError(400, "BadRequest", "empty body")
        return body

    def do_GET(self):
        path = urlparse(self.path).path
        if path == "/healthz":
            self._send(200, json.dumps({"status": "ok", "models": sorted(self.service.codecs)}).encode(),
                       "application/json")
        elif path in ("/compress", "/decompress"):
            self._error(405, "MethodNotAllowed", f"use POST {path}")
        else:
            self._error(404, "NotFound", f"no endpoint {path}; try /compress, /decompress, /healthz")

    def do_POST(self):
        url = urlparse(self.path)
        model = (parse_qs(url.query).get("model") or [None])[0]
        try:
            if url.path not in ("/compress", "/decompress"):
                raise ClientError(404, "NotFound", f"no endpoint {url.path}")
            body = self._body()
            if url.path == "/compress":
                out = self.service.compress(body, model)
                self._send(200, out, "application/octet-stream")
            else:
                out = self.service.decompress(body, model)
                self._send(200, out, "application/octet-stream")
        except ClientError as e:
            if e.status in (404, 411, 413):
                self.close_connection = True     # the unread body would poison keep-alive
            self._error(e.status, e.kind, str(e))
        except (BitsbackError, FormatError) as e:
            self._error(400, type(e).__name__, str(e))
        except Exception as e:  # noqa: BLE001 - a bug, not bad input: say so, keep serving
            self.close_connection = True
            self._error(500, "InternalError", f"{type(e).__name__}: {e}")


def make_server(models: dict[str, str], host: str = "127.0.0.1", port: int = 0, **kw) -> ThreadingHTTPServer:
    """A ready (not yet serving) server; ``port=0`` picks a free port (``server.server_port``)."""
    service = Service(models, **kw)
    handler = type("BoundHandler", (Handler,), {"service": service})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def serve_in_thread(models: dict[str, str], **kw):
    """Start a server on 127.0.0.1 in a background thread; returns (server, base_url)."""
    server = make_server(models, **kw)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    t.start()
    return server, f"http://127.0.0.1:{server.server_port}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="bitsback HTTP compression service")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--models", nargs="+", default=["mnist-binary"],
                    help="bundled model names or exported model directories (NAME=DIR to rename)")
    ap.add_argument("--threads", type=int, default=None, help="onnxruntime threads per session")
    ap.add_argument("--max-body-mb", type=float, default=64)
    ap.add_argument("--max-images", type=int, default=100_000)
    ap.add_argument("--max-k-steps", type=int, default=50, help="refuse files asking for more K-step inference")
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args(argv)
    models = {}
    for m in a.models:
        name, _, path = m.partition("=")
        models[name if path else zoo.manifest(m).get("name", m)] = path or m
    Handler.quiet = not a.verbose
    server = make_server(models, a.host, a.port, threads=a.threads, max_body=int(a.max_body_mb * (1 << 20)),
                         max_images=a.max_images, max_k_steps=a.max_k_steps)
    print(json.dumps({"listening": f"http://{a.host}:{server.server_port}", "models": sorted(models),
                      "started": time.strftime("%Y-%m-%dT%H:%M:%S")}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
