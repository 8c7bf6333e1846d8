"""Lanes and shards: how N images are split for coding, and where each sits in a group.

The plan is a function of N and the coding settings only — never of the number of
workers or of how shards are grouped — so the bytes written do not depend on either.
"""

from __future__ import annotations

import math

import numpy as np

# Target share of the file spent on per-lane overhead when the lane count is chosen from N.
# A lane costs its final head and word count (LANE_HEAD_BITS), its shard's header entry
# (about SHARD_ENTRY_BITS compressed) and the initial bits its first image borrows to pop
# its active latent dims (at most latent_bits each; inactive dims cost nothing). More lanes
# mean larger network batches and more lanes per worker (faster); the share keeps the
# file within 1 % of -ELBO with the rest of the overhead (header, discretisation):
# 10 000 binary MNIST images get 24 lanes, the file +0.92 % over -ELBO; 19 lanes (share
# 0.6 %) gave +0.80 % and coded 11-12 % fewer images/s with 2 workers (docs/ARCHITECTURE.md).
LANE_OVERHEAD_SHARE = 0.0075
LANE_HEAD_BITS = 96
SHARD_ENTRY_BITS = 120
MAX_AUTO_LANES = 256
# Random access: a range decode decodes whole lanes one row per step, so it costs a
# lane's length (about N / lanes steps at batch 1) against N for a full decode. From
# RANGE_MIN_IMAGES images on (where a full decode takes seconds) the default spends up to
# RANGE_SHARE of the file on lanes instead of LANE_OVERHEAD_SHARE: shorter lanes, faster
# range decodes, a slightly larger file (docs/SCALING.md has the trade-off).
RANGE_MIN_IMAGES = 1 << 15
RANGE_SHARE = 0.01
# Shards are the unit of range decoding: ceil(lanes / MAX_SHARDS) lanes each (one lane
# each up to MAX_SHARDS lanes), and no shard above SHARD_MAX_IMAGES images. With K-step
# inference a shard holds at least K_SHARD_LANES lanes: the torch optimiser must see
# exactly one shard's step (its results depend on the batch), so one-lane shards would
# run it one image at a time. Shards are coded in lockstep groups whose lanes share one
# message set, so a step is one network batch and one compiled call per coder family
# whatever the shard size; at most GROUP_MAX_IMAGES images per group (memory).
MAX_SHARDS = 256
K_SHARD_LANES = 16
SHARD_MAX_IMAGES = 1 << 15
GROUP_MAX_IMAGES = 1 << 15


def choose_lanes(n: int, model, inactive_dims, lanes=None) -> int:
    """Lanes for n images: ``lanes`` when given, else as many as keep per-lane overhead
    near LANE_OVERHEAD_SHARE of the file, or RANGE_SHARE from RANGE_MIN_IMAGES images on."""
    if lanes:
        return max(1, min(int(lanes), n))
    active = model.latent - len(inactive_dims)
    per_lane = LANE_HEAD_BITS + SHARD_ENTRY_BITS + active * model.precision["latent_bits"]
    share = RANGE_SHARE if n >= RANGE_MIN_IMAGES else LANE_OVERHEAD_SHARE
    lanes = math.floor(n * model.expected_bits_per_dim * model.dim * share / per_lane)
    return max(1, min(lanes, MAX_AUTO_LANES, n))


