"""Resolution matrices stored as diagonals, scipy ``dia_matrix`` convention (as DESI).

``rdata[k, j] = R[j - off[k], j]`` with ``off = [+h, ..., 0, ..., -h]``, ``h = ndiag // 2``:
column ``j`` of ``rdata`` holds the kernel by which true flux bin ``j`` spreads into the
observed bins ``j - off``. Rows of R (observed bins) sum to 1 for a properly normalised matrix.
"""

from __future__ import annotations

import numpy as np


def offsets(ndiag):
    """Diagonal offsets ``[+h .. -h]`` for ``ndiag`` (odd) diagonals."""
    if ndiag % 2 != 1:
        raise ValueError(f"ndiag must be odd, got {ndiag}")
    h = ndiag // 2
    return np.arange(h, -h - 1, -1)


def diags_to_dense(rdata):
    """Diagonals (ndiag, nwave) -> dense R (nwave, nwave)."""
    ndiag, nwave = rdata.shape
    R = np.zeros((nwave, nwave))
    for k, off in enumerate(offsets(ndiag)):
        j = np.arange(max(0, off), min(nwave, nwave + off))
        R[j - off, j] = rdata[k, j]
    return R


def dense_to_diags(R, ndiag):
    """Dense R (nwave, nwave) -> diagonals (ndiag, nwave); entries beyond ``ndiag//2`` are dropped."""
    nwave = R.shape[0]
    rdata = np.zeros((ndiag, nwave))
    for k, off in enumerate(offsets(ndiag)):
        j = np.arange(max(0, off), min(nwave, nwave + off))
        rdata[k, j] = R[j - off, j]
    return rdata


def apply(rdata, flux):
    """R @ flux for diagonals ``rdata`` (ndiag, nwave) and ``flux`` (nwave,) without a dense matrix."""
    ndiag, nwave = rdata.shape
    out = np.zeros(nwave)
    for k, off in enumerate(offsets(ndiag)):
        j = np.arange(max(0, off), min(nwave, nwave + off))
        out[j - off] += rdata[k, j] * flux[j]
    return out


def row_sums(rdata):
    """Sum of every row of R (nwave,), from diagonals."""
    return apply(rdata, np.ones(rdata.shape[1]))


def gaussian_diags(sigma, ndiag):
    """Resolution diagonals of a Gaussian line-spread function with rows summing to 1.

    Parameters
    ----------
    sigma : (nwave,)
        LSF sigma in units of wavelength bins at each bin.
    ndiag : int

    Returns
    -------
    (ndiag, nwave)
    """
    sigma = np.asarray(sigma, dtype=float)
    nwave = sigma.size
    R = np.zeros((nwave, nwave))
    h = ndiag // 2
    for i in range(nwave):
        j = np.arange(max(0, i - h), min(nwave, i + h + 1))
        k = np.exp(-0.5 * ((j - i) / sigma[i]) ** 2)
        R[i, j] = k / k.sum()
    return dense_to_diags(R, ndiag)


# rows form (nspec, nwave, ndiag) with offsets -h..+h: row i of R, columns i-h..i+h
def rows_to_diags(rows):
    """Resolution rows (nfib, nwave, ndiag; offsets -h..+h) -> dia diagonals (nfib, ndiag, nwave).

    ``rdata[k, j] = R[j - off[k], j]`` with ``off = [+h .. -h]``: row ``i = j - off`` entry at
    column ``j = i + off``, i.e. ``rows[i, off + h]``.
    """
    nfib, nwave, ndiag = rows.shape
    h = ndiag // 2
    out = np.zeros((nfib, ndiag, nwave))
    for k, off in enumerate(range(h, -h - 1, -1)):  # slices, not index arrays: full frames
        j0, j1 = max(0, off), min(nwave, nwave + off)
        out[:, k, j0:j1] = rows[:, j0 - off:j1 - off, off + h]
    return out


def diags_to_rows(rdata):
    """Resolution diagonals (nspec, ndiag, nwave) -> rows (nspec, nwave, ndiag), offsets -h..+h.

    ``rows[f, i, d + h] = R_f[i, i + d]`` (0 where ``i + d`` is off the grid).
    """
    nspec, ndiag, nwave = rdata.shape
    h = ndiag // 2
    rows = np.zeros((nspec, nwave, ndiag))
    for k, off in enumerate(range(h, -h - 1, -1)):  # rdata[k, j] = R[j - off, j]
        j0, j1 = max(0, off), min(nwave, nwave + off)
        rows[:, j0 - off:j1 - off, off + h] = rdata[:, k, j0:j1]
    return rows


def apply_rows(rows, x):
    """``R_f x`` for every fiber: rows (nspec, nwave, ndiag), x (nwave,) -> (nspec, nwave)."""
    nspec, nwave, ndiag = rows.shape
    h = ndiag // 2
    xp = np.concatenate([np.zeros(h), x, np.zeros(h)])
    idx = np.arange(nwave)[:, None] + np.arange(ndiag)[None, :]  # into xp: i + d + h
    return np.einsum("fkd,kd->fk", rows, xp[idx])


#: sub-bin samples per flux bin of a model seen by a camera (:func:`fine_grid`)
SUPERSAMPLE = 8


def fine_grid(wave):
    """Sub-bin sample points of a uniform grid: SUPERSAMPLE per bin, bin-centred."""
    step = wave[1] - wave[0]
    off = (np.arange(SUPERSAMPLE) + 0.5) / SUPERSAMPLE - 0.5
    return (wave[:, None] + off[None, :] * step).ravel()


def bin_average(wave, fine_wave, fine_flux):
    """Mean of a super-sampled model over each flux bin of ``wave``.

    Parameters
    ----------
    wave : (nwave,) bin centres (uniform step)
    fine_wave : (nwave * SUPERSAMPLE,) from :func:`fine_grid`
    fine_flux : (..., nwave * SUPERSAMPLE)

    Returns
    -------
    (..., nwave)
    """
    shape = fine_flux.shape[:-1] + (wave.size, SUPERSAMPLE)
    return fine_flux.reshape(shape).mean(axis=-1)


def apply_rows_each(rows, x):
    """``R_f x_f`` for every fiber: rows (n, nwave, ndiag), x (n, nwave) -> (n, nwave)."""
    n, nwave, ndiag = rows.shape
    h = ndiag // 2
    xp = np.concatenate([np.zeros((n, h)), x, np.zeros((n, h))], axis=1)
    idx = np.arange(nwave)[:, None] + np.arange(ndiag)[None, :]
    return np.einsum("fkd,fkd->fk", rows, xp[:, idx])


def model_on_frame(wave, model_wave, model_flux, rows):
    """A stored model (1e-17 units on ``model_wave``) seen by a camera: bin-averaged on the
    frame grid ``wave`` then through each fiber's resolution.

    Parameters
    ----------
    wave : (nwave,)
    model_wave : (nm,)
    model_flux : (nstd, nm)
    rows : (nstd, nwave, ndiag)

    Returns
    -------
    binned : (nstd, nwave) deconvolved (bin-averaged) models
    convolved : (nstd, nwave)
    """
    fine = fine_grid(wave)
    binned = np.stack([bin_average(wave, fine, np.interp(fine, model_wave, m)) for m in model_flux])
    return binned, apply_rows_each(rows, binned)
