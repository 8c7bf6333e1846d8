"""Coding groups of shards in lockstep, and the checks that end a decode.

A shard is a contiguous range of images coded over its own lanes with its own generator
key (``plan.shard_seed``). ``encode_group`` / ``decode_group`` code several shards at
once: the lanes of all of them are gathered into one message set (each lane keeps its
key, so it codes exactly as in its own shard), so a step is one decoder batch and one
compiled call per coder family for the whole group. onnxruntime's per-row outputs do not
depend on the batch, so a shard's bytes do not depend on its group.

A decode ends checked: every lane back in its initial state and each shard's images
matching their digest (``ShardFailed``), and no lane run out of payload
(``PayloadExhausted``, looked for every EXHAUSTED_CHECK_STEPS steps). ``public_error``
turns both into the error a user sees, naming the runtime when it differs from the
encoder's; ``arithmetic_mismatch`` is the error of a file whose networks compute
differently here (found before decoding, by the fingerprint of a version-5 float file).
"""

from __future__ import annotations

import numpy as np

from .. import header as hdr
from .. import runtime
from .._rans import Messages
from ..errors import BitsbackError, CorruptMessageError, FormatError, IntegrityError, RuntimeMismatchError
from .plan import Layout, shard_seed
from .step import Step

# A decode checks every EXHAUSTED_CHECK_STEPS steps that no lane ran out of payload: a
# lane that ran dry goes on, boundedly, on generator words until the check (a check per
# step costs a range decode at batch 1 a few per cent).
EXHAUSTED_CHECK_STEPS = 64


class ShardFailed(Exception):
    """A shard failed a decode-time check (final state or digest); :func:`public_error`
    makes it an IntegrityError with the runtimes."""


class PayloadExhausted(CorruptMessageError):
    """A shard's decode ran out of payload: corrupt or forged, or decoded by a runtime
    whose network floats differ from the encoder's (then reported as IntegrityError, or
    RuntimeMismatchError for a file without an arithmetic record)."""

    def __init__(self, shard: int, step: int):
        super().__init__(f"shard {shard}: payload exhausted (found at step {step})")
        self.shard = shard


def encode_group(step: Step, parts, progress=None) -> list[bytes]:
    """Code several shards in lockstep; ``parts`` are ``(x, lanes, shard)``: a shard's
    images (n, dim) uint8, its lanes and its index. Returns each shard's stored payload."""
    s = step.settings
    own = [Messages(lanes, shard_seed(s.seed, shard)) for _, lanes, shard in parts]
    lay = Layout([(len(x), lanes, shard) for x, lanes, shard in parts])
    group = Messages.gather([(own[i], j) for i, j in lay.lanes])
    x_all = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    mu_all, sigma_all = step.encode_rows(x_all)
    if not s.k_steps:
        mu_all, sigma_all = step.active(mu_all), step.active(sigma_all)
    zbuf = step.z_rows(len(lay.lanes))
    for t in range(lay.steps):
        idx = lay.images(t)
        xs, mu, sigma = x_all[idx], mu_all[idx], sigma_all[idx]
        if s.k_steps:
            mu, sigma = _refine_step(step, lay, t, xs, mu, sigma)
            mu, sigma = step.active(mu), step.active(sigma)
        step.encode(group, xs, mu, sigma, zbuf)
        if progress:
            progress(len(idx))
    return [hdr.payload_of(Messages.gather([(group, r) for r in lay.rows_of(i)]).to_bytes(), s) for i in range(len(parts))]


def encode_digest(step: Step, parts, progress=None) -> tuple[list[bytes], list[str]]:
    """:func:`encode_group` plus each shard's digest for the header, both computed where
    the group is coded (a worker), not in the process that gathers them."""
    return encode_group(step, parts, progress), [hdr.shard_digest(p[0], step.settings.digest_chars) for p in parts]


def _refine_step(step: Step, lay: Layout, t: int, xs, mu, sigma):
    """K Adam steps, one shard's rows of step t at a time (as when coded alone)."""
    mu, sigma = mu.copy(), sigma.copy()
    for s, rows in lay.active_rows(t):
        mu[rows], sigma[rows] = step.refine(xs[rows], mu[rows], sigma[rows], (lay.shard[s] << 32) | t)
    return mu, sigma


def _messages(step: Step, part) -> Messages:
    payload, _, lanes, shard = part[:4]
    try:
        msgs = Messages.from_bytes(hdr.wire_of(payload, lanes, step.settings), shard_seed(step.settings.seed, shard))
    except CorruptMessageError:
        raise
    except (ValueError, MemoryError) as e:
        raise CorruptMessageError(f"shard {shard}: payload is malformed: {e}") from None
    if msgs.lanes != lanes:
        raise FormatError(f"shard {shard} holds {msgs.lanes} lanes, header says {lanes}")
    return msgs


