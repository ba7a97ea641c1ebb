"""QA plots (matplotlib, Agg backend, PNG). Each function draws from arrays and writes one
file atomically; none reads a product."""

from __future__ import annotations

import warnings

import numpy as np

from .metrics import BLOCK

CLASS_COLORS = {"ELG": "tab:blue", "LRG": "tab:red", "QSO": "tab:green", "STD": "tab:orange", "SKY": "0.5",
                "OTHER": "0.7"}
STATUS_COLORS = {"NORMAL": "#2e9d48", "WARNING": "#e0a800", "ALARM": "#d62728", "NA": "#bbbbbb"}
ARM_COLORS = {"b": "tab:blue", "r": "tab:red", "z": "tab:purple"}


#: resolution of every PNG [dots per inch]; with fonts of 10 pt and more (set below and in every
#: call), text stays readable on a page at 100% zoom
DPI = 100
#: smallest font on a picture [pt]
MIN_FONT = 10
#: fixed colour range of the per-amplifier noise-ratio maps (1 = the expected noise): identical
#: amplifiers look identical, whatever the spread of one exposure
NOISE_RATIO_RANGE = (0.5, 1.5)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": MIN_FONT, "axes.titlesize": 11, "axes.labelsize": MIN_FONT,
                         "xtick.labelsize": MIN_FONT, "ytick.labelsize": MIN_FONT, "legend.fontsize": MIN_FONT,
                         "figure.titlesize": 12, "axes.formatter.useoffset": False})
    return plt


def mjd_to_datetime(mjd):
    """MJD (array) as datetime objects (UTC), for time axes in dates."""
    import datetime

    base = datetime.datetime(1858, 11, 17)
    return [base + datetime.timedelta(days=float(t)) for t in np.atleast_1d(mjd)]


def _ticks(n):
    """A tick locator of at most ``n`` round values (10 pt labels that do not run together)."""
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(n)


def _band(ax, rng, orientation, color, alpha):
    """Shade a [lo, hi] range (None: open) along x (vertical band) or y."""
    if rng is None:
        return
    lo, hi = rng
    lim = ax.get_xlim() if orientation == "x" else ax.get_ylim()
    lo = lim[0] if lo is None else lo
    hi = lim[1] if hi is None else hi
    span = ax.axvspan if orientation == "x" else ax.axhspan
    span(lo, hi, color=color, alpha=alpha, lw=0, zorder=0)


def _save(fig, path):
    """Write a figure atomically."""
    from ..io.fitsutil import atomic_path

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=DPI, format="png")
    finally:
        _plt().close(fig)


def message(path, text):
    """A small picture that only says something (a camera the quick-look could not measure)."""
    fig = _plt().figure(figsize=(6, 1.2))
    fig.text(0.02, 0.5, text, va="center", fontsize=11, wrap=True)
    _save(fig, path)


