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
    RuntimeMismatchError,
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


def load_for(images, **kwargs):
    """Open the bundled model that fits ``images`` and return its Codec.

    The model is chosen by the images' shape and values (``bitsback.zoo.pick``): of the
    bundled models for that shape, the one with the fewest levels that hold the largest
    pixel (0/1 images get a binary model), then the lowest recorded test rate. A batch
    (N, *shape) or one image. Raises ``zoo.UnknownModelError`` listing the models and
    what each takes when none fits. ``kwargs`` as for :func:`load`.
    """
    import numpy as np

    from . import zoo

    x = np.asarray(images)
    top = int(x.max(initial=0))
    try:
        name = zoo.pick(x.shape[1:], top)
    except zoo.UnknownModelError as batch:
        try:
            name = zoo.pick(x.shape, top)   # one image, not a batch
        except zoo.UnknownModelError:
            raise batch from None
    return load(name, **kwargs)


__all__ = ["load", "load_for", "BitsbackError", "FormatError", "InputError", "IntegrityError", "ModelMismatchError",
           "RuntimeMismatchError"]