def decode_group(step: Step, parts, progress=None) -> list[np.ndarray]:
    """Decode several shards in lockstep (the mirror of :func:`encode_group`); ``parts``
    are ``(payload, count, lanes, shard, digest, first)``: a shard's stored payload, images,
    lanes, index, digest and the index of its first image in the file. Returns its images
    (n, dim); raises ShardFailed or PayloadExhausted when a check fails."""
    own = [_messages(step, p) for p in parts]
    lay = Layout([(p[1], p[2], p[3]) for p in parts])
    group = Messages.gather([(own[s], j) for s, j in lay.lanes])
    x_all = np.empty((lay.total, step.model.dim), np.uint8)
    zbuf = step.z_rows(len(lay.lanes))
    for t in reversed(range(lay.steps)):
        idx = lay.images(t)
        xs, za = step.decode(group, len(idx), zbuf)
        x_all[idx] = xs
        mu, sigma = step.encode_rows(xs)
        if step.settings.k_steps:
            mu, sigma = _refine_step(step, lay, t, xs, mu, sigma)
        step.push_posterior(group, step.active(mu), step.active(sigma), za)
        if progress:
            progress(len(idx))
        if t % EXHAUSTED_CHECK_STEPS == 0:
            _check_drawn(group, lay, t)
    initial = group.lanes_initial()
    out = []
    for s, (_, n, _, shard, digest, first) in enumerate(parts):
        if not initial[lay.rows_of(s)].all():
            raise ShardFailed(f"shard {shard} did not end in its initial state")
        x = x_all[lay.base[s] : lay.base[s] + n]
        if hdr.shard_digest(x, len(digest)) != digest:
            raise ShardFailed(f"shard {shard} (images {first}..{first + n - 1}) does not match its recorded hash")
        out.append(x)
    return out


def _check_drawn(group, lay: Layout, t: int) -> None:
    """A correct decode only takes words the encoder emitted; a lane that drew from the
    generator ran out of payload: corrupt or forged."""
    drawn = group.words_drawn()
    if drawn.any():
        raise PayloadExhausted(lay.shard[lay.lanes[int(np.argmax(drawn > 0))][0]], t)


# What to do about a float file that computes differently here: said by both errors below.
ADVICE = ("Decode it on a machine like the one that made it (the same instruction set, onnxruntime release and "
          "execution provider); files made with a portable model (and K = 0) decode on any machine")


def integrity_error(what: str, header: dict, here: dict) -> BitsbackError:
    """A failed check of a decode of the file with ``header`` on runtime ``here``
    (runtime.describe), as the user sees it. A file that records no arithmetic (before
    version 5) decoded on a runtime that differs from its recorded one: RuntimeMismatchError
    (its float networks most likely computed differently here; the file is not blamed).
    Otherwise IntegrityError, naming both runtimes when they differ."""
    recorded = header["runtime"]
    differ = runtime.differences(recorded, here)
    if differ and hdr.arithmetic_of(header) is None:
        return RuntimeMismatchError(
            f"this file (format version {header['version']}) did not decode here ({what}); it records no fingerprint "
            f"of its networks' arithmetic, and it was made on {runtime.summary(recorded)}, while this machine is "
            f"{runtime.summary(here)} (they differ in {', '.join(differ[:6])}): float networks give the encoder's "
            "outputs only where they compute bit-identically, so the likely cause is the other runtime, not a "
            f"damaged file. {ADVICE}"
        )
    why = (f"; the file was made on runtime {runtime.summary(recorded)} and is decoded on {runtime.summary(here)}"
           if differ else "")
    return IntegrityError(f"decoded data failed its integrity check: {what}{why}")


def public_error(e: Exception, header: dict, here: dict) -> BitsbackError:
    """The error to raise for a ShardFailed or PayloadExhausted from a decode of the file
    with ``header`` on runtime ``here``. Exhaustion is corruption, unless the runtimes
    differ (a decoder whose floats differ drifts off the encoder's path and runs dry):
    then as :func:`integrity_error`."""
    if isinstance(e, PayloadExhausted):
        if not runtime.differences(header["runtime"], here):
            return CorruptMessageError(str(e))
        if hdr.arithmetic_of(header) is None:   # not "exhausted": the runtime is the suspect, not the payload
            return integrity_error(f"shard {e.shard} drifted off the encoder's path", header, here)
    return integrity_error(str(e), header, here)


def arithmetic_mismatch(header: dict, here: dict) -> RuntimeMismatchError:
    """The error of a float file whose networks compute differently here: its recorded
    fingerprint of the networks' outputs differs from this machine's (found before
    decoding: ``Codec.check_arithmetic``). ``here``: this machine's runtime.describe."""
    recorded = header["runtime"]
    same = not runtime.differences(recorded, here)
    return RuntimeMismatchError(
        f"this file was made with float network arithmetic on {runtime.summary(recorded)}; here the networks compute "
        f"differently ({runtime.summary(here)}): it decodes exactly only where the networks' outputs are "
        f"bit-identical to those. {ADVICE}"
        + (". The two runtimes are recorded alike: they differ in something the record does not name, or the "
           "file's header was edited" if same else "")
    )
