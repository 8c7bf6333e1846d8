"""bitsback: lossless image-dataset compression with VAEs and bits-back ANS coding."""

__version__ = "0.1.0"
