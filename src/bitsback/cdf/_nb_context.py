"""numba kernels of the causal-context families (context.py is the wrapper and holds the
spec and the invariants). Imported only by the JIT backend (_kernels.py) and the
ahead-of-time build (_aot_build.py).
"""
import numpy as np
from numba import njit, prange

from ._const import FREQS, POP, PUSH
from ._exp import fexp, flog_guess
from ._nb_logistic import cdf_at, mix_quantise, params
from ._nbcoder import advance_x, push_x


from ._exp import fexp, flog_guess


# Geometry: every lane keeps its image in a zero-padded buffer (R rows above, P columns
# left and right) so that a neighbour is one load at a fixed delta, with no bounds checks.
# geo = (W, Wp, R, P), Wp = W + 2P; pixel j = (r, c) sits at (r + R) * Wp + c + P.


@njit(cache=True, inline="always", error_model="numpy")
def slot(j, geo):
    W, Wp, R, P = geo
    r = j // W
    return (r + R) * Wp + (j - r * W) + P


# One kernel per family serves push (mode PUSH, pixels in reverse), pop (POP, raster
# order) and code lengths (FREQS): the per-pixel arithmetic exists once, so the encoder and
# decoder build each CDF from the same float64 operations.
# PUSH, POP, FREQS: _const.py


@njit(cache=True, inline="always", error_model="numpy")
def context_of(pad, i, b, cdelta, ctab):
    """Context of the pixel at slot b of lane i's padded image: sum_t ctab[t, neighbour t]
    (ctab[t, v] = bucket(v) * Q**t)."""
    c = 0
    for t in range(cdelta.shape[0]):
        c += ctab[t, pad[i, b + cdelta[t]]]
    return c


# Moving one pixel along a row, most neighbours of the new pixel were neighbours of the
# old one (neighbour (0,-2) of column c+1 is neighbour (0,-1) of column c), so their
# digits carry over, permuted. cx = (cdelta, ctab, then per direction, forward (raster
# order: pop, code lengths) and backward (push): perm, fdelta, ftab), where perm[c] is the
# carried part of the next pixel's context given the context c of the pixel coded before
# it, and fdelta / ftab the deltas and ctab rows of the neighbours read afresh. A row's
# first pixel in coding order is computed in full (context_of). The kernels write the
# shift out in their lane loops (an inlined call re-binds its array arguments, which
# costs reference counting on every call):
#     c = context_of(...) if restart else perm[c_before] + sum_u ftab[u, pad[b + fdelta[u]]]
# It is the same integer either way, so no CDF changes (test_context.py compares the two
# at every pixel, both directions).

@njit(cache=True, inline="always", error_model="numpy")
def row_shift(cx, geo, mode):
    """(cdelta, ctab, perm, fdelta, ftab, W, edge) for a kernel coding in mode's order:
    the shift tables of its direction, and the column (edge) where each row starts."""
    if mode == PUSH:
        return cx[0], cx[1], cx[5], cx[6], cx[7], geo[0], geo[0] - 1
    return cx[0], cx[1], cx[2], cx[3], cx[4], geo[0], 0


# Bernoulli context: P(x = 0) = sigmoid(-logit) from a table on [-16, 16] with linear
# interpolation (4096 cells), instead of an exp and a divide per pixel. The table is built
# with fexp (libm-free, so identical on every machine); interpolation error <= 1e-6 in
# probability costs ~1e-12 bits per symbol; beyond |logit| = 16 the frequency clamps.
_SIG_CELLS = 4096
_SIG_SCALE = _SIG_CELLS / 32.0


@njit(cache=True, error_model="numpy")
def sigmoid_table():
    t = np.empty(_SIG_CELLS + 1)
    for k in range(_SIG_CELLS + 1):
        t[k] = 1.0 / (1.0 + fexp(-16.0 + k / _SIG_SCALE))
    return t


@njit(cache=True, inline="always", error_model="numpy")
def table_freq0(logit, sig, one_f):
    """Quantised frequency of symbol 0 in [1, 2^prec - 1] (one_f = 2^prec as float)."""
    if logit != logit:
        logit = 0.0
    pos = (logit + 16.0) * _SIG_SCALE
    if pos <= 0.0:
        p0 = sig[0]
    elif pos >= _SIG_CELLS:
        p0 = sig[_SIG_CELLS]
    else:
        k = int(pos)
        p0 = sig[k] + (pos - k) * (sig[k + 1] - sig[k])
    f = min(max(np.floor(p0 * one_f + 0.5), 1.0), one_f - 1.0)
    return np.uint64(np.int32(f))


