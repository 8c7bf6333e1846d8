"""Bounded load test of examples/service: single-image /compress requests over loopback.

Starts the service in a separate process on 127.0.0.1 (ephemeral port): ``--server
stdlib`` (the default) is examples/service/server.py (ThreadingHTTPServer), ``--server
asgi`` is examples/service/asgi.py (Starlette + uvicorn); or ``--url`` points at one
already running (loopback addresses only). Then it runs ``--concurrency`` client
threads, each on its own keep-alive connection, for ``--duration`` seconds. Every
response is checked (status 200 and the container magic; every ``--verify-every``-th one is
also decoded locally and compared). Prints progress to stderr and one JSON object on the
last stdout line: requests, errors, requests/s, latency percentiles (ms).

    python bench/load_service.py --duration 60 --concurrency 4
    python bench/load_service.py --duration 60 --concurrency 4 --server asgi
"""

from __future__ import annotations

import argparse
import http.client
import io
import ipaddress
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "t10k-images-idx3-ubyte.gz"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(a[4][0]).is_loopback for a in socket.getaddrinfo(host, None))
        except OSError:
            return False


SERVERS = {"stdlib": "server.py", "asgi": "asgi.py"}


def _start_server(model: str, threads: int | None, server: str = "stdlib"):
    """The service in its own process; returns (process, its first stdout line as a dict)."""
    script = ROOT / "examples" / "service" / SERVERS[server]
    cmd = [sys.executable, str(script), "--port", "0", "--models", f"m={model}"]
    if threads:
        cmd += ["--threads", str(threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise RuntimeError(f"service did not start ({script.name} exited with {proc.wait()})")
    return proc, json.loads(line)


def percentiles(lat_ms):
    a = np.sort(np.asarray(lat_ms))
    if not len(a):
        return {}
    return {f"p{q}": round(float(np.percentile(a, q)), 3) for q in (50, 90, 99)} | {
        "mean": round(float(a.mean()), 3), "max": round(float(a.max()), 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of load (after warm-up)")
    ap.add_argument("--concurrency", type=int, default=4, help="client threads, one connection each")
    ap.add_argument("--url", default=None, help="a running service on a loopback address (default: start one)")
    ap.add_argument("--server", choices=sorted(SERVERS), default="stdlib",
                    help="which service to start: stdlib = server.py, asgi = asgi.py (Starlette + uvicorn)")
    ap.add_argument("--model", default="mnist-binary", help="model for the started service")
    ap.add_argument("--threads", type=int, default=None, help="onnxruntime threads of the started service")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--verify-every", type=int, default=50, help="decode and compare every k-th response locally")
    a = ap.parse_args(argv)
    if a.duration <= 0 or a.duration > 3600 or not 1 <= a.concurrency <= 256:
        ap.error("--duration must be in (0, 3600] and --concurrency in [1, 256]")
    if a.url:
        host = urlparse(a.url).hostname or ""
        if not _loopback(host):
            print(f"load_service: refusing {a.url}: only loopback addresses may be loaded", file=sys.stderr)
            return 2

    import bitsback
    from bitsback import datasets

    proc = None
    url, started = a.url, {}
    if url is None:
        proc, started = _start_server(a.model, a.threads, a.server)
        url = started["listening"]
    try:
        u = urlparse(url)
        codec = bitsback.load(a.model, device="cpu") if proc is not None else None
        levels = codec.model.levels if codec else 2
        grey = datasets.load(DATA)[:1000]
        images = datasets.binarize(grey) if levels == 2 else grey
        bodies = []
        for im in images:
            buf = io.BytesIO()
            np.save(buf, im[None])
            bodies.append(buf.getvalue())

        lat, errors, lock = [], [], threading.Lock()
        phase = {"record": False, "stop": False}

        def client(k):
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
            i, mine = k, []
            while not phase["stop"]:
                body = bodies[i % len(bodies)]
                t0 = time.perf_counter()
                try:
                    conn.request("POST", "/compress", body, {"Content-Type": "application/octet-stream"})
                    r = conn.getresponse()
                    out = r.read()
                    ok = r.status == 200 and out[:6] == b"BBANS\x00"
                    err = None if ok else f"HTTP {r.status}: {out[:200]!r}"
                except (OSError, http.client.HTTPException) as e:
                    err = f"{type(e).__name__}: {e}"
                    conn.close()
                    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
                dt = (time.perf_counter() - t0) * 1e3
                if err is None and codec is not None and a.verify_every and len(mine) % a.verify_every == 0:
                    if not np.array_equal(codec.decompress(out)[0], images[i % len(images)]):
                        err = "decoded image differs"
                if phase["record"]:
                    mine.append(dt)
                    if err:
                        with lock:
                            errors.append(err)
                i += a.concurrency
            with lock:
                lat.extend(mine)
            conn.close()

        threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(a.concurrency)]
        for t in threads:
            t.start()
        time.sleep(a.warmup)
        phase["record"] = True
        t0 = time.perf_counter()
        end = t0 + a.duration
        while time.perf_counter() < end:
            time.sleep(min(5.0, max(0.0, end - time.perf_counter())))
            print(f"load_service: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        phase["record"] = False
        elapsed = time.perf_counter() - t0
        phase["stop"] = True
        for t in threads:
            t.join(60)
        report = {
            "endpoint": "/compress (one 28x28 image per request)",
            "server": (f"{a.server} ({SERVERS[a.server]}"
                       + (f", {started['server']}" if "server" in started else "") + ")") if proc else url,
            "model": a.model,
            "duration_s": round(elapsed, 1),
            "concurrency": a.concurrency,
            "requests": len(lat),
            "errors": len(errors),
            "first_errors": errors[:5],
            "requests_per_s": round(len(lat) / elapsed, 1),
            "latency_ms": percentiles(lat),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
            "date": time.strftime("%Y-%m-%d"),
        }
        print(json.dumps(report))
        return 0 if not errors else 1
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    sys.exit(main())
