"""Datasets larger than memory, on more than one core or machine.

A file's shards (groups of lanes over contiguous image ranges, see ``Codec.plan``) are
independent. Consecutive shards are grouped (``Codec.groups``: at least one group per
worker, at most GROUP_MAX_IMAGES images each) and each group is coded in lockstep by one
worker — a local process, or a task on a Ray cluster — while the parent reads inputs and
writes outputs in shard order. Memory is bounded by the groups in flight (about two per
worker), never by the dataset. The plan depends only on N and the codec settings, and a
shard's bytes do not depend on its group, so the bytes written do not depend on the
number of workers or the engine.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from collections import deque
from pathlib import Path

import numpy as np

from . import container, datasets, zoo
from . import header as hdr
from .bbans import shards
from .bbans.model import MODEL_PATH_ENV, Model, find, search_places
from .codec import Codec
from .errors import BitsbackError, FormatError, InputError
from .io import atomic
from .io.sources import open_source  # noqa: F401  (the CLI opens its inputs through here)

ENGINES = ("local", "ray")


# ---------------------------------------------------------------------------- workers
_worker_codec: Codec | None = None


def _settings(codec: Codec) -> dict:
    return {
        "model": str(codec.model.dir), "device": codec.device, "k_steps": codec.k_steps, "lr": codec.lr,
        "lanes": codec.lanes, "seed": codec.seed, "workers": 1,
    }


def _init(settings, parent):
    global _worker_codec
    _die_with(parent)
    _worker_codec = Codec(**settings)


def _die_with(parent: int) -> None:
    """Make a worker end when its parent does (kill -9 of the parent must not leave
    workers blocked forever): Linux's PR_SET_PDEATHSIG, then a check for a parent that
    died before it was set."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass
    if os.getppid() != parent:
        os._exit(1)


def _encode(parts):
    """parts: [(x, lanes, shard), ...] -> (each shard's bytes, each shard's digest)."""
    return _worker_codec.encode_digest(parts)


# Images between the parent and forked workers: through anonymous shared memory mapped
# before the workers fork (_Slots), not pickled through a pipe. A 30 000-image group is
# 23.5 MB: pickled, it took ~0.2 s of the parent and the worker each way, serial with the
# coding (the first worker started 0.34 s into a 60 000-image compress, and the parent
# unpickling one worker's images slowed the other). A job names its slot; the parent
# owns a slot from the job's submission until the result has been used.
_slots = None
_slots_lock = threading.Lock()


class _Slots:
    """``count`` byte ranges of ``size`` bytes in one MAP_SHARED anonymous mapping."""

    def __init__(self, count: int, size: int):
        import mmap

        self.size = max(1, size)
        self.mem = mmap.mmap(-1, count * self.size)
        self.free = list(range(count))

    def views(self, slot: int, shapes) -> list[np.ndarray]:
        """uint8 arrays of the given shapes, one after another from the start of ``slot``."""
        out, off = [], slot * self.size
        for shape in shapes:
            n = int(np.prod(shape))
            if off + n > (slot + 1) * self.size:
                raise BitsbackError("shared slot overflow")  # a planning bug, never data
            out.append(np.frombuffer(self.mem, np.uint8, n, off).reshape(shape))
            off += n
        return out


def _encode_slot(slot, parts):
    """parts: [(shape, lanes, shard), ...], the images one after another in shared slot ``slot``."""
    xs = _slots.views(slot, [shape for shape, _, _ in parts])
    return _encode([(x, lanes, g) for x, (_, lanes, g) in zip(xs, parts)])


def _decode_slot(slot, header, parts):
    """_decode, the shards' images written one after another to shared slot ``slot``;
    returns their shapes."""
    xs = _decode(header, parts)
    for view, x in zip(_slots.views(slot, [x.shape for x in xs]), xs):
        view[...] = x
    return [x.shape for x in xs]


