"""numba kernel of the extraction normal equations (reference: fiberflow.steps.extract.normal_equations_numpy)."""

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def normal_equations_numba(stamps, x0, y0, data, weight):
    """A^T W A and A^T W d for unknowns whose model columns are pixel stamps.

    Parameters
    ----------
    stamps : (n, sy, sx) float64
        Column k of A is ``stamps[k]`` placed with its pixel [0, 0] at (y0[k], x0[k]) in the
        local pixel frame of ``data``.
    x0, y0 : (n,) int64
    data, weight : (ny, nx) float64
        Pixels of the patch region and their weights (inverse variance, 0 = masked).

    Returns
    -------
    ata : (n, n) float64
    atd : (n,) float64
    """
    n, sy, sx = stamps.shape
    ny, nx = data.shape
    ata = np.zeros((n, n))
    atd = np.zeros(n)
    for i in range(n):
        acc = 0.0
        for a in range(sy):
            yy = y0[i] + a
            if yy < 0 or yy >= ny:
                continue
            for b in range(sx):
                xx = x0[i] + b
                if xx < 0 or xx >= nx:
                    continue
                acc += stamps[i, a, b] * weight[yy, xx] * data[yy, xx]
        atd[i] = acc
        for j in range(i, n):
            dy = y0[j] - y0[i]
            dx = x0[j] - x0[i]
            if dy >= sy or dy <= -sy or dx >= sx or dx <= -sx:
                continue
            a0 = max(0, dy)
            a1 = min(sy, sy + dy)
            b0 = max(0, dx)
            b1 = min(sx, sx + dx)
            s = 0.0
            for a in range(a0, a1):
                yy = y0[i] + a
                if yy < 0 or yy >= ny:
                    continue
                for b in range(b0, b1):
                    xx = x0[i] + b
                    if xx < 0 or xx >= nx:
                        continue
                    s += stamps[i, a, b] * stamps[j, a - dy, b - dx] * weight[yy, xx]
            ata[i, j] = s
            ata[j, i] = s
    return ata, atd


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


@njit(cache=True, nogil=True)
def leverage_numba(stamps, x0, y0, weight, cov):
    """Pixel leverages h = w * diag(A C A^T) (ny, nx) for stamp columns A and covariance C."""
    n, sy, sx = stamps.shape
    ny, nx = weight.shape
    h = np.zeros((ny, nx))
    for i in range(n):
        for j in range(i, n):
            dy = y0[j] - y0[i]
            dx = x0[j] - x0[i]
            if dy >= sy or dy <= -sy or dx >= sx or dx <= -sx:
                continue
            c = cov[i, j] if j == i else 2.0 * cov[i, j]
            a0 = max(0, dy)
            a1 = min(sy, sy + dy)
            b0 = max(0, dx)
            b1 = min(sx, sx + dx)
            for a in range(a0, a1):
                yy = y0[i] + a
                if yy < 0 or yy >= ny:
                    continue
                for b in range(b0, b1):
                    xx = x0[i] + b
                    if 0 <= xx < nx:
                        h[yy, xx] += c * stamps[i, a, b] * stamps[j, a - dy, b - dx]
    return h * weight


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
