"""GIL-free banded Cholesky solves and inverses for numba code (references: the ``*_numpy`` functions of
fiberflow.steps.extract).

scipy's own LAPACK wrappers hold the GIL, so threads calling them run one at a time; these
kernels call the same LAPACK routines (banded ``dpbtrf``, ``dpbtrs`` from ``scipy.linalg.cython_lapack``)
from a ``nogil`` numba function. The routines' addresses are arguments (an intrinsic calls a C function
at a run-time address), not constants compiled into the code, so the kernels are cached on disk like
the others instead of compiled in every process (about a second of every extraction job).
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import get_cython_function_address, intrinsic


@intrinsic
def _ccall(typingctx, fn, args):
    """Call the C function (no return value) at address ``fn`` with the pointers ``args`` (a tuple of
    integers, e.g. ``arr.ctypes.data``): LAPACK's Fortran calling convention passes everything by pointer."""
    n = len(args)

    def codegen(context, builder, signature, llargs):
        fnaddr, tup = llargs
        p8 = ir.IntType(8).as_pointer()
        fp = builder.inttoptr(fnaddr, ir.FunctionType(ir.VoidType(), [p8] * n).as_pointer())
        builder.call(fp, [builder.inttoptr(builder.extract_value(tup, i), p8) for i in range(n)])
        return context.get_dummy_value()

    return types.void(fn, args), codegen


_ADDR = np.array([get_cython_function_address("scipy.linalg.cython_lapack", name) for name in ("dpbtrf", "dpbtrs")],
                 np.int64)


def band_solve_packed_numba(ab, x, kd, inverse, j0=0):
    """Solve ``a x = b`` for a symmetric positive definite band matrix given in LAPACK's lower band
    storage, and return the band of ``a^-1`` (banded Cholesky ``dpbtrf``/``dpbtrs``, then the Takahashi
    recurrence on the factor).

    Parameters
    ----------
    ab : (n, kd + 1) float64, C-contiguous
        ``ab[j, d] = a[j + d, j]`` (C order (n, kd + 1) is Fortran's (kd + 1, n)); overwritten by the
        Cholesky factor.
    x : (n,) float64
        The right-hand side; overwritten by the solution.
    kd : int
    inverse : bool
        Also the band of the inverse (else ``zb`` stays 0).
    j0 : int
        The band of the inverse is computed for the columns ``j >= j0`` only (rows ``j < j0`` of ``zb``
        stay 0; the recurrence runs backwards, so the first columns cost nothing when not needed).

    Returns
    -------
    x : (n,)
        The solution.
    zb : (n, kd + 1)
        ``zb[j, d] = Z[j + d, j]`` of ``Z = a^-1`` (0 where ``j + d >= n`` or ``j < j0``).
    info : int
        LAPACK status (0 on success).

    Notes
    -----
    With ``a = L L^T`` and ``Z = a^-1``, ``Z L = L^-T`` is upper triangular with diagonal
    ``1 / L[j, j]``, so for ``i >= j``: ``Z[i, j] = (delta_ij / L[j, j] - sum_{k > j} Z[i, k] L[k, j]) / L[j, j]``.
    The sum runs over the band of column j of L, and every ``Z[i, k]`` it needs lies inside the band and in a
    later column: ``n kd^2`` operations instead of the ``n^3`` of a full inverse.
    """
    return _solve_packed(ab, x, kd, inverse, j0, _ADDR)


@njit(cache=True, nogil=True)
def _solve_packed(ab, x, kd, inverse, j0, addr):
    n = ab.shape[0]
    w = kd + 1
    zb = np.zeros((n, w))
    uplo = np.full(1, 76, np.uint8)  # 'L'
    ints = np.array([n, kd, w, 1, 0], np.int32)  # LAPACK's integer arguments, passed by pointer
    p = ints.ctypes.data
    nn, kk, ldab, one, info = p, p + 4, p + 8, p + 12, p + 16
    _ccall(addr[0], (uplo.ctypes.data, nn, kk, ab.ctypes.data, ldab, info))  # dpbtrf
    if ints[4] != 0:
        return x, zb, ints[4]
    _ccall(addr[1], (uplo.ctypes.data, nn, kk, one, ab.ctypes.data, ldab, x.ctypes.data, nn, info))  # dpbtrs
    if ints[4] != 0:
        return x, zb, ints[4]
    if inverse:
        _takahashi(ab, zb, kd, j0)
    return x, zb, ints[4]


