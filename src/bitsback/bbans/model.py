"""An exported model as the coder sees it: ``manifest.json``, ``encoder.onnx``,
``decoder.onnx`` (and what its likelihood family ships beside them)."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from pathlib import Path

import numpy as np

from .. import container
from ..errors import BitsbackError, InputError
from . import likelihoods

# Coding precisions, in bits, unless the manifest says otherwise (export writes these).
# likelihood: the quantised p(x|z) CDFs (24 keeps the 255 minimum-frequency bins of a
# sharp logistic at ~1.5e-5 of the mass); posterior: q(z|x) over the buckets;
# latent_bits: log2 of the number of equal-mass N(0, 1) buckets per latent dimension.
DEFAULT_PRECISION = {"likelihood": 24, "posterior": 24, "latent_bits": 12}

# Versions of the portable network arithmetic (manifest "arithmetic": {"kind": "portable",
# "version": V, ...}; bitsback.portable writes them) that this build's coder can decode:
# a model or file of another version needs another build.
PORTABLE_VERSIONS = (1,)


class Model:
    """A VAE exported for coding (read-only once loaded).

    ``arithmetic`` is the manifest's "arithmetic" record ({"kind": "float"} when absent:
    every model exported before portable networks): "portable" networks compute the same
    outputs on every machine, "float" ones only where the runtime computes bit-identically.
    A record of an unknown kind, or a portable version not in PORTABLE_VERSIONS, raises
    BitsbackError naming the model folder.
    """

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        manifest = self.dir / "manifest.json"
        if not manifest.is_file():
            raise FileNotFoundError(f"{self.dir} has no manifest.json: not a bitsback model directory")
        self.manifest = json.loads(manifest.read_text())
        m = self.manifest
        self.name = str(m.get("name", self.dir.name))
        self.shape = tuple(int(s) for s in m["image_shape"])
        self.dim = int(np.prod(self.shape))
        self.lik = likelihoods.for_model(m["likelihood"], m, self.dir, self.shape)
        self.likelihood = self.lik.name
        self.levels = int(m.get("levels", self.lik.levels))
        self.latent = int(m["latent_size"])
        digest = hashlib.sha256()
        for f in ("encoder.onnx", "decoder.onnx", *self.lik.files):
            digest.update(hashlib.sha256((self.dir / f).read_bytes()).digest())
        self.sha256 = digest.hexdigest()
        rec = m.get("precision") or m.get("recommended_precision") or {}
        self.precision = {k: int(rec.get(k, v)) for k, v in DEFAULT_PRECISION.items()}
        self.expected_bits_per_dim = _expected_bpd(m, self.levels)
        self.inactive_dims = m.get("inactive_dims", [])
        self.arithmetic = _arithmetic(m.get("arithmetic"), self.dir)

    def check_images(self, images) -> np.ndarray:
        """Images as this model codes them: C-contiguous uint8 (N, *shape), one image
        taken as N = 1; InputError names what is wrong (shape, dtype, levels)."""
        x = np.asarray(images)
        if x.shape == self.shape:
            x = x[None]
        if x.ndim != len(self.shape) + 1 or x.shape[1:] != self.shape:
            raise InputError(f"model {self.name} codes images of shape {self.shape}; got array of shape {x.shape}")
        if x.shape[0] == 0:
            raise InputError("no images to compress")
        if x.dtype != np.uint8:
            if x.dtype == np.bool_ or (np.issubdtype(x.dtype, np.integer) and x.size and x.min() >= 0 and x.max() <= 255):
                x = x.astype(np.uint8)
            else:
                raise InputError(f"images must be uint8 (or integers in 0..255); got dtype {x.dtype}")
        if x.max() >= self.levels:
            hint = " (threshold first: bitsback.datasets.binarize, or --binarize on the command line)" if self.levels == 2 else ""
            raise InputError(f"model {self.name} codes {self.levels} levels per pixel; images contain {int(x.max())}{hint}")
        return np.ascontiguousarray(x)

    @property
    def bundled(self) -> bool:
        """True when this model ships inside the package (its files then name no path)."""
        return is_bundled(self.dir)

    @property
    def context(self):
        """The causal-context tables of a context family (None for the others)."""
        return getattr(self.lik, "context", None)


def _arithmetic(a, directory: Path) -> dict:
    """A manifest's arithmetic record, checked (see Model)."""
    if a is None:
        return {"kind": "float"}
    kind = a.get("kind") if isinstance(a, dict) else None
    if kind not in container.ARITHMETIC_KINDS:
        what = repr(str(kind)[:40]) if isinstance(a, dict) else f"{str(a)[:40]!r} (not a record)"
        raise BitsbackError(f"model folder {directory}: unknown network arithmetic {what} in manifest.json "
                            f"(this build knows {', '.join(container.ARITHMETIC_KINDS)})")
    if kind == "portable":
        v = a.get("version")
        if not (isinstance(v, int) and not isinstance(v, bool)) or v not in PORTABLE_VERSIONS:
            newer = isinstance(v, int) and v > max(PORTABLE_VERSIONS)
            raise BitsbackError(f"model folder {directory}: portable arithmetic version {str(v)[:20]} is not one this "
                                f"build of bitsback decodes ({', '.join(map(str, PORTABLE_VERSIONS))})"
                                + (": it needs a newer bitsback" if newer else ""))
    return dict(a)


