"""Mutation fuzzer for the .bba container parser and the BB-ANS decoder.

Seeds are small valid files (1-3 MNIST images, 1-3 lanes, each bundled model). Every case
takes one seed, applies one or more mutations and decodes the result in a worker process:

* bit flips and byte edits (raw, and re-sealed with a fresh checksum so they reach the parser
  and the decoder instead of stopping at the sha256),
* truncation and extension (raw, and re-sealed with a fixed-up payload length),
* header JSON edits re-sealed (in the current version, zlib; raw garbage also as version 1,
  plain JSON; plus zlib garbage and zlib bombs): every field set to hostile values (huge,
  negative, zero, wrong type, NaN, deep nesting), fields deleted, unknown fields added,
* payload edits re-sealed: lanes swapped, a lane's head or word count edited, words flipped,
  lanes dropped or duplicated, a stray frame added,
* the u32 header length and u64 payload length fields edited,
* splices of two seeds.

Each outcome is classified as ``exact`` (decoded images equal the seed's images), one of the
documented exception types (subclasses of ``bitsback.errors.BitsbackError``, counted by
name), ``undocumented:<Type>`` (any other exception -- a bug), ``crash`` (the worker died:
segfault, abort), ``hang`` (no answer within ``--timeout`` seconds), ``slow_k_steps`` (a
timeout on a file whose header asks for K > 0 Adam steps per image: bounded work, but slow),
``memory`` (the worker hit its address-space limit, ``--max-mem-mb``) or ``wrong_output`` (decode returned
images that differ from the seed's -- the worst bug). Bad cases are written to ``--artifacts``
so that ``python bench/fuzz.py --replay FILE`` reproduces them.

Usage::

    python bench/fuzz.py --cases 100000 --workers 2      # last stdout line: JSON summary

The case generator is deterministic: case ``i`` of run ``--seed s`` is always the same file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import struct
import sys
import time
import zlib
from collections import Counter
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "t10k-images-idx3-ubyte.gz"
MODELS = ("mnist-binary", "mnist-grey")
BAD = ("crash", "hang", "memory", "wrong_output")

_PREFIX = struct.Struct("<6sHI")
_U64 = struct.Struct("<Q")


# ----------------------------------------------------------------------------- models
def model_path(name: str):
    """Bundled model ``name``; BITSBACK_TEST_MODEL_DIR/<name> overrides (development only)."""
    override = os.environ.get("BITSBACK_TEST_MODEL_DIR")
    if override and (Path(override) / name / "manifest.json").is_file():
        return str(Path(override) / name)
    from bitsback import zoo

    d = zoo.ZOO_DIR / name
    return str(d) if (d / "manifest.json").is_file() else None


def available_models() -> list[str]:
    return [m for m in MODELS if model_path(m)]


# ----------------------------------------------------------------------------- container surgery
def split(blob: bytes):
    """(header JSON bytes, payload) of a well-formed container (no checks beyond framing).

    A zlib header (version >= 2) is inflated when it can be, so that mutations edit JSON;
    ``forge`` writes it back in the current version unless told otherwise."""
    _, version, hlen = _PREFIX.unpack_from(blob)
    head = blob[_PREFIX.size : _PREFIX.size + hlen]
    if version >= 2:
        from bitsback.container import inflate
        from bitsback.errors import FormatError

        try:
            head = inflate(head, 1 << 30, version)
        except FormatError:     # LimitError included
            pass
    (plen,) = _U64.unpack_from(blob, _PREFIX.size + hlen)
    p0 = _PREFIX.size + hlen + _U64.size
    return head, blob[p0 : p0 + plen]


def seal(body: bytes) -> bytes:
    return body + hashlib.sha256(body).digest()


def forge(head: bytes, payload: bytes, version: int | None = None, hlen: int | None = None, plen: int | None = None,
          deflate: bool | None = None) -> bytes:
    """``body + sha256(body)`` around any header bytes and payload (lengths overridable);
    the current container version by default. ``deflate`` zlib-compresses the header bytes
    first (as versions >= 2 store them, against ZDICT from version 4; the default for those
    versions)."""
    from bitsback.container import MAGIC, VERSION
    from bitsback.container import deflate as deflate_header

    version = VERSION if version is None else version
    if deflate is None:
        deflate = version >= 2
    if deflate:
        head = deflate_header(head, version)
    body = (_PREFIX.pack(MAGIC, version, len(head) if hlen is None else hlen) + head
            + _U64.pack(len(payload) if plen is None else plen) + payload)
    return seal(body)


def split_lanes(payload: bytes):
    """A container's payload (version 3: every shard's lane records back to back, no
    frame) -> (lanes, [(head, words_bytes)], trailing) or None."""
    pos, lanes, count = 0, [], len(payload)
    while pos + 12 <= len(payload) and len(lanes) < count:
        head, nw = struct.unpack_from("<QI", payload, pos)
        words = payload[pos + 12 : pos + 12 + 4 * nw]
        lanes.append((head, words))
        pos += 12 + 4 * nw
    return (len(lanes), lanes, payload[pos:]) if lanes else None


def join_lanes(lanes, count=None) -> bytes:
    """Lane records back to back (a version-3 payload); with ``count``, framed as the
    messages' wire format (b"BBR1", u32 count) instead."""
    out = [] if count is None else [b"BBR1", struct.pack("<I", count)]
    for head, words in lanes:
        out.append(struct.pack("<QI", head & (2**64 - 1), len(words) // 4))
        out.append(words)
    return b"".join(out)


# ----------------------------------------------------------------------------- mutations
HOSTILE_INTS = (0, 1, -1, 2, 3, 7, 255, 256, 2**16, 2**20, 2**24, 2**28, 2**28 + 1, 2**31 - 1, 2**31,
                2**32, 2**32 + 1, 2**53, 2**63 - 1, 2**63, 2**64, 10**30, -(2**63))
HOSTILE_VALUES = HOSTILE_INTS + (None, True, False, 0.5, -0.0, 1e308, float("inf"), float("nan"), "", "x",
                                  "0" * 64, [], [0], [1, 2], [[1]], {}, {"a": 1}, [28, 28], [28, 28, 1],
                                  [2**31, 2**31], [0, 28], [-28, -28], [1] * 5, "uint16", "bernoulli",
                                  "logistic", "logistic_mixture", "portable", "float", "0123456789abcdef")
FIELDS = ("model", "likelihood", "shape", "dtype", "levels", "n", "lanes", "precision", "latent", "k_steps",
          "lr", "seed", "runtime", "data_sha256", "arithmetic")


class Rand:
    """What a mutation draws from: random.Random, or hypothesis' data.draw (see HypothesisRand)."""

    def __init__(self, seed):
        self.r = random.Random(seed)

    def int(self, lo, hi):
        return self.r.randint(lo, hi)

    def choice(self, seq):
        return seq[self.r.randrange(len(seq))]

    def bytes(self, n):
        return self.r.randbytes(n)


def _hostile(r: Rand, depth=0):
    k = r.int(0, 9)
    if k <= 6 or depth > 1:
        return r.choice(HOSTILE_VALUES)
    if k == 7:
        return [_hostile(r, depth + 1) for _ in range(r.int(0, 4))]
    if k == 8:
        return {r.choice(("name", "sha256", "likelihood", "posterior", "latent_bits", "kind", "version", "fingerprint", "x")): _hostile(r, depth + 1)
                for _ in range(r.int(0, 3))}
    return r.int(-(2**70), 2**70)


def _flip_bits(data: bytes, r: Rand, lo=0, hi=None) -> bytes:
    b = bytearray(data)
    hi = len(b) if hi is None else hi
    if hi <= lo:
        return data
    for _ in range(r.int(1, 8)):
        i = r.int(lo, hi - 1)
        b[i] ^= 1 << r.int(0, 7)
    return bytes(b)


def m_bitflip_raw(blob, r, seeds):
    return _flip_bits(blob, r)


def m_bitflip_sealed(blob, r, seeds):
    return seal(_flip_bits(blob[:-32], r))


def m_byte_edit_sealed(blob, r, seeds):
    body = bytearray(blob[:-32])
    for _ in range(r.int(1, 4)):
        body[r.int(0, len(body) - 1)] = r.int(0, 255)
    return seal(bytes(body))


def m_truncate(blob, r, seeds):
    return blob[: r.int(0, len(blob) - 1)]


def m_truncate_sealed(blob, r, seeds):
    head, payload = split(blob)
    return forge(head, payload[: r.int(0, max(0, len(payload) - 1))])


def m_extend(blob, r, seeds):
    return blob + r.bytes(r.int(1, 64))


def m_extend_sealed(blob, r, seeds):
    head, payload = split(blob)
    return forge(head, payload + r.bytes(r.int(1, 64)))


def m_header_field(blob, r, seeds):
    head, payload = split(blob)
    h = json.loads(head)
    for _ in range(r.int(1, 3)):
        k = r.int(0, 9)
        name = r.choice(FIELDS)
        if k == 0:
            h.pop(name, None)
        elif k == 1:
            h["x" + str(r.int(0, 9))] = _hostile(r)
        elif k == 2 and isinstance(h.get("precision"), dict):
            h["precision"][r.choice(("likelihood", "posterior", "latent_bits", "x"))] = _hostile(r)
        elif k == 3 and isinstance(h.get("model"), dict):
            h["model"][r.choice(("name", "sha256"))] = _hostile(r)
        elif k == 4 and isinstance(h.get(name), int) and not isinstance(h.get(name), bool):
            h[name] = h[name] + r.choice((-2, -1, 1, 2, 1000))    # plausible off-by-one edits
        else:
            h[name] = _hostile(r)
    try:
        text = json.dumps(h, sort_keys=r.int(0, 1) == 1).encode()
    except ValueError:
        text = head
    return forge(text, payload)


def m_header_raw(blob, r, seeds):
    head, payload = split(blob)
    k = r.int(0, 5)
    if k == 4:    # version 2 with damaged zlib data
        return forge(_flip_bits(zlib.compress(head), r), payload, deflate=False)
    if k == 5:    # version 2 zlib bomb / oversized or truncated stream
        bomb = zlib.compress(b" " * r.choice((2**20, 2**20 + 1, 2**24)), 9)
        return forge(r.choice((bomb, bomb[: len(bomb) // 2], zlib.compress(head) + b"x")), payload, deflate=False)
    if k == 0:
        head = _flip_bits(head, r)
    elif k == 1:
        head = head[: r.int(0, len(head))]
    elif k == 2:
        depth = r.int(1, 50_000)
        head = b"[" * depth + b"]" * depth
    else:
        head = r.choice((b"", b"null", b"[]", b"1", b'"x"', b"\xff\xfe", b"{" * 10, b'{"n": 1e999}', b"NaN"))
    return forge(head, payload, version=r.choice((1, None)))


def m_lengths(blob, r, seeds):
    head, payload = split(blob)
    if r.int(0, 1):
        hlen = r.choice((0, 1, len(head) - 1, len(head) + 1, 2**20, 2**20 + 1, 2**32 - 1, r.int(0, 2**32 - 1)))
        return forge(head, payload, hlen=hlen)
    plen = r.choice((0, 1, len(payload) - 1, len(payload) + 1, 2**32, 2**63, 2**64 - 1, r.int(0, 2**64 - 1)))
    return forge(head, payload, plen=plen)


def m_version(blob, r, seeds):
    head, payload = split(blob)
    return forge(head, payload, version=r.choice((0, 4, 255, 65535)))


def m_lanes(blob, r, seeds):
    head, payload = split(blob)
    parsed = split_lanes(payload)
    if parsed is None:
        return m_byte_edit_sealed(blob, r, seeds)
    count, lanes, tail = parsed
    lanes = list(lanes)
    k = r.int(0, 8)
    if k == 0 and len(lanes) > 1:                       # swap two lanes
        i, j = r.int(0, len(lanes) - 1), r.int(0, len(lanes) - 1)
        lanes[i], lanes[j] = lanes[j], lanes[i]
        if i == j:
            lanes.reverse()
        return forge(head, join_lanes(lanes) + tail)
    if k == 1:                                          # edit a head
        i = r.int(0, len(lanes) - 1)
        h, w = lanes[i]
        h = r.choice((0, 1, 2**31 - 1, 2**31, 2**63 - 1, 2**63, 2**64 - 1, h ^ (1 << r.int(0, 63)), h + 1))
        lanes[i] = (h, w)
        return forge(head, join_lanes(lanes) + tail)
    if k == 2:                                          # lie about a word count
        i = r.int(0, len(lanes) - 1)
        payload = bytearray(join_lanes(lanes) + tail)
        pos = sum(12 + len(w) for _, w in lanes[:i]) + 8
        struct.pack_into("<I", payload, pos, r.choice((0, 1, 2**31, 2**32 - 1, len(lanes[i][1]) // 4 + r.choice((-1, 1)))))
        return forge(head, bytes(payload))
    if k == 3:                                          # a frame where none belongs
        return forge(head, join_lanes(lanes, r.choice((0, 1, 2, len(lanes) + 1, 2**16, 2**20, 2**32 - 1))) + tail)
    if k == 4 and len(lanes) > 1:                       # drop a lane
        del lanes[r.int(0, len(lanes) - 1)]
        return forge(head, join_lanes(lanes) + tail)
    if k == 5:                                          # duplicate a lane
        lanes.insert(r.int(0, len(lanes)), lanes[r.int(0, len(lanes) - 1)])
        return forge(head, join_lanes(lanes) + tail)
    if k == 6:                                          # flip bits inside one lane's words
        i = r.int(0, len(lanes) - 1)
        h, w = lanes[i]
        lanes[i] = (h, _flip_bits(w, r) if w else w)
        return forge(head, join_lanes(lanes) + tail)
    if k == 7:                                          # drop / add words at the top of a stack
        i = r.int(0, len(lanes) - 1)
        h, w = lanes[i]
        w = w[: max(0, len(w) - 4 * r.int(1, 3))] if r.int(0, 1) else w + r.bytes(4 * r.int(1, 3))
        lanes[i] = (h, w)
        return forge(head, join_lanes(lanes) + tail)
    return forge(head, _flip_bits(payload, r))           # payload bits, re-sealed


def m_splice(blob, r, seeds):
    other = r.choice(seeds)["blob"]
    h1, p1 = split(blob)
    h2, p2 = split(other)
    if r.int(0, 1):
        return forge(h1, p2)                            # right header, wrong payload
    cut = r.int(0, min(len(blob), len(other)) - 1)
    return blob[:cut] + other[cut:]


MUTATIONS = {f.__name__[2:]: f for f in (
    m_bitflip_raw, m_bitflip_sealed, m_byte_edit_sealed, m_truncate, m_truncate_sealed, m_extend,
    m_extend_sealed, m_header_field, m_header_raw, m_lengths, m_version, m_lanes, m_splice)}
# Weights: the sealed structural edits reach the deepest code, so they get most cases.
WEIGHTS = {"bitflip_raw": 3, "bitflip_sealed": 8, "byte_edit_sealed": 6, "truncate": 3, "truncate_sealed": 4,
           "extend": 2, "extend_sealed": 3, "header_field": 30, "header_raw": 4, "lengths": 5, "version": 1,
           "lanes": 28, "splice": 3}
_TABLE = [name for name, w in WEIGHTS.items() for _ in range(w)]


def mutate(seeds, r: Rand):
    """(seed index, [mutation names], mutated bytes): one to three stacked mutations."""
    si = r.int(0, len(seeds) - 1)
    blob = seeds[si]["blob"]
    names = []
    for _ in range(r.choice((1, 1, 1, 2, 3))):
        name = r.choice(_TABLE)
        try:
            blob = MUTATIONS[name](blob, r, seeds)
        except (ValueError, struct.error, IndexError, KeyError, TypeError, RecursionError, AttributeError):
            # a structural mutation on an already-broken file: fall back to a raw flip
            name, blob = "bitflip_raw", m_bitflip_raw(blob, r, seeds) if blob else b"\x00"
        names.append(name)
    return si, names, blob


def make_case(seeds, run_seed: int, i: int):
    return mutate(seeds, Rand((run_seed << 32) ^ i))


# ----------------------------------------------------------------------------- seeds and oracle
def make_seeds(models=None):
    """Small valid files: for each model, (n, lanes) in a few shapes, K = 0."""
    import numpy as np

    import bitsback
    from bitsback import datasets

    grey = datasets.load(DATA)[:8]
    seeds = []
    for name in models or available_models():
        codec = bitsback.load(model_path(name), device="cpu")
        x_all = datasets.binarize(grey) if codec.model.levels == 2 else grey
        for n, lanes, start in ((1, 1, 0), (2, 2, 1), (3, 2, 3), (3, 3, 5)):
            codec.lanes = lanes
            x = np.ascontiguousarray(x_all[start : start + n])
            seeds.append({"model": name, "blob": codec.compress(x), "images": x})
        codec.lanes = None
    return seeds


class Oracle:
    """Decodes a blob with the codec of the model its seed came from; classifies the outcome."""

    def __init__(self, seeds, limits=None):
        import bitsback
        from bitsback import container

        self.seeds = seeds
        self.limits = limits or container.DEFAULT_LIMITS
        self.codecs = {s["model"]: None for s in seeds}
        for name in self.codecs:
            self.codecs[name] = bitsback.load(model_path(name), device="cpu")

    def __call__(self, si: int, blob: bytes) -> str:
        import numpy as np

        from bitsback.codec import info
        from bitsback.errors import BitsbackError

        seed = self.seeds[si]
        try:
            info(blob)                                   # the header-only path must agree too
            out = self.codecs[seed["model"]].decompress(blob, limits=self.limits)
        except BitsbackError as e:
            return type(e).__name__
        except Exception as e:  # noqa: BLE001 - anything else is a finding
            return f"undocumented:{type(e).__name__}"
        # A splice can turn one seed into another complete, valid seed file: decoding that
        # file exactly is right. Wrong output means images that no seed file holds.
        for s in (seed, *self.seeds):
            if isinstance(out, np.ndarray) and out.shape == s["images"].shape and np.array_equal(out, s["images"]):
                return "exact"
        return "wrong_output"


# ----------------------------------------------------------------------------- worker pool
def _worker(conn, run_seed, max_mem_mb, models):
    if max_mem_mb and "libasan" not in os.environ.get("LD_PRELOAD", ""):   # ASan maps terabytes of shadow
        lim = max_mem_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    seeds = make_seeds(models)
    oracle = Oracle(seeds)
    conn.send(("ready", None))
    while True:
        msg = conn.recv()
        if msg is None:
            return
        for i in msg:
            si, names, blob = make_case(seeds, run_seed, i)
            outcome = oracle(si, blob)
            if outcome == "undocumented:MemoryError":
                outcome = "memory"
            conn.send((i, outcome))


class Pool:
    def __init__(self, workers, run_seed, timeout, max_mem_mb, models):
        self.ctx = get_context("spawn")
        self.args = (run_seed, max_mem_mb, models)
        self.timeout = timeout
        self.procs = [self._start() for _ in range(workers)]

    def _start(self):
        parent, child = self.ctx.Pipe()
        p = self.ctx.Process(target=_worker, args=(child, *self.args), daemon=True)
        p.start()
        child.close()
        if not parent.poll(300):
            raise RuntimeError("fuzz worker did not start")
        tag, _ = parent.recv()
        assert tag == "ready"
        return [p, parent, []]          # process, pipe, pending case ids

    def run(self, case_ids, chunk=25, on_result=None):
        todo = list(case_ids)[::-1]
        results = {}
        while todo or any(w[2] for w in self.procs):
            for w in self.procs:
                if not w[2] and todo:
                    ids = [todo.pop() for _ in range(min(chunk, len(todo)))]
                    w[2] = ids
                    w[1].send(ids)
            for k, w in enumerate(self.procs):
                if not w[2]:
                    continue
                proc, conn, pending = w
                try:
                    ready = conn.poll(self.timeout)
                    if ready:
                        i, outcome = conn.recv()
                        pending.remove(i)
                        results[i] = outcome
                        if on_result:
                            on_result(i, outcome)
                        continue
                    bad = "hang"
                except (EOFError, OSError):
                    bad = "crash"
                i = pending.pop(0)
                if bad == "crash":
                    proc.join(5)
                    if proc.exitcode is not None and proc.exitcode == 0:
                        bad = "crash"
                else:
                    proc.kill()
                    proc.join(5)
                results[i] = bad
                if on_result:
                    on_result(i, bad)
                todo.extend(pending[::-1])              # re-run the rest of the chunk
                conn.close()
                self.procs[k] = self._start()
        return results

    def close(self):
        for p, conn, _ in self.procs:
            try:
                conn.send(None)
            except OSError:
                pass
            p.join(5)
            if p.is_alive():
                p.kill()


def _claims_k_steps(blob) -> bool:
    from bitsback import container

    try:
        return container.unpack(blob)[0]["k_steps"] > 0
    except Exception:  # noqa: BLE001
        return False


def run(cases, workers=2, run_seed=0, timeout=20.0, max_mem_mb=4096, artifacts=None, models=None, progress=False):
    """Fuzz ``cases`` mutated files; return the summary dict (see module docstring)."""
    models = models or available_models()
    if not models:
        raise RuntimeError("no bundled model found (src/bitsback/zoo/mnist-binary, mnist-grey)")
    t0 = time.time()
    counts = Counter()
    by_mutation = Counter()
    bad_cases = []
    seeds_here = None

    def on_result(i, outcome):
        nonlocal seeds_here
        if outcome in BAD or outcome.startswith("undocumented:"):
            if seeds_here is None:
                seeds_here = make_seeds(models)
            si, names, blob = make_case(seeds_here, run_seed, i)
            if outcome == "hang" and _claims_k_steps(blob):
                # Not a loop that never ends: the file asks for K Adam steps per image
                # (up to Limits.max_k_steps) and gets them. Counted apart; see RELIABILITY.md F5.
                outcome = "slow_k_steps"
        counts[outcome] += 1
        if outcome in BAD or outcome.startswith("undocumented:") or outcome == "slow_k_steps":
            bad_cases.append({"case": i, "outcome": outcome, "mutations": names, "seed": si})
            by_mutation[",".join(names)] += 1
            if artifacts:
                Path(artifacts).mkdir(parents=True, exist_ok=True)
                (Path(artifacts) / f"case-{run_seed}-{i}-{outcome.replace(':', '_')}.bba").write_bytes(blob)
        done = sum(counts.values())
        if progress and done % 5000 == 0:
            print(f"{done} cases, {time.time() - t0:.0f} s: {dict(counts)}", file=sys.stderr, flush=True)

    pool = Pool(workers, run_seed, timeout, max_mem_mb, models)
    try:
        pool.run(range(cases), on_result=on_result)
    finally:
        pool.close()
    bad = sum(v for k, v in counts.items() if k in BAD or k.startswith("undocumented:"))
    return {
        "cases": sum(counts.values()),
        "seconds": round(time.time() - t0, 1),
        "workers": workers,
        "run_seed": run_seed,
        "models": models,
        "outcomes": dict(sorted(counts.items(), key=lambda kv: -kv[1])),
        "exact": counts.get("exact", 0),
        "crash": counts.get("crash", 0),
        "hang": counts.get("hang", 0),
        "memory": counts.get("memory", 0),
        "slow_k_steps": counts.get("slow_k_steps", 0),
        "wrong_output": counts.get("wrong_output", 0),
        "undocumented": sum(v for k, v in counts.items() if k.startswith("undocumented:")),
        "bad": bad,
        "bad_cases": bad_cases[:50],
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="run seed: case i of seed s is always the same file")
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds per case before it counts as a hang")
    ap.add_argument("--max-mem-mb", type=int, default=4096, help="address-space limit per worker (0: none)")
    ap.add_argument("--artifacts", default="fuzz-artifacts", help="folder for files that crashed/hung/misdecoded")
    ap.add_argument("--models", nargs="*", default=None)
    ap.add_argument("--replay", default=None, help="decode one file in this process and print the outcome")
    ap.add_argument("--case", type=int, default=None, help="regenerate case i of --seed into --artifacts and exit")
    a = ap.parse_args(argv)
    if a.replay or a.case is not None:
        seeds = make_seeds(a.models)
        if a.case is not None:
            si, names, blob = make_case(seeds, a.seed, a.case)
            print(json.dumps({"case": a.case, "seed_file": si, "mutations": names,
                              "outcome": Oracle(seeds)(si, blob)}))
            return 0
        blob = Path(a.replay).read_bytes()
        oracle = Oracle(seeds)
        print(json.dumps({si: oracle(si, blob) for si in range(len(seeds))}))
        return 0
    summary = run(a.cases, a.workers, a.seed, a.timeout, a.max_mem_mb, a.artifacts, a.models, progress=True)
    print(json.dumps(summary))
    return 1 if summary["bad"] else 0


if __name__ == "__main__":
    sys.exit(main())
