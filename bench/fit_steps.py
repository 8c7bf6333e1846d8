"""Step and epoch times of the context VAE that ``bitsback fit`` trains on grey images.

    python bench/fit_steps.py IMAGES [N_IMAGES] [EPOCHS] [THREADS] [BUSY]

The first N_IMAGES (default 10 000) of IMAGES (any file the loaders read; MNIST's
train-images-idx3-ubyte.gz for the figures in docs/MODELS.md), the model fit builds for
28x28 grey images (logistic_context, 2 components, 6 context neighbours, thresholds 1 / 192
/ 248, tables at 10x the rate), batch 128, Adam at 1e-3. Prints one line per epoch:
seconds, and the median, 90th percentile and maximum step in milliseconds. BUSY (default 0)
starts that many busy-looping processes for the run: the load of other jobs sharing the
cores, which is what makes epoch times swing when torch runs one thread per core.
"""
import subprocess
import sys
import time

import numpy as np
import torch

from bitsback import datasets
from bitsback.models import build_vae, make_spec
from bitsback.models.context import NEIGHBOURS
from bitsback.train import neg_elbo

path = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
epochs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
if len(sys.argv) > 4:
    torch.set_num_threads(int(sys.argv[4]))
busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(int(sys.argv[5]) if len(sys.argv) > 5 else 0)]
torch.manual_seed(0)
raw = datasets.load(path)[:n]
H, W = raw.shape[1:]
x = torch.from_numpy(raw.reshape(len(raw), -1).astype(np.float32))
cfg = dict(arch="mlp", image_shape=[H, W], levels=256, likelihood="logistic_context", latent=32, hidden=[500, 500],
           mixture=2, head_rank=0)
cfg["context"] = make_spec("logistic_context", [H, W], mixture=2, thresholds=[1, 192, 248],
                           ctx_offsets=NEIGHBOURS[:6], lin_offsets=NEIGHBOURS[:6])
enc, dec = build_vae(cfg)
ctx = [p for name, p in dec.named_parameters() if name.startswith("context.")]
rest = [p for name, p in dec.named_parameters() if not name.startswith("context.")] + list(enc.parameters())
opt = torch.optim.Adam([{"params": rest}, {"params": ctx, "lr": 1e-2}], lr=1e-3)
print(f"{n} images {H}x{W}, torch {torch.__version__}, {torch.get_num_threads()} threads, {len(busy)} busy processes")
for epoch in range(epochs):
    t0, steps = time.perf_counter(), []
    perm = torch.randperm(len(x))
    for i in range(0, len(x), 128):
        t = time.perf_counter()
        loss = neg_elbo(enc, dec, x[perm[i:i + 128]], "logistic_context", 256).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps.append(1000 * (time.perf_counter() - t))
    s = np.array(steps)
    bits = float(loss.detach()) / (H * W * np.log(2))
    print(f"epoch {epoch + 1}: {time.perf_counter() - t0:.1f} s, step median {np.median(s):.0f} ms, "
          f"p90 {np.percentile(s, 90):.0f} ms, max {s.max():.0f} ms, loss {bits:.3f} bits/dim", flush=True)
for b in busy:
    b.kill()
