"""numba kernel for pixel-integrated Gauss-Hermite spots (reference: psfmodel.spot_stamps_numpy)."""

import math

import numpy as np
from numba import njit, prange

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)


@njit(cache=True, nogil=True)
def _pixel_gh(edges, deg, out, prim):
    """out[m, k] = integral of He_m(u) phi(u) between edges[k] and edges[k+1] (``prim``: scratch of at
    least (deg + 1, len(edges)))."""
    npix = edges.shape[0] - 1
    nedge = edges.shape[0]
    for e in range(nedge):
        u = edges[e]
        prim[0, e] = 0.5 * math.erf(u * _INV_SQRT2)
        if deg >= 1:
            phi = math.exp(-0.5 * u * u) * _INV_SQRT2PI
            hm2 = 1.0  # He_0
            prim[1, e] = -hm2 * phi
            if deg >= 2:
                hm1 = u  # He_1
                prim[2, e] = -hm1 * phi
                for m in range(3, deg + 1):
                    n = m - 2  # He_{n+1} = u He_n - n He_{n-1}
                    h = u * hm1 - n * hm2
                    prim[m, e] = -h * phi
                    hm2 = hm1
                    hm1 = h
    for m in range(deg + 1):
        for k in range(npix):
            out[m, k] = prim[m, k + 1] - prim[m, k]


@njit(cache=True, nogil=True)
def _scratch(gh, hsizex, hsizey):
    """Work arrays of :func:`_one_spot` (one set serves every spot of a serial loop)."""
    nx = 2 * hsizex + 1
    ny = 2 * hsizey + 1
    deg = max(gh.shape[1], gh.shape[2])
    return (np.empty(nx + 1), np.empty(ny + 1), np.empty((gh.shape[1], nx)), np.empty((gh.shape[2], ny)),
            np.empty((gh.shape[2], nx)), np.empty((deg, max(nx, ny) + 1)))


@njit(cache=True, nogil=True)
def _one_spot(s, xc, yc, sigx, sigy, gh, tail, hsizex, hsizey, stamps, x0, y0, scratch):
    """Fill stamps[s], x0[s], y0[s] for spot s (see spot_stamps_numba); ``scratch`` from :func:`_scratch`."""
    nx = 2 * hsizex + 1
    ny = 2 * hsizey + 1
    degx = gh.shape[1] - 1
    degy = gh.shape[2] - 1
    ex, ey, fx, fy, gx, prim = scratch
    ix0 = int(math.floor(xc[s] + 0.5)) - hsizex
    iy0 = int(math.floor(yc[s] + 0.5)) - hsizey
    x0[s] = ix0
    y0[s] = iy0
    for k in range(nx + 1):
        ex[k] = (ix0 + k - 0.5 - xc[s]) / sigx[s]
    for k in range(ny + 1):
        ey[k] = (iy0 + k - 0.5 - yc[s]) / sigy[s]
    _pixel_gh(ex, degx, fx, prim)
    _pixel_gh(ey, degy, fy, prim)
    # separable sum: core[l, k] = sum_j fy[j, l] * (sum_i gh[i, j] fx[i, k])
    gx[:] = 0.0
    for j in range(degy + 1):
        for i in range(degx + 1):
            c = gh[s, i, j]
            if c != 0.0:
                for k in range(nx):
                    gx[j, k] += c * fx[i, k]
    amp = tail[s, 0]
    tcore2 = tail[s, 1] * tail[s, 1]
    txs = tail[s, 2]
    tys = tail[s, 3]
    pw = 1.0 + 0.5 * tail[s, 4]
    out = stamps[s]
    out[:, :] = 0.0
    for j in range(degy + 1):  # j outermost: the k loops run over contiguous rows (vectorised)
        g = gx[j]
        for l in range(ny):
            f = fy[j, l]
            row = out[l]
            for k in range(nx):
                row[k] += f * g[k]
    total = 0.0
    for l in range(ny):
        dy = (iy0 + l - yc[s]) * tys
        row = out[l]
        for k in range(nx):
            v = row[k]
            if amp != 0.0:
                dx = (ix0 + k - xc[s]) * txs
                r2 = dx * dx + dy * dy
                v += amp * r2 / (tcore2 + r2) ** pw
            if v < 0.0:
                v = 0.0
            row[k] = v
            total += v
    if total <= 0.0:
        total = 1.0
    for l in range(ny):
        row = out[l]
        for k in range(nx):
            row[k] /= total


@njit(cache=True, parallel=True)
def spot_stamps_numba(xc, yc, sigx, sigy, gh, tail, hsizex, hsizey):
    """See fiberflow.models.psf.spot_stamps_numpy (same arguments and results); numba-parallel."""
    n = xc.shape[0]
    stamps = np.empty((n, 2 * hsizey + 1, 2 * hsizex + 1))
    x0 = np.empty(n, dtype=np.int64)
    y0 = np.empty(n, dtype=np.int64)
    for s in prange(n):
        _one_spot(s, xc, yc, sigx, sigy, gh, tail, hsizex, hsizey, stamps, x0, y0, _scratch(gh, hsizex, hsizey))
    return stamps, x0, y0


@njit(cache=True, nogil=True)
def spot_stamps_serial(xc, yc, sigx, sigy, gh, tail, hsizex, hsizey):
    """Serial, GIL-free twin of :func:`spot_stamps_numba` for callers that run their own threads."""
    n = xc.shape[0]
    stamps = np.empty((n, 2 * hsizey + 1, 2 * hsizex + 1))
    x0 = np.empty(n, dtype=np.int64)
    y0 = np.empty(n, dtype=np.int64)
    scratch = _scratch(gh, hsizex, hsizey)
    for s in range(n):
        _one_spot(s, xc, yc, sigx, sigy, gh, tail, hsizex, hsizey, stamps, x0, y0, scratch)
    return stamps, x0, y0
