"""numba kernel of the resolution rows of extracted fibers (reference:
fiberflow.steps.extract.resolution_rows_numpy)."""

import math

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, fastmath=True)
def resolution_rows_numba(vecs, lam, cov, fk, r0, nrows, h, vlo, vhi):
    """Resolution rows, flux and variance of the output bins of k fibers from the eigen-decomposition
    of their covariance blocks (see :func:`fiberflow.steps.extract.resolution_rows`).

    Only the band of ``Q = C^(-1/2)`` that R keeps is formed (``2 h + 1`` entries a row, each one
    dot product over the eigenvectors) instead of the full rows.

    Parameters
    ----------
    vecs : (k, m, m) float64
        Eigenvectors (columns) of each fiber's covariance block.
    lam : (k, m) float64
        Eigenvalues.
    cov : (k, m, m) float64
        The covariance blocks.
    fk : (k, m) float64
        Deconvolved flux of the m solved bins.
    r0, nrows : int
        Output bins ``r0 .. r0 + nrows - 1`` (indices into the m solved bins).
    h : int
        Half-width of the kept band.
    vlo, vhi : int
        Solved bins inside the output grid: columns outside are not used.

    Returns
    -------
    R : (k, nrows, 2 h + 1)
        Row ``i`` of R at offsets ``-h .. h`` from its diagonal, summing to 1 (the identity for a row
        without information).
    flux, var : (k, nrows)
        ``R f`` and ``diag(R C R^T)``.
    """
    k, m, _ = vecs.shape
    nd = 2 * h + 1
    R = np.zeros((k, nrows, nd))
    flux = np.zeros((k, nrows))
    var = np.zeros((k, nrows))
    isq = np.empty(m)
    w = np.empty(m)
    for c in range(k):
        for e in range(m):
            isq[e] = 1.0 / math.sqrt(lam[c, e]) if lam[c, e] > 0 else 0.0
        for i in range(nrows):
            a = r0 + i
            for e in range(m):
                w[e] = vecs[c, a, e] * isq[e]
            lo = max(a - h, vlo)
            hi = min(a + h + 1, vhi)
            s = 0.0
            for col in range(lo, hi):
                q = 0.0
                for e in range(m):
                    q += w[e] * vecs[c, col, e]
                R[c, i, col - a + h] = q
                s += q
            row = R[c, i]
            if s > 0:
                for col in range(lo, hi):
                    row[col - a + h] /= s
            else:
                for d in range(nd):
                    row[d] = 0.0
                row[h] = 1.0
                lo, hi = a, a + 1
            fl = 0.0
            v = 0.0
            for col in range(lo, hi):
                rc = row[col - a + h]
                fl += rc * fk[c, col]
                t = 0.0
                for col2 in range(lo, hi):
                    t += cov[c, col, col2] * row[col2 - a + h]
                v += rc * t
            flux[c, i] = fl
            var[c, i] = v
    return R, flux, var