def _expected_bpd(manifest: dict, levels: int) -> float:
    metrics = manifest.get("metrics") or {}
    for key in ("test_elbo_bpd", "test_bpd"):
        v = metrics.get(key)
        if isinstance(v, (int, float)) and v > 0:
            return float(v)
    return 0.15 if levels == 2 else 1.5


def resolve_model(name_or_path: str | os.PathLike) -> Path:
    """A bundled model's name (``mnist-binary``) or a directory holding an exported model."""
    p = Path(name_or_path)
    if (p / "manifest.json").is_file():
        return p
    from .. import zoo

    try:
        return Path(zoo.model_dir(str(name_or_path)))
    except KeyError:
        raise BitsbackError(
            f"unknown model {name_or_path!r}: not a bundled model ({', '.join(zoo.names())}) "
            "nor a directory with manifest.json"
        ) from None


# Folders where `bitsback decompress` looks for the model a file names when no --model is
# given (os.pathsep-separated; each a model folder or a folder of model folders).
MODEL_PATH_ENV = "BITSBACK_MODEL_PATH"


def is_bundled(directory) -> bool:
    """True for a model folder shipped inside the package (zoo/, zoo/legacy/)."""
    from .. import zoo

    try:
        Path(directory).resolve().relative_to(zoo.ZOO_DIR)
        return True
    except ValueError:
        return False


def search_places(recorded=None, near=None) -> list[Path]:
    """Where a file's model is looked for, in order: the folder recorded in the file at
    compress time (ignored unless a string: it comes from the file), the entries of
    $BITSBACK_MODEL_PATH, then ``near`` (the file's folder)."""
    places = [Path(recorded)] if isinstance(recorded, str) and recorded and "\0" not in recorded else []
    places += [Path(e) for e in os.environ.get(MODEL_PATH_ENV, "").split(os.pathsep) if e]
    if near is not None:
        places.append(Path(near))
    return places


# Subfolders of one place that find() looks into (a folder of model folders; a recorded
# path comes from the file and may name any folder).
MAX_SUBFOLDERS = 1000


def find(name: str, sha256: str, places) -> Path | None:
    """The first model folder named ``name`` whose files hash to ``sha256`` (see Model):
    each place itself, then its subfolders (sorted). None when no folder matches."""
    for place in places:
        try:
            subs = sorted(itertools.islice((d for d in Path(place).iterdir() if d.is_dir()), MAX_SUBFOLDERS)) \
                if Path(place).is_dir() else []
        except OSError:
            continue
        for d in [Path(place), *subs]:
            try:
                if not (d / "manifest.json").is_file():
                    continue
                if json.loads((d / "manifest.json").read_text()).get("name", d.name) != name:
                    continue
                if Model(d).sha256 == sha256:
                    return d
            except (OSError, ValueError, KeyError, TypeError, BitsbackError):
                continue    # not a model folder, or not a readable one: not the model
    return None

