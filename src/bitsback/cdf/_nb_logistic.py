"""numba kernels of the discretised logistic families (logistic.py is the wrapper and
holds the spec). Imported only by the JIT backend (_kernels.py), the context kernels and
the ahead-of-time build (_aot_build.py).
"""
import math

import numpy as np
from numba import njit, prange

from ._const import LOG_SCALE_MAX, LOG_SCALE_MIN, MEAN_ABS_MAX
from ._exp import fexp, flog_guess
from ._nbcoder import advance_x, push_x


@njit(cache=True, inline="always", error_model="numpy")
def sanitise(mean, log_scale):
    """Sanitised (mean, log_scale) as float64: NaN and range clamps, no exp."""
    m = np.float64(mean)
    if m != m:
        m = 127.5
    m = min(max(m, -MEAN_ABS_MAX), MEAN_ABS_MAX)
    ls = np.float64(log_scale)
    if ls != ls:
        ls = LOG_SCALE_MAX
    ls = min(max(ls, LOG_SCALE_MIN), LOG_SCALE_MAX)
    return m, ls


@njit(cache=True, inline="always", error_model="numpy")
def params(mean, log_scale):
    """Sanitised (mean, 1/scale) as float64."""
    m, ls = sanitise(mean, log_scale)
    return m, fexp(-ls)


@njit(cache=True, inline="always", error_model="numpy")
def cdf_at(edge, m, inv_s):
    """Logistic CDF in float64; monotone in edge because exp is."""
    return 1.0 / (1.0 + fexp((m - edge) * inv_s))


@njit(cache=True, inline="always", error_model="numpy")
def quantise(e, k, M, one):
    """Start of bin k (0..256) as uint64, given e = fexp((m - (k - 1/2)) * inv_s)."""
    if k <= 0:
        return np.uint64(0)
    if k >= 256:
        return one
    # 0 <= F * M < 2^31 - 256: the int32 conversion vectorises (AVX2 has no double -> int64)
    return np.uint64(np.int32(np.floor((1.0 / (1.0 + e)) * M)) + np.int32(k))


@njit(cache=True, inline="always", error_model="numpy")
def start_of(k, m, inv_s, M, one):
    """Quantised start of bin k (0..256) as uint64 (= quantise of cdf_at's exp)."""
    if k <= 0:
        return np.uint64(0)
    if k >= 256:
        return one
    return quantise(fexp((m - (k - 0.5)) * inv_s), k, M, one)


@njit(cache=True, inline="always", error_model="numpy")
def guess(cf, m, inv_s, one):
    """Bin whose interval most likely holds cf (a guess only; always corrected)."""
    c = np.float64(cf) + 0.5                 # in (0, one): the logit is finite
    z = m + flog_guess(c / (np.float64(one) - c)) / inv_s
    if not z > -0.5:        # also catches NaN
        return 0
    if z >= 255.5:
        return 255
    return int(z + 0.5)


@njit(cache=True, inline="always", error_model="numpy")
def search(cf, k, m, inv_s, M, one):
    """(k, start, freq) with start(k) <= cf < start(k+1), starting from guess k."""
    s = start_of(k, m, inv_s, M, one)
    if s <= cf:
        lo, s_lo = k, s
        step = 1
        while True:
            nk = min(k + step, 256)
            sn = start_of(nk, m, inv_s, M, one)
            if sn > cf:
                hi, s_hi = nk, sn
                break
            lo, s_lo = nk, sn
            step *= 2
    else:
        hi, s_hi = k, s
        step = 1
        while True:
            nk = max(k - step, 0)
            sn = start_of(nk, m, inv_s, M, one)
            if sn <= cf:
                lo, s_lo = nk, sn
                break
            hi, s_hi = nk, sn
            step *= 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        sm = start_of(mid, m, inv_s, M, one)
        if sm <= cf:
            lo, s_lo = mid, sm
        else:
            hi, s_hi = mid, sm
    return lo, s_lo, s_hi - s_lo


BLOCK = 256   # columns per block: phase A (vectorisable CDF maths) then phase B (coding)


