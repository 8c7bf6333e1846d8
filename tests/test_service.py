"""examples/service end to end: a real server on 127.0.0.1 (ephemeral port), a real HTTP
client, exact round trips, bad input -> 4xx with a JSON message (never 500), and a short
concurrent burst; plus a tiny run of bench/load_service.py."""

import io
import json
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "examples" / "service"))
import fuzz  # noqa: E402
import server as service  # noqa: E402

from bitsback import datasets  # noqa: E402

DATA = ROOT / "data" / "t10k-images-idx3-ubyte.gz"


from _models import bundled  # noqa: E402


@pytest.fixture(scope="module")
def url():
    models = {"mnist-binary": bundled("mnist-binary")}
    if fuzz.model_path("mnist-grey"):
        models["mnist-grey"] = fuzz.model_path("mnist-grey")
    server, base = service.serve_in_thread(models, max_body=8 << 20, max_images=5000)
    yield base
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def grey():
    return datasets.load(DATA)[:200]


def npy(a):
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def post(url, body, headers=None):
    req = urllib.request.Request(url, data=body, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.headers.get("Content-Type"), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read()


def test_healthz(url):
    with urllib.request.urlopen(url + "/healthz", timeout=30) as r:
        assert r.status == 200
        assert "mnist-binary" in json.loads(r.read())["models"]


@pytest.mark.parametrize("n", [1, 7, 150])
def test_compress_decompress_round_trip(url, grey, n):
    x = datasets.binarize(grey[:n])
    status, ctype, bba = post(url + "/compress", npy(x))
    assert status == 200 and ctype == "application/octet-stream"
    assert bba[:6] == b"BBANS\x00"
    status, _, back = post(url + "/decompress", bba)
    assert status == 200
    assert np.array_equal(np.load(io.BytesIO(back)), x)


def test_single_image_and_grey_model(url, grey):
    x = datasets.binarize(grey[0])                      # one (28, 28) image
    status, _, bba = post(url + "/compress?model=mnist-binary", npy(x))
    assert status == 200
    status, _, back = post(url + "/decompress", bba)
    assert np.array_equal(np.load(io.BytesIO(back))[0], x)
    if fuzz.model_path("mnist-grey"):
        status, _, bba = post(url + "/compress?model=mnist-grey", npy(grey[:5]))
        assert status == 200
        status, _, back = post(url + "/decompress", bba)  # model taken from the header
        assert status == 200 and np.array_equal(np.load(io.BytesIO(back)), grey[:5])


def _bad_bba(grey, url):
    _, _, bba = post(url + "/compress", npy(datasets.binarize(grey[:3])))
    b = bytearray(bba)
    b[len(b) // 2] ^= 4
    return bytes(b)


@pytest.mark.parametrize("case", [
    "not-npy", "pickled-object", "grey-into-binary", "wrong-shape", "float-images", "empty-batch",
    "unknown-model", "corrupt-bba", "truncated-bba", "garbage-bba", "empty-body", "hostile-header",
    "too-many-k-steps",
])
def test_bad_input_is_400_with_json(url, grey, case):
    x = datasets.binarize(grey[:3])
    target, body = {
        "not-npy": ("/compress", b"hello"),
        "pickled-object": ("/compress", None),
        "grey-into-binary": ("/compress?model=mnist-binary", npy(grey[:3])),
        "wrong-shape": ("/compress", npy(x[:, :20, :20])),
        "float-images": ("/compress", npy(x.astype(np.float32) + 0.5)),
        "empty-batch": ("/compress", npy(x[:0])),
        "unknown-model": ("/compress?model=nope", npy(x)),
        "corrupt-bba": ("/decompress", None),
        "truncated-bba": ("/decompress", None),
        "garbage-bba": ("/decompress", b"\0" * 100),
        "empty-body": ("/compress", b""),
        "hostile-header": ("/decompress", fuzz.forge(b'{"n": 100000000000}', b"x")),
        "too-many-k-steps": ("/decompress", None),
    }[case]
    if case == "pickled-object":
        buf = io.BytesIO()
        np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        body = buf.getvalue()
    elif case == "corrupt-bba":
        body = _bad_bba(grey, url)
    elif case == "too-many-k-steps":        # would cost 5000 Adam steps per image to decode
        _, _, bba = post(url + "/compress", npy(x))
        head, payload = fuzz.split(bba)
        h = json.loads(head)
        h["k_steps"] = 5000
        body = fuzz.forge(json.dumps(h).encode(), payload)
    elif case == "truncated-bba":
        _, _, bba = post(url + "/compress", npy(x))
        body = bba[: len(bba) - 40]
    status, ctype, out = post(url + target, body)
    assert status == 400, (status, out[:300])
    assert ctype == "application/json"
    err = json.loads(out)
    assert set(err) == {"error", "message"} and err["message"]


def test_limits_and_methods(url):
    status, _, out = post(url + "/compress", b"\0" * ((8 << 20) + 1))
    assert status == 413 and json.loads(out)["error"] == "PayloadTooLarge"
    status, _, out = post(url + "/nowhere", b"x")
    assert status == 404 and "error" in json.loads(out)
    try:
        urllib.request.urlopen(url + "/compress", timeout=30)
        raise AssertionError("GET /compress should fail")
    except urllib.error.HTTPError as e:
        assert e.code == 405


def test_concurrent_requests(url, grey):
    xs = [datasets.binarize(grey[i : i + 1 + i % 5]) for i in range(32)]

    def one(x):
        status, _, bba = post(url + "/compress", npy(x))
        assert status == 200
        status, _, back = post(url + "/decompress", bba)
        assert status == 200 and np.array_equal(np.load(io.BytesIO(back)), x)
        return len(bba)

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(one, xs))


def test_load_script_smoke():
    model = bundled("mnist-binary")
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "load_service.py"), "--duration", "3",
                        "--concurrency", "2", "--model", model], capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    report = json.loads(p.stdout.strip().splitlines()[-1])
    assert report["errors"] == 0 and report["requests"] > 0
    assert report["latency_ms"]["p50"] <= report["latency_ms"]["p99"]


def test_load_script_refuses_non_loopback():
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "load_service.py"), "--url", "http://example.com:80",
                        "--duration", "1"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert p.returncode == 2 and "loopback" in p.stderr
