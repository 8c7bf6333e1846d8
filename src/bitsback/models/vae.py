"""Architecture configs -> torch (encoder, decoder) modules."""
from __future__ import annotations

import numpy as np

from .context import make_spec
from .mlp import MLPDecoder, MLPEncoder
from .resnet import ResNetDecoder, ResNetEncoder

DEFAULT_CONFIG = {
    "arch": "mlp",
    "image_shape": [28, 28],
    "levels": 2,
    "likelihood": "bernoulli",
    "latent": 32,
    "hidden": [500, 500],
    "mixture": 1,
}


def build_vae(config: dict):
    """Build (encoder, decoder) from a config dict (see DEFAULT_CONFIG)."""
    cfg = {**DEFAULT_CONFIG, **config}
    dim = int(np.prod(cfg["image_shape"]))
    if cfg["arch"] == "mlp":
        enc = MLPEncoder(dim, cfg["latent"], cfg.get("enc_hidden") or cfg["hidden"], cfg["levels"], cfg.get("enc_rank", 0))
        ctx = cfg.get("context")
        if cfg["likelihood"].endswith("_context") and not ctx:
            ctx = make_spec(cfg["likelihood"], cfg["image_shape"])
        dec = MLPDecoder(dim, cfg["latent"], cfg["hidden"], cfg["likelihood"], cfg["mixture"], ctx,
                         cfg.get("head_rank", 0))
    elif cfg["arch"] == "resnet":
        enc = ResNetEncoder(cfg["latent"], cfg.get("channels", 64), cfg.get("blocks", 2), cfg["image_shape"])
        dec = ResNetDecoder(cfg["latent"], cfg.get("channels", 64), cfg.get("blocks", 2), cfg["image_shape"])
    else:
        raise ValueError(f"unknown arch {cfg['arch']!r}")
    return enc, dec
