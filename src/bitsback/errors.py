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

    Raised instead of ever returning wrong images. When the networks' arithmetic is known
    to agree (a portable file, or a float file whose fingerprint matched), the file itself
    is the suspect; a runtime that computes differently raises
    :class:`RuntimeMismatchError` instead.
    """


class RuntimeMismatchError(BitsbackError):
    """The networks compute differently here than on the machine that made the file.

    A file made with float network arithmetic decodes exactly only where the encoder's
    and decoder's outputs are bit-identical to the encoding machine's, and those depend on
    the instruction set (SSE / AVX2+FMA / AVX-512 / NEON ...), the onnxruntime release
    and the execution provider. Raised before any payload is decoded when a version-5
    file's fingerprint of those outputs differs from this machine's, and for older files
    (no fingerprint) when their decode fails and the runtime they record differs from this
    one. The message names both runtimes. The file is not damaged: it decodes on a
    machine like the one that made it. Not an IntegrityError: nothing was decoded wrong.
    """


class ModelMismatchError(BitsbackError):
    """The file was compressed with a different model than the one given for decoding."""


class InputError(BitsbackError, ValueError):
    """Images given to compress have the wrong shape, dtype or value range for the model."""


class LimitError(FormatError):
    """A size claimed by a header exceeds the configured limits."""


class DatasetError(BitsbackError, ValueError):
    """A dataset file cannot be read (wrong magic, truncated, shape mismatch)."""