@njit(cache=True, inline="always", error_model="numpy")
def block_starts(mean, log_scale, x, i, j0, w, M, one, a, sr, fr):
    """sr[t], fr[t] = start, freq of x[i, j0 + t] for t < w (the encoder's phase A).

    The same float operations as start_of, split into short passes: one fused loop
    chained exp -> exp -> divide (~200 cycles of latency per 4-wide vector, ~250
    instructions per iteration), so the core could not overlap iterations and was
    latency-bound; short loops keep several iterations in flight.
    a is float64 scratch of shape (4, >= w).
    """
    m_, is_, e0, e1 = a[0], a[1], a[2], a[3]
    for t in range(w):
        m, ls = sanitise(mean[i, j0 + t], log_scale[i, j0 + t])
        m_[t] = m
        is_[t] = -ls
    for t in range(w):
        is_[t] = fexp(is_[t])
    for t in range(w):
        k = np.int64(x[i, j0 + t])
        e0[t] = (m_[t] - (k - 0.5)) * is_[t]
        e1[t] = (m_[t] - ((k + 1) - 0.5)) * is_[t]
    for t in range(w):
        e0[t] = fexp(e0[t])
    for t in range(w):
        e1[t] = fexp(e1[t])
    for t in range(w):
        k = np.int64(x[i, j0 + t])
        lo = quantise(e0[t], k, M, one)
        sr[t] = lo
        fr[t] = quantise(e1[t], k + 1, M, one) - lo


@njit(cache=True, nogil=True, error_model="numpy")
def push(heads, addr, mean, log_scale, x, prec, lane_lo, lane_hi):
    n, D = mean.shape
    p = np.uint64(prec)
    one = np.uint64(1) << p
    M = np.float64(one - np.uint64(256))
    ss = np.empty((lane_hi - lane_lo, BLOCK), np.uint64)
    fs = np.empty((lane_hi - lane_lo, BLOCK), np.uint64)
    a = np.empty((4, BLOCK))
    j1 = D
    while j1 > 0:
        j0 = max(j1 - BLOCK, 0)
        for i in range(lane_lo, lane_hi):
            block_starts(mean, log_scale, x, i, j0, j1 - j0, M, one, a,
                         ss[i - lane_lo], fs[i - lane_lo])
        for t in range(j1 - j0 - 1, -1, -1):
            for i in range(lane_lo, lane_hi):
                heads[i] = push_x(heads[i], addr, i, ss[i - lane_lo, t], fs[i - lane_lo, t], p)
        j1 = j0


@njit(cache=True, nogil=True, error_model="numpy")
def pop(heads, addr, mean, log_scale, prec, out, lane_lo, lane_hi):
    n, D = mean.shape
    L = lane_hi - lane_lo
    p = np.uint64(prec)
    one = np.uint64(1) << p
    mask = one - np.uint64(1)
    M = np.float64(one - np.uint64(256))
    ms = np.empty((L, BLOCK))
    ivs = np.empty((L, BLOCK))
    # one column across lanes: peeked cf, guessed bin, (mean, 1/scale), the two exps
    cfs = np.empty(L, np.uint64)
    ks = np.empty(L, np.int64)
    mc = np.empty(L)
    ic = np.empty(L)
    e0 = np.empty(L)
    e1 = np.empty(L)
    for j0 in range(0, D, BLOCK):
        j1 = min(j0 + BLOCK, D)
        for l in range(L):
            mr, ir = ms[l], ivs[l]
            for t in range(j1 - j0):
                mr[t], ir[t] = sanitise(mean[lane_lo + l, j0 + t], log_scale[lane_lo + l, j0 + t])
            for t in range(j1 - j0):
                ir[t] = fexp(-ir[t])
        for t in range(j1 - j0):
            # Pass 1: guess every lane's bin. Pass 2 (vectorised): the exps of both edges
            # of the guessed bin for all lanes at once. Pass 3: accept the guess when
            # start(k) <= cf < start(k + 1) on the quantised CDF, else search; then advance.
            # The same float operations as start_of, so the accepted interval is exact.
            for l in range(L):
                cf = heads[lane_lo + l] & mask
                m, inv_s = ms[l, t], ivs[l, t]
                cfs[l] = cf
                mc[l] = m
                ic[l] = inv_s
                ks[l] = guess(cf, m, inv_s, one)
            for l in range(L):
                k = ks[l]
                e0[l] = fexp((mc[l] - (k - 0.5)) * ic[l])
                e1[l] = fexp((mc[l] - ((k + 1) - 0.5)) * ic[l])
            for l in range(L):
                i = lane_lo + l
                k, cf = ks[l], cfs[l]
                s = quantise(e0[l], k, M, one)
                sn = quantise(e1[l], k + 1, M, one)
                if s <= cf and cf < sn:
                    f = sn - s
                else:
                    k, s, f = search(cf, k, mc[l], ic[l], M, one)
                out[i, j0 + t] = k
                heads[i] = advance_x(heads[i], addr, i, s, f, p, mask)


