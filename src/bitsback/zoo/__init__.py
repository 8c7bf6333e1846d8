"""Registry of the bundled pretrained models (no torch, no onnx imports here).

Each model lives in ``zoo/<name>/`` with ``encoder.onnx``, ``decoder.onnx`` and
``manifest.json`` (likelihood, shapes, preprocessing, recommended precisions, sha256 of
each file, training recipe and recorded test metrics).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from ..errors import BitsbackError

ZOO_DIR = Path(__file__).resolve().parent


class UnknownModelError(BitsbackError, KeyError):
    """No bundled model has this name (or fits these images)."""

    def __str__(self) -> str:       # the message itself, not KeyError's repr of it
        return str(self.args[0]) if self.args else ""


def list_models() -> list[str]:
    """Names of the bundled models (folders holding a manifest.json), sorted."""
    return sorted(p.name for p in ZOO_DIR.iterdir() if (p / "manifest.json").is_file())


names = list_models  # alias used by the codec


def model_dir(name: str) -> Path:
    """Folder of a bundled model, or the given path itself if it is a model folder."""
    p = Path(name)
    if (p / "manifest.json").is_file() and (len(p.parts) > 1 or name not in list_models()):
        return p
    d = ZOO_DIR / name
    if not (d / "manifest.json").is_file():
        raise UnknownModelError(f"unknown model {name!r}; bundled: {', '.join(list_models()) or 'none'}")
    return d


LEGACY_DIR = ZOO_DIR / "legacy"


def for_file(name: str, sha256: str) -> str:
    """The model a file names: an earlier version of bundled model ``name`` kept in
    ``zoo/legacy/<name>@<sha256[:12]>`` when the file was made with it (the float models
    before the portable rebuild), else ``name`` itself (resolved as usual; the codec then
    checks the full sha256)."""
    p = LEGACY_DIR / f"{name}@{str(sha256)[:12]}"
    return str(p) if "/" not in name and (p / "manifest.json").is_file() else name


def manifest(name: str) -> dict:
    """The parsed manifest.json of a bundled model (or model folder)."""
    return json.loads((model_dir(name) / "manifest.json").read_text())


def verify(name: str) -> bool:
    """True when every file's sha256 matches the manifest."""
    d = model_dir(name)
    m = manifest(name)
    for f, info in m.get("files", {}).items():
        h = hashlib.sha256((d / f).read_bytes()).hexdigest()
        if h != info["sha256"]:
            return False
    return True


def summary(name: str) -> dict:
    m = manifest(name)
    d = model_dir(name)
    return {
        "name": m["name"],
        "path": str(d),
        "likelihood": m["likelihood"],
        "image_shape": m["image_shape"],
        "levels": m["levels"],
        "preprocess": m["preprocess"],
        "latent": m["latent"],
        "bytes": sum(v["bytes"] for v in m.get("files", {}).values()),
        "metrics": m.get("metrics", {}),
    }


def takes(name: str) -> str:
    """What a bundled model codes, in words: ``28x28, values 0..1``."""
    m = manifest(name)
    return f"{'x'.join(map(str, m['image_shape']))}, values 0..{int(m['levels']) - 1}"


def pick(shape, max_value: int) -> str:
    """The bundled model for images of ``shape`` whose pixels are at most ``max_value``:
    of the models with that shape and enough levels, those with the fewest levels (a
    binary model for 0/1 images), then the lowest recorded test rate. Raises
    UnknownModelError listing the models and what each takes when none fits."""
    shape = [int(s) for s in shape]
    fits = []
    for name in list_models():
        m = manifest(name)
        if list(m["image_shape"]) == shape and int(m["levels"]) > max_value:
            rate = (m.get("metrics") or {}).get("test_elbo_bpd")
            fits.append((int(m["levels"]), rate if isinstance(rate, (int, float)) else float("inf"), name))
    if not fits:
        listing = "; ".join(f"{n} ({takes(n)})" for n in list_models()) or "none"
        raise UnknownModelError(
            f"no bundled model codes images of shape {'x'.join(map(str, shape))} with values up to {max_value}; "
            f"bundled: {listing}. Give --model DIR for a model of your own")
    return min(fits)[2]


def models_main(argv=None) -> int:
    """``bitsback models [--json]``: list bundled models with their recorded test metrics."""
    ap = argparse.ArgumentParser(prog="bitsback models", description=models_main.__doc__)
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    args = ap.parse_args(argv)
    rows = [summary(n) for n in list_models()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        print(f"{r['name']}: {r['likelihood']} {r['image_shape']} levels={r['levels']} "
              f"latent={r['latent']} preprocess={r['preprocess']} size={r['bytes'] / 1e6:.2f} MB")
        for split, met in r["metrics"].items():
            if isinstance(met, dict):
                vals = ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in met.items())
                print(f"    {split}: {vals}")
            else:
                print(f"    {split}: {met}")
    if not rows:
        print("no bundled models")
    return 0


__all__ = ["list_models", "names", "model_dir", "pick", "takes", "manifest", "verify", "summary", "models_main", "UnknownModelError", "ZOO_DIR"]

if __name__ == "__main__":
    sys.exit(models_main())
