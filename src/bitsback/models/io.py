"""Rebuild torch modules from a shipped model folder (weights read from the ONNX initializers;
portable models get their integer layers, models/integer.py)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .vae import build_vae


def onnx_weights(path) -> dict:
    """{initializer name: float32 numpy array}; float16-stored weights are widened back."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    out = {}
    for init in proto.graph.initializer:
        name = init.name[:-len("__fp16")] if init.name.endswith("__fp16") else init.name
        out[name] = numpy_helper.to_array(init).astype(np.float32)
    return out


def _fill(module: torch.nn.Module, weights: dict, path):
    sd = module.state_dict()
    sd = {k: v for k, v in sd.items() if not k.startswith("context.")}  # tables: context.npz
    missing = [k for k in sd if k not in weights]
    if missing:
        raise ValueError(f"{path}: ONNX file lacks initializers {missing[:5]} (was it exported by bitsback?)")
    new = {}
    for k, v in sd.items():
        w = weights[k]
        if tuple(w.shape) != tuple(v.shape):
            if w.T.shape == tuple(v.shape):  # Gemm with a folded transpose
                w = w.T
            else:
                raise ValueError(f"{path}: initializer {k} has shape {w.shape}, expected {tuple(v.shape)}")
        new[k] = torch.from_numpy(np.ascontiguousarray(w))
    module.load_state_dict(new, strict=False)   # strict but for context.*, checked above


def _unwrapped(weights: dict) -> dict:
    """Names as the bare decoder has them (a context decoder is exported wrapped: inner.*)."""
    return {k[len("inner."):] if k.startswith("inner.") else k: v for k, v in weights.items()}


def load_torch(model_dir):
    """(encoder, decoder, manifest) as torch modules with the exact shipped weights (eval mode)."""
    model_dir = Path(model_dir)
    manifest = json.loads((model_dir / "manifest.json").read_text())
    cfg = manifest.get("config")
    if not cfg:
        raise ValueError(f"{model_dir}: manifest has no 'config'; cannot rebuild torch modules")
    enc, dec = build_vae(cfg)
    arith = manifest.get("arithmetic") or {}
    if arith.get("kind") == "portable":   # integer layers, mirrored exactly (models/integer.py)
        from .integer import install

        enc, dec = install(enc, dec, model_dir / manifest["encoder"]["file"], model_dir / manifest["decoder"]["file"],
                           arith["z_shift"], arith["act_max"])
        if hasattr(dec, "context"):
            with np.load(model_dir / "context.npz") as tables:
                dec.context.load_tables(tables)
        return enc.eval(), dec.eval(), manifest
    _fill(enc, onnx_weights(model_dir / manifest["encoder"]["file"]), model_dir / "encoder.onnx")
    _fill(dec, _unwrapped(onnx_weights(model_dir / manifest["decoder"]["file"])), model_dir / "decoder.onnx")
    if hasattr(dec, "context"):
        with np.load(model_dir / "context.npz") as tables:
            dec.context.load_tables(tables)
    return enc.eval(), dec.eval(), manifest
