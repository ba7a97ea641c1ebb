"""numba kernels of the trace-shift measurement (references: fiberflow.steps.traceshift.row_fit_sums_numpy
and scipy.ndimage.median_filter with size (1, width) and mode "nearest")."""

import math

import numpy as np
from numba import njit

INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)
INV_SQRT2 = 1.0 / math.sqrt(2.0)


@njit(cache=True, fastmath=False)
def row_fit_sums_numba(xc, sigx, gh, col0, d, w):
    """Weighted sums of the one-row fit ``d = a p + b p'`` (p: the pixel-integrated GH
    cross-dispersion profile centred at ``xc``, p': its derivative in ``xc``).

    Parameters
    ----------
    xc, sigx : (n,) float
    gh : (n, deg+1) float
    col0 : (n,) int, first column of each row's window
    d, w : (n, ncol) float, data and weights of the window's pixels

    Returns
    -------
    (n, 5) float64: s_pp, s_pq, s_qq, s_pd, s_qd
    """
    n, ncol = d.shape
    deg = gh.shape[1] - 1
    out = np.zeros((n, 5))
    he = np.empty(deg + 1)
    for r in range(n):
        s = sigx[r]
        prev_f = 0.0
        prev_g = 0.0
        spp = 0.0
        spq = 0.0
        sqq = 0.0
        spd = 0.0
        sqd = 0.0
        for c in range(ncol + 1):
            u = (col0[r] + c - 0.5 - xc[r]) / s
            phi = math.exp(-0.5 * u * u) * INV_SQRT2PI
            he[0] = 1.0
            if deg >= 1:
                he[1] = u
            for k in range(1, deg):
                he[k + 1] = u * he[k] - k * he[k - 1]
            # primitive of the profile density and the density itself at the pixel edge
            f = gh[r, 0] * 0.5 * math.erf(u * INV_SQRT2)
            g = gh[r, 0]
            for m in range(1, deg + 1):
                f -= gh[r, m] * he[m - 1] * phi
                g += gh[r, m] * he[m]
            g *= phi
            if c > 0:
                p = f - prev_f
                q = -(g - prev_g) / s
                ww = w[r, c - 1]
                dd = d[r, c - 1]
                spp += ww * p * p
                spq += ww * p * q
                sqq += ww * q * q
                spd += ww * p * dd
                sqd += ww * q * dd
            prev_f = f
            prev_g = g
        out[r, 0] = spp
        out[r, 1] = spq
        out[r, 2] = sqq
        out[r, 3] = spd
        out[r, 4] = sqd
    return out


@njit(cache=True)
def running_median_numba(a, width):
    """Median over a window of ``width`` (odd) samples along the last axis, edge samples
    repeated beyond the ends.

    Parameters
    ----------
    a : (n, m) float
    width : int, odd

    Returns
    -------
    (n, m) float64
    """
    n, m = a.shape
    h = width // 2
    out = np.empty((n, m))
    win = np.empty(width)
    for r in range(n):
        # the sorted window of sample 0: the edge value h times, then samples 0..h
        for k in range(width):
            j = min(max(k - h, 0), m - 1)
            v = a[r, j]
            i = k
            while i > 0 and win[i - 1] > v:
                win[i] = win[i - 1]
                i -= 1
            win[i] = v
        out[r, 0] = win[h]
        for c in range(1, m):
            old = a[r, min(max(c - 1 - h, 0), m - 1)]
            new = a[r, min(c + h, m - 1)]
            # remove one copy of old
            i = 0
            while i < width - 1 and win[i] != old:
                i += 1
            while i < width - 1:
                win[i] = win[i + 1]
                i += 1
            # insert new
            i = width - 1
            while i > 0 and win[i - 1] > new:
                win[i] = win[i - 1]
                i -= 1
            win[i] = new
            out[r, c] = win[h]
    return out
