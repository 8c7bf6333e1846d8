"""Training checkpoints: what ``bitsback train`` writes and ``train`` / ``export`` read back.

A checkpoint is a ``torch.save``'d dict of plain data and tensors: ``config`` (for
:func:`bitsback.models.build_vae`), the ``encoder`` and ``decoder`` state dicts, ``meta``
(the stage, its options as a dict, ``preprocess``: a key of :data:`PREPROCESS`), and the
training record (epoch, val_bpd, history, best_val_bpd; ``last.pt`` also the optimizer
and RNG state for resuming). It holds no function or class of the program that wrote it,
so any program can read it.

Checkpoints written before that rule pickled argparse's ``func`` (``__main__.cmd_vae`` and
the like) in their options; :func:`read_ckpt` reads them without that entry.
"""
from __future__ import annotations

import pickle
import types

import numpy as np
import torch

from .. import datasets
from ..io.atomic import replacing
from .vae import build_vae

# How a checkpoint's images were turned into model input (meta["preprocess"]); the
# exported manifest records the same name for the codec.
PREPROCESS = {"binarize": lambda x: datasets.binarize(x), "none": lambda x: x,
              "stochastic": lambda x: datasets.binarize_stochastic(x, 0)}


def load_images(path, preprocess: str = "none", limit: int | None = None) -> torch.Tensor:
    """Load a dataset file (the first ``limit`` images when given) as float32 (N, D) raw
    symbol values after ``PREPROCESS[preprocess]``: the input a checkpoint's model takes."""
    x = datasets.load(path)
    if limit:
        x = x[:limit]
    x = PREPROCESS[preprocess](x)
    return torch.from_numpy(np.ascontiguousarray(x.reshape(len(x), -1)).astype(np.float32))


# ----------------------------------------------------------------------------- writing

_PLAIN = (str, int, float, bool, bytes, type(None), torch.Tensor)


def check_plain(obj, where: str = "checkpoint") -> None:
    """Raise TypeError unless ``obj`` is tensors and plain data (str, numbers, bool,
    bytes, None) nested in dicts, lists and tuples: what a checkpoint may hold."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            check_plain(k, where)
            check_plain(v, f"{where}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            check_plain(v, f"{where}[{i}]")
    elif not isinstance(obj, _PLAIN):
        raise TypeError(f"{where}: a checkpoint holds plain data and tensors only, not {type(obj).__name__}")


def plain_args(args) -> dict:
    """A parsed command line as checkpoint data: its options, without argparse's ``func``
    and without what a driver attached to it (names starting with ``_``, such as a
    progress callback)."""
    return {k: v for k, v in vars(args).items() if k != "func" and not k.startswith("_")}


def save_ckpt(path, **state) -> None:
    """Write ``state`` (plain data and tensors only, see :func:`check_plain`) to ``path``,
    replacing it, by the atomic-write rule of :mod:`bitsback.io.atomic`."""
    check_plain(state)
    with replacing(path, force=True) as tmp:
        torch.save(state, tmp)


# ----------------------------------------------------------------------------- reading

class MissingReference:
    """What a reference into ``__main__`` reads as: that was the program that wrote the
    checkpoint, not the one reading it. It stands for a function (argparse's ``func``); a
    checkpoint holding an object of a ``__main__`` class still cannot be read."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __repr__(self) -> str:
        return f"<missing {self.module}.{self.name}>"


class CheckpointUnpickler(pickle.Unpickler):
    """pickle's Unpickler, reading references into ``__main__`` as :class:`MissingReference`."""

    def find_class(self, module, name):
        if module == "__main__":
            return MissingReference(module, name)
        return super().find_class(module, name)


# torch.load's pickle_module: the Unpickler it subclasses, and load for the legacy format
_PICKLE = types.SimpleNamespace(__name__=__name__, Unpickler=CheckpointUnpickler,
                                load=lambda f, **kw: CheckpointUnpickler(f, **kw).load())


def _drop_missing(obj) -> None:
    """Remove, in place, the dict entries and list items of ``obj`` (nested) that are
    MissingReference: an old checkpoint's options then read as a new one's."""
    if isinstance(obj, dict):
        for k in [k for k, v in obj.items() if isinstance(v, MissingReference)]:
            del obj[k]
        for v in obj.values():
            _drop_missing(v)
    elif isinstance(obj, list):
        obj[:] = [v for v in obj if not isinstance(v, MissingReference)]
        for v in obj:
            _drop_missing(v)


def read_ckpt(path, device="cpu") -> dict:
    """The checkpoint dict at ``path``, its tensors on ``device``. Old checkpoints load
    too: their references to functions of ``__main__`` are left out (see the module doc)."""
    ck = torch.load(path, map_location=device, weights_only=False, pickle_module=_PICKLE)
    _drop_missing(ck)
    return ck


def build_modules(ck: dict):
    """(encoder, decoder) of a checkpoint dict with its weights, on the CPU."""
    enc, dec = build_vae(ck["config"])
    enc.load_state_dict(ck["encoder"])
    dec.load_state_dict(ck["decoder"])
    return enc, dec


def load_ckpt(path, device="cpu"):
    """Load a checkpoint -> (encoder, decoder, checkpoint dict), the modules on ``device``."""
    ck = read_ckpt(path, device)
    enc, dec = build_modules(ck)
    return enc.to(device), dec.to(device), ck