def _decode(header, parts):
    """parts: [(payload, count, lanes, shard, digest, first), ...] -> each shard's images."""
    dec = _worker_codec.for_header(header)
    try:
        return dec.decode_group(parts)
    except (shards.ShardFailed, shards.PayloadExhausted) as e:
        raise shards.public_error(e, header, dec.runtime) from None


class _Pool:
    """Ordered map over jobs (groups of shards) with a bounded number in flight."""

    def __init__(self, codec: Codec, workers: int, engine: str, address=None):
        self.workers = max(1, workers)
        self._started, self._drained, self._own_slots = False, False, None
        self.engine = engine
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}")
        settings = _settings(codec)
        if engine == "ray":
            try:
                import ray
            except ImportError:
                raise BitsbackError("the Ray engine needs Ray: pip install 'bitsback[ray]'") from None
            if not ray.is_initialized():
                ray.init(address=address, ignore_reinit_error=True, log_to_driver=False, include_dashboard=False)
            self._ray = ray
            self._enc = ray.remote(_ray_encode)
            self._dec = ray.remote(_ray_decode)
            self._settings = ray.put(settings)
            self.workers = max(self.workers, int(ray.cluster_resources().get("CPU", 1)))
        elif self.workers > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            self._ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            self._pool = ProcessPoolExecutor(self.workers, mp_context=self._ctx, initializer=_init, initargs=(settings, os.getpid()))
        else:
            self._local = codec

    def start(self, group_bytes: int = 0) -> None:
        """Start the workers now, before the parent reads the first group, so that forking
        them and loading their codecs overlaps that reading instead of following it.
        ``group_bytes``: the most image bytes in one job; when given, forked local workers
        get and return images through shared slots (a decode's images are then views into
        a slot, valid until the next result is asked for), mapped here, before the fork."""
        global _slots
        if not hasattr(self, "_pool") or self._started:
            return
        with _slots_lock:       # one pool at a time maps slots; another pickles
            if group_bytes and self._forks and _slots is None:
                try:                # a header may claim huge shards: then pickle instead
                    _slots = self._own_slots = _Slots(2 * self.workers, group_bytes)
                except (OSError, ValueError, OverflowError, MemoryError):
                    pass
        self._started = True
        self._pool.submit(os.getpid)    # forks every worker (a fork pool starts all at its first submit)

    def map(self, kind: str, jobs):
        """Yield results of ``kind`` ('encode'/'decode') jobs in order, ≤ 2 per worker in
        flight."""
        pending = deque()
        it = iter(jobs)
        limit = 2 * self.workers
        held = None
        while True:
            if held is not None:        # the consumer is done with the last result
                self._own_slots.free.append(held)
                held = None
            while len(pending) < limit:
                job = next(it, None)
                if job is None:
                    break
                pending.append(self._submit(kind, job))
            if not pending:
                self._drained = True
                return
            result, held = self._result(kind, pending.popleft())
            yield result

    @property
    def _forks(self) -> bool:
        return hasattr(self, "_pool") and self._ctx.get_start_method() == "fork"

    def _submit(self, kind, job):
        """Start one job. An encode job is (image bytes, fill): ``fill(out)`` reads the
        group's images into ``out`` (a shared slot when there is one: no copy) and returns
        its parts. A decode job is _decode's arguments."""
        self.start()
        slots = self._own_slots
        if kind == "encode":
            nbytes, fill = job
            if slots is not None:
                slot = slots.free.pop()
                try:
                    parts = fill(slots.views(slot, [(nbytes,)])[0])
                except BaseException:
                    slots.free.append(slot)
                    raise
                return self._pool.submit(_encode_slot, slot, [(x.shape, lanes, g) for x, lanes, g in parts]), slot
            job = (fill(np.empty(nbytes, np.uint8)),)
        if self.engine == "ray":
            fn = self._enc if kind == "encode" else self._dec
            return fn.remote(self._settings, *job), None
        if not hasattr(self, "_pool"):
            return job, None
        if slots is None:
            return self._pool.submit(_encode if kind == "encode" else _decode, *job), None
        slot = slots.free.pop()
        return self._pool.submit(_decode_slot, slot, *job), slot

    def _result(self, kind, handle):
        """(result, the slot it holds or None)."""
        handle, slot = handle
        if self.engine == "ray":
            try:
                return self._ray.get(handle), None
            except self._ray.exceptions.RayTaskError as e:
                cause = getattr(e, "cause", None)
                raise (cause if isinstance(cause, BitsbackError) else BitsbackError(str(e))) from None
        if hasattr(self, "_pool"):
            if slot is None:
                return handle.result(), None
            try:
                r = handle.result()
            except BaseException:
                self._own_slots.free.append(slot)
                raise
            if kind == "encode":            # the worker has read its images
                self._own_slots.free.append(slot)
                return r, None
            return self._own_slots.views(slot, r), slot     # decode: each shard's images, in the slot
        global _worker_codec
        _worker_codec = self._local
        return (_encode if kind == "encode" else _decode)(*handle), None

    def close(self):
        global _slots
        if hasattr(self, "_pool"):
            # Waits for the workers to exit unless every job's result is in (then none can
            # write a slot any more): joining them costs the caller tens of ms.
            self._pool.shutdown(wait=not self._drained, cancel_futures=True)
        if self._own_slots is not None:
            with _slots_lock:
                _slots = self._own_slots = None         # unmapped when the last view goes


