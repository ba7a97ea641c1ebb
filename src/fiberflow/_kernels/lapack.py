"""GIL-free Cholesky solve and inverse for numba code (reference: fiberflow.steps.extract.cholesky_solve_inverse_numpy).

scipy's own LAPACK wrappers hold the GIL, so threads calling them run one at a time; these
kernels call the same LAPACK routines (``dpotrf``, ``dpotrs``, ``dpotri`` from
``scipy.linalg.cython_lapack``) from a ``nogil`` numba function.
"""

import ctypes

import numpy as np
from numba import njit
from numba.extending import get_cython_function_address

_VP = ctypes.c_void_p


def _lapack(name, nargs):
    addr = get_cython_function_address("scipy.linalg.cython_lapack", name)
    return ctypes.CFUNCTYPE(None, *([_VP] * nargs))(addr)


_dpotrf = _lapack("dpotrf", 5)
_dpotrs = _lapack("dpotrs", 8)
_dpotri = _lapack("dpotri", 5)


@njit(nogil=True)
def cholesky_solve_inverse_numba(a, b):
    """Solve ``a x = b`` and invert ``a`` (symmetric positive definite) by Cholesky.

    Parameters
    ----------
    a : (n, n) float64, C-contiguous, symmetric
    b : (n,) float64

    Returns
    -------
    x : (n,)
    inv : (n, n)
        ``a^-1`` (symmetric).
    info : int
        LAPACK status: 0 on success, > 0 when ``a`` is not positive definite (x, inv undefined).
    """
    n = a.shape[0]
    u = a.copy()
    x = b.copy()
    # a C-order symmetric matrix is its own Fortran transpose: Fortran 'U' is the C lower triangle
    uplo = np.empty(1, np.uint8)
    uplo[0] = 85
    nn = np.empty(1, np.int32)
    nn[0] = n
    one = np.empty(1, np.int32)
    one[0] = 1
    info = np.zeros(1, np.int32)
    _dpotrf(uplo.ctypes, nn.ctypes, u.ctypes, nn.ctypes, info.ctypes)
    if info[0] != 0:
        return x, u, info[0]
    _dpotrs(uplo.ctypes, nn.ctypes, one.ctypes, u.ctypes, nn.ctypes, x.ctypes, nn.ctypes, info.ctypes)
    if info[0] != 0:
        return x, u, info[0]
    _dpotri(uplo.ctypes, nn.ctypes, u.ctypes, nn.ctypes, info.ctypes)
    for i in range(n):
        for j in range(i + 1, n):
            u[i, j] = u[j, i]
    return x, u, info[0]