def _thumb(ax, img, title, vmin=None, vmax=None, extent=None):
    """An image of (nrow, ncol) downsampled along columns to at most 600 columns."""
    img = np.asarray(img, float)
    step = max(1, img.shape[1] // 600)
    if step > 1:
        n = img.shape[1] // step * step
        img = img[:, :n].reshape(img.shape[0], -1, step).mean(axis=2)
    if vmin is None:
        fin = img[np.isfinite(img)]
        vmin, vmax = (np.percentile(fin, [2, 98]) if fin.size else (0, 1))
    ax.imshow(img, aspect="auto", origin="lower", vmin=vmin, vmax=vmax, cmap="gray", interpolation="nearest",
              extent=extent)
    ax.set_title(title, fontsize=11)
    return vmin, vmax


def _resample_axis(img, n, axis):
    """Block-average (shrinking) or repeat (growing) ``img`` to ``n`` samples along ``axis``;
    NaN samples are left out of the averages."""
    m = img.shape[axis]
    if m > n:
        edges = np.linspace(0, m, n + 1).astype(int)[:-1]
        sums = np.add.reduceat(np.nan_to_num(img), edges, axis=axis)
        counts = np.add.reduceat(np.isfinite(img).astype(float), edges, axis=axis)
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return np.take(img, (np.arange(n) * m) // n, axis=axis)


def panel_image(img, width=600, height=None):
    """Resample a (nrow, ncol) image to (height, width) pixels (block averages where it shrinks,
    repeats where it grows; NaN left out). Default height: every row visible, at most 400 px
    unless there are more rows.

    Returns
    -------
    (height, width) float64
    """
    img = np.asarray(img, float)
    height = height or max(img.shape[0], min(4 * img.shape[0], 400))
    return _resample_axis(_resample_axis(img, width, 1), height, 0)


def blink_strip(path, panels, vmin=None, vmax=None, width=600, height=None):
    """Write the panels side by side, without axes and on one grey scale, as one PNG whose
    panels are exactly ``width`` pixels wide: the QA page shows one panel at a time and blinks
    between them (same fibers, same wavelengths, same scale).

    Parameters
    ----------
    panels : list of (nrow, ncol) arrays (fibers x wavelength; all the same shape)
    vmin, vmax : float, optional
        Grey scale (default: 2nd-98th percentile of the first panel).

    Returns
    -------
    (width, height) of one panel in pixels
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io.fitsutil import atomic_path

    imgs = [panel_image(p, width, height) for p in panels]
    if vmin is None:
        fin = imgs[0][np.isfinite(imgs[0])]
        vmin, vmax = (np.percentile(fin, [2, 98]) if fin.size else (0.0, 1.0))
    scale = max(float(vmax) - float(vmin), 1e-30)
    strip = np.concatenate([np.clip((np.nan_to_num(i, nan=float(vmin)) - vmin) / scale, 0, 1) for i in imgs], axis=1)
    rgba = matplotlib.colormaps["gray"](strip[::-1])  # fiber 0 at the bottom, as the coversheet
    with atomic_path(path) as tmp:
        plt.imsave(tmp, rgba, format="png")
    return width, imgs[0].shape[0]


def _block_lines(ax, fibers):
    if len(fibers) == 0:
        return
    for b in range(int(np.min(fibers)) // BLOCK + 1, int(np.max(fibers)) // BLOCK + 1):
        ax.axvline(b * BLOCK - 0.5, color="0.6", lw=0.6, ls=":")


def science_coversheet(path, title, wave, frame, sframe, sky, skyfib, fibers, thru, skyresid, snr, mag, classes,
                       good=None):
    """Coversheet of a science camera.

    Parameters
    ----------
    wave : (nwave,)
    frame, sframe, sky : (nspec, nwave) electron/Angstrom, drawn with one grey scale so they
        can be blinked
    skyfib : (nspec,) bool
    good : (nspec, nwave) bool, optional
        Unmasked bins of the sframe (ivar > 0, mask 0): the sky residual against wavelength is
        the median over the good bins of the sky fibers (a gap where every sky fiber is masked).
    fibers : (nspec,) FIBER
    thru, skyresid, snr, mag : (nspec,)
    classes : (nspec,) str
    """
    plt = _plt()
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    ext = [wave[0], wave[-1], fibers[0] - 0.5, fibers[-1] + 0.5]
    vmin, vmax = _thumb(axes[0, 0], frame, "frame", extent=ext)
    _thumb(axes[0, 1], sframe, "sframe (same scale)", vmin, vmax, extent=ext)
    _thumb(axes[0, 2], sky, "sky model (same scale)", vmin, vmax, extent=ext)
    for ax in axes[0]:
        ax.set_xlabel("wavelength [A]", fontsize=10)
        ax.set_ylabel("fiber", fontsize=10)
    ax = axes[1, 0]
    if skyfib.any():
        ok = np.ones(sframe.shape, bool) if good is None else np.asarray(good, bool)
        ms = np.median(sky[skyfib], axis=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-masked columns: NaN, a gap
            mr = np.nanmedian(np.where(ok[skyfib], sframe[skyfib], np.nan), axis=0)
        ax.plot(wave, mr, lw=0.5, color="k", label="median sky-fiber residual (masked bins excluded)")
        ax.plot(wave, 0.05 * ms, lw=0.5, color="tab:blue", alpha=0.6, label="5% of sky")
        ax.plot(wave, -0.05 * ms, lw=0.5, color="tab:blue", alpha=0.6)
        ax.legend(fontsize=10, loc="lower left", framealpha=0.85)
    ax.set_title("sky residual vs wavelength [e/A]", fontsize=11)
    ax.set_xlabel("wavelength [A]", fontsize=10)
    ax = axes[1, 1]
    for c in sorted(set(classes) - {"SKY"}):
        sel = (np.asarray(classes) == c) & np.isfinite(snr) & (snr > 0) & np.isfinite(mag)
        if sel.any():
            ax.semilogy(mag[sel], snr[sel], "o", ms=4, color=CLASS_COLORS.get(c, "k"), label=c)
    ax.set_xlabel("r [AB mag]", fontsize=10)
    ax.set_ylabel("median S/N per bin", fontsize=10)
    ax.set_title("S/N vs magnitude", fontsize=11)
    ax.legend(fontsize=10)
    ax = axes[1, 2]
    ax.plot(fibers, thru, ".", color="k", label="fiber flux / median sky-fiber flux")
    ax.plot(fibers[skyfib], skyresid[skyfib] + 1.0, "s", mfc="none", color="tab:red", label="1 + sky-fiber residual")
    _block_lines(ax, fibers)
    ax.set_ylim(0.0, 2.0)
    ax.set_xlabel("fiber", fontsize=10)
    ax.set_ylabel("median flux ratio", fontsize=10)
    ax.set_title("per fiber (dotted: 50-fiber blocks)", fontsize=11)
    ax.legend(fontsize=10)
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def flat_coversheet(path, title, wave, frame, fiberflat, fibers, flat_median, meanspec):
    """Coversheet of a flat camera: frame and fiberflat images, median flat per fiber, lamp spectrum."""
    plt = _plt()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    ext = [wave[0], wave[-1], fibers[0] - 0.5, fibers[-1] + 0.5]
    _thumb(axes[0, 0], frame, "flat frame [e/A]", extent=ext)
    _thumb(axes[0, 1], fiberflat, "fiberflat", 0.9, 1.1, extent=ext)
    axes[1, 0].plot(fibers, flat_median, "o", ms=3, color="k")
    axes[1, 0].axhline(1.0, color="0.5", lw=0.8)
    _block_lines(axes[1, 0], fibers)
    axes[1, 0].set_title("median fiberflat per fiber", fontsize=11)
    axes[1, 0].set_xlabel("fiber", fontsize=10)
    if meanspec is not None:
        axes[1, 1].plot(wave, meanspec, lw=0.6, color="k")
    axes[1, 1].set_title("deconvolved lamp spectrum [e/A]", fontsize=11)
    axes[1, 1].set_xlabel("wavelength [A]", fontsize=10)
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def bias_coversheet(path, title, resid, master, expected):
    """Coversheet of a ZERO or DARK camera: exposure - master bias, the master, and the
    residual's histogram per amplifier in units of its expected noise.

    Parameters
    ----------
    resid, master : (ny, nx) [electron]
    expected : dict amp -> expected residual sigma [electron]
    """
    from .metrics import amp_slices

    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.5))
    sig = float(np.nanmedian(list(expected.values()))) if expected else 1.0

    def small(img):  # block averages: a 4k x 4k image would make the PNG slow and no clearer
        img = np.asarray(img, float)
        return _resample_axis(_resample_axis(img, min(img.shape[0], 600), 0), min(img.shape[1], 600), 1)

    # block averages of n pixels have n times less variance: the grey scale follows
    nblock = max(1.0, resid.shape[0] / 600) * max(1.0, resid.shape[1] / 600)
    _thumb(axes[0], small(resid), "exposure - master bias [e], block averages", -3 * sig / np.sqrt(nblock),
           3 * sig / np.sqrt(nblock))
    _thumb(axes[1], small(master), "master bias [e], block averages")
    bins = np.linspace(-8, 8, 81)
    for amp, (sy, sx) in amp_slices(resid.shape).items():
        if amp in expected and expected[amp] > 0:
            r = np.asarray(resid[sy, sx], float).ravel()
            r = r[np.isfinite(r)]
            axes[2].hist((r - np.median(r)) / expected[amp], bins=bins, histtype="step", label=f"amp {amp}")
    x = np.linspace(-8, 8, 400)
    n = resid.size / 4 * (bins[1] - bins[0])
    axes[2].plot(x, n * np.exp(-0.5 * x ** 2) / np.sqrt(2 * np.pi), "k:", label="expected")
    axes[2].set_yscale("log")
    axes[2].set_ylim(0.5, None)
    axes[2].set_xlabel("(residual - median) / expected sigma", fontsize=10)
    axes[2].legend(fontsize=10)
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def arc_coversheet(path, title, image, fiberstatus, spots):
    """Coversheet of an arc camera: preproc image, per-fiber residual RMS and line counts,
    core widths versus wavelength."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.5))
    if image is not None:
        _thumb(axes[0], np.asarray(image).T, "arc image [e] (x: CCD row, y: CCD column)", 0, 200)
    if fiberstatus is not None:
        f = fiberstatus["FIBER"]
        axes[1].plot(f, fiberstatus["RMSX"], ".", label="RMS x (trace)")
        axes[1].plot(f, fiberstatus["RMSY"], ".", label="RMS y (wavelength)")
        ax2 = axes[1].twinx()
        ax2.plot(f, fiberstatus["NLINE"], "k_", label="lines")
        ax2.set_ylabel("lines", fontsize=10)
        axes[1].legend(fontsize=10)
        axes[1].set_xlabel("fiber", fontsize=10)
        axes[1].set_ylabel("residual RMS [pixel]", fontsize=10)
        _block_lines(axes[1], f)
    if spots is not None and len(spots):
        used = spots["USED"].astype(bool)
        axes[2].plot(spots["WAVE"][used], spots["SX"][used], ",", label="SX")
        axes[2].plot(spots["WAVE"][used], spots["SY"][used], ",", label="SY")
        axes[2].legend(fontsize=10, markerscale=20)
        axes[2].set_xlabel("wavelength [A]", fontsize=10)
        axes[2].set_title("core widths [pixel]", fontsize=11)
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def focal_plane(path, title, panels):
    """Focal-plane maps of one exposure.

    Parameters
    ----------
    panels : list of (label, x, y, values, fibers, vrange, cmap)
        One panel per quantity: FIBER_X / FIBER_Y [mm], the value per fiber, FIBER numbers
        (petal = fiber // 500, 50-fiber blocks shown underneath as value versus fiber), and the
        panel's fixed colour range (values beyond it take the end colours).
    """
    plt = _plt()
    n = max(1, len(panels))
    fig, axes = plt.subplots(2, n, figsize=(5 * n, 8), squeeze=False, gridspec_kw={"height_ratios": [3, 1]})
    for k, (label, x, y, v, fib, vr, cmap) in enumerate(panels):
        ax = axes[0, k]
        v = np.asarray(v, float)
        # grey background and fiber outlines: a value at the centre of a diverging scale (white)
        # stays visible; the colour range is the panel's fixed one, not the data's
        ax.set_facecolor("0.82")
        sc = ax.scatter(x, y, c=v, s=18, cmap=cmap, vmin=vr[0], vmax=vr[1], edgecolors="0.35", linewidths=0.3)
        fig.colorbar(sc, ax=ax, shrink=0.8, extend="both")
        ax.set_aspect("equal")
        ax.set_title(label, fontsize=11)
        ax.set_xlabel("FIBER_X [mm]", fontsize=10)
        ax.set_ylabel("FIBER_Y [mm]", fontsize=10)
        for p in sorted(set(np.asarray(fib) // 500)):
            sel = np.asarray(fib) // 500 == p
            ax.annotate(f"petal {p}", (np.median(np.asarray(x)[sel]), np.median(np.asarray(y)[sel])), fontsize=10,
                        color="0.3")
        ax = axes[1, k]
        ax.plot(fib, v, ".", ms=3, color="k")
        ax.set_ylim(*vr)
        _block_lines(ax, np.asarray(fib))
        ax.set_xlabel("fiber (dotted: 50-fiber blocks)", fontsize=10)
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def amp_map(path, title, values, label, vrange=NOISE_RATIO_RANGE):
    """Per-amplifier values of every camera of an exposure: cameras x amps, annotated.

    The colour scale is fixed (``vrange``, default :data:`NOISE_RATIO_RANGE`, diverging about
    its middle): identical amplifiers have one colour, and a colour means one value on every
    exposure's map."""
    plt = _plt()
    cams = sorted(values)
    amps = ("A", "B", "C", "D")
    arr = np.array([[np.nan if values[c].get(a) is None else values[c][a] for a in amps] for c in cams], float)
    fig, ax = plt.subplots(figsize=(5 + 0.2 * len(cams), 1.6 + 0.45 * len(cams)))
    ax.set_facecolor("0.82")
    im = ax.imshow(arr, aspect="auto", cmap="RdBu_r", vmin=vrange[0], vmax=vrange[1])
    for i in range(len(cams)):
        for j in range(4):
            if np.isfinite(arr[i, j]):
                ax.text(j, i, f"{arr[i, j]:.2f}", ha="center", va="center", fontsize=10, color="k")
    ax.set_xticks(range(4), amps)
    ax.set_yticks(range(len(cams)), cams)
    fig.colorbar(im, ax=ax, label=f"{label} (fixed scale)", extend="both")
    ax.set_title(title, fontsize=11)
    fig.tight_layout()
    _save(fig, path)


def time_series(path, title, series, bands=None):
    """Metrics versus time (UTC dates on the axis).

    Parameters
    ----------
    series : list of (label, {arm: (t, values)}, ylabel)
        One panel per metric; one colour per arm (b, r, z); t in MJD.
    bands : dict label -> (normal, warning), optional
        Threshold ranges ([lo, hi], None for open) shaded behind a panel's points: green normal,
        yellow warning.
    """
    import matplotlib.dates as mdates

    plt = _plt()
    n = max(1, len(series))
    fig, axes = plt.subplots(n, 1, figsize=(10, 2.8 * n), squeeze=False, sharex=True)
    tmin, tmax = np.inf, -np.inf
    for k, (label, byarm, ylabel) in enumerate(series):
        ax = axes[k, 0]
        for arm, (t, v) in sorted(byarm.items()):
            t, v = np.asarray(t, float), np.asarray([np.nan if x is None else x for x in v], float)
            if t.size:
                ax.plot(mjd_to_datetime(t), v, "o", ms=4, color=ARM_COLORS.get(arm, "k"), label=arm)
                tmin, tmax = min(tmin, t.min()), max(tmax, t.max())
        normal, warning = (bands or {}).get(label, (None, None))
        _band(ax, warning, "y", STATUS_COLORS["WARNING"], 0.12)
        _band(ax, normal, "y", STATUS_COLORS["NORMAL"], 0.15)
        ax.set_ylabel(ylabel, fontsize=10)
        ax.set_title(label, fontsize=11)
        if byarm:
            ax.legend(fontsize=10, ncol=3)
    ax = axes[-1, 0]
    if np.isfinite(tmin) and tmax - tmin < 1.5:  # one night: hours, the date in the label
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
        ax.set_xlabel(f"UTC time on {mjd_to_datetime(tmin)[0]:%Y-%m-%d}", fontsize=10)
    else:
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))
        ax.set_xlabel("UTC date", fontsize=10)
        fig.autofmt_xdate()
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def channel_histograms(path, title, metrics, bands=None):
    """Histograms per arm of headline metrics, with each value also drawn as a tick (a night has
    a handful) and the metric's threshold ranges shaded.

    Parameters
    ----------
    metrics : list of (label, {arm: values})
    bands : dict label -> (normal, warning), optional
        Threshold ranges ([lo, hi], None for open): green normal, yellow warning.
    """
    plt = _plt()
    n = max(1, len(metrics))
    fig, axes = plt.subplots(1, n, figsize=(4.5 * n, 3.6), squeeze=False)
    for k, (label, byarm) in enumerate(metrics):
        ax = axes[0, k]
        allv = [x for vals in byarm.values() for x in vals if x is not None and np.isfinite(x)]
        normal, warning = (bands or {}).get(label, (None, None))
        edges = [x for r in (normal, warning) if r for x in r if x is not None]
        span = allv + edges
        bins = np.histogram_bin_edges(allv, bins=15, range=(min(span), max(span)) if span and min(span) < max(span)
                                      else None) if allv else 10
        for j, (arm, vals) in enumerate(sorted(byarm.items())):
            vals = [x for x in vals if x is not None and np.isfinite(x)]
            if vals:
                ax.hist(vals, bins=bins, histtype="step", color=ARM_COLORS.get(arm, "k"), label=arm)
                ax.plot(vals, np.full(len(vals), 0.95 - 0.07 * j), "|", ms=10, color=ARM_COLORS.get(arm, "k"),
                        transform=ax.get_xaxis_transform())
        if allv:
            ax.set_xlim(*ax.get_xlim())
        _band(ax, warning, "x", STATUS_COLORS["WARNING"], 0.12)
        _band(ax, normal, "x", STATUS_COLORS["NORMAL"], 0.15)
        ax.xaxis.set_major_locator(_ticks(5))
        ax.set_ylim(0, ax.get_ylim()[1] * 1.35)  # room for the value ticks at the top
        ax.set_ylabel("frames", fontsize=10)
        ax.set_title(label, fontsize=11)
        if allv:
            ax.legend(fontsize=10)
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def tile_qa(path, title, fqa, petals, ref_nz, metrics, scores, goaltime, sky_sigma=8.0):
    """The tile QA picture (DESI's tile-qa PNG).

    Parameters
    ----------
    fqa : FIBERQA rows (:mod:`fiberflow.qa.tileqa`)
    petals : PETALQA rows
    ref_nz : reference n(z) rows (TRACER, ZLO, ZHI, FRAC) or None
    metrics : dict of the tile's metrics
    scores : dict metric -> score dict (STATUS)
    goaltime : float
    sky_sigma : float
        A sky fiber whose coadd residual (SKY_RESID_SIG) exceeds this is drawn red.

    Panels: n(z) of the good redshifts per tracer against the reference (scaled to the tile's
    counts); EFFTIME / GOALTIME, redshift success and ZWARN (with the sky fibers as squares, red
    where their coadd carries flux), positioning DELTA_X/Y over the focal plane; per-petal success
    against the reference expectation, coloured by status; the scored metrics.
    """
    plt = _plt()
    fig = plt.figure(figsize=(16, 9))
    gs = fig.add_gridspec(2, 4)
    x, y = np.asarray(fqa["FIBER_X"], float), np.asarray(fqa["FIBER_Y"], float)
    tgt = np.char.strip(fqa["OBJTYPE"].astype(str)) == "TGT"
    ax = fig.add_subplot(gs[0, 0])
    for t in ("LRG", "ELG", "QSO"):
        sel = tgt & (fqa["TRACER"] == t) & (fqa["GOODZ"] == 1)
        bins = np.round(np.arange(0, 6.01, 0.1), 2)
        h, _ = np.histogram(fqa["Z"][sel], bins=bins)
        ax.step(bins[:-1], h, where="post", color=CLASS_COLORS[t], label=f"{t} ({int(sel.sum())})")
        if ref_nz is not None:
            r = ref_nz[np.char.strip(ref_nz["TRACER"].astype(str)) == t]
            if len(r):
                ax.step(r["ZLO"], r["FRAC"] * sel.sum(), where="post", color=CLASS_COLORS[t], ls=":", lw=1)
    ax.set_xlabel("Z (good redshifts; dotted: reference)", fontsize=10)
    ax.set_ylabel("N per 0.1", fontsize=10)
    ax.legend(fontsize=10)
    ax.set_title("n(z) per tracer", fontsize=11)
    maps = [("EFFTIME / GOALTIME", fqa["EFFTIME_SPEC"] / max(goaltime, 1e-9), (0, 1.5), "viridis"),
            ("good redshift (ZWARN 0, DELTACHI2 > min)", fqa["GOODZ"].astype(float), (0, 1), "RdYlGn"),
            ("ZWARN != 0", (fqa["ZWARN"] != 0).astype(float), (0, 1), "Reds"),
            ("positioning |DELTA_XY| [mm]", np.hypot(fqa["DELTA_X"], fqa["DELTA_Y"]), (0, 0.05), "magma_r")]
    for k, (label, v, vr, cmap) in enumerate(maps):
        ax = fig.add_subplot(gs[(k + 1) // 4, (k + 1) % 4])
        sc = ax.scatter(x[tgt], y[tgt], c=np.asarray(v, float)[tgt], s=14, cmap=cmap, vmin=vr[0], vmax=vr[1],
                        edgecolors="none")
        fig.colorbar(sc, ax=ax, shrink=0.8)
        sky = np.isfinite(np.asarray(fqa["SKY_RESID_SIG"], float))
        if label.startswith("ZWARN") and sky.any():
            bad = sky & (np.abs(np.nan_to_num(np.asarray(fqa["SKY_RESID_SIG"], float))) > sky_sigma)
            ax.scatter(x[sky & ~bad], y[sky & ~bad], marker="s", s=22, facecolors="none", edgecolors="0.5", lw=0.6)
            ax.scatter(x[bad], y[bad], marker="s", s=40, facecolors="none", edgecolors="red", lw=1.4)
            label += f"\n(squares: sky fibers; red: flux left > {sky_sigma:g} sigma)"
        ax.set_aspect("equal")
        ax.set_title(label, fontsize=11)
        ax.set_xlabel("FIBER_X [mm]", fontsize=10)
        ax.set_ylabel("FIBER_Y [mm]", fontsize=10)
    ax = fig.add_subplot(gs[1, 1])
    for row in petals:
        p = int(row["PETAL_LOC"])
        ax.bar(p, row["NGOODZ"], color=STATUS_COLORS.get(str(row["STATUS"]).strip(), "#bbbbbb"))
        ax.plot([p - 0.4, p + 0.4], [row["NEXPECT"]] * 2, "k-", lw=1)
    ax.set_xlabel("petal (bar: good redshifts of valid targets, coloured by status; line: reference)", fontsize=10)
    ax.set_title("redshift success per petal", fontsize=11)
    ax = fig.add_subplot(gs[1, 2:])
    ax.axis("off")
    lines = []
    for name, sc in scores.items():
        val = sc.get("VALUE")
        lines.append((f"{name}: {val if not isinstance(val, float) else round(val, 3)}", sc.get("STATUS", "NA")))
    if metrics.get("NZ_EXCESS_TRACER"):
        lines.append((f"  worst n(z) bin: {metrics['NZ_EXCESS_TRACER']} z {metrics.get('NZ_EXCESS_ZLO')}-"
                      f"{metrics.get('NZ_EXCESS_ZHI')}: {metrics.get('NZ_EXCESS_N')} vs "
                      f"{metrics.get('NZ_EXCESS_EXPECTED')} expected", "NA"))
    if metrics.get("SKY_RESID_NRESID"):
        lines.append((f"  sky fibers with flux left: petal {metrics['SKY_RESID_PETAL']} "
                      f"{metrics['SKY_RESID_NRESID']}/{metrics['SKY_RESID_NSKY']}; worst fiber "
                      f"{metrics['SKY_RESID_FIBER']} {metrics['SKY_RESID_SIG']} sigma at {metrics['SKY_RESID_WAVE']} A",
                      "NA"))
    for k, (text, st) in enumerate(lines):
        ax.text(0.0, 1 - 0.09 * k, text, fontsize=11, color=STATUS_COLORS.get(st, "k") if st != "NA" else "k",
                transform=ax.transAxes, va="top")
    ax.set_title("scored metrics", fontsize=11)
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def rebin(wave, flux, ivar, n):
    """Inverse-variance weighted average of ``n`` consecutive bins.

    Parameters
    ----------
    wave : (nwave,)
    flux, ivar : (..., nwave)
    n : int

    Returns
    -------
    wave (nwave // n,), flux and ivar (..., nwave // n); flux NaN where no bin has ivar > 0
    """
    n = max(1, int(n))
    m = (len(wave) // n) * n
    w = np.asarray(wave[:m], float).reshape(-1, n).mean(axis=1)
    iv = np.clip(np.asarray(ivar, float)[..., :m], 0, None)
    f = np.asarray(flux, float)[..., :m]
    sh = f.shape[:-1] + (m // n, n)
    siv = iv.reshape(sh).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(siv > 0, (f * iv).reshape(sh).sum(axis=-1) / np.where(siv > 0, siv, 1), np.nan)
    return w, out, siv


def spectra_panels(path, title, panels, ncol=2):
    """One panel per spectrum.

    Parameters
    ----------
    panels : list of dict
        ``label`` (str), ``bands`` ({band: (wave, flux)}), optional ``model`` ({band: (wave, model)}).
    """
    plt = _plt()
    n = max(1, len(panels))
    nrow = (n + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(7 * ncol, 2.6 * nrow), squeeze=False)
    for k, p in enumerate(panels):
        ax = axes[k // ncol, k % ncol]
        allf = []
        for b, (w, f) in p["bands"].items():
            ax.plot(w, f, lw=0.6, color=ARM_COLORS.get(b, "0.3"))
            allf.append(np.asarray(f)[np.isfinite(f)])
        for b, (w, m) in (p.get("model") or {}).items():
            ax.plot(w, m, lw=0.8, color="k")
        vals = np.concatenate(allf) if allf else np.zeros(1)
        if vals.size:
            lo, hi = np.percentile(vals, [1, 99])
            pad = 0.15 * (hi - lo + 1e-9)
            ax.set_ylim(lo - pad, hi + pad)
        ax.axhline(0, color="0.6", lw=0.5)
        ax.set_title(p["label"], fontsize=10)
        ax.set_xlabel("wavelength [A]", fontsize=10)
    for k in range(n, nrow * ncol):
        axes[k // ncol, k % ncol].axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def frame_fibers(path, title, wave, flux, fibers, label):
    """Spectra of some fibers of a frame: overlaid (top) and as an image, fiber versus
    wavelength, on a symmetric scale (bottom: vertical features are wavelength-specific
    processing, curved ones CCD-level problems)."""
    plt = _plt()
    fig, axes = plt.subplots(2, 1, figsize=(14, 8), gridspec_kw={"height_ratios": [1, 1]})
    ax = axes[0]
    for f, row in zip(fibers, flux):
        ax.plot(wave, row, lw=0.5)
    fin = np.asarray(flux)[np.isfinite(flux)]
    lim = np.percentile(np.abs(fin), 99) if fin.size else 1.0
    ax.set_ylim(-1.2 * lim, 1.2 * lim)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_ylabel(label, fontsize=10)
    ax = axes[1]
    im = ax.imshow(np.nan_to_num(np.asarray(flux, float)), aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim,
                   extent=(wave[0], wave[-1], len(fibers) - 0.5, -0.5), interpolation="nearest")
    every = max(1, int(np.ceil(len(fibers) / 25)))  # 10 pt labels that do not overlap
    ax.set_yticks(range(0, len(fibers), every))
    ax.set_yticklabels([str(f) for f in list(fibers)[::every]], fontsize=10)
    ax.set_ylabel("fiber", fontsize=10)
    ax.set_xlabel("wavelength [A]", fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def trend(path, title, series, night=None, breakpoints=(), bands=None):
    """A QC1 parameter's trend: value against night per camera (colour by arm), the checked night
    marked, breakpoints as dashed lines and the dynamic normal range of each camera at that night.

    Parameters
    ----------
    series : dict camera -> (nights, values)
    night : int, optional
    breakpoints : list of int
    bands : dict camera -> (lo, hi), optional
    """
    import datetime

    plt = _plt()

    def day(n):
        n = int(n)
        return datetime.date(n // 10000, n // 100 % 100, n % 100)

    colors = {"b": "tab:blue", "r": "tab:red", "z": "0.25"}
    fig, ax = plt.subplots(figsize=(8, 3.2))
    for cam, (nights, vals) in sorted(series.items(), key=lambda kv: str(kv[0])):
        c = colors.get(str(cam)[0], "tab:green")
        ax.plot([day(n) for n in nights], vals, ".", ms=4, color=c, alpha=0.7, label=str(cam))
        if bands and cam in bands and night is not None and None not in bands[cam]:
            ax.errorbar([day(night)], [0.5 * (bands[cam][0] + bands[cam][1])],
                        yerr=[[0.5 * (bands[cam][1] - bands[cam][0])]], color=c, capsize=4, lw=1, alpha=0.6)
    for b in breakpoints:
        ax.axvline(day(b), color="k", ls="--", lw=0.8)
    if night is not None:
        ax.axvline(day(night), color="tab:orange", lw=0.8, alpha=0.6)
    ax.set_title(title, fontsize=10)
    if len(series) <= 12:
        ax.legend(fontsize=10, ncol=6, loc="best")
    fig.autofmt_xdate()
    fig.tight_layout()
    _save(fig, path)