@njit(cache=True, nogil=True, fastmath=True)
def _takahashi(ab, zb, kd, j0):
    """Band ``zb`` of the inverse from the lower band Cholesky factor ``ab`` (both (n, kd + 1)), for the
    columns ``j >= j0`` (the recurrence runs from the last column back; rows ``j < j0`` of ``zb`` stay 0).

    Column j needs ``s = Z_W l`` with ``Z_W`` the (symmetric) window of Z over rows and columns
    ``j + 1 .. j + kd`` and ``l`` the factor's column below the diagonal. Only the lower half of the band
    is kept (``zl[i, kd - d] = Z[i, i - d]``); each element of the window's lower half is read once for
    both of its products, and four rows are taken together so ``l`` and ``s`` are loaded once for them
    (the loop is bound by memory traffic: 40% faster than one row at a time at kd = 148)."""
    n = ab.shape[0]
    zl = np.zeros((n, kd + 1))
    s = np.zeros(kd + 1)
    for j in range(n - 1, j0 - 1, -1):
        ljj = ab[j, 0]
        m = min(kd, n - 1 - j)
        lj = ab[j, 1:m + 1]
        for t in range(m):
            s[t] = 0.0
        di = 1
        while di + 3 <= m:  # rows i = j + di .. j + di + 3
            r0 = zl[j + di, kd + 1 - di:kd + 1]  # Z[i, j + 1 .. i]
            r1 = zl[j + di + 1, kd - di:kd + 1]
            r2 = zl[j + di + 2, kd - 1 - di:kd + 1]
            r3 = zl[j + di + 3, kd - 2 - di:kd + 1]
            l0, l1, l2, l3 = lj[di - 1], lj[di], lj[di + 1], lj[di + 2]
            a0 = 0.0
            a1 = 0.0
            a2 = 0.0
            a3 = 0.0
            for t in range(di - 1):  # columns k = j + 1 + t left of all four rows' diagonals
                lt = lj[t]
                z0, z1, z2, z3 = r0[t], r1[t], r2[t], r3[t]
                a0 += z0 * lt
                a1 += z1 * lt
                a2 += z2 * lt
                a3 += z3 * lt
                s[t] += z0 * l0 + z1 * l1 + z2 * l2 + z3 * l3
            s[di - 1] += a0
            s[di] += a1
            s[di + 1] += a2
            s[di + 2] += a3
            for r in range(4):  # the 4 x 4 corner (columns j + di .. j + di + 3)
                _row_sums(zl[j + di + r, kd + 1 - di - r:kd + 1], lj, s, di - 1, di - 1 + r)
            di += 4
        while di <= m:
            _row_sums(zl[j + di, kd + 1 - di:kd + 1], lj, s, 0, di - 1)
            di += 1
        acc = 0.0
        for di in range(1, m + 1):
            z = -s[di - 1] / ljj
            zl[j + di, kd - di] = z
            acc += z * lj[di - 1]
        zl[j, kd] = (1.0 / ljj - acc) / ljj
    for j in range(j0, n):
        for d in range(min(kd + 1, n - j)):
            zb[j, d] = zl[j + d, kd - d]


@njit(cache=True, nogil=True, fastmath=True, inline="always")
def _row_sums(row, lj, s, t0, t1):
    """One row ``row[t] = Z[i, j + 1 + t]`` (t <= t1, t1 its diagonal) of the window product: ``s[i] +=
    sum_t row[t] lj[t]`` and ``s[t] += row[t] lj[t1]`` for its elements ``t0 <= t < t1`` left of the diagonal."""
    li = lj[t1]
    acc = 0.0
    for t in range(t0, t1):
        z = row[t]
        acc += z * lj[t]
        s[t] += z * li
    s[t1] += acc + row[t1] * li