@njit(cache=True, nogil=True, error_model="numpy")
def bern(heads, addr, feats, x, pad, geo, cx, sig, gain, bias, prec, mode, fr, lane_lo, lane_hi):
    n, D, d = feats.shape
    p = np.uint64(prec)
    one = np.uint64(1) << p
    one_f = np.float64(one)
    mask = one - np.uint64(1)
    cdelta, ctab, perm, fdelta, ftab, W, edge = row_shift(cx, geo, mode)
    cprev = np.zeros(lane_hi - lane_lo, np.int64)
    for jj in range(D):
        j = D - 1 - jj if mode == PUSH else jj
        b = slot(j, geo)
        restart = j % W == edge or perm.shape[0] == 0
        for i in range(lane_lo, lane_hi):
            if restart:
                c = context_of(pad, i, b, cdelta, ctab)
            else:           # the row shift, written out (see cx above)
                c = perm[cprev[i - lane_lo]]
                for u in range(fdelta.shape[0]):
                    c += ftab[u, pad[i, b + fdelta[u]]]
            cprev[i - lane_lo] = c
            logit = np.float64(bias[c])
            for k in range(d):
                logit += np.float64(gain[c, k]) * np.float64(feats[i, j, k])
            f0 = table_freq0(logit, sig, one_f)
            if mode == POP:
                h = heads[i]
                bit = (h & mask) >= f0
                x[i, j] = 1 if bit else 0
                pad[i, b] = 1 if bit else 0
                heads[i] = advance_x(h, addr, i, f0 if bit else np.uint64(0), one - f0 if bit else f0, p, mask)
            else:
                bit = x[i, j] != 0
                if mode == PUSH:
                    heads[i] = push_x(heads[i], addr, i, f0 if bit else np.uint64(0), one - f0 if bit else f0, p)
                else:
                    fr[i, j] = one - f0 if bit else f0


