"""Spectroperfectionism extraction (Bolton & Schlegel 2010) of a preprocessed image.

The frame is cut into bundles, sub-bundles of fibers (padded with neighbouring fibers of the
bundle) and wavelength patches (padded with extra wavelength bins, also beyond the output grid
so light from outside it is modelled). For each patch:

1. the model columns are the pixel-integrated PSF spots of every (fiber, wavelength) unknown,
   times the bin width, so fluxes are in electron/Angstrom;
2. the normal equations ``A^T W A f = A^T W d`` (W = pixel inverse variance, masked pixels 0;
   numba kernel over the overlapping stamp pairs, with a numpy reference) get a tiny ridge prior
   so unconstrained bins (CCD edges, masked regions) stay solvable. The matrix is banded: a
   banded Cholesky solve gives the deconvolved flux, and the Takahashi recurrence the band of
   the inverse C. The first solve (the model of the model-variance weights) needs the flux and
   the covariances of the overlapping pairs (all the pixel leverages need): its band is taken in
   wavelength-major order, the narrowest. The model-variance weights take their signal term from
   a smooth model of the first solve (a first-difference prior; one more banded solve) except
   where the leave-one-out model departs from it beyond its noise (a weight that follows the
   model's noise biases the flux high). By default (``variance_signal: patch``) that signal term
   is not each fiber's own but the patch's per-wavelength median over its fibers (see
   :func:`common_signal`): every fiber is weighted alike, so the sky a fiber's extraction
   delivers does not depend on the fiber's own object, and the variance of the flux is scaled by
   the ratio of each fiber's own pixel variance to the weights' (:func:`variance_ratio`).
   The second solve's band is taken in fiber-major order
   and at least a fiber's bins wide, so it also holds every fiber's whole block of C;
3. per fiber, the block of C is inverted and square-rooted (symmetric square root ``Q``);
   ``R = Q / rowsum(Q)`` is the fiber's resolution matrix, which never mixes fibers. Its rows
   are truncated to ``ndiag`` diagonals and renormalised; the reconvolved flux is ``R f`` and
   its variance ``diag(R C R^T)`` computed with that stored R, so pulls against ``R f_true``
   are exact;
4. CHI2PIX is the spot-weighted chi2 of the pixel residuals per flux bin divided by its
   expectation (the spot-weighted ``1 - leverage`` of the pixels), and the masked
   fraction is the share of each bin's light on masked pixels (specmask SOMEBADPIX,
   ALLBADPIX, BAD2DFIT).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..bitmasks import specmask
from ..config import StepOptions
from ..models import psf as psfmodel

SOMEBADPIX = specmask.mask("SOMEBADPIX")
ALLBADPIX = specmask.mask("ALLBADPIX")
BAD2DFIT = specmask.mask("BAD2DFIT")


@dataclass
class ExtractOptions(StepOptions):
    """Options of :func:`extract_frame` (config section ``extract``)."""

    wavesize: int = 50         #: output bins per patch
    nwavepad: int = 10         #: extra bins solved on each side of a patch (the outer ones only partly constrained: pixels that see unsolved wavelengths are left out)
    nsubbundles: int = 5       #: sub-bundles per bundle
    nfiberpad: int = 1         #: neighbouring fibers solved on each side of a sub-bundle
    regularize: float = 0.0    #: ridge prior added to every unknown (relative to the median diagonal)
    psferr: float = 0.0        #: fractional PSF error added to the pixel variance (var += (psferr*model)^2)
    model_variance: bool = True  #: with a variance floor given, weight pixels by floor + model (2 solves)
    variance_smooth: float = 3.0  #: first-difference prior (x each fiber's median information) of the smooth model of the model variance; 0: the leave-one-out model everywhere
    variance_nsig: float = 3.0  #: the leave-one-out model replaces the smooth one where they differ by more than this many sigma of its noise
    variance_signal: str = "patch"  #: signal term of the weights: "patch" (the patch's per-wavelength median over its fibers, the same for every fiber but the bright ones; the ivar and CHI2PIX from each fiber's own variance) or "fiber" (each fiber's own model)
    variance_bright: float = 3.0  #: with variance_signal "patch", fibers brighter or fainter than the patch's median fiber by more than this factor keep their own signal term
    ndiag: int | None = None   #: resolution diagonals (default 2*HSIZEY+1: 11 for DESI PSFs)
    chi2_bad: float = 100.0    #: CHI2PIX above this sets BAD2DFIT
    use_numba: bool = True


# ---------------------------------------------------------------------------- normal equations
def overlap_pairs_numpy(x0, y0, sy, sx):
    """Numpy reference of :func:`fiberflow._kernels.normaleq.overlap_pairs_numba`."""
    x0 = np.asarray(x0, np.int64)
    y0 = np.asarray(y0, np.int64)
    i, j = np.triu_indices(x0.size)
    keep = (np.abs(y0[j] - y0[i]) < sy) & (np.abs(x0[j] - x0[i]) < sx)
    return i[keep].astype(np.int64), j[keep].astype(np.int64)


def overlap_pairs(x0, y0, sy, sx, use_numba=True):
    """Pairs ``i <= j`` of stamps (placed at x0, y0, shape (sy, sx)) that share a pixel: the
    non-zero entries of ``A^T W A`` and the covariances the leverages need.

    Returns
    -------
    pi, pj : (npair,) int64
    """
    x0 = np.ascontiguousarray(x0, np.int64)
    y0 = np.ascontiguousarray(y0, np.int64)
    if use_numba:
        from .._kernels.normaleq import overlap_pairs_numba

        return overlap_pairs_numba(x0, y0, int(sy), int(sx))
    return overlap_pairs_numpy(x0, y0, sy, sx)


def _dense_columns(stamps, x0, y0, shape):
    """Dense design matrix (ny * nx, n) of stamp columns (for the numpy references)."""
    ny, nx = shape
    n, sy, sx = stamps.shape
    A = np.zeros((ny * nx, n))
    for k in range(n):
        for a in range(sy):
            yy = y0[k] + a
            if not 0 <= yy < ny:
                continue
            for b in range(sx):
                xx = x0[k] + b
                if 0 <= xx < nx:
                    A[yy * nx + xx, k] += stamps[k, a, b]
    return A


def normal_equations_numpy(stamps, x0, y0, data, weight):
    """Numpy reference of :func:`fiberflow._kernels.normaleq.normal_equations_band_numba` (dense A, dense
    A^T W A)."""
    A = _dense_columns(stamps, x0, y0, data.shape)
    w = weight.ravel()
    return A.T @ (w[:, None] * A), A.T @ (w * data.ravel())


def normal_equations(stamps, x0, y0, data, weight, use_numba=True, pairs=None):
    """A^T W A (n, n) and A^T W d (n,) for stamp columns: :func:`normal_equations_band` with the
    unknowns' own order and a full band, unpacked (for tests and small problems; a patch's solves
    take the band).

    ``pairs`` (from :func:`overlap_pairs`) saves finding the overlapping stamps again."""
    n = len(stamps)
    if not use_numba:
        return normal_equations_numpy(*_kernel_args(stamps, x0, y0, data, weight))
    ab, atd = normal_equations_band(stamps, x0, y0, data, weight, np.arange(n), max(n - 1, 0), True, pairs)
    return _unpack(ab), atd


def _kernel_args(stamps, x0, y0, data, weight):
    return (np.ascontiguousarray(stamps, np.float64), np.ascontiguousarray(x0, np.int64),
            np.ascontiguousarray(y0, np.int64), np.ascontiguousarray(data, np.float64),
            np.ascontiguousarray(weight, np.float64))


def normal_equations_band(stamps, x0, y0, data, weight, pos, kd, use_numba=True, pairs=None):
    """:func:`normal_equations` in LAPACK's lower band storage of the reordered matrix (unknown ``k`` at
    position ``pos[k]``): ``ab[p, d]`` (n, kd + 1) is the entry of the unknowns at positions ``p + d`` and
    ``p`` (0 beyond the end); ``atd`` (n,) in the unknowns' own order. The numpy path packs the dense
    matrix."""
    pos = np.ascontiguousarray(pos, np.int64)
    args = _kernel_args(stamps, x0, y0, data, weight)
    if use_numba:
        from .._kernels.normaleq import normal_equations_band_numba

        if pairs is None:
            pairs = overlap_pairs(args[1], args[2], *args[0].shape[1:])
        return normal_equations_band_numba(*args, *pairs, pos, int(kd))
    ata, atd = normal_equations_numpy(*args)
    return _pack(ata, pos, kd), atd


def _pack(a, pos, kd):
    """Lower band storage (n, kd + 1) of the dense symmetric ``a`` reordered by ``pos``."""
    perm = np.empty_like(pos)
    perm[pos] = np.arange(len(pos))
    ar = a[np.ix_(perm, perm)]
    n = len(pos)
    ab = np.zeros((n, kd + 1))
    for d in range(min(kd + 1, n)):
        ab[: n - d, d] = np.diagonal(ar, -d)
    return ab


def _unpack(ab):
    """The dense symmetric (n, n) matrix of lower band storage ``ab`` (n, kd + 1)."""
    n, w = ab.shape
    a = np.zeros((n, n))
    for d in range(min(w, n)):
        idx = np.arange(n - d)
        a[idx + d, idx] = ab[: n - d, d]
        a[idx, idx + d] = ab[: n - d, d]
    return a


def leverage_numpy(stamps, x0, y0, weight, cov):
    """Numpy reference of the pixel leverages ``w * diag(A C A^T)`` (ny, nx)."""
    A = _dense_columns(stamps, x0, y0, weight.shape)
    return (np.einsum("pi,ij,pj->p", A, cov, A) * weight.ravel()).reshape(weight.shape)


def leverage(stamps, x0, y0, weight, cov, use_numba=True, pairs=None, cpair=None):
    """Pixel leverages: the fraction of each pixel's noise the fit absorbs (ny, nx).

    ``cov`` is the (n, n) covariance; or give ``pairs`` (:func:`overlap_pairs`) and ``cpair``, the
    covariance of each pair (all the leverages need: a banded solve gives only those)."""
    if not use_numba:
        if cov is None:
            cov = np.zeros((len(stamps), len(stamps)))
            cov[pairs] = cpair
            cov[pairs[::-1]] = cpair
        return leverage_numpy(stamps, x0, y0, weight, cov)
    from .._kernels.normaleq import leverage_numba

    stamps = np.ascontiguousarray(stamps, np.float64)
    x0 = np.ascontiguousarray(x0, np.int64)
    y0 = np.ascontiguousarray(y0, np.int64)
    if pairs is None:
        pairs = overlap_pairs(x0, y0, *stamps.shape[1:])
    if cpair is None:
        cpair = cov[pairs]
    return leverage_numba(stamps, x0, y0, np.ascontiguousarray(weight, np.float64), *pairs,
                          np.ascontiguousarray(cpair, np.float64))


def model_image(stamps, x0, y0, flux, shape, use_numba=True):
    """Model of the patch pixels: sum of flux * stamps, (ny, nx)."""
    if use_numba:
        from .._kernels.normaleq import model_image_numba

        return model_image_numba(np.ascontiguousarray(stamps, np.float64), np.ascontiguousarray(x0, np.int64),
                                 np.ascontiguousarray(y0, np.int64), np.ascontiguousarray(flux, np.float64),
                                 int(shape[0]), int(shape[1]))
    out = np.zeros(shape)
    n, sy, sx = stamps.shape
    for k in range(n):
        ys = slice(max(y0[k], 0), min(y0[k] + sy, shape[0]))
        xs = slice(max(x0[k], 0), min(x0[k] + sx, shape[1]))
        out[ys, xs] += flux[k] * stamps[k, ys.start - y0[k]: ys.stop - y0[k], xs.start - x0[k]: xs.stop - x0[k]]
    return out


def stamp_sums(stamps, x0, y0, planes, use_numba=True):
    """Stamp-weighted sums of image planes: ``out[k, p] = sum(stamps[k] * planes[p])`` (n, np).

    Parameters
    ----------
    stamps : (n, sy, sx)
    x0, y0 : (n,) int
        Local pixel of each stamp's [0, 0] (parts outside the planes are dropped).
    planes : (np, ny, nx)
    """
    stamps = np.ascontiguousarray(stamps, np.float64)
    x0 = np.ascontiguousarray(x0, np.int64)
    y0 = np.ascontiguousarray(y0, np.int64)
    planes = np.ascontiguousarray(planes, np.float64)
    if use_numba:
        from .._kernels.normaleq import stamp_sums_numba

        return stamp_sums_numba(stamps, x0, y0, planes)
    n, sy, sx = stamps.shape
    _, ny, nx = planes.shape
    out = np.zeros((n, planes.shape[0]))
    for k in range(n):
        ys = slice(max(y0[k], 0), min(y0[k] + sy, ny))
        xs = slice(max(x0[k], 0), min(x0[k] + sx, nx))
        if ys.stop <= ys.start or xs.stop <= xs.start:
            continue
        sp = stamps[k, ys.start - y0[k]: ys.stop - y0[k], xs.start - x0[k]: xs.stop - x0[k]]
        out[k] = np.einsum("ab,pab->p", sp, planes[:, ys, xs])
    return out


# ---------------------------------------------------------------------------- resolution
def fiber_resolution(cov_block, ndiag, rows, valid=None):
    """Resolution rows of fibers from their covariance blocks.

    ``Q = C^(-1/2)`` (symmetric square root of the fiber's inverse covariance, from one
    eigen-decomposition of ``C``); ``R = Q / rowsum(Q)``.

    Parameters
    ----------
    cov_block : (m, m) or (k, m, m)
        Covariance of a fiber's deconvolved fluxes over the solved bins (or of k fibers: one
        stacked eigen-decomposition).
    ndiag : int
    rows : slice
        The output bins (indices into the m solved bins).
    valid : slice, optional
        Solved bins inside the output grid: R rows only reach those (the stored diagonals
        cannot hold columns beyond the grid), so every stored row sums to 1.

    Returns
    -------
    R : (nrows, m) or (k, nrows, m)
        Rows ``rows`` of R, truncated to ``ndiag`` diagonals and normalised to sum 1.
    """
    m = cov_block.shape[-1]
    lam, vecs = np.linalg.eigh(cov_block)
    isq = np.where(lam > 0, 1.0 / np.sqrt(np.where(lam > 0, lam, 1.0)), 0.0)
    idx = np.arange(rows.start, rows.stop)
    Q = (vecs[..., idx, :] * isq[..., None, :]) @ np.swapaxes(vecs, -1, -2)
    h = ndiag // 2
    vlo, vhi = (0, m) if valid is None else (valid.start, valid.stop)
    cols = np.arange(m)
    band = (np.abs(cols[None, :] - idx[:, None]) <= h) & (cols >= vlo)[None, :] & (cols < vhi)[None, :]
    Q = np.where(band, Q, 0.0)
    s = Q.sum(axis=-1)
    ok = s > 0
    R = np.where(ok[..., None], Q / np.where(ok, s, 1.0)[..., None], 0.0)
    r = np.arange(len(idx))
    R[..., r, idx] = np.where(ok, R[..., r, idx], 1.0)  # a row without information: the identity
    return R


def resolution_rows_numpy(cov_block, fk, ndiag, rows, valid=None):
    """Reference of :func:`fiberflow._kernels.resolution.resolution_rows_numba` (from
    :func:`fiber_resolution`'s full rows)."""
    m = cov_block.shape[-1]
    h = ndiag // 2
    Rs = fiber_resolution(cov_block, ndiag, rows, valid)  # (k, nrows, m)
    flux = np.einsum("crw,cw->cr", Rs, fk)
    var = np.sum((Rs @ cov_block) * Rs, axis=2)
    band = rows.start + np.arange(rows.stop - rows.start)[:, None] + np.arange(-h, h + 1)[None, :]
    inb = (band >= 0) & (band < m)
    band = np.clip(band, 0, m - 1)
    R = np.where(inb[None], np.take_along_axis(Rs, np.broadcast_to(band, (len(Rs),) + band.shape), axis=2), 0.0)
    return R, flux, var


def resolution_rows(cov_block, fk, ndiag, rows, valid=None, use_numba=True):
    """Resolution rows (as diagonals), flux and variance of the output bins of k fibers.

    Parameters
    ----------
    cov_block : (k, m, m)
        Covariance of each fiber's deconvolved fluxes over the solved bins.
    fk : (k, m)
        The deconvolved fluxes.
    ndiag : int
    rows : slice
        The output bins (indices into the m solved bins).
    valid : slice, optional
        See :func:`fiber_resolution`.

    Returns
    -------
    R : (k, nrows, ndiag)
        Rows of :func:`fiber_resolution` at offsets ``-h .. h`` from the diagonal.
    flux, var : (k, nrows)
        ``R f`` and ``diag(R C R^T)``.
    """
    if not use_numba:
        return resolution_rows_numpy(cov_block, fk, ndiag, rows, valid)
    from .._kernels.resolution import resolution_rows_numba

    m = cov_block.shape[-1]
    lam, vecs = np.linalg.eigh(cov_block)
    vlo, vhi = (0, m) if valid is None else (valid.start, valid.stop)
    return resolution_rows_numba(np.ascontiguousarray(vecs), lam, np.ascontiguousarray(cov_block, np.float64),
                                 np.ascontiguousarray(fk, np.float64), rows.start, rows.stop - rows.start,
                                 ndiag // 2, vlo, vhi)


# ---------------------------------------------------------------------------- one patch
def extract_patch(image, ivar, psf, fibers, core_fibers, wave, core, dw, opts, valid=None, model=False,
                  var_floor=None, inputs=None, spots=None):
    """Extract one patch.

    Parameters
    ----------
    image, ivar : (ny, nx)
    var_floor : (ny, nx), optional
        Signal-independent pixel variance (read noise, master-bias noise, dark shot noise; see
        :func:`fiberflow.steps.preproc.variance_floor`). With it and ``opts.model_variance``, a first
        solve's model image replaces the data-derived signal term: pixels are weighted by
        ``1 / (var_floor + max(model, 0))`` (masked pixels stay at weight 0).
    psf : GaussHermitePSF
    fibers : (nf,) int
        Fibers solved (indices into the PSF), sorted.
    core_fibers : (nc,) int
        Fibers whose results are kept (subset of ``fibers``).
    wave : (nw,)
        Solved wavelengths (patch + padding).
    core : slice
        Output bins within ``wave``.
    dw : (nw,)
        Bin widths [Angstrom].
    opts : ExtractOptions
    valid : slice, optional
        Solved bins that lie inside the output grid (see :func:`fiber_resolution`).
    model : bool
        Also return the model of the core unknowns' light (``model``, ``model_box``).
    inputs : dict, optional
        Spot inputs (:func:`fiberflow.models.psf.spot_inputs`) of ``fibers`` at ``wave`` plus one
        bin on each side (the light just outside the solved range), (nf, nw + 2); computed here if
        not given.
    spots : tuple, optional
        ``(stamps, x0, y0)`` of ``fibers`` at ``wave`` (:func:`fiberflow.models.psf.stamps_from_inputs`
        of the inputs' solved wavelengths), computed here if not given.

    Returns
    -------
    dict with (nc, ncore) arrays ``flux``, ``ivar``, ``chi2pix``, ``masked``, and
    ``R`` (nc, ncore, ndiag) resolution rows (offsets -h..+h from the diagonal); with
    ``model``, ``model`` (ny', nx') pixels of the box ``model_box`` = (ylo, xlo).
    """
    nf, nw = len(fibers), len(wave)
    absf = psf.fibermin + np.asarray(fibers)
    if inputs is None:
        inputs = psfmodel.spot_inputs(psf, np.concatenate([[wave[0] - dw[0]], wave, [wave[-1] + dw[-1]]]), absf)
    if spots is None:
        spots = psfmodel.stamps_from_inputs(psf, psfmodel.slice_inputs(inputs, 1, nw + 1),
                                            use_numba=opts.use_numba, parallel=False)
    stamps, sx0, sy0 = spots
    stamps = stamps * dw[None, :, None, None]
    sy, sx = stamps.shape[-2:]
    ny, nx = image.shape
    ylo, yhi = max(int(sy0.min()), 0), min(int(sy0.max()) + sy, ny)
    xlo, xhi = max(int(sx0.min()), 0), min(int(sx0.max()) + sx, nx)
    ndiag = opts.ndiag or 2 * psf.hsizey + 1
    nc, ncore = len(core_fibers), core.stop - core.start
    out = {"flux": np.zeros((nc, ncore)), "ivar": np.zeros((nc, ncore)), "chi2pix": np.zeros((nc, ncore)),
           "masked": np.ones((nc, ncore)), "R": np.zeros((nc, ncore, ndiag))}
    if yhi <= ylo or xhi <= xlo:
        return out
    data = np.asarray(image[ylo:yhi, xlo:xhi], np.float64)
    weight = np.asarray(ivar[ylo:yhi, xlo:xhi], np.float64)
    weight = np.where(np.isfinite(data) & np.isfinite(weight), weight, 0.0)
    data = np.where(weight > 0, data, 0.0)
    # pixels that also see wavelengths outside the solved range cannot be modelled by this
    # patch: fitting them biases the pad bins and, through the deconvolution, the patch's
    # first and last bins (and a model-variance weight there misses that light: CHI2PIX of
    # hundreds at patch edges on flats)
    outside = psfmodel.slice_inputs(inputs, 0, 1), psfmodel.slice_inputs(inputs, nw + 1, nw + 2)
    xc = np.stack([outside[0]["xc"], outside[1]["xc"]], axis=1)
    yc = np.stack([outside[0]["yc"], outside[1]["yc"]], axis=1)
    weight = weight * _complete_pixels(psf, xc, yc, sx0, sy0, (sy, sx), (ylo, yhi, xlo, xhi))
    st = stamps.reshape(nf * nw, sy, sx)
    lx = (sx0 - xlo).ravel()
    ly = (sy0 - ylo).ravel()
    pairs = overlap_pairs(lx, ly, sy, sx, opts.use_numba)
    band = _pair_band(pairs, bin_major(nf, nw))
    use_model_var = opts.model_variance and var_floor is not None
    vown = None  # each pixel's own variance where the weights are not its inverse
    if opts.psferr > 0 or use_model_var:
        # the model of a first solve sets the signal term of the pixel variance (it carries no
        # pixel's own noise, unlike the preproc's neighbour median, which misses trace peaks)
        # and/or the PSF-error term (psferr * model)^2; it needs no full covariance (banded solve)
        smooth = opts.variance_smooth if use_model_var else 0.0
        f0, cpair0, fs = _solve_band(st, lx, ly, data, weight, opts, pairs, band, smooth, nw)
        mod = model_image(st, lx, ly, f0, data.shape, opts.use_numba)
        if use_model_var:
            # leave-one-out model: a pixel's own noise must not set its weight (weights that
            # follow the data bias the flux low); for a linear fit it is exact with leverage h:
            # d - (d - m) / (1 - h)
            lev0 = leverage(st, lx, ly, weight, None, opts.use_numba, pairs, cpair0)
            h0 = np.clip(lev0, 0.0, 0.99)
            loo = data - (data - mod) / (1.0 - h0)
            if fs is not None:
                loo = _smooth_where_noise(loo, model_image(st, lx, ly, fs, data.shape, opts.use_numba), h0, weight,
                                          opts.variance_nsig)
            var = np.asarray(var_floor[ylo:yhi, xlo:xhi], np.float64) + np.clip(loo, 0.0, None)
            if opts.variance_signal == "patch":
                # the pixel's own variance (for the flux variance and CHI2PIX) and weights whose
                # signal term is the same for every fiber of the patch
                vown = np.where(weight > 0, var, 0.0)
                signal = common_signal((f0 if fs is None else fs).reshape(nf, nw), opts.variance_bright)
                var = (np.asarray(var_floor[ylo:yhi, xlo:xhi], np.float64)
                       + np.clip(model_image(st, lx, ly, signal.ravel(), data.shape, opts.use_numba), 0.0, None))
                vown = vown + (opts.psferr * mod) ** 2
        else:
            var = np.where(weight > 0, 1.0 / np.where(weight > 0, weight, 1.0), 0.0)
        var = var + (opts.psferr * mod) ** 2
        weight = np.where(weight > 0, 1.0 / np.maximum(var, 1e-30), 0.0)
    fidx = {int(fb): k for k, fb in enumerate(fibers)}
    kcore = np.array([fidx[int(fb)] for fb in core_fibers], int)
    # expected chi2 of a pixel is 1 - leverage: CHI2PIX is normalised by it (median 1 when the
    # PSF and the variance are right). With model-variance weights the first solve's leverages
    # serve (its weights are the input ivar's): on the full-size bench frame that moves CHI2PIX by
    # +0.6% (median; +1.3% at the 99th percentile) and saves 7% of the patch's time
    own_lev = not (use_model_var and opts.psferr == 0)
    f, cblocks, cpair, diag = _solve_core(st, lx, ly, data, weight, opts, pairs, kcore, nw, own_lev)
    mod = model_image(st, lx, ly, f, data.shape, opts.use_numba)
    good = weight > 0
    lev = leverage(st, lx, ly, weight, None, opts.use_numba, pairs, cpair) if own_lev else lev0
    dof = np.where(good, np.clip(1.0 - lev, 0.0, 1.0), 0.0)
    wchi = weight if vown is None else np.where(good, 1.0 / np.where(good, vown, 1.0), 0.0)
    planes = np.stack([good.astype(np.float64), dof, wchi * (data - mod) ** 2])
    units = (kcore[:, None] * nw + core.start + np.arange(ncore)[None, :]).ravel()
    sums = stamp_sums(st[units], lx[units], ly[units], planes, opts.use_numba).reshape(nc, ncore, 3)
    tot = st[units].sum(axis=(1, 2)).reshape(nc, ncore)
    has = tot > 0
    # light on masked pixels or off the CCD (rounding-level fractions are no mask)
    masked = np.where(has, np.clip(1.0 - sums[..., 0] / np.where(has, tot, 1.0), 0.0, 1.0), 1.0)
    out["masked"] = np.where(masked < 1e-9, 0.0, masked)
    wsum = sums[..., 1]
    out["chi2pix"] = np.where(has & (wsum > 0), sums[..., 2] / np.where(wsum > 0, wsum, 1.0), 0.0)
    fk = f.reshape(nf, nw)[kcore]
    out["R"], out["flux"], var = resolution_rows(cblocks, fk, ndiag, core, valid, opts.use_numba)
    if vown is not None:
        var = var * variance_ratio(st[units], lx[units], ly[units], weight, vown, opts.use_numba).reshape(nc, ncore)
    info = diag.reshape(nf, nw)[kcore][:, core] > 0
    out["ivar"] = np.where(info & (var > 0), 1.0 / np.maximum(var, 1e-300), 0.0)
    if model:
        fc = np.zeros_like(f)
        fc[units] = f[units]
        out["model"] = model_image(st, lx, ly, fc, data.shape, opts.use_numba)
        out["model_box"] = (ylo, xlo)
    return out


def common_signal(flux, bright=3.0):
    """The signal term of the weights of a patch's fibers: the per-wavelength median of the
    fibers' (smooth) model flux, the same for every fiber, except a fiber more than ``bright``
    times brighter or fainter than the median fiber, which keeps its own.

    Weights that follow a fiber's own light weight the core of a sky line against its wings
    differently in a fiber with an object than in a sky fiber; sky lines are narrower than the
    extraction's bins (not representable on its grid), so the sky the extraction delivers then
    depends on the fiber's own object, and a sky model from the sky fibers does not fit the
    targets. Noiseless sky through the real r0 PSF (0.1 A lines, 250 e/A of sky, objects of
    20 / 100 / 500 e/A): continuum bins after sky subtraction -0.02 / -0.11 / -0.31 e/A with each
    fiber's own model, < 0.01 with this one, and the sky-line residuals 6x smaller
    (``benchmarks/sky_weights.py``). A median keeps a patch's bright fibers (standards) out of the
    others' weights and averages the fibers' noise. A fiber far from the median keeps its own
    light in the weights: a bright one's light on its neighbours' pixels sets their variance, and
    weights far from a fiber's own variance make its flux variance wrong by more than
    :func:`variance_ratio` can mend (faint fibers between stars of 4e4 e/A weighted as the stars:
    pulls of std 1.05); for a bright fiber the sky's dependence on its own light is a small part
    of its flux (0.06% at 500 e/A).

    Parameters
    ----------
    flux : (nf, nw)
    bright : float
        Fibers whose median flux differs from the median fiber's by more than this factor (either
        way) keep their own.

    Returns
    -------
    (nf, nw)
    """
    common = np.median(flux, axis=0)
    level = np.median(flux, axis=1)
    mid = float(np.median(level))
    own = (level > bright * mid) | (level * bright < mid) if mid > 0 else np.ones(len(level), bool)
    return np.where(own[:, None], flux, common[None, :])


def variance_ratio(stamps, x0, y0, weight, var, use_numba=True):
    """Variance of a flux estimated with pixel weights ``weight`` that are not ``1 / var``, relative
    to the variance the weights' normal equations give: ``sum(s^2 w^2 v) / sum(s^2 w)`` over each
    unknown's spot ``s`` (exact for one isolated spot; the weights and the variance vary slowly
    over the few bins a spot's deconvolution mixes).

    Parameters
    ----------
    stamps : (n, sy, sx)
    x0, y0 : (n,) int
    weight, var : (ny, nx)

    Returns
    -------
    (n,), 1 where a spot has no weighted pixel.
    """
    s = stamp_sums(np.square(stamps), x0, y0, np.stack([weight * weight * var, weight]), use_numba)
    return np.where(s[:, 1] > 0, s[:, 0] / np.where(s[:, 1] > 0, s[:, 1], 1.0), 1.0)


def _complete_pixels(psf, xc, yc, sx0, sy0, stamp_shape, box):
    """1 on the pixels of a patch's box that no unsolved wavelength sends light to, else 0.

    The spots of the wavelengths just outside the solved range (one bin beyond each end, trace
    positions ``xc, yc`` (nf, 2)) reach into the box; every row from that spot's nearest edge
    outwards gets light the patch does not model, in the columns of that fiber's spots.

    Returns
    -------
    (ny', nx') float64
    """
    ylo, yhi, xlo, xhi = box
    sy, sx = stamp_shape
    ok = np.ones((yhi - ylo, xhi - xlo))
    up = np.count_nonzero(sy0[:, -1] >= sy0[:, 0]) * 2 >= len(sy0)  # y grows with wavelength (most fibers)
    # (Python ints from here: this loop runs for every patch)
    oy0 = (np.floor(yc + 0.5).astype(np.int64) - psf.hsizey).tolist()
    ox0 = (np.floor(xc + 0.5).astype(np.int64) - psf.hsizex).tolist()
    smin, smax = sx0.min(axis=1).tolist(), sx0.max(axis=1).tolist()
    for k in range(len(ox0)):
        for end in (0, 1):
            c0 = max(min(ox0[k][end], smin[k]) - xlo, 0)
            c1 = min(max(ox0[k][end], smax[k]) + sx - xlo, xhi - xlo)
            low_side = (end == 0) == up  # the outside spot lies below the solved ones
            if low_side:
                r1 = min(oy0[k][end] + sy - ylo, yhi - ylo)
                ok[:max(r1, 0), c0:c1] = 0.0
            else:
                r0 = max(oy0[k][end] - ylo, 0)
                ok[r0:, c0:c1] = 0.0
    return ok


def band_solve_numpy(a, b, kd, inverse=True, j0=0):
    """Reference of :func:`fiberflow._kernels.lapack.band_solve_packed_numba` on the dense matrix ``a``
    (dense Cholesky check, solve and inverse)."""
    n = len(b)
    zb = np.zeros((n, kd + 1))
    try:
        np.linalg.cholesky(a)
        x = np.linalg.solve(a, b)
        z = np.linalg.inv(a) if inverse else None
    except np.linalg.LinAlgError:
        return np.zeros(n), zb, 1
    if inverse:
        for d in range(min(kd + 1, n)):
            zb[: n - d, d] = np.diagonal(z, -d)
        zb[:j0] = 0.0
    return x, zb, 0


def band_solve_packed(ab, x, kd, use_numba=True, inverse=True, j0=0):
    """Solution of a symmetric positive definite band system in lower band storage ``ab`` (n, kd + 1)
    with the right-hand side ``x`` (n,), and the band ``zb[j, d] = Z[j + d, j]`` of its inverse for the
    columns ``j >= j0`` (zeros elsewhere and without ``inverse``), and the LAPACK status (see the numba
    kernel). On the numba path ``ab`` and ``x`` are overwritten (pass copies to keep them)."""
    if use_numba:
        from .._kernels.lapack import band_solve_packed_numba

        return band_solve_packed_numba(np.ascontiguousarray(ab, np.float64), np.ascontiguousarray(x, np.float64),
                                       int(kd), bool(inverse), int(j0))
    return band_solve_numpy(_unpack(ab), np.asarray(x, np.float64), kd, inverse, j0)


def bin_major(nf, nw):
    """Order of the unknowns (fiber-major: ``fiber * nw + bin``) by wavelength bin, then fiber: the
    one in which the normal equations of a patch are banded (spots only overlap their neighbours
    in wavelength and fiber). Returns (nf * nw,) int64: position -> fiber-major index."""
    return (np.arange(nf)[None, :] * nw + np.arange(nw)[:, None]).ravel().astype(np.int64)


def median_positive(x):
    """Median of the positive entries of each row (0 for a row without any): one sort instead of a
    ``np.median`` call per row (those cost more than a patch's small arrays themselves).

    Parameters
    ----------
    x : (..., m)

    Returns
    -------
    (...,) float64
    """
    x = np.asarray(x, np.float64)
    m = x.shape[-1]
    pos = x > 0
    s = np.sort(np.where(pos, x, np.inf), axis=-1).reshape(-1, m)
    k = np.count_nonzero(pos, axis=-1).reshape(-1)
    r = np.arange(k.size)
    mid = 0.5 * (s[r, np.maximum((k - 1) // 2, 0)] + s[r, np.minimum(k // 2, m - 1)])
    return np.where(k > 0, mid, 0.0).reshape(x.shape[:-1])


def _ridged(st, lx, ly, data, weight, opts, pairs, pos, kd):
    """Normal equations in band storage (order ``pos``, half-bandwidth ``kd``; see
    :func:`normal_equations_band`) with the tiny ridge that keeps bins without data solvable, and the
    information diagonal in the unknowns' own order (0 where it is at the ridge level: those bins
    carry no data)."""
    ab, atd = normal_equations_band(st, lx, ly, data, weight, pos, kd, opts.use_numba, pairs)
    diag = ab[pos, 0]
    scale = float(median_positive(diag)) or 1.0
    ridge = scale * (1e-8 + opts.regularize)  # optional user regularisation on top
    ab[:, 0] += ridge
    return ab, atd, np.where(diag > 1e-6 * scale, diag, 0.0), ridge


def _pair_band(pairs, perm):
    """The band layout of a patch, once for both solves: the bin-major order ``perm`` (position ->
    unknown) and ``pos`` (unknown -> position), where each overlapping pair sits in the band of the
    reordered inverse (row, diagonal) and the half-bandwidth kd."""
    pos = np.empty(len(perm), np.int64)
    pos[perm] = np.arange(len(perm))
    pa, pb = pos[pairs[0]], pos[pairs[1]]
    d = np.abs(pa - pb)
    return perm, pos, np.minimum(pa, pb), d, (int(d.max()) if d.size else 0)


def _solve_band(st, lx, ly, data, weight, opts, pairs, band, smooth=0.0, nw=None):
    """Flux of one patch and the covariances of its overlapping pairs only (what the model image
    and the leverages need): a banded Cholesky in the bin-major order of ``band``
    (:func:`_pair_band`) and the band of the inverse, ``n kd^2`` operations against the ``n^3``
    of a full inverse.

    With ``smooth > 0`` also the flux under a first-difference prior along each fiber's ``nw``
    bins, of strength ``smooth`` times the fiber's median information (the smooth model of
    :func:`_smooth_where_noise`; a banded solve without inverse).

    Returns
    -------
    f : (n,) in the patch's own (fiber-major) order
    cpair : (npair,) covariance of each pair of ``pairs``
    fs : (n,) or None
        The smooth flux (None without ``smooth``).
    """
    perm, pos, lo, d, kd = band
    n = len(perm)
    nf = n // nw if smooth > 0 else 1
    kds = max(kd, nf)  # the prior couples a fiber's neighbouring bins: nf apart in bin-major order
    ab, atd, diag, ridge = _ridged(st, lx, ly, data, weight, opts, pairs, pos, kds)
    abs_ = ab.copy() if smooth > 0 else None  # (the solve overwrites ab with its factor)
    x, zb, info = band_solve_packed(ab[:, :kd + 1], atd[perm], kd, opts.use_numba)
    if info != 0 or not np.all(np.isfinite(x)):
        return np.zeros(n), np.where(pairs[0] == pairs[1], 1.0 / ridge, 0.0), None
    f = np.empty(n)
    f[perm] = x
    fs = None
    if smooth > 0:
        info_f = diag.reshape(nf, nw)
        pen = smooth * median_positive(info_f)
        i = (np.arange(nf)[:, None] * nw + np.arange(nw - 1)[None, :]).ravel()
        p = np.repeat(pen, nw - 1)
        pi, pi1 = pos[i], pos[i + 1]
        abs_[pi, 0] += p
        abs_[pi1, 0] += p
        abs_[np.minimum(pi, pi1), np.abs(pi1 - pi)] -= p
        xs, _, info = band_solve_packed(abs_, atd[perm], kds, opts.use_numba, inverse=False)
        if info == 0 and np.all(np.isfinite(xs)):
            fs = np.empty(n)
            fs[perm] = xs
    return f, zb[lo, d], fs


def _smooth_where_noise(loo, smooth_model, h, weight, nsig):
    """The model behind the model-variance weights: the smooth model where the leave-one-out model
    differs from it by no more than ``nsig`` times the leave-one-out model's own noise, the
    leave-one-out model elsewhere (real features: lines, steep continua).

    Weights that follow the leave-one-out model follow its noise, which is the neighbouring pixels'
    noise through the fit: a pixel whose neighbours fluctuate up gets less weight, and the flux
    comes out high (+0.067 sigma at 60 e/A, +0.014 sigma at 3,000 e/A on one patch of the real r0
    PSF, against an extraction with the true variance; benchmarks/bias_extract.py). The smooth model
    carries little noise; a feature it misses is larger than the noise threshold and is taken from
    the leave-one-out model. With the defaults (prior 3x the information, 3 sigma) the bias is
    -0.002 / -0.000 sigma there, and the full-size bench frame's mean pull goes from +0.016 to
    -0.003 (std 1.003 -> 0.996). A stronger prior smooths line wings into the model (too much
    variance there: std 0.987 at 100x) and makes more pixels' choice follow their noise.

    Parameters
    ----------
    loo, smooth_model : (ny, nx)
        Leave-one-out model and smooth model [electron].
    h : (ny, nx)
        The first solve's leverages (``loo``'s noise variance is ``h / (1 - h)`` times the pixel's).
    weight : (ny, nx)
        The first solve's pixel weights (inverse variance; 0 = unused).
    nsig : float

    Returns
    -------
    (ny, nx) the model for the pixel variance.
    """
    var = np.where(weight > 0, 1.0 / np.where(weight > 0, weight, 1.0), 0.0)
    noise = np.sqrt(h / (1.0 - h) * var)
    return np.where(np.abs(loo - smooth_model) > nsig * noise, loo, smooth_model)


def _solve_core(st, lx, ly, data, weight, opts, pairs, kcore, nw, need_pairs=True):
    """Flux of one patch, the covariance blocks of its core fibers, the covariances of its
    overlapping pairs (for the leverages) and the information diagonal.

    In the patch's own fiber-major order a fiber's bins are contiguous and a spot only overlaps
    spots of nearby bins of the neighbouring fibers, so the normal matrix is banded with
    ``kd`` about ``nw`` plus the spot's reach in bins. With ``kd >= nw - 1`` the band of the
    inverse holds every fiber's whole (nw, nw) covariance block as well as every overlapping
    pair: one banded Cholesky and the band of the inverse (``n kd^2`` operations) give all the
    second solve needs, instead of a dense Cholesky and inverse (``n^3``). Without
    ``need_pairs`` the recurrence stops at the first core fiber's bins (the pairs' covariances are then
    not computed: ``cpair`` is None).

    Returns
    -------
    f : (n,) fiber-major
    cblocks : (nc, nw, nw)
        Covariance of each core fiber's unknowns, in the order of ``kcore``.
    cpair : (npair,) or None
    diag : (n,) information diagonal (0 where a bin carries no data)
    """
    n = len(st)
    d = np.abs(pairs[0] - pairs[1])
    kd = max(int(d.max()) if d.size else 0, nw - 1)
    ab, atd, diag, ridge = _ridged(st, lx, ly, data, weight, opts, pairs, np.arange(n, dtype=np.int64), kd)
    j0 = 0 if need_pairs else int(np.min(kcore)) * nw
    f, zb, info = band_solve_packed(ab, atd, kd, opts.use_numba, j0=j0)
    if info != 0 or not np.all(np.isfinite(f)):
        return (np.zeros(n), np.broadcast_to(np.eye(nw) / ridge, (len(kcore), nw, nw)),
                np.where(pairs[0] == pairs[1], 1.0 / ridge, 0.0) if need_pairs else None, np.zeros(n))
    i, j = np.indices((nw, nw))
    rows = np.asarray(kcore)[:, None, None] * nw + np.minimum(i, j)[None]
    cpair = zb[np.minimum(pairs[0], pairs[1]), d] if need_pairs else None
    return f, zb[rows, np.abs(i - j)[None]], cpair, diag


# ---------------------------------------------------------------------------- frame
def patch_plan(nfiber, bundlesize, nwave, opts):
    """Work units: (bundle, core fibers, solved fibers, output bin range) for every patch.

    Returns
    -------
    list of (int, (nc,) int, (nf,) int, int, int)
    """
    plan = []
    for b0 in range(0, nfiber, bundlesize):
        bundle = np.arange(b0, min(b0 + bundlesize, nfiber))
        for sub in np.array_split(bundle, min(opts.nsubbundles, len(bundle))):
            lo = max(sub[0] - opts.nfiberpad, bundle[0])
            hi = min(sub[-1] + opts.nfiberpad, bundle[-1])
            solved = np.arange(lo, hi + 1)
            for w0 in range(0, nwave, opts.wavesize):
                plan.append((b0 // bundlesize, sub, solved, w0, min(w0 + opts.wavesize, nwave)))
    return plan


def rank_units(plan, rank, size):
    """Units of one MPI rank: whole bundles dealt round-robin while there are at least as many
    bundles as ranks, else single patches dealt round-robin (so extra ranks still get work).

    Returns
    -------
    list of int (indices into ``plan``)
    """
    bundles = sorted({u[0] for u in plan})
    if len(bundles) >= size:
        mine = set(bundles[rank::size])
        return [i for i, u in enumerate(plan) if u[0] in mine]
    return list(range(rank, len(plan), size))


def run_units(image, ivar, psf, wave, plan, opts, nthreads=1, model=False, var_floor=None):
    """Extract the patches ``plan`` (see :func:`patch_plan`) with ``nthreads`` threads.

    The numba kernels release the GIL and BLAS is held to one thread per call, so each
    patch is computed exactly as it would be serially: results do not depend on
    ``nthreads`` (or on the MPI rank count).

    Returns
    -------
    list of dict, one per unit (see :func:`extract_patch`)
    """
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    import threading
    from collections import OrderedDict

    nwave = wave.size
    step = float(np.median(np.diff(wave))) if nwave > 1 else 1.0
    # the spot inputs (trace, shape parameters) and the stamps of a bundle's fibers over the whole
    # grid, once per bundle rather than once per patch (patches overlap by their padding bins, and
    # sub-bundles by their padding fibers); the most recent bundles are kept (patches come in order)
    base = -opts.nwavepad - 1
    cache, lock = OrderedDict(), threading.Lock()
    bundles = {}
    for b, _, solved_f, _, _ in plan:
        lo, hi = bundles.get(b, (solved_f[0], solved_f[-1]))
        bundles[b] = min(lo, solved_f[0]), max(hi, solved_f[-1])

    def spots(b):
        with lock:
            if b not in cache:
                grid = wave[0] + step * np.arange(base, nwave + opts.nwavepad + 1)
                p = psfmodel.spot_inputs(psf, grid, psf.fibermin + np.arange(bundles[b][0], bundles[b][1] + 1))
                cache[b] = p, psfmodel.stamps_from_inputs(psf, p, use_numba=opts.use_numba, parallel=False)
                while len(cache) > max(nthreads, 1) + 1:
                    cache.popitem(last=False)
            return cache[b]

    def one(unit):
        b, core_f, solved_f, w0, w1 = unit
        lo, hi = w0 - opts.nwavepad, w1 + opts.nwavepad
        pw = wave[0] + step * np.arange(lo, hi)
        p, st = spots(b)
        fs = slice(solved_f[0] - bundles[b][0], solved_f[-1] + 1 - bundles[b][0])
        cut = slice(lo - base, hi - base)
        return extract_patch(image, ivar, psf, solved_f, core_f, pw, slice(w0 - lo, w1 - lo),
                             np.full(pw.size, step), opts, slice(max(0, -lo), nwave - lo), model, var_floor,
                             psfmodel.slice_inputs(p, lo - 1 - base, hi + 1 - base, fs), tuple(a[fs, cut] for a in st))

    with threadpool_limits(limits=1):
        if nthreads <= 1 or len(plan) <= 1:
            return [one(u) for u in plan]
        with ThreadPoolExecutor(max_workers=nthreads) as pool:
            return list(pool.map(one, plan))


def assemble(plan, results, psf, nwave, shape, opts):
    """Frame arrays from the patch results (see :func:`extract_frame` for the returned dict)."""
    nfib = psf.nfiber
    ndiag = opts.ndiag or 2 * psf.hsizey + 1
    flux = np.zeros((nfib, nwave))
    fivar = np.zeros((nfib, nwave))
    chi2 = np.zeros((nfib, nwave))
    masked = np.ones((nfib, nwave))
    h = ndiag // 2
    resolution = np.zeros((nfib, ndiag, nwave))  # dia storage: [k, j] = R[j - off, j], off = h - k
    model = None
    for (_, core_f, _, w0, w1), res in zip(plan, results):
        if core_f.size and core_f[-1] - core_f[0] + 1 == core_f.size:  # contiguous (always, from patch_plan)
            core_f = slice(int(core_f[0]), int(core_f[-1]) + 1)
        flux[core_f, w0:w1] = res["flux"]
        fivar[core_f, w0:w1] = res["ivar"]
        chi2[core_f, w0:w1] = res["chi2pix"]
        masked[core_f, w0:w1] = res["masked"]
        for d in range(ndiag):  # R rows' offsets -h..+h: row i's entry d lands in column i + d - h
            off = d - h
            j0, j1 = max(w0 + off, 0), min(w1 + off, nwave)
            if j1 > j0:
                resolution[core_f, h - off, j0:j1] = res["R"][:, j0 - off - w0:j1 - off - w0, d]
        if "model" in res:
            if model is None:
                model = np.zeros(shape)
            y0, x0 = res["model_box"]
            my, mx = res["model"].shape
            model[y0:y0 + my, x0:x0 + mx] += res["model"]
    mask = np.zeros((nfib, nwave), np.int32)
    mask[masked > 0] |= SOMEBADPIX
    mask[(masked >= 0.99) | (fivar == 0)] |= ALLBADPIX
    mask[chi2 > opts.chi2_bad] |= BAD2DFIT
    fivar[(mask & ALLBADPIX) != 0] = 0.0
    flux[~np.isfinite(flux)] = 0.0
    out = {"flux": flux, "ivar": fivar, "mask": mask, "chi2pix": chi2, "masked": masked, "resolution": resolution}
    if model is not None:
        out["model"] = model
    return out


def extract_frame(image, ivar, psf, wave, bundlesize, opts=None, units=None, nthreads=1, comm=None,
                  model=False, var_floor=None):
    """Extract every fiber of a camera on the wavelength grid ``wave``.

    Parameters
    ----------
    image, ivar : (ny, nx)
    psf : GaussHermitePSF
    wave : (nwave,) uniform grid [Angstrom]
    bundlesize : int
    opts : ExtractOptions
    units : list of plan entries to do (default all; see :func:`patch_plan`)
    nthreads : int
        Threads per process.
    comm : mpi4py communicator, optional
        Patches are dealt over its ranks (:func:`rank_units`) and gathered on rank 0; other
        ranks return None.
    model : bool
        Also return the model image (``model``, (ny, nx)) of the extracted light.
    var_floor : (ny, nx), optional
        Signal-independent pixel variance: with ``opts.model_variance`` the pixel weights come
        from it plus a first solve's model (see :func:`extract_patch`).

    Returns
    -------
    dict with (nfiber, nwave) ``flux`` [electron/Angstrom], ``ivar``, ``mask`` (specmask),
    ``chi2pix``, ``masked`` (pixel-mask fraction), and ``resolution`` (nfiber, ndiag, nwave)
    diagonals in the scipy dia convention.
    """
    opts = opts or ExtractOptions()
    if opts.variance_signal not in ("patch", "fiber"):
        raise ValueError(f"extract.variance_signal must be patch or fiber, not {opts.variance_signal!r}")
    wave = np.asarray(wave, float)
    plan = patch_plan(psf.nfiber, bundlesize, wave.size, opts) if units is None else list(units)
    if comm is None or comm.Get_size() == 1:
        results = run_units(image, ivar, psf, wave, plan, opts, nthreads, model, var_floor)
    else:
        mine = rank_units(plan, comm.Get_rank(), comm.Get_size())
        res = run_units(image, ivar, psf, wave, [plan[i] for i in mine], opts, nthreads, model, var_floor)
        gathered = comm.gather(list(zip(mine, res)), root=0)
        if comm.Get_rank() != 0:
            return None
        byidx = dict(pair for part in gathered for pair in part)
        results = [byidx[i] for i in range(len(plan))]
    return assemble(plan, results, psf, wave.size, image.shape, opts)
