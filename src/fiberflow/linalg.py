"""Shared numerics of the steps: clipped statistics, robust least squares, and the banded
solvers of the fiberflat, sky and flux-calibration fits (normal equations of blurred spectra
``sum_f R_f^T diag(w_f) R_f``, the deconvolved mean spectrum, the band of a banded inverse and
the model variance it gives).

Banded matrices use scipy's upper form: ``ab[u + i - j, j] = A[i, j]`` for ``i <= j``.
(scipy.linalg is imported by the functions that need it: the statistics here are used by QA
scoring, which the workflow loads when it plans.)
"""

from __future__ import annotations

import numpy as np


def clipped_stats(values, nsig=4.0, niter=5):
    """Sigma-clipped mean and standard deviation of an array (any shape)."""
    v = np.asarray(values, float).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return np.nan, np.nan
    keep = np.ones(v.size, bool)
    for _ in range(niter):
        m, s = v[keep].mean(), v[keep].std()
        new = np.abs(v - m) <= nsig * max(s, 1e-6)
        if np.array_equal(new, keep):
            break
        keep = new
    return float(v[keep].mean()), float(v[keep].std())


def robust_sigma(x):
    """1.4826 x median absolute deviation (nan for no data)."""
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return np.nan
    return 1.4826 * float(np.median(np.abs(x - np.median(x))))


def robust_lstsq(A, d, err, nsig, niter=5):
    """Weighted least squares with iterative clipping.

    Parameters
    ----------
    A : (n, m)
    d, err : (n,)

    Returns
    -------
    coef : (m,)
    keep : (n,) bool
        Points kept after clipping.
    """
    keep = np.isfinite(d) & np.isfinite(err) & (err > 0)
    coef = np.zeros(A.shape[1])
    for _ in range(niter):
        if keep.sum() < A.shape[1]:
            break
        w = 1.0 / err[keep]
        coef = np.linalg.lstsq(A[keep] * w[:, None], d[keep] * w, rcond=None)[0]
        pull = (d - A @ coef) / err
        # scale the clipping by the robust spread of the pulls (errors may be underestimated)
        spread = max(1.0, 1.4826 * np.median(np.abs(pull[keep])))
        new = np.isfinite(pull) & (np.abs(pull) < nsig * spread) & (err > 0)
        if np.array_equal(new, keep):
            break
        keep = new
    return coef, keep


def banded_normal_equations(rows, weight, data):
    """``A = sum_f R_f^T diag(w_f) R_f`` in scipy's upper banded form, and ``b = sum_f R_f^T w_f d_f``.

    Parameters
    ----------
    rows : (nspec, nwave, ndiag) rows of the effective matrices (offsets -h..+h)
    weight, data : (nspec, nwave)

    Returns
    -------
    ab : (2h + 1, nwave)
        ``ab[2h + i - j, j] = A[i, j]`` for ``i <= j`` (scipy.linalg.solveh_banded, lower=False).
    b : (nwave,)
    """
    nspec, nwave, ndiag = rows.shape
    h = ndiag // 2
    u = 2 * h
    ab = np.zeros((u + 1, nwave))
    b = np.zeros(nwave)
    wr = rows * weight[..., None]  # (nspec, nwave, ndiag)
    k = np.arange(nwave)
    for d1 in range(ndiag):
        i = k + d1 - h
        ok1 = (i >= 0) & (i < nwave)
        np.add.at(b, i[ok1], np.sum(wr[:, ok1, d1] * data[:, ok1], axis=0))
        for d2 in range(d1, ndiag):
            j = k + d2 - h
            ok = ok1 & (j >= 0) & (j < nwave)
            val = np.sum(wr[:, ok, d1] * rows[:, ok, d2], axis=0)
            # A[i, j] with i <= j (d1 <= d2); each (i, j) pair gets one value per bin k
            np.add.at(ab, (u + i[ok] - j[ok], j[ok]), val)
    return ab, b