def plan(n: int, lanes: int, k_steps: int) -> list[tuple[int, int]]:
    """Shards for n images over ``lanes`` lanes as (images, lanes) pairs, in image order.

    Lanes are independent, so they are grouped into shards stored with their own byte
    ranges: a range decode decodes only the shards that hold the range. Shards are small
    (ceil(lanes / MAX_SHARDS) lanes each; K_SHARD_LANES at least with K-step inference)
    and are coded several at a time in lockstep (``shards.encode_group``), so small
    shards do not mean small network batches.
    """
    per = -(-lanes // MAX_SHARDS)  # ceil(lanes / MAX_SHARDS) lanes per shard
    if k_steps:
        per = max(per, min(lanes, K_SHARD_LANES))
    g = -(-lanes // per)
    g = max(g, -(-n // SHARD_MAX_IMAGES))
    lanes = max(lanes, g)
    lane_split = [lanes // g + (i < lanes % g) for i in range(g)]
    out, done_imgs, done_lanes = [], 0, 0
    for sl in lane_split:
        done_lanes += sl
        end = n * done_lanes // lanes
        out.append((end - done_imgs, sl))
        done_imgs = end
    return out


def groups(plan, parts: int, max_images: int = GROUP_MAX_IMAGES) -> list[list[int]]:
    """Split shard indices 0..len(plan)-1 into consecutive groups coded in lockstep:
    at least ``parts`` groups (one per worker) and at most ``max_images`` images per
    group (memory), with about equal image counts. A runtime choice: the bytes do not
    depend on it."""
    total = sum(c for c, _ in plan)
    parts = max(1, int(parts))
    k = max(parts, -(-total // max(1, max_images)))
    k = max(1, min(len(plan), -(-k // parts) * parts))
    out, start = [[] for _ in range(k)], 0
    for i, (c, _) in enumerate(plan):
        out[min(k - 1, (2 * start + c) * k // (2 * total))].append(i)  # by the shard's middle image
        start += c
    return [g for g in out if g]


def shard_seed(seed: int, shard: int) -> int:
    """The generator key of a shard's lanes: a function of the file's seed and the
    shard's index only, so a shard codes the same in any group."""
    return (seed * 0x9E3779B97F4A7C15 + shard) & 0xFFFFFFFFFFFFFFFF


class Layout:
    """Where the lanes of a group of shards sit in the group's message set, and which
    images each step codes.

    Shard s with L lanes and n images deals its images to its lanes in order (step t
    holds its images t*L .. t*L+L-1), so its lane j codes images j, L+j, 2L+j, ... The
    group's rows are all lanes of all shards, sorted by decreasing image count (stably),
    so that the lanes still coding at step t are always rows 0..k-1: the coder families
    work on a prefix of rows.
    """

    def __init__(self, shards):  # [(n, lanes, shard index), ...]
        self.shard = [g for _, _, g in shards]
        self.base = np.cumsum([0] + [n for n, _, _ in shards])
        self.total = int(self.base[-1])
        lanes = [(s, j, len(range(j, n, L))) for s, (n, L, _) in enumerate(shards) for j in range(L)]
        lanes.sort(key=lambda e: -e[2])
        self.lanes = [(s, j) for s, j, _ in lanes]
        self.count = np.array([c for _, _, c in lanes], np.int64)
        self.steps = int(self.count[0]) if len(lanes) else 0
        self.first = np.array([self.base[s] + j for s, j, _ in lanes], np.int64)   # image of step 0
        self.stride = np.array([shards[s][1] for s, _, _ in lanes], np.int64)
        self.of = np.array([s for s, _, _ in lanes], np.int64)
        self.step_images = [self.first[: self.active(t)] + t * self.stride[: self.active(t)] for t in range(self.steps)]

    def active(self, t: int) -> int:
        """Rows still coding at step t (a prefix)."""
        return int(np.searchsorted(-self.count, -t, side="left"))

    def images(self, t: int) -> np.ndarray:
        """Group image index of each active row at step t."""
        return self.step_images[t]

    def rows_of(self, s: int) -> np.ndarray:
        """Rows of shard s, in its lane order (the sort is stable and a shard's earlier
        lanes hold at least as many images)."""
        return np.flatnonzero(self.of == s)

    def active_rows(self, t: int):
        """(shard, its active rows in lane order) for every shard coding at step t."""
        k = self.active(t)
        for s in np.unique(self.of[:k]):
            yield int(s), np.flatnonzero(self.of[:k] == s)
