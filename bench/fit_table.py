"""The table of `bitsback fit` results in docs/MODELS.md, from the model folders it made.

    python bench/fit_table.py MODEL_DIR[=TEST_IMAGES] ...

One markdown row per folder, from its fit.json: images, budget and time spent, the real
file's bits/dim on the held-out images beside PNG, WebP and JPEG-XL on the same images, and
the round trip. With =TEST_IMAGES (e.g. MNIST's t10k file), those images are also
compressed to a real file with the model, decoded and compared; the row gives that rate.
"""
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from bitsback import datasets, engine

print("| model folder | images (train / val / held out) | budget, spent (min) | held-out bits/dim | JPEG-XL | WebP | PNG | round trip | test file bits/dim |")
print("|---|---|---|---|---|---|---|---|---|")
for arg in sys.argv[1:]:
    folder, _, test = arg.partition("=")
    r = json.loads((Path(folder) / "fit.json").read_text())
    c = r["classical"]
    s = r["images"]
    rate = ""
    if test:
        with tempfile.TemporaryDirectory() as tmp:
            x = datasets.load(test)
            if r["kind"] == "binary":
                x = datasets.binarize(x)
            src = Path(tmp) / "test.npy"
            datasets.save(src, x)
            res = engine.compress([str(src)], Path(tmp) / "t.bba", model=folder)
            engine.decompress(Path(tmp) / "t.bba", Path(tmp) / "back.npy", model=folder)
            ok = np.array_equal(np.load(Path(tmp) / "back.npy"), x)
            rate = f"{res['bits_per_dim']:.4f} ({len(x)} images, {'exact' if ok else 'NOT EXACT'})"
    print(f"| {Path(folder).name} ({r['kind']} {r['shape'][0]}x{r['shape'][1]}) | {s['train']} / {s['val']} / {s['heldout']} "
          f"| {r['minutes_budget']:g}, {r['minutes_spent']:.1f} | **{r['bits_per_dim']:.4f}** "
          f"| {c.get('JPEG-XL lossless', float('nan')):.4f} | {c.get('WebP lossless', float('nan')):.4f} "
          f"| {c.get('PNG (optimize)', float('nan')):.4f} | {'exact' if r['exact'] else 'NOT EXACT'} | {rate} |", flush=True)