@njit(cache=True, nogil=True, error_model="numpy")
def cdf_table(mean, log_scale, prec):
    one = np.uint64(1) << np.uint64(prec)
    M = np.float64(one - np.uint64(256))
    n = mean.size
    out = np.empty((n, 257), np.uint32)
    for i in range(n):
        m, inv_s = params(mean[i], log_scale[i])
        for k in range(257):
            out[i, k] = start_of(k, m, inv_s, M, one)
    return out


# ---- channel-wise linear autoregression (RGB, PixelCNN++ style) ----------------------
# Order within a lane: pixels in raster order (h, w), and at each pixel r, g, b.
# mean_g += c[0] * x_r ; mean_b += c[1] * x_r + c[2] * x_g  (pixel units, x in 0..255).

@njit(cache=True, inline="always", error_model="numpy")
def ar_mean(mean, coef, xs, i, c, h, w):
    mu = np.float64(mean[i, c, h, w])
    if c == 1:
        mu += np.float64(coef[i, 0, h, w]) * np.float64(xs[i, 0, h, w])
    elif c == 2:
        mu += (np.float64(coef[i, 1, h, w]) * np.float64(xs[i, 0, h, w])
               + np.float64(coef[i, 2, h, w]) * np.float64(xs[i, 1, h, w]))
    return mu


@njit(cache=True, nogil=True, error_model="numpy")
def push_ar(heads, addr, mean, log_scale, coef, x, prec, lane_lo, lane_hi):
    n, C, H, W = mean.shape
    p = np.uint64(prec)
    one = np.uint64(1) << p
    M = np.float64(one - np.uint64(256))
    for hw in range(H * W - 1, -1, -1):
        h, w = hw // W, hw % W
        for c in range(C - 1, -1, -1):
            for i in range(lane_lo, lane_hi):
                m, inv_s = params(ar_mean(mean, coef, x, i, c, h, w), log_scale[i, c, h, w])
                k = np.int64(x[i, c, h, w])
                lo = start_of(k, m, inv_s, M, one)
                hi = start_of(k + 1, m, inv_s, M, one)
                heads[i] = push_x(heads[i], addr, i, lo, hi - lo, p)


@njit(cache=True, nogil=True, error_model="numpy")
def pop_ar(heads, addr, mean, log_scale, coef, prec, out, lane_lo, lane_hi):
    n, C, H, W = mean.shape
    p = np.uint64(prec)
    one = np.uint64(1) << p
    mask = one - np.uint64(1)
    M = np.float64(one - np.uint64(256))
    for hw in range(H * W):
        h, w = hw // W, hw % W
        for c in range(C):
            for i in range(lane_lo, lane_hi):
                # the dependent mean uses channels of this pixel decoded just before
                m, inv_s = params(ar_mean(mean, coef, out, i, c, h, w), log_scale[i, c, h, w])
                cf = heads[i] & mask
                k, s, f = search(cf, guess(cf, m, inv_s, one), m, inv_s, M, one)
                out[i, c, h, w] = k
                heads[i] = advance_x(heads[i], addr, i, s, f, p, mask)


@njit(cache=True, nogil=True, error_model="numpy")
def ar_starts_freqs(mean, log_scale, coef, x, prec):
    n, C, H, W = mean.shape
    one = np.uint64(1) << np.uint64(prec)
    M = np.float64(one - np.uint64(256))
    s = np.empty(mean.shape, np.uint32)
    f = np.empty(mean.shape, np.uint32)
    for i in range(n):
        for c in range(C):
            for h in range(H):
                for w in range(W):
                    m, inv_s = params(ar_mean(mean, coef, x, i, c, h, w), log_scale[i, c, h, w])
                    k = np.int64(x[i, c, h, w])
                    lo = start_of(k, m, inv_s, M, one)
                    s[i, c, h, w] = lo
                    f[i, c, h, w] = start_of(k + 1, m, inv_s, M, one) - lo
    return s, f