_ray_codecs: dict = {}


def _ray_codec(settings):
    key = tuple(sorted((k, str(v)) for k, v in settings.items()))
    c = _ray_codecs.get(key)
    if c is None:
        c = _ray_codecs[key] = Codec(**settings)
    return c


def _ray_encode(settings, parts):
    return _ray_codec(settings).encode_digest(parts)


def _ray_decode(settings, header, parts):
    global _worker_codec
    _worker_codec = _ray_codec(settings)
    return _decode(header, parts)


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# ---------------------------------------------------------------------------- compress
# Images read to pick a bundled model when none is given: enough to tell 0/1 images from
# grey ones without reading a large input twice. A later image with more levels than the
# picked model codes stops the compress with an InputError naming the model.
PICK_SAMPLE = 1024


def pick_model(inputs, binarize: bool = False) -> str:
    """The bundled model that fits the first images of ``inputs`` (``zoo.pick``)."""
    from . import zoo

    src = open_source(list(inputs) if isinstance(inputs, (list, tuple)) else inputs)
    k = min(src.n, PICK_SAMPLE)
    x = src.read(0, k, np.empty(k * int(np.prod(src.shape)), np.uint8))
    return zoo.pick(src.shape, 1 if binarize else int(x.max(initial=0)))


def compress(inputs, dst, model=None, *, workers=None, engine="local", address=None, binarize=False,
             force=False, verify=None, progress=None, **codec_args) -> dict:
    """Compress one or more dataset files to ``dst`` shard by shard, in bounded memory.

    The output is written to a temporary file beside ``dst`` and renamed into place
    only when complete (and, with ``verify``, decoded and checked first); an existing
    ``dst`` is kept unless ``force``. ``verify=None``: verify when the networks run on
    CUDA (``Codec.verifies_by_default``). ``model=None``: the bundled model that fits the
    input (:func:`pick_model`).
    """
    dst = Path(dst)
    srcs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
    atomic.check_destination(dst, force, srcs)
    if model is None:
        model = pick_model(srcs, binarize)
    codec = Codec(model, workers=1, **codec_args)
    src = open_source(list(srcs))
    if src.shape != codec.model.shape:
        raise InputError(f"model {codec.model.name} codes images of shape {codec.model.shape}; input has {src.shape}")
    n = src.n
    if n == 0:
        raise InputError("no images to compress")
    plan = codec.plan(n)
    data_hash, digests, lens = hashlib.sha256(), [], []
    # No more local workers than shards: a one-shard input is coded in this process, not
    # by a forked worker that would load the model again (80 ms of a 64-image command).
    pool = _Pool(codec, min(workers or default_workers(), len(plan)), engine, address)
    groups = codec.groups(plan, pool.workers)
    counts = [sum(plan[g][0] for g in group) for group in groups]
    dim = codec.model.dim

    def jobs():
        """One job per group: its image bytes, and how to read the group into a buffer."""
        lo = 0
        for group, count in zip(groups, counts):

            def fill(out, lo=lo, count=count, group=group):
                x = src.read(lo, lo + count, out)
                if binarize:
                    datasets.binarize(x, out=x)
                x = codec.model.check_images(x).reshape(count, dim)    # uint8 already: checked, not copied
                data_hash.update(x.reshape(-1))
                xs = np.split(x, np.cumsum([plan[g][0] for g in group])[:-1])
                return [(xg, plan[g][1], g) for xg, g in zip(xs, group)]

            yield count * dim, fill
            lo += count

    with tempfile.TemporaryFile(dir=dst.parent) as payload:
        try:
            pool.start(max(counts) * dim)
            for group, (blobs, shard_digests) in zip(groups, pool.map("encode", jobs())):
                digests += shard_digests
                for g, blob in zip(group, blobs):
                    payload.write(blob)
                    lens.append(len(blob))
                    if progress:
                        progress(plan[g][0])
        finally:
            pool.close()
        header = codec.header(n, plan, lens, digests, data_hash.hexdigest())
        payload.seek(0)
        check = None
        if verify is None:
            verify = codec.verifies_by_default
        if verify:
            def check(tmp):
                decompress(tmp, None, model=str(codec.model.dir), workers=workers, engine=engine, address=address,
                           device=codec.device)
        with atomic.replacing(dst, force, srcs, check) as tmp, open(tmp, "wb") as f:
            h = hashlib.sha256(prefix := container.prefix(header, sum(lens)))
            f.write(prefix)
            while chunk := payload.read(1 << 20):
                h.update(chunk)
                f.write(chunk)
            f.write(h.digest())
    size = dst.stat().st_size
    return {"n_images": n, "bytes": size, "bits_per_dim": 8 * size / (n * dim), "lanes": header["lanes"],
            "shards": len(plan), "verified": bool(verify), "model": codec.model.name}