def solve_mean_spectrum(rows, throughput, weight, data, smooth=0.0, ridge=1e-10, return_matrix=False,
                        local_smooth=False):
    """Deconvolved common spectrum M (nwave,) minimising
    ``sum w (data - T (R M))^2 + smooth * sum s_k (M_k+1 - M_k)^2`` with s the median diagonal
    of the normal matrix, or with ``local_smooth`` the geometric mean of the diagonal at k and
    k+1 (floored at 1e-6 of the median). The difference penalty damps the high-frequency modes
    every fiber's R smooths away (left free they carry amplified noise that differs from fiber
    to fiber through their different R); ``smooth`` ~ 1e-2 leaves features of a few bins intact.
    A penalty scaled by the median diagonal is relatively much stronger where the weights are
    low, e.g. on bright sky lines weighted by a variance model (it flattens their deconvolved
    peaks by ~10%); the local scaling keeps it equally weak everywhere.
    With ``return_matrix`` the banded normal matrix (scipy upper form) is returned too."""
    eff = rows * throughput[..., None]
    ab, b = banded_normal_equations(eff, weight, data)
    u = ab.shape[0] - 1
    scale = np.median(ab[u][ab[u] > 0]) if np.any(ab[u] > 0) else 1.0
    diag = ab[u].copy()
    ab[u] += ridge * scale
    if smooth > 0:
        if local_smooth:
            d = np.maximum(diag, 1e-6 * scale)
            lam = smooth * np.sqrt(d[:-1] * d[1:])
        else:
            lam = smooth * scale
        ab[u, :-1] += lam
        ab[u, 1:] += lam
        ab[u - 1, 1:] -= lam
    from scipy.linalg import solveh_banded

    M = solveh_banded(ab, b, lower=False, check_finite=False)
    return (M, ab) if return_matrix else M


def banded_inverse_band(ab):
    """Band of ``C = A^-1`` for a symmetric positive-definite banded ``A``.

    Parameters
    ----------
    ab : (u + 1, n)
        ``A`` in scipy's upper banded form (``ab[u + i - j, j] = A[i, j]``, ``i <= j``).

    Returns
    -------
    cb : (u + 1, n)
        ``cb[d, i] = C[i, i + d]`` for ``d = 0..u`` (0 beyond the matrix).

    Notes
    -----
    With ``A = U^T U`` (U upper banded, bandwidth u), ``C = U^-1 U^-T`` satisfies
    ``C[i, j] = (delta_ij / U_ii - sum_{k=i+1}^{i+u} U_ik C[k, j]) / U_ii`` for ``j >= i``,
    which only needs ``C`` inside the band (Takahashi et al. 1973). O(n u^2).
    """
    u = ab.shape[0] - 1
    n = ab.shape[1]
    from scipy.linalg import cholesky_banded

    U = cholesky_banded(ab, lower=False, check_finite=False)  # same upper banded layout
    # dense-band helpers: Ur[i, m] = U[i, i + m], m = 0..u
    Ur = np.zeros((n, u + 1))
    for m in range(u + 1):
        Ur[: n - m, m] = U[u - m, m:]
    cb = np.zeros((u + 1, n))  # cb[d, i] = C[i, i + d]

    def C(k, j):  # C[k, j] for |k - j| <= u (symmetric)
        return cb[j - k, k] if j >= k else cb[k - j, j]

    for i in range(n - 1, -1, -1):
        kmax = min(n - 1, i + u)
        uii = Ur[i, 0]
        for j in range(kmax, i - 1, -1):
            s = 0.0
            for k in range(i + 1, kmax + 1):
                if abs(k - j) <= u:
                    s += Ur[i, k - i] * C(k, j)
            cb[j - i, i] = ((1.0 / uii if j == i else 0.0) - s) / uii
    return cb


def banded_inverse_band_numpy(ab):
    """Reference of :func:`banded_inverse_band`: the dense inverse (small problems only)."""
    u = ab.shape[0] - 1
    n = ab.shape[1]
    A = np.zeros((n, n))
    for d in range(u + 1):
        i = np.arange(n - d)
        A[i, i + d] = ab[u - d, i + d]
        A[i + d, i] = ab[u - d, i + d]
    Cd = np.linalg.inv(A)
    cb = np.zeros((u + 1, n))
    for d in range(u + 1):
        i = np.arange(n - d)
        cb[d, : n - d] = Cd[i, i + d]
    return cb


def model_variance(rows, cb):
    """``diag(R_f C R_f^T)`` for every fiber.

    Parameters
    ----------
    rows : (nspec, nwave, ndiag) resolution rows (offsets -h..+h)
    cb : (2h + 1, nwave) band of C from :func:`banded_inverse_band`

    Returns
    -------
    (nspec, nwave)
    """
    nspec, nwave, ndiag = rows.shape
    h = ndiag // 2
    out = np.zeros((nspec, nwave))
    i = np.arange(nwave)
    for a in range(ndiag):
        ka = i + a - h
        for b in range(ndiag):
            kb = i + b - h
            lo = np.minimum(ka, kb)
            d = np.abs(ka - kb)
            ok = (lo >= 0) & (np.maximum(ka, kb) < nwave)
            c = np.zeros(nwave)
            c[ok] = cb[d[ok], lo[ok]]
            out += rows[:, :, a] * rows[:, :, b] * c[None, :]
    return out