# ---- mixtures of logistics --------------------------------------------------------------

@njit(cache=True, inline="always", error_model="numpy")
def mix_weights(scratch, K):
    """scratch[c, 0] holds K raw weight logits: sanitise them (NaN -> 0, clamp to ±100) and
    replace them by their softmax."""
    top = -1e300
    for c in range(K):
        a = scratch[c, 0]
        if a != a:
            a = 0.0
        a = min(max(a, -100.0), 100.0)
        scratch[c, 0] = a
        top = max(top, a)
    tot = 0.0
    for c in range(K):
        e = fexp(scratch[c, 0] - top)
        scratch[c, 0] = e
        tot += e
    for c in range(K):
        scratch[c, 0] /= tot


@njit(cache=True, inline="always", error_model="numpy")
def mix_prepare(lw, mean, log_scale, i, j, scratch):
    """Fill scratch[m] = (weight, mean, 1/scale) of component m (softmax of sanitised logits)."""
    K = lw.shape[2]
    for c in range(K):
        scratch[c, 0] = np.float64(lw[i, j, c])
    mix_weights(scratch, K)
    for c in range(K):
        m, inv_s = params(mean[i, j, c], log_scale[i, j, c])
        scratch[c, 1] = m
        scratch[c, 2] = inv_s


@njit(cache=True, inline="always", error_model="numpy")
def mix_start(k, scratch, M, one):
    if k <= 0:
        return np.uint64(0)
    if k >= 256:
        return one
    F = 0.0
    for c in range(scratch.shape[0]):
        F += scratch[c, 0] * cdf_at(k - 0.5, scratch[c, 1], scratch[c, 2])
    return mix_quantise(F, k, M, one)


@njit(cache=True, inline="always", error_model="numpy")
def mix_quantise(F, k, M, one):
    """Start of bin k (0..256) from the mixture CDF F at k - 1/2 (mix_start's last step).

    Same edges as quantise, kept apart on purpose: quantise takes the exp and converts
    through int32 (vectorised single-logistic push); routing it through this function
    made that push about 30 % slower (165 -> 222 ns/symbol), files unchanged."""
    if k <= 0:
        return np.uint64(0)
    if k >= 256:
        return one
    F = min(F, 1.0)   # softmax weights may sum to 1 + ulp
    return np.uint64(math.floor(F * M)) + np.uint64(k)


@njit(cache=True, inline="always", error_model="numpy")
def mix_guess(cf, scratch, one):
    """Bin of cf under the heaviest component (a guess only; mix_search corrects it)."""
    best = 0
    for c in range(1, scratch.shape[0]):
        if scratch[c, 0] > scratch[best, 0]:
            best = c
    return guess(cf, scratch[best, 1], scratch[best, 2], one)


@njit(cache=True, inline="always", error_model="numpy")
def mix_search(cf, k, scratch, M, one):
    """(k, start, freq) with start(k) <= cf < start(k+1) under the mixture's quantised
    CDF, galloping out from the guess k, then bisecting the bracket."""
    s = mix_start(k, scratch, M, one)
    if s <= cf:
        lo, s_lo = k, s
        step = 1
        while True:
            nk = min(k + step, 256)
            sn = mix_start(nk, scratch, M, one)
            if sn > cf:
                hi, s_hi = nk, sn
                break
            lo, s_lo = nk, sn
            step *= 2
    else:
        hi, s_hi = k, s
        step = 1
        while True:
            nk = max(k - step, 0)
            sn = mix_start(nk, scratch, M, one)
            if sn <= cf:
                lo, s_lo = nk, sn
                break
            hi, s_hi = nk, sn
            step *= 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        sm = mix_start(mid, scratch, M, one)
        if sm <= cf:
            lo, s_lo = mid, sm
        else:
            hi, s_hi = mid, sm
    return lo, s_lo, s_hi - s_lo


