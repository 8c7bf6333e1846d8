"""torch -> ONNX export of VAEs plus manifest.json ("bring your own VAE").

The ONNX interface the codec relies on
--------------------------------------
encoder.onnx
    input  ``x``  float32 (B, D): raw symbol values (0/1 binary, 0..255 grey); any scaling
    happens inside the graph.
    output ``mu`` float32 (B, Z), ``sigma`` float32 (B, Z) with sigma > 0 (softplus in-graph).
decoder.onnx
    input  ``z``  float32 (B, Z).
    outputs by likelihood:
      bernoulli         ``logits`` (B, D); P(x=1) = sigmoid(logit)
      logistic          ``mean``, ``log_scale`` (B, D), pixel units, 256-level discretised
                        logistic, bin k = [k-0.5, k+0.5], bins 0 / 255 absorb the tails,
                        log_scale clamped to [-7, 7]
      logistic_mixture  ``logit_weights``, ``mean``, ``log_scale`` each (B, D, M)
      logistic_ar       ``mean``, ``log_scale`` (B, C*H*W) and ``coeffs`` (B, 3, H*W)
The batch axis is dynamic. ``manifest.json`` records the rest (see :func:`write_manifest`).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from .bbans.model import DEFAULT_PRECISION
from .cli import show_defaults
from .io.atomic import write_bytes
from .models.checkpoints import load_ckpt, load_images
from .models.likelihoods import OUTPUT_NAMES

MANIFEST_VERSION = 1
OPSET = 17


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _weights_to_fp16(model_proto, min_elems: int = 1024):
    """Store big float initializers as float16 and Cast them back to float32 in-graph.

    Halves the file size; the network still computes in float32 on the rounded weights,
    and :func:`bitsback.models.load_torch` rebuilds exactly those rounded weights.
    """
    import onnx
    from onnx import helper, numpy_helper

    g = model_proto.graph
    new_inits, casts = [], []
    for init in g.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype == np.float32 and arr.size >= min_elems:
            half = numpy_helper.from_array(arr.astype(np.float16), init.name + "__fp16")
            new_inits.append(half)
            casts.append(helper.make_node("Cast", [init.name + "__fp16"], [init.name],
                                          to=onnx.TensorProto.FLOAT, name="cast_" + init.name))
        else:
            new_inits.append(init)
    del g.initializer[:]
    g.initializer.extend(new_inits)
    nodes = list(g.node)
    del g.node[:]
    g.node.extend(casts + nodes)
    return model_proto


def _export_one(module, example, in_name, out_names, path: Path, fp16: bool):
    import onnx

    module = module.eval()
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td) / "m.onnx"
        with warnings.catch_warnings():  # the TorchScript exporter's deprecation notices
            warnings.simplefilter("ignore")
            torch.onnx.export(
            module, (example,), str(tmp), input_names=[in_name], output_names=list(out_names),
            dynamic_axes={in_name: {0: "batch"}, **{n: {0: "batch"} for n in out_names}},
            opset_version=OPSET, do_constant_folding=True, dynamo=False,
            )
        proto = onnx.load(str(tmp))
    if fp16:
        proto = _weights_to_fp16(proto)
    onnx.checker.check_model(proto)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(path, proto.SerializeToString(), force=True)


class _FeaturesOnly(torch.nn.Module):
    """A context decoder without its tables: z -> features (what decoder.onnx computes)."""

    def __init__(self, decoder):
        super().__init__()
        self.inner = decoder

    def forward(self, z):
        return self.inner(z)[0]


def _npz(arrays: dict) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def round_weights_fp16_(module: torch.nn.Module, min_elems: int = 1024):
    """Round a module's big float parameters to float16 precision in place (what fp16 export ships)."""
    with torch.no_grad():
        for p in module.parameters():
            if p.numel() >= min_elems:
                p.copy_(p.half().float())
    return module


