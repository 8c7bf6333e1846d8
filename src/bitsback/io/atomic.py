"""The one rule by which bitsback writes a file: complete, or not at all.

Every output (a .bba file, decoded images, an exported model's files, a training
checkpoint) is written to a hidden temporary file in the destination's folder and
renamed over the destination with ``os.replace`` only once it is complete (and, where
asked, checked). A crash, a full disk or an exception at any point leaves either the old
file or the new one, never a partial one; the temporary file is removed on failure. An
existing destination is kept unless ``force``, and a destination that is one of the
command's inputs is refused whatever ``force`` says.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from pathlib import Path

from ..errors import BitsbackError


def same_file(a, b) -> bool:
    """Whether two paths name the same existing file."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_destination(dst, force: bool = False, inputs=()) -> None:
    """Refuse a destination that is an input, or that exists when not ``force``."""
    dst = Path(dst)
    for src in inputs:
        if same_file(src, dst):
            raise BitsbackError(f"output {dst} is an input file; refusing to overwrite it")
    if dst.exists() and not force:
        raise FileExistsError(f"{dst} exists; pass force=True (--force) to overwrite")


def temp_path(dst) -> Path:
    """The hidden temporary file beside ``dst``: one per process and thread, so that
    concurrent writers of the same destination never share it."""
    dst = Path(dst)
    return dst.with_name(f".{dst.name}.{os.getpid()}.{threading.get_ident()}.tmp")


class Pending:
    """An output being written: ``tmp`` until :meth:`commit` renames it to ``dst``, or
    :meth:`abort` removes it. For writers whose steps are spread over several calls (a
    decode writes images as shards finish); :func:`replacing` wraps it for one block."""

    def __init__(self, dst, force: bool = False, inputs=(), durable: bool = True):
        self.dst, self.force, self.durable = Path(dst), force, durable
        check_destination(self.dst, force, inputs)
        self.tmp = temp_path(self.dst)

    def commit(self, check=None) -> None:
        """Flush the temporary file to disk (``durable``), run ``check(tmp)`` if given,
        and rename it over the destination; on any failure remove it and re-raise."""
        try:
            if self.durable:
                with open(self.tmp, "rb+") as f:
                    os.fsync(f.fileno())
            if check is not None:
                check(self.tmp)
            if self.dst.exists() and not self.force:   # appeared while we wrote
                raise FileExistsError(f"{self.dst} exists; pass force=True (--force) to overwrite")
            os.replace(self.tmp, self.dst)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        self.tmp.unlink(missing_ok=True)


@contextmanager
def replacing(dst, force: bool = False, inputs=(), check=None, durable: bool = True):
    """``with replacing(dst) as tmp:`` write ``tmp``; on leaving the block it becomes
    ``dst`` (after ``check(tmp)``), or is removed if the block or the check raised."""
    out = Pending(dst, force, inputs, durable)
    try:
        yield out.tmp
    except BaseException:
        out.abort()
        raise
    out.commit(check)


def write_bytes(dst, data: bytes, force: bool = False, inputs=(), durable: bool = True) -> None:
    """Write ``data`` to ``dst`` by the rule above."""
    with replacing(dst, force, inputs, durable=durable) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
