"""QA pictures a person can read (issue 30, finding 6): masks honoured, fixed colour scales,
readable sizes, time axes in dates, threshold bands, right labels. Each check looks at what a
figure draws (its artists and data) or at the written PNG, not at the code path."""

import numpy as np
import pytest
from matplotlib.text import Text
from PIL import Image

from fiberflow.qa import plots

NORMAL_RGBA = None


@pytest.fixture
def drawn(monkeypatch):
    """Every figure the plot functions save, drawn (tick labels laid out), by file name."""
    figs = {}
    original = plots._save

    def keep(fig, path):
        fig.canvas.draw()
        figs[str(path)] = fig
        original(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    return figs


def _texts(fig):
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


def _axes(fig, title):
    return next(ax for ax in fig.axes if ax.get_title() == title)


def _science(tmp_path, nspec=20, nwave=100, masked=slice(40, 46)):
    rng = np.random.default_rng(3)
    wave = np.linspace(5600.0, 6600.0, nwave)
    sky = np.full((nspec, nwave), 300.0)
    frame = sky + 50.0
    sframe = rng.normal(0.0, 10.0, (nspec, nwave)) + 50.0
    skyfib = np.zeros(nspec, bool)
    skyfib[::3] = True
    sframe[skyfib] -= 50.0
    good = np.ones((nspec, nwave), bool)
    good[np.ix_(skyfib, np.arange(nwave)[masked])] = False
    sframe[np.ix_(skyfib, np.arange(nwave)[masked])] = -2500.0  # what sky subtraction leaves in masked bins
    fibers = np.arange(nspec)
    classes = np.where(skyfib, "SKY", "ELG")
    path = tmp_path / "science.png"
    plots.science_coversheet(path, "SCIENCE 1 r0", wave, frame, sframe, sky, skyfib, fibers, np.ones(nspec),
                             np.zeros(nspec), np.full(nspec, 5.0), np.full(nspec, 21.0), classes, good=good)
    return path


def test_sky_residual_plot_honours_the_mask(tmp_path, drawn):
    path = _science(tmp_path)
    fig = drawn[str(path)]
    ax = _axes(fig, "sky residual vs wavelength [e/A]")
    line = next(ln for ln in ax.get_lines() if ln.get_label().startswith("median sky-fiber residual"))
    y = np.asarray(line.get_ydata(), float)
    assert np.isnan(y[40:46]).all()  # a gap where every sky fiber is masked, not a -2500 spike
    assert np.nanmax(np.abs(y)) < 40.0, np.nanmax(np.abs(y))
    # science: the per-fiber ratio is to the sky fibers, not a throughput
    labels = [t.get_text() for t in _texts(fig)]
    assert "fiber flux / median sky-fiber flux" in labels and "relative throughput" not in labels


def test_every_picture_is_readable(tmp_path, drawn):
    """>= 100 dpi, no text under 10 pt, on every kind of picture the QA draws."""
    _science(tmp_path)
    wave = np.linspace(3600, 5900, 200)
    plots.flat_coversheet(tmp_path / "flat.png", "FLAT 2 b0", wave, np.ones((10, 200)), np.ones((10, 200)),
                          np.arange(10), np.ones(10), np.ones(200))
    x, y = np.random.default_rng(1).uniform(-400, 400, (2, 60))
    plots.focal_plane(tmp_path / "fp.png", "SCIENCE 3", [("r: residual", x, y, np.zeros(60), np.arange(60),
                                                          (-0.1, 0.1), "RdBu_r")])
    plots.amp_map(tmp_path / "amp.png", "ZERO 4", {"b0": dict(A=1.0, B=1.0, C=1.0, D=1.0)}, "noise ratio")
    plots.time_series(tmp_path / "ts.png", "night", [("sky", {"b": ([60677.1, 60677.2], [1, 2])}, "e/A")])
    plots.channel_histograms(tmp_path / "h.png", "night", [("SKY MED_RESID_FRAC", {"b": [0.001, 0.002, 0.003]})])
    plots.frame_fibers(tmp_path / "ff.png", "sframe", wave, np.ones((60, 200)), list(range(60)), "flux")
    plots.trend(tmp_path / "trend.png", "NSKY_OUTLIER", {"b0": ([20250101, 20250102], [1.0, 2.0])}, night=20250102,
                bands={"b0": (0.0, 3.0)})
    plots.spectra_panels(tmp_path / "sp.png", "spectra", [{"label": "TARGETID 1", "bands": {"b": (wave, wave * 0)}}])
    plots.message(tmp_path / "msg.png", "no data for this camera")
    assert len(drawn) == 10
    for path, fig in drawn.items():
        small = sorted({(t.get_text()[:30], t.get_fontsize()) for t in _texts(fig) if t.get_fontsize() < 10})
        assert not small, (path, small[:5])
        dpi = Image.open(path).info.get("dpi", (72, 72))
        assert round(dpi[0]) >= 100, (path, dpi)
    # dense fiber labels are thinned, not shrunk: they do not overlap
    fig = drawn[str(tmp_path / "ff.png")]
    ticks = [t for t in fig.axes[1].get_yticklabels() if t.get_text()]
    boxes = sorted(t.get_window_extent().y0 for t in ticks)
    assert len(ticks) <= 30 and min(np.diff(boxes)) >= ticks[0].get_window_extent().height * 0.95


def test_focal_plane_draws_near_zero_values_visibly_on_a_fixed_scale(tmp_path, drawn):
    x, y = np.random.default_rng(2).uniform(-400, 400, (2, 100))
    values = np.r_[np.zeros(50), np.full(50, 0.3)]  # half at the white middle, half beyond the range
    path = tmp_path / "fp.png"
    plots.focal_plane(path, "SCIENCE 5", [("r: sky-line residual / sky lines", x, y, values, np.arange(100),
                                           (-0.1, 0.1), "RdBu_r")])
    ax = _axes(drawn[str(path)], "r: sky-line residual / sky lines")
    sc = ax.collections[0]
    assert sc.get_clim() == (-0.1, 0.1)
    white = np.array([1.0, 1.0, 1.0])
    zero_rgb = np.asarray(sc.to_rgba(np.array([0.0])))[0, :3]
    face = np.asarray(ax.get_facecolor())[:3]
    edges = np.asarray(sc.get_edgecolors())[:, :3]
    # a value at 0 is (nearly) white: what surrounds it is not
    assert np.abs(zero_rgb - white).max() < 0.1
    assert np.abs(face - white).max() > 0.1 and edges.size and np.abs(edges - white).max() > 0.3


def test_amplifier_map_has_a_fixed_scale(tmp_path, drawn):
    """Identical amplifiers look identical: 0.2% differences do not span the colour scale."""
    path = tmp_path / "amp.png"
    vals = {"b0": dict(A=1.001, B=0.999, C=1.0, D=1.002), "r0": dict(A=1.0, B=1.0, C=1.0, D=1.0)}
    plots.amp_map(path, "ZERO 6", vals, "noise ratio")
    im = drawn[str(path)].axes[0].get_images()[0]
    assert im.get_clim() == plots.NOISE_RATIO_RANGE
    rgba = im.to_rgba(np.asarray(im.get_array(), float))[..., :3]
    assert np.abs(rgba - rgba[1, 0]).max() < 0.02  # every amplifier of both cameras one colour


def test_time_axes_are_dates_and_histograms_have_threshold_bands(tmp_path, drawn):
    path = tmp_path / "ts.png"
    mjd = 60677.0 + np.array([0.05, 0.1, 0.2])  # 01:12 .. 04:48 UTC on 2025-01-02 (DESI night 20250101)
    plots.time_series(path, "night 20250101", [("median sky [e/A]", {"r": (mjd, [1.0, 2.0, 3.0])}, "sky")],
                      bands={"median sky [e/A]": ((0.0, 2.5), (0.0, 5.0))})
    fig = drawn[str(path)]
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert labels and all(":" in t for t in labels), labels  # hours of the night
    assert ax.xaxis.get_offset_text().get_text() == "" and ax.get_xlabel() == "UTC time on 2025-01-02"
    assert "MJD" not in " ".join(t.get_text() for t in _texts(fig))
    normal = [p for p in ax.patches if np.allclose(p.get_facecolor()[:3], _rgb(plots.STATUS_COLORS["NORMAL"]))]
    box = normal[0].get_bbox()
    assert normal and np.allclose([box.y0, box.y1], [0.0, 2.5]), box
    path = tmp_path / "hist.png"
    plots.channel_histograms(path, "night 20250101", [("FIBERFLAT MAX_RMS", {"b": [0.01, 0.02, 0.07]})],
                             bands={"FIBERFLAT MAX_RMS": ((0.0, 0.05), (0.0, 0.10))})
    ax = drawn[str(path)].axes[0]
    spans = {c: [[round(p.get_bbox().x0, 6), round(p.get_bbox().x1, 6)] for p in ax.patches
                 if np.allclose(p.get_facecolor()[:3], _rgb(plots.STATUS_COLORS[c]))][0] for c in ("NORMAL", "WARNING")}
    assert spans["NORMAL"] == [0.0, 0.05] and spans["WARNING"] == [0.0, 0.1], spans
    # each of the three values is drawn, not only binned
    ticks = [ln for ln in ax.get_lines() if ln.get_marker() == "|"]
    assert sorted(np.concatenate([ln.get_xdata() for ln in ticks])) == [0.01, 0.02, 0.07]


def _rgb(color):
    from matplotlib.colors import to_rgb

    return np.array(to_rgb(color))