def export_vae(encoder, decoder, out_dir, *, likelihood: str, image_shape, levels: int,
               latent: int | None = None, name: str | None = None, preprocess: str = "none",
               mixture: int = 1, config: dict | None = None, weights: str = "float32",
               training: dict | None = None, metrics: dict | None = None, extra: dict | None = None):
    """Export any torch encoder/decoder pair to ``out_dir`` (encoder.onnx, decoder.onnx, manifest.json).

    Parameters
    ----------
    encoder : torch.nn.Module
        ``encoder(x) -> (mu, sigma)``; x float32 (B, D) raw symbol values (0/1 or 0..255),
        mu and sigma (B, Z), sigma > 0. Scale the input inside ``forward``.
    decoder : torch.nn.Module
        ``decoder(z)`` returns the outputs of ``likelihood`` in the order of
        ``bitsback.models.OUTPUT_NAMES[likelihood]`` (a tensor or a tuple): for ``bernoulli``
        ``logits`` (B, D); for ``logistic`` ``(mean, log_scale)`` in pixel units (B, D) with
        log_scale clamped to [-7, 7]; for ``logistic_mixture`` ``(logit_weights, mean,
        log_scale)`` each (B, D, M).
    likelihood : str
        "bernoulli", "logistic", "logistic_mixture" (or "logistic_ar" for RGB).
    image_shape : sequence of int
        Shape of one image, e.g. (28, 28); D = prod(image_shape).
    levels : int
        Symbol levels (2 for binary, 256 for 8-bit).
    preprocess : str
        What the codec applies to uint8 images before coding ("binarize" = np.round(x/255.)).
    config : dict, optional
        Architecture config for :func:`bitsback.models.build_vae`; lets ``load_torch`` rebuild
        torch modules from the ONNX weights (needed by K-step optimal inference).
    weights : "float32" | "float16"
        Storage precision of big weight tensors (float16 halves the size; computation stays float32).

    Returns
    -------
    dict : the manifest written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dim = int(np.prod(image_shape))
    fp16 = weights == "float16"
    encoder = encoder.cpu().eval()
    decoder = decoder.cpu().eval()
    if fp16:  # keep torch and ONNX identical
        round_weights_fp16_(encoder)
        round_weights_fp16_(decoder)
    x = torch.zeros(2, dim)
    with torch.no_grad():
        mu, sigma = encoder(x)
    Z = int(mu.shape[1]) if latent is None else int(latent)
    _export_one(encoder, x, "x", ("mu", "sigma"), out_dir / "encoder.onnx", fp16)
    files = ["encoder.onnx", "decoder.onnx"]
    context = None
    if likelihood.endswith("_context"):
        # decoder.onnx gives the per-pixel features; the context tables ship as context.npz
        head = decoder.context
        context = head.spec
        write_bytes(out_dir / "context.npz", _npz(head.tables()), force=True)
        files.append("context.npz")
        decoder = _FeaturesOnly(decoder)
    _export_one(decoder, torch.zeros(2, Z), "z", OUTPUT_NAMES[likelihood], out_dir / "decoder.onnx", fp16)
    manifest = {
        "format_version": MANIFEST_VERSION,
        "name": name or out_dir.name,
        "likelihood": likelihood,
        "image_shape": [int(s) for s in image_shape],
        "dtype": "uint8",
        "levels": int(levels),
        "dim": dim,
        "preprocess": preprocess,
        "preprocess_doc": {"binarize": "np.round(x / 255.) -> 0/1; the codec compresses the binarized images",
                           "none": "raw uint8 pixel values"}.get(preprocess, preprocess),
        "latent": Z,
        "latent_size": Z,
        "mixture": int(mixture),
        "pixel_scaling": ("encoder input: raw symbol values (0..levels-1), divided by levels-1 in-graph; "
                          "decoder outputs: " + ("logits" if likelihood == "bernoulli"
                                                  else "mean/log_scale in pixel units, log_scale clamped to [-7, 7]")),
        "encoder": {"file": "encoder.onnx", "inputs": {"x": ["batch", dim]},
                    "outputs": {"mu": ["batch", Z], "sigma": ["batch", Z]}},
        "decoder": {"file": "decoder.onnx", "inputs": {"z": ["batch", Z]},
                    "outputs": list(OUTPUT_NAMES[likelihood])},
        "weights_dtype": weights,
        "onnx_opset": OPSET,
        # what the coder uses unless told otherwise: its own defaults
        "recommended_precision": dict(DEFAULT_PRECISION),
        "config": config,
        "training": training or {},
        "metrics": metrics or {},
    }
    if context is not None:
        manifest["context"] = context
    if extra:
        manifest.update(extra)
    manifest["files"] = {f: {"sha256": sha256_file(out_dir / f), "bytes": (out_dir / f).stat().st_size}
                         for f in files}
    write_manifest(out_dir, manifest)
    return manifest


def write_manifest(out_dir, manifest: dict):
    write_bytes(Path(out_dir) / "manifest.json", (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode(),
                force=True)


def read_manifest(out_dir) -> dict:
    return json.loads((Path(out_dir) / "manifest.json").read_text())


def update_metrics(out_dir, key: str, metrics: dict):
    """Merge ``metrics`` under ``manifest["metrics"][key]`` (file hashes are unaffected)."""
    m = read_manifest(out_dir)
    m.setdefault("metrics", {})[key] = metrics
    write_manifest(out_dir, m)
    return m


# A latent dim whose posterior equals the prior on the data (mean KL below this, in bits
# per image) is collapsed: it tells the decoder nothing, and the codec leaves it out.
INACTIVE_KL_BITS = 0.01


def mark_inactive(out_dir, images, kl_bits: float = INACTIVE_KL_BITS) -> list[int]:
    """Find the collapsed latent dims of an exported model on ``images`` (float32 (N, D)
    symbol values, as the encoder takes them; use training images) and record them in
    the manifest as ``inactive_dims``, which :class:`bitsback.Codec` does not code. Runs
    the exported ONNX encoder, i.e. exactly the posterior the codec sees. Returns them."""
    from .runtime import Network

    out_dir = Path(out_dir)
    enc = Network(out_dir / "encoder.onnx", "cpu")
    x = np.asarray(images, np.float32).reshape(len(images), -1)
    kl = 0.0
    for a in range(0, len(x), 4096):
        o = enc(x=x[a : a + 4096])
        mu, sigma = o["mu"].astype(np.float64), o["sigma"].astype(np.float64)
        kl = kl + (0.5 * (mu**2 + sigma**2 - 1) - np.log(sigma)).sum(0)
    kl = kl / len(x) / np.log(2)
    dims = [int(d) for d in np.flatnonzero(kl < kl_bits)]
    m = read_manifest(out_dir)
    m["inactive_dims"] = dims
    m["inactive_rule"] = f"mean KL(q||p) < {kl_bits} bits on {len(x)} training images (bitsback.export.mark_inactive)"
    write_manifest(out_dir, m)
    return dims


# ----------------------------------------------------------------------------- checkpoints

def export_checkpoint(ckpt, out, *, name: str | None = None, weights: str = "float32", decoder_ckpt=None,
                      commands=(), metrics: dict | None = None, inactive_data=None, inactive_limit: int = 10000,
                      command: str | None = None, arithmetic: str = "portable", calib_data=None,
                      calib_limit: int = 20000) -> dict:
    """Export a training checkpoint (``best.pt``) to model folder ``out`` with :func:`export_vae`.

    ``decoder_ckpt``: take the decoder from this checkpoint instead (same architecture).
    ``commands``: the training commands recorded in ``manifest["training"]["commands"]``;
    ``command``: the export command recorded as ``export_command``. ``metrics`` is stored as
    ``manifest["metrics"]``. With ``inactive_data`` (training images), the latent dims
    collapsed on its first ``inactive_limit`` images are recorded (:func:`mark_inactive`).
    ``arithmetic``: "portable" (the default) converts the exported MLP to an integer network
    (:mod:`bitsback.portable`) calibrated on ``calib_data`` (default ``inactive_data``; up to
    ``calib_limit`` images), so its files decode on every platform; "float" keeps the float
    graphs (files then decode only where onnxruntime reproduces them bit for bit).
    Returns the manifest written.
    """
    if arithmetic not in ("portable", "float"):
        raise ValueError(f"arithmetic must be 'portable' or 'float', got {arithmetic!r}")
    calib_data = calib_data or inactive_data
    if arithmetic == "portable" and not calib_data:
        raise ValueError("a portable export calibrates its integer layers on training images: give calib_data "
                         "(--calib-data or --inactive-data), or choose arithmetic='float'")
    enc, dec, ck = load_ckpt(ckpt)
    if decoder_ckpt:
        _, dec, _ = load_ckpt(decoder_ckpt)
    cfg = ck["config"]
    training = {"commands": list(commands), "checkpoint_meta": _jsonable(ck.get("meta", {})),
                "epochs": ck.get("epoch"), "val_bpd": ck.get("val_bpd"), "export_command": command}
    man = export_vae(enc, dec, out, likelihood=cfg["likelihood"], image_shape=cfg["image_shape"],
                     levels=cfg["levels"], latent=cfg["latent"], name=name,
                     preprocess=ck.get("meta", {}).get("preprocess", "none"), mixture=cfg.get("mixture", 1),
                     config=cfg, weights=weights, training=training, metrics=metrics or {})
    if arithmetic == "portable":
        from . import portable

        man = portable.convert(out, out, load_images(calib_data, man["preprocess"], calib_limit).numpy())
    if inactive_data:
        x = load_images(inactive_data, man["preprocess"], inactive_limit).numpy()
        man["inactive_dims"] = mark_inactive(out, x)
    return man


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


# ----------------------------------------------------------------------------- CLI

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="bitsback export", description="export a trained checkpoint to ONNX + manifest.json")
    ap.add_argument("--ckpt", required=True, help="checkpoint (best.pt) whose encoder and decoder are shipped")
    ap.add_argument("--decoder-ckpt", default=None, help="take the decoder from this checkpoint instead (must match)")
    ap.add_argument("--out", required=True, help="model folder, e.g. src/bitsback/zoo/mnist-binary")
    ap.add_argument("--name", default=None)
    ap.add_argument("--weights", default="float32", choices=["float32", "float16"])
    ap.add_argument("--recipe", action="append", default=[], help="training command to record (repeatable)")
    ap.add_argument("--metrics", default=None, help="JSON file merged into manifest['metrics']")
    ap.add_argument("--inactive-data", default=None,
                    help="training images: latent dims collapsed on them are recorded as inactive (not coded)")
    ap.add_argument("--inactive-limit", type=int, default=10000, help="images of --inactive-data used (default 10000)")
    ap.add_argument("--arithmetic", default="portable", choices=["portable", "float"],
                    help="portable (default): integer network, files decode bit-exactly on every platform; "
                         "float: the float graphs, files decode only where onnxruntime reproduces them")
    ap.add_argument("--calib-data", default=None,
                    help="training images to calibrate the portable network on (default: --inactive-data)")
    ap.add_argument("--calib-limit", type=int, default=20000, help="images of --calib-data used (default 20000)")
    args = show_defaults(ap).parse_args(argv)
    man = export_checkpoint(
        args.ckpt, args.out, name=args.name, weights=args.weights, decoder_ckpt=args.decoder_ckpt,
        commands=args.recipe, metrics=json.loads(Path(args.metrics).read_text()) if args.metrics else None,
        inactive_data=args.inactive_data, inactive_limit=args.inactive_limit,
        arithmetic=args.arithmetic, calib_data=args.calib_data, calib_limit=args.calib_limit,
        command="bitsback export " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(json.dumps({"out": args.out, "files": man["files"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
