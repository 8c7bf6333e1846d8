"""examples/service/asgi.py (Starlette + uvicorn) end to end: a real uvicorn server in its
own process on 127.0.0.1 (ephemeral port), real HTTP clients (urllib, http.client, a raw
socket), exact round trips for mnist-binary and mnist-grey, bad input -> 4xx JSON (never
500), bodies bounded while read, the event loop free while codecs work, a concurrent burst
of single-image requests, and the server process still alive at the end.

The stdlib server's contract tests (tests/test_service.py) are imported and rerun here
against the ASGI server: the ``url`` fixture below overrides theirs, so both servers must
answer every case the same way."""

import http.client
import io
import json
import queue
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from _models import bundled  # noqa: E402  (puts bench/ on sys.path)
import fuzz  # noqa: E402  (bench/fuzz.py)
from test_service import (  # noqa: E402,F401  - the stdlib server's contract, rerun against this one
    grey,
    npy,
    post,
    test_bad_input_is_400_with_json,
    test_compress_decompress_round_trip,
    test_concurrent_requests,
    test_healthz,
    test_limits_and_methods,
    test_single_image_and_grey_model,
)

from bitsback import datasets  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ASGI = ROOT / "examples" / "service" / "asgi.py"
DATA = ROOT / "data" / "t10k-images-idx3-ubyte.gz"
MAX_BODY = 8 << 20            # --max-body-mb 8, as the stdlib server in test_service.py
START_TIMEOUT = 180           # model loading plus numba compilation on a cold, busy CI box


class Server:
    def __init__(self, proc, base, log):
        self.proc, self.base, self.log = proc, base, log

    def log_tail(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-4000:]


@pytest.fixture(scope="module")
def server():
    specs = [f"mnist-binary={bundled('mnist-binary')}"]
    if fuzz.model_path("mnist-grey"):
        specs.append(f"mnist-grey={fuzz.model_path('mnist-grey')}")
    log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen([sys.executable, str(ASGI), "--host", "127.0.0.1", "--port", "0", "--max-body-mb", "8",
                             "--max-images", "5000", "--models", *specs],
                            stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT)
    try:
        lines = queue.Queue()
        threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
        try:
            first = lines.get(timeout=START_TIMEOUT)
        except queue.Empty:
            first = ""
        srv = Server(proc, None, log)
        assert first, f"server printed no address (exit {proc.poll()}):\n{srv.log_tail()}"
        srv.base = json.loads(first)["listening"]
        deadline = time.monotonic() + START_TIMEOUT
        while True:                                      # ready when /healthz answers
            try:
                with urllib.request.urlopen(srv.base + "/healthz", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, f"server exited with {proc.returncode}:\n{srv.log_tail()}"
            assert time.monotonic() < deadline, f"/healthz did not answer:\n{srv.log_tail()}"
            time.sleep(0.2)
        yield srv
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(20)
        proc.stdout.close()
        log.close()


@pytest.fixture(scope="module")
def url(server):
    """Overrides test_service.url for the imported contract tests."""
    return server.base


def models(server):
    with urllib.request.urlopen(server.base + "/healthz", timeout=30) as r:
        return json.loads(r.read())["models"]


def images_for(model, grey, n):
    return datasets.binarize(grey[:n]) if model == "mnist-binary" else grey[:n]


def conn(server, timeout=120):
    u = urlparse(server.base)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)


@pytest.mark.parametrize("model", ["mnist-binary", "mnist-grey"])
def test_round_trip_model_from_header_and_query(server, grey, model):
    if model not in models(server):
        pytest.skip(f"{model} is not bundled")
    x = images_for(model, grey, 37)
    status, ctype, bba = post(f"{server.base}/compress?model={model}", npy(x))
    assert status == 200 and ctype == "application/octet-stream" and bba[:6] == b"BBANS\x00"
    for target in ("/decompress", f"/decompress?model={model}"):
        status, ctype, back = post(server.base + target, bba)
        assert status == 200 and ctype == "application/octet-stream"
        assert np.array_equal(np.load(io.BytesIO(back)), x)


