"""Bring your own VAE: export any torch encoder/decoder pair for bitsback.

The codec needs two ONNX graphs with a fixed interface (see ``bitsback.export``):

* encoder: ``x`` float32 (B, D) raw symbol values (0/1 or 0..255) -> ``mu``, ``sigma`` (B, Z)
* decoder: ``z`` float32 (B, Z) -> the likelihood's parameters, e.g. ``logits`` (B, D) for
  a Bernoulli, or ``mean``, ``log_scale`` (B, D) in pixel units for a 256-level logistic.

Portable arithmetic: a float network's outputs differ in their last bits between CPUs
(SSE / AVX2 / AVX-512 / ARM), GPUs and onnxruntime releases, and a file decodes only where
they are reproduced bit for bit. ``bitsback.portable.convert`` turns an exported MLP (Linear
layers with ReLU between them) into an integer network that computes identically
everywhere, calibrated on training images; this example does it. Other architectures stay
float: their files record a fingerprint of the arithmetic and refuse, with
RuntimeMismatchError, to decode where it differs.

Run:  python examples/byo_vae.py OUT_DIR [TRAINING_IMAGES]
then  bitsback compress --model OUT_DIR images.idx.gz -o images.bba   (see the README)
"""
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from bitsback import datasets
from bitsback.export import export_vae
from bitsback.portable import convert


class MyEncoder(nn.Module):
    def __init__(self, dim=784, latent=16):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, 256), nn.ReLU(), nn.Linear(256, 2 * latent))

    def forward(self, x):  # x: 0/1 floats
        mu, s = self.net(x).chunk(2, -1)
        return mu, F.softplus(s) + 1e-4  # sigma must be > 0


class MyDecoder(nn.Module):
    def __init__(self, dim=784, latent=16):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent, 256), nn.ReLU(), nn.Linear(256, dim))

    def forward(self, z):
        return self.net(z)  # Bernoulli logits


def main(out_dir, images=None):
    enc, dec = MyEncoder(), MyDecoder()
    # ... train them here on binarised images (np.round(x / 255.)) ...
    manifest = export_vae(enc, dec, out_dir, likelihood="bernoulli", image_shape=(28, 28), levels=2,
                          preprocess="binarize", name="my-vae",
                          training={"commands": ["python examples/byo_vae.py " + str(out_dir)]})
    # Portable: calibrate the integer layers on training images, as the codec will code them
    # (binarised here). Random bits stand in when no images are given.
    if images:
        x = np.round(datasets.load(images)[:20000] / 255.0).astype(np.uint8)
    else:
        x = (np.random.default_rng(0).random((2000, 784)) < 0.15).astype(np.uint8)
    manifest = convert(out_dir, out_dir, x)
    print("wrote", out_dir, manifest["arithmetic"]["kind"], {k: v["bytes"] for k, v in manifest["files"].items()})


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "my-vae", sys.argv[2] if len(sys.argv) > 2 else None)
