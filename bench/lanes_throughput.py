"""Throughput against lane count, beside Pillow's PNG in the same process.

    python bench/lanes_throughput.py MODEL LANES      # LANES 0: the codec's choice

All 10 000 shipped MNIST test images (binarized for binary models); Codec with 2 workers,
one onnxruntime thread each; best of 3 for compress, decompress and PNG (optimize=True,
one image at a time; binary images as 0/255 greyscale). Prints one line.
"""
import io
import sys
import time

from PIL import Image

from bitsback import datasets
from bitsback.codec import Codec

model, lanes = sys.argv[1], int(sys.argv[2])
x = datasets.load("data/t10k-images-idx3-ubyte.gz")[:10000]
binary = "binary" in model
if binary:
    x = datasets.binarize(x)
c = Codec(model, workers=2, threads=1, lanes=lanes or None)
blob = c.compress(x[:100])
c.decompress(blob)
best = [float("inf")] * 3
for _ in range(3):
    t = time.perf_counter()
    blob = c.compress(x)
    best[0] = min(best[0], time.perf_counter() - t)
    t = time.perf_counter()
    assert (c.decompress(blob) == x).all()
    best[1] = min(best[1], time.perf_counter() - t)
    t = time.perf_counter()
    for im in x:
        Image.fromarray(im * 255 if binary else im).save(io.BytesIO(), format="PNG", optimize=True)
    best[2] = min(best[2], time.perf_counter() - t)
print(model, "lanes", lanes, "bits/dim %.5f" % (8 * len(blob) / x.size),
      "compress %.0f decompress %.0f PNG %.0f images/s" % tuple(len(x) / b for b in best))
