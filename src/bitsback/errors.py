"""Exceptions raised by bitsback.

Every failure a user can cause (bad input, a corrupt or hostile file, the wrong model)
raises a subclass of :class:`BitsbackError`, so a service can catch one type.
"""


class BitsbackError(Exception):
    """Base class of every error bitsback raises on purpose."""


class FormatError(BitsbackError, ValueError):
    """The bytes are not a valid bitsback container or message (corrupt, truncated, hostile)."""


class CorruptMessageError(FormatError):
    """Serialised rANS messages are malformed (bad lengths, truncated words)."""


class IntegrityError(BitsbackError):
    """Decoding finished but the result failed a check (data hash, final coder state).

    Raised instead of ever returning wrong images. A typical cause is decoding on a
    different runtime (GPU vs CPU, another onnxruntime build) than the file was made on.
    """


class ModelMismatchError(BitsbackError):
    """The file was compressed with a different model than the one given for decoding."""


class InputError(BitsbackError, ValueError):
    """Images given to compress have the wrong shape, dtype or value range for the model."""


class LimitError(FormatError):
    """A size claimed by a header exceeds the configured limits."""


class DatasetError(BitsbackError, ValueError):
    """A dataset file cannot be read (wrong magic, truncated, shape mismatch)."""