@njit(cache=True, nogil=True, error_model="numpy")
def push_mix(heads, addr, lw, mean, log_scale, x, prec, lane_lo, lane_hi):
    n, D, K = mean.shape
    p = np.uint64(prec)
    one = np.uint64(1) << p
    M = np.float64(one - np.uint64(256))
    scratch = np.empty((K, 3))
    for j in range(D - 1, -1, -1):
        for i in range(lane_lo, lane_hi):
            mix_prepare(lw, mean, log_scale, i, j, scratch)
            k = np.int64(x[i, j])
            lo = mix_start(k, scratch, M, one)
            hi = mix_start(k + 1, scratch, M, one)
            heads[i] = push_x(heads[i], addr, i, lo, hi - lo, p)


@njit(cache=True, nogil=True, error_model="numpy")
def pop_mix(heads, addr, lw, mean, log_scale, prec, out, lane_lo, lane_hi):
    n, D, K = mean.shape
    p = np.uint64(prec)
    one = np.uint64(1) << p
    mask = one - np.uint64(1)
    M = np.float64(one - np.uint64(256))
    scratch = np.empty((K, 3))
    for j in range(D):
        for i in range(lane_lo, lane_hi):
            mix_prepare(lw, mean, log_scale, i, j, scratch)
            cf = heads[i] & mask
            k, s_lo, f = mix_search(cf, mix_guess(cf, scratch, one), scratch, M, one)
            out[i, j] = k
            heads[i] = advance_x(heads[i], addr, i, s_lo, f, p, mask)


@njit(cache=True, nogil=True, error_model="numpy")
def mix_starts_freqs(lw, mean, log_scale, x, prec):
    n, D, K = mean.shape
    one = np.uint64(1) << np.uint64(prec)
    M = np.float64(one - np.uint64(256))
    scratch = np.empty((K, 3))
    s = np.empty((n, D), np.uint32)
    f = np.empty((n, D), np.uint32)
    for i in range(n):
        for j in range(D):
            mix_prepare(lw, mean, log_scale, i, j, scratch)
            k = np.int64(x[i, j])
            lo = mix_start(k, scratch, M, one)
            s[i, j] = lo
            f[i, j] = mix_start(k + 1, scratch, M, one) - lo
    return s, f



# ---- lane-parallel drivers: lanes are independent, so chunks of lanes run on threads ----

@njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def push_par(heads, addr, mean, log_scale, x, prec, chunks):
    n = mean.shape[0]
    for c in prange(chunks):
        push(heads, addr, mean, log_scale, x, prec, c * n // chunks, (c + 1) * n // chunks)


@njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def pop_par(heads, addr, mean, log_scale, prec, out, chunks):
    n = mean.shape[0]
    for c in prange(chunks):
        pop(heads, addr, mean, log_scale, prec, out, c * n // chunks, (c + 1) * n // chunks)


@njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def push_ar_par(heads, addr, mean, log_scale, coef, x, prec, chunks):
    n = mean.shape[0]
    for c in prange(chunks):
        push_ar(heads, addr, mean, log_scale, coef, x, prec, c * n // chunks, (c + 1) * n // chunks)


@njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def pop_ar_par(heads, addr, mean, log_scale, coef, prec, out, chunks):
    n = mean.shape[0]
    for c in prange(chunks):
        pop_ar(heads, addr, mean, log_scale, coef, prec, out, c * n // chunks, (c + 1) * n // chunks)


@njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def push_mix_par(heads, addr, lw, mean, log_scale, x, prec, chunks):
    n = mean.shape[0]
    for c in prange(chunks):
        push_mix(heads, addr, lw, mean, log_scale, x, prec, c * n // chunks, (c + 1) * n // chunks)


@njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def pop_mix_par(heads, addr, lw, mean, log_scale, prec, out, chunks):
    n = mean.shape[0]
    for c in prange(chunks):
        pop_mix(heads, addr, lw, mean, log_scale, prec, out, c * n // chunks, (c + 1) * n // chunks)


# ---- code lengths (logistic.freqs) -------------------------------------------------------

@njit(cache=True, nogil=True, error_model="numpy")
def freqs(mean, log_scale, x, prec):
    n, D = mean.shape
    one = np.uint64(1) << np.uint64(prec)
    M = np.float64(one - np.uint64(256))
    f = np.empty((n, D), np.uint32)
    for i in range(n):
        for j in range(D):
            m, inv_s = params(mean[i, j], log_scale[i, j])
            k = np.int64(x[i, j])
            f[i, j] = np.uint32(start_of(k + 1, m, inv_s, M, one) - start_of(k, m, inv_s, M, one))
    return f
