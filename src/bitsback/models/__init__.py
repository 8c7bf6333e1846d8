"""Torch VAEs, likelihoods and loading of shipped models (torch is imported here only).

Public API
----------
build_vae(config) -> (encoder, decoder)                  (models/vae.py)
load_torch(model_dir) -> (encoder, decoder, manifest)    (models/io.py)
decoder_logprob / decoder_nll(likelihood, outputs, x) -> (B,) nats

Training checkpoints (save, load, the images their models take) live in
:mod:`bitsback.models.checkpoints`.
"""
from __future__ import annotations

from .likelihoods import (LOG_SCALE_MAX, LOG_SCALE_MIN, OUTPUT_NAMES, decoder_logprob,
                          decoder_nll, sample)
from .context import make_spec
from .mlp import MLPDecoder, MLPEncoder
from .resnet import ResNetDecoder, ResNetEncoder
from .vae import DEFAULT_CONFIG, build_vae
from .io import load_torch

__all__ = [
    "build_vae", "load_torch", "decoder_logprob", "decoder_nll", "sample", "OUTPUT_NAMES",
    "LOG_SCALE_MIN", "LOG_SCALE_MAX", "MLPEncoder", "MLPDecoder", "ResNetEncoder", "ResNetDecoder",
    "DEFAULT_CONFIG",
]