# ---------------------------------------------------------------------------- decompress
def model_for(header: dict, src=None) -> str:
    """The model folder (or bundled name) to decode a file with, from what its header names:
    a bundled model, or an earlier version of one kept in zoo/legacy; else a folder of
    that name and sha256 found where :func:`bbans.model.search_places` looks (the folder
    recorded at compress time, $BITSBACK_MODEL_PATH, the file's own folder). Raises
    UnknownModelError saying to pass --model DIR when none is found."""
    name, sha = header["model"]["name"], header["model"]["sha256"]
    legacy = zoo.for_file(name, sha)
    if legacy != name:
        return legacy
    bundled = name in zoo.list_models()
    # a bundled model's file records no folder: no search (and no hashing) on that path
    if bundled and ("dir" not in header["model"] or Model(zoo.model_dir(name)).sha256 == sha):
        return name
    places = search_places(header["model"].get("dir"), None if src is None else Path(src).resolve().parent)
    found = find(name, sha, places)
    if found is not None:
        return str(found)
    if bundled:
        return name        # the codec's ModelMismatchError says the bundled model has changed
    where = ", ".join(str(p) for p in places) or "nowhere"
    raise zoo.UnknownModelError(
        f"the file was made with model {name!r} (sha256 {sha[:12]}…), which is not bundled and was not found in: "
        f"{where}. Pass --model DIR with the model's folder (the one `bitsback fit` or `bitsback export` made), "
        f"or list folders of models in ${MODEL_PATH_ENV}")


