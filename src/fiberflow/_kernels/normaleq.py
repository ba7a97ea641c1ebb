"""numba kernels of the extraction: normal equations, leverages, model image, stamp sums (references:
the ``*_numpy`` functions of fiberflow.steps.extract)."""

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def overlap_pairs_numba(x0, y0, sy, sx):
    """Pairs ``i <= j`` of stamps that share a pixel (the non-zero entries of A^T W A).

    The stamps are taken in chunks of 16 consecutive ones with their bounding box: a stamp is only
    compared with the stamps of the chunks whose box it can reach (a patch's stamps lie along a few
    traces, so most chunks are out of reach). Pairs come in the order of a full ``i``, ``j >= i`` scan.

    Parameters
    ----------
    x0, y0 : (n,) int64
        Pixel of each stamp's [0, 0].
    sy, sx : int
        Stamp shape.

    Returns
    -------
    pi, pj : (npair,) int64
    """
    n = x0.size
    cs = 16
    nch = (n + cs - 1) // cs
    box = np.empty((nch, 4), np.int64)  # xmin, xmax, ymin, ymax of each chunk
    for c in range(nch):
        box[c, 0] = box[c, 1] = x0[c * cs]
        box[c, 2] = box[c, 3] = y0[c * cs]
        for j in range(c * cs, min(n, (c + 1) * cs)):
            box[c, 0] = min(box[c, 0], x0[j])
            box[c, 1] = max(box[c, 1], x0[j])
            box[c, 2] = min(box[c, 2], y0[j])
            box[c, 3] = max(box[c, 3], y0[j])
    count = 0
    for sweep in range(2):
        if sweep == 1:
            pi = np.empty(count, np.int64)
            pj = np.empty(count, np.int64)
        k = 0
        for i in range(n):
            xi, yi = x0[i], y0[i]
            for c in range(i // cs, nch):
                if (box[c, 0] - xi >= sx or xi - box[c, 1] >= sx or box[c, 2] - yi >= sy
                        or yi - box[c, 3] >= sy):
                    continue
                for j in range(max(i, c * cs), min(n, (c + 1) * cs)):
                    if abs(y0[j] - yi) < sy and abs(x0[j] - xi) < sx:
                        if sweep == 1:
                            pi[k] = i
                            pj[k] = j
                        k += 1
        count = k
    return pi, pj


@njit(cache=True, nogil=True, inline="always")
def _overlap(i, j, x0, y0, sy, sx):
    """Offset of stamp j from stamp i and their shared rows [a0, a1) and columns [b0, b1) in i's frame."""
    dy = y0[j] - y0[i]
    dx = x0[j] - x0[i]
    return dy, dx, max(0, dy), min(sy, sy + dy), max(0, dx), min(sx, sx + dx)


@njit(cache=True, nogil=True)
def _inside(x0, y0, sy, sx, ny, nx):
    """Stamps with at least one pixel on the (ny, nx) frame."""
    n = x0.size
    out = np.empty(n, np.bool_)
    for i in range(n):
        out[i] = -sy < y0[i] < ny and -sx < x0[i] < nx
    return out


@njit(cache=True, nogil=True, fastmath=True)
def normal_equations_band_numba(stamps, x0, y0, data, weight, pi, pj, pos, kd):
    """A^T W A in LAPACK's lower band storage of the matrix reordered so that unknown ``k`` comes at
    position ``pos[k]`` (``ab[p, d]`` is the entry of the unknowns at positions ``p + d`` and ``p``; no
    dense (n, n) matrix to fill and pack), and A^T W d, for unknowns whose model columns are pixel
    stamps.

    Parameters
    ----------
    stamps : (n, sy, sx) float64
        Column k of A is ``stamps[k]`` placed with its pixel [0, 0] at (y0[k], x0[k]) in the
        local pixel frame of ``data``.
    x0, y0 : (n,) int64
    data, weight : (ny, nx) float64
        Pixels of the patch region and their weights (inverse variance, 0 = masked).
    pi, pj : (npair,) int64
        Overlapping pairs ``i <= j`` (:func:`overlap_pairs_numba`).
    pos : (n,) int64
        Position of each unknown in the banded order.
    kd : int
        Half-bandwidth of the storage (pairs farther apart are dropped: there should be none).

    Returns
    -------
    ab : (n, kd + 1) float64
    atd : (n,) float64
        In the unknowns' own order.

    The frame is padded by a stamp on every side (weight 0), so the inner loops run over
    contiguous stamp rows without bounds checks; each stamp is multiplied by its pixels'
    weights once. (The pair products stay in this loop: moved to a function of their own, numba no
    longer vectorises them, 2x slower.)"""
    n, sy, sx = stamps.shape
    ny, nx = data.shape
    wp = np.zeros((ny + 2 * sy, nx + 2 * sx))
    dp = np.zeros((ny + 2 * sy, nx + 2 * sx))
    wp[sy:sy + ny, sx:sx + nx] = weight
    dp[sy:sy + ny, sx:sx + nx] = data
    inside = _inside(x0, y0, sy, sx, ny, nx)
    ws = np.zeros((n, sy, sx))
    atd = np.zeros(n)
    for i in range(n):
        if not inside[i]:
            continue
        yy = y0[i] + sy
        xx = x0[i] + sx
        acc = 0.0
        for a in range(sy):
            for b in range(sx):
                v = stamps[i, a, b] * wp[yy + a, xx + b]
                ws[i, a, b] = v
                acc += v * dp[yy + a, xx + b]
        atd[i] = acc
    ab = np.zeros((n, kd + 1))
    wsf = ws.reshape(n, sy * sx)
    stf = stamps.reshape(n, sy * sx)
    for p in range(pi.size):
        i, j = pi[p], pj[p]
        if not (inside[i] and inside[j]):
            continue
        d = abs(pos[i] - pos[j])
        if d > kd:
            continue
        dy, dx, a0, a1, b0, b1 = _overlap(i, j, x0, y0, sy, sx)
        s = 0.0
        # (slices indexed from 0: numba then vectorises the sums)
        if dx == 0:  # same columns (spots of one fiber): the overlap is one contiguous run of rows
            u = wsf[i, a0 * sx:a1 * sx]
            v = stf[j, (a0 - dy) * sx:(a1 - dy) * sx]
            for t in range(u.size):
                s += u[t] * v[t]
        else:
            for a in range(a0, a1):
                u = ws[i, a, b0:b1]
                v = stamps[j, a - dy, b0 - dx:b1 - dx]
                for t in range(u.size):
                    s += u[t] * v[t]
        ab[min(pos[i], pos[j]), d] = s
    return ab, atd


@njit(cache=True, nogil=True)
def model_image_numba(stamps, x0, y0, flux, ny, nx):
    """Sum of flux[k] * stamps[k] on a (ny, nx) local frame (outside parts dropped)."""
    n, sy, sx = stamps.shape
    out = np.zeros((ny, nx))
    for k in range(n):
        f = flux[k]
        for a in range(sy):
            yy = y0[k] + a
            if yy < 0 or yy >= ny:
                continue
            for b in range(sx):
                xx = x0[k] + b
                if 0 <= xx < nx:
                    out[yy, xx] += f * stamps[k, a, b]
    return out


@njit(cache=True, nogil=True, fastmath=True)
def leverage_numba(stamps, x0, y0, weight, pi, pj, cpair):
    """Pixel leverages h = w * diag(A C A^T) (ny, nx) for stamp columns A.

    Parameters
    ----------
    stamps : (n, sy, sx) float64
    x0, y0 : (n,) int64
    weight : (ny, nx) float64
    pi, pj : (npair,) int64
        Overlapping pairs ``i <= j`` (:func:`overlap_pairs_numba`); only they contribute.
    cpair : (npair,) float64
        ``C[pi, pj]``.
    """
    n, sy, sx = stamps.shape
    ny, nx = weight.shape
    hp = np.zeros((ny + 2 * sy, nx + 2 * sx))
    inside = _inside(x0, y0, sy, sx, ny, nx)
    for p in range(pi.size):
        i, j = pi[p], pj[p]
        if not (inside[i] and inside[j]):
            continue
        dy, dx, a0, a1, b0, b1 = _overlap(i, j, x0, y0, sy, sx)
        c = cpair[p] if j == i else 2.0 * cpair[p]
        yy = y0[i] + sy
        xx = x0[i] + sx
        for a in range(a0, a1):  # (slices indexed from 0: numba then vectorises)
            h = hp[yy + a, xx + b0:xx + b1]
            u = stamps[i, a, b0:b1]
            v = stamps[j, a - dy, b0 - dx:b1 - dx]
            for t in range(u.size):
                h[t] += c * u[t] * v[t]
    return hp[sy:sy + ny, sx:sx + nx] * weight


@njit(cache=True, nogil=True)
def stamp_sums_numba(stamps, x0, y0, planes):
    """out[k, p] = sum of stamps[k] * planes[p] over the stamp's pixels inside the frame.

    Parameters
    ----------
    stamps : (n, sy, sx) float64
    x0, y0 : (n,) int64
    planes : (np, ny, nx) float64

    Returns
    -------
    (n, np) float64
    """
    n, sy, sx = stamps.shape
    npl, ny, nx = planes.shape
    out = np.zeros((n, npl))
    for k in range(n):
        for a in range(sy):
            yy = y0[k] + a
            if yy < 0 or yy >= ny:
                continue
            for b in range(sx):
                xx = x0[k] + b
                if xx < 0 or xx >= nx:
                    continue
                s = stamps[k, a, b]
                for p in range(npl):
                    out[k, p] += s * planes[p, yy, xx]
    return out