def test_errors_are_json_4xx(server, grey):
    x = datasets.binarize(grey[:3])
    _, _, bba = post(server.base + "/compress", npy(x))
    corrupt = bytearray(bba)
    corrupt[len(corrupt) // 2] ^= 4
    cases = {
        "garbage": ("/compress", b"\x93NUMPY garbage", 400),
        "wrong-shape": ("/compress", npy(x[:, :20, :20]), 400),
        "unknown-model": ("/compress?model=nope", npy(x), 400),
        "corrupt-bba": ("/decompress", bytes(corrupt), 400),
        "bba-for-unknown-model": ("/decompress?model=nope", bba, 400),
        "too-large": ("/compress", b"\0" * (MAX_BODY + 1), 413),
        "no-endpoint": ("/nowhere", b"x", 404),
    }
    for case, (target, body, want) in cases.items():
        status, ctype, out = post(server.base + target, body)
        assert status == want, (case, status, out[:300])
        assert ctype == "application/json", case
        err = json.loads(out)
        assert set(err) == {"error", "message"} and err["message"], case
    assert json.loads(post(server.base + "/compress?model=nope", npy(x))[2])["error"] == "UnknownModel"


def test_chunked_bodies_are_streamed_and_bounded(server, grey):
    x = datasets.binarize(grey[:20])
    body = npy(x)
    c = conn(server)
    try:
        c.request("POST", "/compress", iter([body[:1000], body[1000:]]), encode_chunked=True)
        r = c.getresponse()
        bba = r.read()
        assert r.status == 200, bba[:300]
        # Over the limit in 1 MiB chunks: refused with 413 once it passes the limit, and the
        # same keep-alive connection still serves the next request.
        chunks = (b"\0" * (1 << 20) for _ in range(12))
        c.request("POST", "/compress", chunks, encode_chunked=True)
        r = c.getresponse()
        out = r.read()
        assert r.status == 413 and json.loads(out)["error"] == "PayloadTooLarge", out[:300]
        c.request("POST", "/decompress", bba)
        r = c.getresponse()
        assert r.status == 200 and np.array_equal(np.load(io.BytesIO(r.read())), x)
    finally:
        c.close()


def test_declared_oversize_is_refused_before_the_body_is_sent(server):
    """A Content-Length of 1 GiB gets its 413 with not one body byte sent: the limit is
    applied before reading, not after."""
    u = urlparse(server.base)
    with socket.create_connection((u.hostname, u.port), timeout=30) as s:
        s.sendall(b"POST /compress HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (1 << 30))
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), data[:300]
    assert b"connection: close" in head.lower()
    assert json.loads(body)["error"] == "PayloadTooLarge"


def test_client_gone_mid_body(server):
    """A client that hangs up halfway through its body costs nothing: no 500, no traceback
    in the server's log (checked by test_server_still_alive), and the next request works."""
    u = urlparse(server.base)
    for _ in range(3):
        with socket.create_connection((u.hostname, u.port), timeout=30) as s:
            s.sendall(b"POST /compress HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"\0" * 1000)
    time.sleep(0.2)
    with urllib.request.urlopen(server.base + "/healthz", timeout=30) as r:
        assert r.status == 200


def test_event_loop_stays_free_while_codecs_work(server, grey):
    """/healthz is answered in a fraction of one codec call's time while eight heavy
    requests (5000-image decodes) keep every worker busy: the codec runs off the loop."""
    model = "mnist-grey" if "mnist-grey" in models(server) else "mnist-binary"
    x = images_for(model, datasets.load(DATA)[:5000], 5000)
    status, _, bba = post(f"{server.base}/compress?model={model}", npy(x))
    assert status == 200
    t0 = time.perf_counter()
    assert post(server.base + "/decompress", bba)[0] == 200
    alone = time.perf_counter() - t0                     # one heavy request, nothing else running

    done = []

    def heavy(_):
        status, _, _ = post(server.base + "/decompress", bba)
        done.append(time.perf_counter())
        return status

    probes = []
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(heavy, i) for i in range(8)]
        time.sleep(min(0.3, alone / 2))
        while len(probes) < 5 and len(done) < 8:
            t = time.perf_counter()
            with urllib.request.urlopen(server.base + "/healthz", timeout=60) as r:
                assert r.status == 200
            probes.append((time.perf_counter() - t, len(done)))
            time.sleep(alone / 10)
        assert all(f.result() == 200 for f in futures)
    during = [lat for lat, n_done in probes if n_done < 8]
    assert during, f"the heavy requests finished before any probe (one took {alone:.3f} s alone)"
    assert statistics.median(during) < max(alone / 4, 0.05), (during, alone)


def test_no_nagle_stall_on_keep_alive(server, grey):
    """Sequential single-image requests on one keep-alive connection take a few ms, not
    the ~40 ms of Nagle's algorithm waiting for the client's delayed ACK (what a listening
    socket without TCP_NODELAY on its accepted connections costs; see asgi.listen)."""
    body = npy(datasets.binarize(grey[:1]))
    c = conn(server)
    lat = []
    try:
        for _ in range(30):
            t = time.perf_counter()
            c.request("POST", "/compress", body)
            r = c.getresponse()
            assert r.status == 200 and r.read()[:6] == b"BBANS\x00"
            lat.append(time.perf_counter() - t)
    finally:
        c.close()
    assert statistics.median(lat[5:]) < 0.030, lat


def test_listen_socket_gives_nodelay_connections():
    """asgi.listen's sockets make asyncio set TCP_NODELAY on every accepted connection."""
    import asyncio

    sys.path.insert(0, str(ASGI.parent))
    import asgi

    async def check():
        sock = asgi.listen("127.0.0.1", 0)
        accepted = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport):
                s = transport.get_extra_info("socket")
                accepted.set_result(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        srv = await asyncio.get_running_loop().create_server(Probe, sock=sock)
        try:
            _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
            value = await asyncio.wait_for(accepted, 10)
            writer.close()
        finally:
            srv.close()
        return value

    assert asyncio.run(check()) != 0


def test_burst_of_single_image_requests(server, grey):
    served = models(server)
    jobs = [(served[i % len(served)], i) for i in range(64)]

    def one(job):
        model, i = job
        x = images_for(model, grey[i : i + 1], 1)[0]          # one (28, 28) image
        status, _, bba = post(f"{server.base}/compress?model={model}", npy(x))
        assert status == 200, bba[:300]
        status, _, back = post(server.base + "/decompress", bba)
        assert status == 200 and np.array_equal(np.load(io.BytesIO(back))[0], x)
        return True

    with ThreadPoolExecutor(16) as pool:
        assert all(pool.map(one, jobs))


def test_server_still_alive(server):
    """Last: after every bad input above, the same process still serves."""
    assert server.proc.poll() is None, server.log_tail()
    assert "mnist-binary" in models(server)
    assert "Traceback" not in server.log_tail(), server.log_tail()


def test_create_app_factory():
    """The factory alone (no server): model specs, limits and the worker bound."""
    from starlette.routing import Route

    sys.path.insert(0, str(ASGI.parent))
    import asgi

    app = asgi.create_app([f"mnist-binary={bundled('mnist-binary')}"], max_body_mb=1, max_images=10,
                          max_k_steps=3, max_concurrent=3)
    svc = app.state.service
    assert sorted(svc.codecs) == ["mnist-binary"] and svc.max_body == 1 << 20
    assert svc.limits.max_images == 10 and svc.limits.max_k_steps == 3 and app.state.max_concurrent == 3
    assert {r.path for r in app.routes if isinstance(r, Route)} == {"/healthz", "/compress", "/decompress"}
    assert asgi.create_app({"m": bundled("mnist-binary")}).state.max_concurrent == asgi.usable_cores() >= 1


def test_load_script_smoke_asgi():
    """bench/load_service.py --server asgi: a 3 s run, every response checked."""
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "load_service.py"), "--server", "asgi", "--duration", "3",
                        "--concurrency", "2", "--model", bundled("mnist-binary")],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    report = json.loads(p.stdout.strip().splitlines()[-1])
    assert report["server"].startswith("asgi (asgi.py, uvicorn")
    assert report["errors"] == 0 and report["requests"] > 0
    assert report["latency_ms"]["p50"] <= report["latency_ms"]["p99"]
