"""bitsback: lossless image-dataset compression with VAEs and bits-back ANS coding.

>>> import bitsback
>>> codec = bitsback.load("mnist-binary")
>>> blob = codec.compress(images)
>>> images2 = codec.decompress(blob)
"""

__version__ = "0.1.0"

from .errors import (  # noqa: E402
    BitsbackError,
    FormatError,
    InputError,
    IntegrityError,
    ModelMismatchError,
)


def load(model="mnist-binary", device="auto", k_steps=0, **kwargs):
    """Open a model for coding and return a :class:`bitsback.codec.Codec`.

    Parameters
    ----------
    model : str or path
        Bundled model name (``bitsback models`` lists them) or an exported model directory.
    device : {"auto", "cpu", "cuda"}
    k_steps : int
        Per-image Adam steps before coding (Algorithm 2); 0 never imports torch.
    **kwargs
        ``lr``, ``lanes``, ``seed``, ``threads``: see :class:`bitsback.codec.Codec`.
    """
    from .codec import Codec

    return Codec(model, device=device, k_steps=k_steps, **kwargs)


__all__ = ["load", "BitsbackError", "FormatError", "InputError", "IntegrityError", "ModelMismatchError"]
