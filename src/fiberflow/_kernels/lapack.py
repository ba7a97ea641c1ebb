"""GIL-free banded Cholesky solves and inverses for numba code (references: the ``*_numpy`` functions of
fiberflow.steps.extract).

scipy's own LAPACK wrappers hold the GIL, so threads calling them run one at a time; these
kernels call the same LAPACK routines (banded ``dpbtrf``, ``dpbtrs`` from ``scipy.linalg.cython_lapack``)
from a ``nogil`` numba function.
"""

import ctypes

import numpy as np
from numba import njit
from numba.extending import get_cython_function_address

_VP = ctypes.c_void_p


def _lapack(name, nargs):
    addr = get_cython_function_address("scipy.linalg.cython_lapack", name)
    return ctypes.CFUNCTYPE(None, *([_VP] * nargs))(addr)


# the loops live in cached functions: the ones calling LAPACK through ctypes cannot be cached and are
# compiled in every process, so they are kept small


@njit(cache=True, nogil=True)
def _pack_band(a, b, perm, kd):
    """Lower band storage ``ab[j, d] = a[perm[j + d], perm[j]]`` (n, kd + 1) and ``b[perm]``."""
    n = a.shape[0]
    w = kd + 1
    ab = np.zeros((n, w))
    x = np.empty(n)
    for j in range(n):
        x[j] = b[perm[j]]
        for d in range(min(w, n - j)):
            ab[j, d] = a[perm[j + d], perm[j]]
    return ab, x


_dpbtrf = _lapack("dpbtrf", 6)
_dpbtrs = _lapack("dpbtrs", 9)


@njit(nogil=True)
def band_solve_inverse_numba(a, b, perm, kd, inverse):
    """Solve ``a x = b`` for a symmetric positive definite matrix that is banded once its rows and
    columns are reordered by ``perm``, and return the band of the reordered ``a^-1`` (banded
    Cholesky ``dpbtrf``/``dpbtrs``, then the Takahashi recurrence on the factor).

    Parameters
    ----------
    a : (n, n) float64
        Symmetric; ``a[perm][:, perm]`` is zero beyond ``kd`` diagonals from the main one.
    b : (n,) float64
    perm : (n,) int64
    kd : int
    inverse : bool
        Also the band of the inverse (else ``zb`` stays 0).

    Returns
    -------
    x : (n,)
        The solution, in the reordered order (``x[k]`` is unknown ``perm[k]``).
    zb : (n, kd + 1)
        ``zb[j, d] = Z[j + d, j]`` of ``Z = (a[perm][:, perm])^-1`` (0 where ``j + d >= n``).
    info : int
        LAPACK status (0 on success).

    Notes
    -----
    With ``a = L L^T`` and ``Z = a^-1``, ``Z L = L^-T`` is upper triangular with diagonal
    ``1 / L[j, j]``, so for ``i >= j``: ``Z[i, j] = (delta_ij / L[j, j] - sum_{k > j} Z[i, k] L[k, j]) / L[j, j]``.
    The sum runs over the band of column j of L, and every ``Z[i, k]`` it needs lies inside the band and in a
    later column: ``n kd^2`` operations instead of the ``n^3`` of a full inverse.
    """
    n = a.shape[0]
    w = kd + 1
    ab, x = _pack_band(a, b, perm, kd)  # C-order (n, kd+1) = Fortran (kd+1, n): lower band storage
    zb = np.zeros((n, w))
    uplo = np.full(1, 76, np.uint8)  # 'L'
    ints = np.array([n, kd, w, 1, 0], np.int32)  # LAPACK's integer arguments, passed by pointer
    nn, kk, ldab, one, info = ints[0:1], ints[1:2], ints[2:3], ints[3:4], ints[4:5]
    _dpbtrf(uplo.ctypes, nn.ctypes, kk.ctypes, ab.ctypes, ldab.ctypes, info.ctypes)
    if info[0] != 0:
        return x, zb, info[0]
    _dpbtrs(uplo.ctypes, nn.ctypes, kk.ctypes, one.ctypes, ab.ctypes, ldab.ctypes, x.ctypes, nn.ctypes, info.ctypes)
    if info[0] != 0:
        return x, zb, info[0]
    if inverse:
        _takahashi(ab, zb, kd)
    return x, zb, info[0]


@njit(cache=True, nogil=True, fastmath=True)
def _takahashi(ab, zb, kd):
    """Band ``zb`` of the inverse from the lower band Cholesky factor ``ab`` (both (n, kd + 1)).

    Works on both halves of the band (``zf[i, kd + k - i] = Z[i, k]``), so every sum is one
    contiguous run of memory."""
    n = ab.shape[0]
    zf = np.zeros((n, 2 * kd + 1))
    for j in range(n - 1, -1, -1):
        ljj = ab[j, 0]
        m = min(kd, n - 1 - j)
        lj = ab[j, 1:m + 1]
        for di in range(m, 0, -1):
            i = j + di
            zi = zf[i, kd + 1 - di:kd + 1 - di + m]  # Z[i, j + 1 .. j + m]
            s = 0.0
            for t in range(m):
                s += zi[t] * lj[t]
            z = -s / ljj
            zf[i, kd - di] = z
            zf[j, kd + di] = z
        s = 0.0
        for dk in range(1, m + 1):
            s += zf[j, kd + dk] * ab[j, dk]
        zf[j, kd] = (1.0 / ljj - s) / ljj
    for j in range(n):
        for d in range(min(kd + 1, n - j)):
            zb[j, d] = zf[j, kd + d]