def decompress(src, dst, model=None, *, workers=None, engine="local", address=None, start=None, stop=None,
               force=False, progress=None, limits: container.Limits = container.DEFAULT_LIMITS, **codec_args) -> dict:
    """Decode ``src`` (or the image range [start, stop)) to ``dst`` shard by shard.

    A whole-file decode first streams the file through its checksum; a range decode reads
    only the header and the shards that hold the range, each checked by its own hash.
    """
    src = Path(src)
    dst = None if dst is None else Path(dst)
    if dst is not None:
        atomic.check_destination(dst, force, [src])
    size = src.stat().st_size
    with open(src, "rb") as f:
        header, pstart, _ = container.read_header(f, size, limits)
        lo, hi = hdr.image_range(header, start, stop)
        whole = (lo, hi) == (0, header["n"])
        if whole:
            container.verify_checksum(f, size)
        codec = Codec(model or model_for(header, src), workers=1, **codec_args).for_header(header)
        jobs = hdr.shard_refs(header, lo, hi)

        out_shape = (hi - lo, *codec.model.shape)
        writer = _Writer(dst, out_shape, force) if dst is not None else _Discard()
        pool = _Pool(codec, min(workers or default_workers(), max(1, len(jobs))), engine, address)
        groups = [[jobs[i] for i in gr] for gr in codec.groups([(j.count, j.lanes) for j in jobs], pool.workers)] if jobs else []

        def payloads():
            for group in groups:
                parts = []
                for r in group:
                    f.seek(pstart + r.offset)
                    data = f.read(r.nbytes)
                    if len(data) != r.nbytes:
                        raise FormatError("file is truncated")
                    parts.append((data, r.count, r.lanes, r.index, r.digest, r.first))
                yield (header, parts)

        data_hash = hashlib.sha256()
        try:
            pool.start(max((sum(r.count for r in group) for group in groups), default=0) * codec.model.dim)
            for group, xs in zip(groups, pool.map("decode", payloads())):
                for r, x in zip(group, xs):
                    a, b = max(lo, r.first), min(hi, r.first + r.count)
                    part = x.reshape((r.count, *codec.model.shape))[a - r.first : b - r.first]
                    data_hash.update(np.ascontiguousarray(part).reshape(-1))
                    writer.write(a - lo, part)
                    if progress:
                        progress(b - a)
            if whole and data_hash.hexdigest() != header["data_sha256"]:
                raise shards.integrity_error("the decoded images do not match the recorded sha256", header,
                                             codec.runtime)
            writer.commit()
        except BaseException:
            writer.abort()
            raise
        finally:
            pool.close()
    return {"n_images": hi - lo, "bytes": size, "output": None if dst is None else str(dst)}


class _Discard:
    """Decode only to check (compress --verify)."""

    def write(self, at, images):
        pass

    def commit(self):
        pass

    def abort(self):
        pass


class _Writer:
    """Writes decoded images to a temp file beside dst; renamed into place on commit.

    .npy is written through a memory map (bounded memory); other formats are gathered and
    written by ``datasets.save`` on commit.
    """

    def __init__(self, dst: Path, shape, force: bool):
        self.dst, self.shape, self.force = dst, shape, force
        self.streamed = dst.name.lower().endswith(".npy")
        if not self.streamed:
            self.array = np.empty(shape, np.uint8)
            return
        self.out = atomic.Pending(dst, force)
        try:
            self.array = np.lib.format.open_memmap(self.out.tmp, mode="w+", dtype=np.uint8, shape=shape)
            # open_memmap leaves a sparse file; a store into an unbacked page on a full
            # file system would kill the process with SIGBUS. Reserve every block now so
            # a full disk is a clean ENOSPC before anything is decoded.
            with open(self.out.tmp, "rb+") as f:
                os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        except BaseException:
            self.array = None
            self.out.abort()
            raise

    def write(self, at: int, images: np.ndarray) -> None:
        self.array[at : at + len(images)] = images

    def commit(self) -> None:
        if self.streamed:
            self.array.flush()
            del self.array
            self.out.commit()
        else:
            atomic.check_destination(self.dst, self.force)
            if self.force and self.dst.is_dir():
                shutil.rmtree(self.dst)
            elif self.force and self.dst.exists():
                self.dst.unlink()
            datasets.save(self.dst, self.array)

    def abort(self) -> None:
        self.array = None
        if self.streamed:
            self.out.abort()