# The mixture kernel works in stages per pixel, each a loop over the chunk's lanes
# (lanes innermost, component arrays [K, lanes]): gather the context tables, softmax the
# weights, the components' (mean, 1/scale), then the mixture CDF at the two edges of the
# symbol's bin (push: x; pop: the guess g). The exps of all lanes are then
# independent and the loops free of data-dependent branches, so they overlap (and
# vectorise) instead of waiting on one lane's search. A pop whose guess misses (8 % of
# mnist-grey's pixels) narrows its bracket in stage 5 together with the other misses.
# Every number is the same float64 expression, in the same order, as mix_weights /
# params / mix_start (logistic.py): the stages reorder lanes, never the operations within
# a lane, so push, pop and the code lengths agree bit for bit.
@njit(cache=True, nogil=True, error_model="numpy")
def mix(heads, addr, feats, x, pad, geo, cx, ulut, ldelta, T, prec, mode, fr, lane_lo, lane_hi):
    mgain, coef, mbias, lscale, wbias, wgain = T
    cdelta, ctab, perm, fdelta, ftab, W, edge = row_shift(cx, geo, mode)
    n, D, _ = feats.shape
    p = np.uint64(prec)
    one = np.uint64(1) << p
    mask = one - np.uint64(1)
    M = np.float64(one - np.uint64(256))
    K = mgain.shape[1]
    J = ldelta.shape[0]
    L = lane_hi - lane_lo
    w = np.empty((K, L))       # weight logits, then weights
    mu = np.empty((K, L))      # mean argument, then sanitised mean
    inv_s = np.empty((K, L))   # log-scale argument, then 1/scale
    top = np.empty(L)
    tot = np.empty(L)
    sym = np.empty(L, np.int64)
    F0 = np.empty(L)
    F1 = np.empty(L)
    u = np.empty(J)
    bl = np.empty(L, np.int64)      # stage 4: the lanes whose bin is not 0
    blo = np.empty(L, np.int64)     # stage 5 (pop): each lane's bracket
    bhi = np.empty(L, np.int64)
    sblo = np.empty(L, np.uint64)
    sbhi = np.empty(L, np.uint64)
    one_f = np.float64(one)         # stage 3 (pop): cf / one, the guessed component's share
    frac = np.empty(L)
    acc = np.empty(L)
    gacc = np.empty(L)
    gw = np.empty(L)
    gm = np.empty(L)
    gis = np.empty(L)
    cl = np.empty(L, np.int64)      # stage 5: the searching lanes' brackets and components, packed
    ccf = np.empty(L, np.uint64)
    clo = np.empty(L, np.int64)
    chi = np.empty(L, np.int64)
    cslo = np.empty(L, np.uint64)
    cshi = np.empty(L, np.uint64)
    cw = np.empty((K, L))
    cmu = np.empty((K, L))
    cis = np.empty((K, L))
    mid = np.empty(L, np.int64)
    at = np.empty(L)
    Fm = np.empty(L)
    cprev = np.zeros(L, np.int64)
    for jj in range(D):
        j = D - 1 - jj if mode == PUSH else jj
        b = slot(j, geo)
        restart = j % W == edge or perm.shape[0] == 0
        # stage 1: context, table gathers and the linear neighbour term
        for l in range(L):
            i = lane_lo + l
            if restart:
                c = context_of(pad, i, b, cdelta, ctab)
            else:           # the row shift, written out (see cx above)
                c = perm[cprev[l]]
                for t in range(fdelta.shape[0]):
                    c += ftab[t, pad[i, b + fdelta[t]]]
            cprev[l] = c
            for t in range(J):
                u[t] = ulut[pad[i, b + ldelta[t]]]
            m = np.float64(feats[i, j, 0])
            s = np.float64(feats[i, j, 1])
            g = np.float64(feats[i, j, 2])
            for k in range(K):
                w[k, l] = np.float64(wbias[c, k]) + np.float64(wgain[c, k]) * g
                v = np.float64(mgain[c, k]) * m + np.float64(mbias[c, k])
                for t in range(J):
                    v += np.float64(coef[c, k, t]) * u[t]
                mu[k, l] = 127.5 + 127.5 * v
                inv_s[k, l] = np.float64(lscale[c, k]) + s
        # stage 2: softmax of the sanitised weight logits (mix_weights), params
        for l in range(L):
            top[l] = -1e300
            tot[l] = 0.0
        for k in range(K):
            for l in range(L):
                a = w[k, l]
                if a != a:
                    a = 0.0
                a = min(max(a, -100.0), 100.0)
                w[k, l] = a
                top[l] = max(top[l], a)
        for k in range(K):
            for l in range(L):
                e = fexp(w[k, l] - top[l])
                w[k, l] = e
                tot[l] += e
        for k in range(K):
            for l in range(L):
                w[k, l] /= tot[l]
                mu[k, l], inv_s[k, l] = params(mu[k, l], inv_s[k, l])
        # stage 3: the bin to bracket: the symbol, or the pop's guess. A guess reads the
        # mixture as its components side by side in order of their means: cf falls in one
        # component's share of [0, 1) (acc <= u < acc + w), and the guess inverts that
        # component's CDF at u's place within the share. Against inverting the heaviest
        # component at u, this cuts mnist-grey's misses from 13.1 to 7.7 % (docs/CODER.md).
        # Written as passes over the lanes with selects, so that it vectorises. A guess
        # only: stage 5 checks it.
        if mode == POP:
            for l in range(L):
                frac[l] = (np.float64(heads[lane_lo + l] & mask) + 0.5) / one_f
                gacc[l], gw[l], gm[l], gis[l] = 0.0, w[0, l], mu[0, l], inv_s[0, l]
            for k in range(K):
                for l in range(L):
                    acc[l] = 0.0
                for kk in range(K):     # the weight of the components before k
                    if kk != k:
                        for l in range(L):
                            before = mu[kk, l] < mu[k, l] or (mu[kk, l] == mu[k, l] and kk < k)
                            acc[l] += w[kk, l] if before else 0.0
                for l in range(L):
                    take = acc[l] <= frac[l] and frac[l] < acc[l] + w[k, l]
                    gacc[l] = acc[l] if take else gacc[l]
                    gw[l] = w[k, l] if take else gw[l]
                    gm[l] = mu[k, l] if take else gm[l]
                    gis[l] = inv_s[k, l] if take else gis[l]
            for l in range(L):
                f = min(max((frac[l] - gacc[l]) / gw[l], 1e-12), 1.0 - 1e-12)
                z = gm[l] + flog_guess(f / (1.0 - f)) / gis[l] + 0.5
                z = z if z > 0.0 else 0.0     # also NaN
                sym[l] = np.int32(z if z < 255.0 else 255.0)
        else:
            for l in range(L):
                sym[l] = np.int64(x[lane_lo + l, j])
        # stage 4: the mixture CDF at both edges of that bin (mix_start's sum, in its order).
        # Bin 0 starts at 0 whatever F (mix_quantise), so its lower edge is not evaluated:
        # most pixels of a dark background are 0 (mnist-grey, replays of 40 steps' calls at
        # 87 lanes, three runs: pops 4-5 % faster, pushes 2-7 %).
        nz = 0
        for l in range(L):
            F0[l] = 0.0
            F1[l] = 0.0
            if sym[l] > 0:
                bl[nz] = l
                nz += 1
        for k in range(K):
            for q in range(nz):
                l = bl[q]
                F0[l] += w[k, l] * cdf_at(sym[l] - 0.5, mu[k, l], inv_s[k, l])
            for l in range(L):
                F1[l] += w[k, l] * cdf_at(sym[l] + 0.5, mu[k, l], inv_s[k, l])
        # stage 5: code. A pop brackets its symbol, [blo, bhi) with quantised starts
        # sblo <= cf < sbhi: the guess's bin when it holds cf, else the side of it that
        # does. Wider brackets narrow in lockstep rounds over the lanes that have one,
        # interpolating on even rounds and bisecting on odd ones (at most ~2 log2 256),
        # each round one mixture CDF per such lane in a loop free of data-dependent
        # branches: the lanes' evaluations overlap instead of each waiting on its last.
        # The searching lanes' data is packed into contiguous arrays (c*), re-packed as
        # lanes finish, so that the round's loop vectorises.
        for l in range(L):
            i = lane_lo + l
            k = sym[l]
            lo = mix_quantise(F0[l], k, M, one)
            hi = mix_quantise(F1[l], k + 1, M, one)
            if mode == PUSH:
                heads[i] = push_x(heads[i], addr, i, lo, hi - lo, p)
            elif mode == FREQS:
                fr[i, j] = hi - lo
            elif heads[i] & mask < lo:
                blo[l], sblo[l], bhi[l], sbhi[l] = 0, np.uint64(0), k, lo
            elif heads[i] & mask < hi:
                blo[l], sblo[l], bhi[l], sbhi[l] = k, lo, k + 1, hi
            else:
                blo[l], sblo[l], bhi[l], sbhi[l] = k + 1, hi, 256, one
        if mode != POP:
            continue
        nb = 0      # the lanes still searching, packed at the front of the c* arrays
        for l in range(L):
            if bhi[l] - blo[l] > 1:
                cl[nb], ccf[nb] = l, heads[lane_lo + l] & mask
                clo[nb], chi[nb], cslo[nb], cshi[nb] = blo[l], bhi[l], sblo[l], sbhi[l]
                for k in range(K):
                    cw[k, nb], cmu[k, nb], cis[k, nb] = w[k, l], mu[k, l], inv_s[k, l]
                nb += 1
        rnd = 0
        while nb > 0:
            for q in range(nb):
                if rnd % 2 == 0:
                    t = np.float64(ccf[q] - cslo[q]) / np.float64(cshi[q] - cslo[q])
                    mid[q] = min(max(clo[q] + np.int64(t * np.float64(chi[q] - clo[q])), clo[q] + 1), chi[q] - 1)
                else:
                    mid[q] = (clo[q] + chi[q]) // 2
                at[q] = mid[q] - 0.5
                Fm[q] = 0.0
            rnd += 1
            for k in range(K):      # mix_start's sum, in its order
                for q in range(nb):
                    Fm[q] += cw[k, q] * cdf_at(at[q], cmu[k, q], cis[k, q])
            nn = 0
            for q in range(nb):
                s = mix_quantise(Fm[q], mid[q], M, one)
                if s <= ccf[q]:
                    clo[q], cslo[q] = mid[q], s
                else:
                    chi[q], cshi[q] = mid[q], s
                if chi[q] - clo[q] > 1:     # still searching: move down to slot nn
                    cl[nn], ccf[nn], clo[nn], chi[nn], cslo[nn], cshi[nn] = cl[q], ccf[q], clo[q], chi[q], cslo[q], cshi[q]
                    for k in range(K):
                        cw[k, nn], cmu[k, nn], cis[k, nn] = cw[k, q], cmu[k, q], cis[k, q]
                    nn += 1
                else:
                    l = cl[q]
                    blo[l], sblo[l], sbhi[l] = clo[q], cslo[q], cshi[q]
            nb = nn
        for l in range(L):
            i = lane_lo + l
            x[i, j] = blo[l]
            pad[i, b] = blo[l]
            heads[i] = advance_x(heads[i], addr, i, sblo[l], sbhi[l] - sblo[l], p, mask)


@njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def bern_par(heads, addr, feats, x, pad, geo, cx, sig, gain, bias, prec, mode, fr, chunks):
    n = feats.shape[0]
    for c in prange(chunks):
        bern(heads, addr, feats, x, pad, geo, cx, sig, gain, bias, prec, mode, fr,
             c * n // chunks, (c + 1) * n // chunks)


@njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def mix_par(heads, addr, feats, x, pad, geo, cx, ulut, ldelta, T, prec, mode, fr, chunks):
    n = feats.shape[0]
    for c in prange(chunks):
        mix(heads, addr, feats, x, pad, geo, cx, ulut, ldelta, T, prec, mode, fr,
            c * n // chunks, (c + 1) * n // chunks)
