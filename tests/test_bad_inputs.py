"""Bad input never becomes a wrong product: each case gives a step command a corrupted or
mismatched input (or an output it must not write) exactly as the workflow calls it, and
asserts exit code 1, one line on stderr naming the file and the problem, no traceback, and no
output or temporary file left behind.

A new step gets its cases by adding rows to CASES: (id, function(world, tmp) -> (argv, outputs),
expected words of the message).
"""

import os
import shutil
import subprocess
import sys

import fitsio
import numpy as np
import pytest

from fiberflow import paths
from fiberflow.cli.main import main

NIGHT, ZEROS, SCI, SCI2, ARC = 20250105, (400, 401), 402, 403, 404
CAMS = ["b0", "r0"]


def _run(argv):
    return main(argv)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny night (two zeros, two science exposures of different tiles; b0 and r0), master
    biases, preprocessed science cameras, nominal PSFs, and a HEALPix spectra file."""
    root = tmp_path_factory.mktemp("badin")
    raw, truth = str(root / "raw"), str(root / "truth")
    plan = root / "plan.yaml"
    plan.write_text(f"night: {NIGHT}\nfirst_expid: {ZEROS[0]}\nexposures:\n  - {{obstype: ZERO, count: 2}}\n"
                    "  - {obstype: SCIENCE, tileid: 61, exptime: 600}\n  - {obstype: SCIENCE, tileid: 62, exptime: 600}\n"
                    "  - {obstype: ARC, exptime: 5}\n")
    assert _run(["simulate", "--plan", str(plan), "--instrument", "tiny", "--raw", raw, "--truth", truth,
                 "--cameras", *CAMS]) == 0
    cfg = root / "config.yaml"
    cfg.write_text(f"instrument: tiny\nraw: {raw}\nredux: {root / 'redux'}\nspecprod: bad\n"
                   f"calibration: {{default_psf: {root / 'calib'}}}\n")
    assert _run(["calibinit", "--config", str(cfg)]) == 0
    w = {"root": root, "cfg": str(cfg), "raw": {e: paths.findfile("raw", raw=raw, night=NIGHT, expid=e)
                                               for e in (*ZEROS, SCI, SCI2, ARC)},
         "fibermap": {e: paths.findfile("fibermap", raw=raw, night=NIGHT, expid=e) for e in (SCI, SCI2)}}
    for cam in CAMS:
        bias = str(root / f"biasnight-{cam}.fits")
        assert _run(["biasnight", "--config", str(cfg), "--camera", cam, "-o", bias, "-i",
                     *[w["raw"][e] for e in ZEROS]]) == 0
        w[f"bias-{cam}"] = bias
        pre = str(root / f"preproc-{cam}-{SCI:08d}.fits")
        assert _run(["preproc", "--config", str(cfg), "--camera", cam, "-i", w["raw"][SCI], "--biasnight", bias,
                     "--fibermap", w["fibermap"][SCI], "-o", pre]) == 0
        w[f"pre-{cam}"] = pre
        arc = str(root / f"preproc-{cam}-{ARC:08d}.fits")
        assert _run(["preproc", "--config", str(cfg), "--camera", cam, "-i", w["raw"][ARC], "--biasnight", bias,
                     "-o", arc]) == 0
        w[f"arc-{cam}"] = arc
        w[f"psf-{cam}"] = str(root / "calib" / f"psf-{cam}.fits")
    # the r0 PSF as traceshift writes it for exposure SCI, and one of another exposure
    from fiberflow.io.psf import read_psf

    for expid in (SCI, SCI2):
        p = read_psf(w["psf-r0"])
        p.header["EXPID"] = expid
        p.header["NIGHT"] = NIGHT
        out = str(root / f"psf-r0-{expid:08d}.fits")
        p.write(out)
        w[f"psf-r0-{expid}"] = out
    # a HEALPix spectra file
    sys.path.insert(0, os.path.dirname(__file__))
    from _factories import healpix_spectra

    sp, _ = healpix_spectra(ntarget=4, nexp=2)
    w["spectra"] = str(sp.write(root / "spectra-main-dark-5261.fits"))
    # calibration-chain products of one r0 science exposure (25 fibers, as the tiny instrument)
    import _factories as fac

    fr = fac.frame(nspec=25, nwave=40)
    w["frame"] = str(fr.write(root / "frame-r0-00000101.fits"))
    fr.header["SKYFLAG"] = "OK"
    w["sframe"] = str(fr.write(root / "sframe-r0-00000101.fits"))
    dup = fac.frame(nspec=25, nwave=40)
    dup.fibermap["FIBER"][7] = dup.fibermap["FIBER"][8]
    w["frame-dupfiber"] = str(dup.write(root / "dup" / "frame-r0-00000101.fits"))
    w["fiberflat"] = str(fac.fiberflat(nspec=25, nwave=40).write(root / "fiberflatnight-r0.fits"))
    fc = fac.fluxcalib(nspec=25, nwave=40)
    w["fluxcalib"] = str(fc.write(root / "fluxcalib-r0-00000101.fits"))
    fc.calib[:] = 0.0
    w["fluxcalib-zero"] = str(fc.write(root / "zero" / "fluxcalib-r0-00000101.fits"))
    fc = fac.fluxcalib(nspec=25, nwave=40)
    fc.header["EXPID"] = 999
    w["fluxcalib-999"] = str(fc.write(root / "other" / "fluxcalib-r0-00000999.fits"))
    st = fac.stdstars()
    st.flux[1, 10:20] = np.nan
    st.ALLOW_NONFINITE = True  # as another writer (or an older fiberflow) could have written it
    w["stdstars-nan"] = str(st.write(root / "stdstars-0-00000101.fits"))
    # more variants of the same products
    for name, change in (("frame-b0", lambda f: f.header.update(CAMERA="b0")),
                         ("frame-flat", lambda f: f.header.update(OBSTYPE="FLAT", FLAVOR="flat")),
                         ("frame-102", lambda f: f.header.update(EXPID=102)),
                         ("frame-nan", lambda f: f.flux.__setitem__((3, slice(5, 9)), np.nan))):
        f = fac.frame(nspec=25, nwave=40)
        change(f)
        f.ALLOW_NONFINITE = True  # the NaN variant: as another writer could have written it
        w[name] = str(f.write(root / name / "frame.fits"))
    f = fac.frame(nspec=24, nwave=40)
    w["frame-24"] = str(f.write(root / "frame-24" / "frame.fits"))
    ff = fac.fiberflat(nspec=25, nwave=40)
    ff.header["CAMERA"] = "b0"
    w["fiberflat-b0"] = str(ff.write(root / "ffb0" / "fiberflat-b0.fits"))
    w["fiberflat-short"] = str(fac.fiberflat(nspec=25, nwave=30).write(root / "ffshort" / "fiberflat-r0.fits"))
    fc = fac.fluxcalib(nspec=25, nwave=40)
    fc.header["CAMERA"] = "b0"
    w["fluxcalib-b0"] = str(fc.write(root / "fcb0" / "fluxcalib-b0-00000101.fits"))
    w["fluxcalib-short"] = str(fac.fluxcalib(nspec=25, nwave=30).write(root / "fcshort" / "fluxcalib-r0.fits"))
    # arc PSFs of the night (the nominal PSF with the arc's identity), one of another night / camera
    for tag, cam, night in (("fitpsf-r0", "r0", NIGHT), ("fitpsf-r0-other-night", "r0", NIGHT - 1),
                            ("fitpsf-b0", "b0", NIGHT)):
        p = read_psf(w[f"psf-{cam}"])
        p.header.update(NIGHT=night, EXPID=ARC)
        w[tag] = str(p.write(root / tag / f"fit-psf-{cam}-{ARC:08d}.fits") or root / tag / f"fit-psf-{cam}-{ARC:08d}.fits")
    p = read_psf(w["psf-r0"]).select_fibers(0, 10)
    w["psf-10fibers"] = str(p.write(root / "psf10.fits") or root / "psf10.fits")
    (root / "text.fits").write_text("SIMPLE  = this is not FITS at all\n" * 10)
    w["text"] = str(root / "text.fits")
    (root / "empty.fits").write_bytes(b"")
    w["empty"] = str(root / "empty.fits")
    from fiberflow.io.image import PreprocImage

    img = PreprocImage.read(w["pre-r0"])
    img.image[200:210, 100:110] = np.nan
    img.ALLOW_NONFINITE = True
    w["pre-nan"] = str(img.write(root / "prenan" / f"preproc-r0-{SCI:08d}.fits") or
                       root / "prenan" / f"preproc-r0-{SCI:08d}.fits")
    img = PreprocImage.read(w["pre-r0"])
    img.ivar[:] = 0
    w["pre-masked"] = str(img.write(root / "premask" / f"preproc-r0-{SCI:08d}.fits") or
                          root / "premask" / f"preproc-r0-{SCI:08d}.fits")
    return w


# --------------------------------------------------------------------------- corruptions
def _with_key(path, key, value, ext=0):
    """Set a header keyword of a copy (its checksums stay valid: they cover the data only
    when the header checksum is absent, as fiberflow writes them)."""
    with fitsio.FITS(path, "rw") as fx:
        fx[ext].write_key(key, value)
    return path


def _mkdir(path):
    path.mkdir(parents=True, exist_ok=True)
    return path


def _copy(src, dst):
    shutil.copy(src, dst)
    return str(dst)


def _flip_bytes(path, hdu, nbytes=8):
    """Flip bytes in the middle of an HDU's data unit (the header stays readable)."""
    with fitsio.FITS(path) as fx:
        offsets = fx[hdu].get_offsets()
        off, end = offsets["data_start"], offsets["data_end"]
    assert end - off > 2880
    with open(path, "r+b") as fh:
        fh.seek(off + 2880 // 2)
        data = bytearray(fh.read(nbytes))
        fh.seek(off + 2880 // 2)
        fh.write(bytes(b ^ 0xFF for b in data))
    return path


def _raw_with(world, tmp, camera, fn):
    """A copy of the science raw file whose ``camera`` HDU is replaced by fn(data) (written
    uncompressed, float or int as fn returns)."""
    src = world["raw"][SCI]
    dst = str(tmp / os.path.basename(src))
    with fitsio.FITS(src) as fin, fitsio.FITS(dst, "rw", clobber=True) as fout:
        for hdu in fin:
            name = hdu.get_extname()
            hdr = hdu.read_header()
            recs = [r for r in hdr.records() if r["name"] not in ("CHECKSUM", "DATASUM") and not
                    r["name"].startswith(("ZIMAGE", "ZBITPIX", "ZNAXIS", "ZTILE", "ZCMPTYPE", "ZNAME", "ZVAL",
                                          "ZQUANTIZ", "ZSIMPLE", "ZEXTEND", "ZTENSION", "ZPCOUNT", "ZGCOUNT"))]
            if hdu.get_exttype() == "IMAGE_HDU" and hdu.has_data():
                data = hdu.read()
                if name == camera.upper():
                    data = fn(data)
                fout.write(data, extname=name or None, header=[r for r in recs if r["name"] not in
                                                               ("SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2",
                                                                "EXTEND", "XTENSION", "PCOUNT", "GCOUNT",
                                                                "EXTNAME", "BZERO", "BSCALE")])
            elif not name:
                fout.write(None, header=[r for r in recs if r["name"] not in ("SIMPLE", "BITPIX", "NAXIS", "EXTEND")])
    return dst


def _fibermap_with(world, tmp, fn, expid=SCI):
    from fiberflow.io.fibermap import read_fibermap, write_fibermap

    fm, hdr = read_fibermap(world["fibermap"][expid])
    fm, hdr = fn(fm.copy(), dict(hdr))
    out = str(tmp / f"fibermap-{expid:08d}.fits")
    write_fibermap(out, fm, hdr)
    return out


def _preproc(world, tmp, *, raw=None, bias=None, fibermap=None, out=None, cam="r0"):
    out = out or str(tmp / "out" / f"preproc-{cam}-{SCI:08d}.fits")
    argv = ["preproc", "--config", world["cfg"], "--camera", cam, "-i", raw or world["raw"][SCI],
            "--biasnight", bias or world[f"bias-{cam}"], "--fibermap", fibermap or world["fibermap"][SCI], "-o", out]
    return argv, [out]


def _extract(world, tmp, *, pre=None, psf=None, out=None):
    out = out or str(tmp / "out" / f"frame-r0-{SCI:08d}.fits")
    argv = ["extract", "--config", world["cfg"], "--camera", "r0", "-i", pre or world["pre-r0"],
            "--psf", psf or world[f"psf-r0-{SCI}"], "-o", out]
    return argv, [out]


def _psf(world, tmp, *, arc=None, start=None, out=None):
    out = out or str(tmp / "fit.fits")
    return ["psf", "--config", world["cfg"], "--camera", "r0", "-i", arc or world["arc-r0"], "--start",
            start or world["psf-r0"], "-o", out], [out]


def _psfnight(world, tmp, *inputs):
    out = str(tmp / "pn.fits")
    return ["psfnight", "--config", world["cfg"], "--camera", "r0", "--night", str(NIGHT), *inputs, "-o", out], [out]


def _traceshift(world, tmp, *, pre=None, psf=None):
    out = str(tmp / "ts.fits")
    return ["traceshift", "--config", world["cfg"], "--camera", "r0", "-i", pre or world["pre-r0"], "--psf",
            psf or world["psf-r0"], "-o", out], [out]


def _text(path, text):
    path.write_text(text)
    return str(path)


def _qa_night(world, tmp, *inputs, thresholds=None):
    out = str(tmp / "qa-night.json")
    thr = thresholds or os.path.join(os.path.dirname(os.path.dirname(__file__)), "config", "qa.yaml")
    argv = ["qa-night", "--night", str(NIGHT), "--prod", str(tmp), "--thresholds", thr, *inputs, "-o", out,
            "--html", str(tmp / "n.html"), "--trends", str(tmp / "t.png"), "--hist", str(tmp / "h.png")]
    return argv, [out, str(tmp / "n.html"), str(tmp / "t.png"), str(tmp / "h.png")]


def _sky(world, tmp, *, frame=None, fiberflat=None, out=None, sframe=None):
    out = out or str(tmp / "out" / "sky-r0-00000101.fits")
    sframe = sframe or str(tmp / "out" / "sframe-r0-00000101.fits")
    argv = ["sky", "--config", world["cfg"], "--camera", "r0", "-i", frame or world["frame"], "--fiberflat",
            fiberflat or world["fiberflat"], "-o", out, "--sframe", sframe]
    return argv, [out, sframe]


def _cframe(world, tmp, *, cal=None, out=None, sframe=None):
    out = out or str(tmp / "out" / "cframe-r0-00000101.fits")
    argv = ["cframe", "--config", world["cfg"], "--camera", "r0", "-i", sframe or world["sframe"], "--fluxcalib",
            cal or world["fluxcalib"], "-o", out]
    return argv, [out]


def _cut(path, frac=0.6):
    """Truncate ``path`` in place, mid-block."""
    size = os.path.getsize(path)
    with open(path, "r+b") as fh:
        fh.truncate(int(size * frac) // 2880 * 2880 + 1000)
    return path


def _truncate(path, tmp, frac=0.5):
    dst = _copy(path, tmp / os.path.basename(path))
    size = os.path.getsize(dst)
    with open(dst, "r+b") as fh:
        fh.truncate(int(size * frac) // 2880 * 2880 + 1000)  # mid-block, as a copy cut short
    return dst


def _dup_fiber(fm, hdr):
    fm["FIBER"][3] = fm["FIBER"][4]
    return fm, hdr


def _drop_row(fm, hdr):
    return fm[:-1], hdr


def _other_exposure(world, tmp):
    from fiberflow.io.fibermap import read_fibermap

    fm, hdr = read_fibermap(world["fibermap"][SCI2])
    return _fibermap_with(world, tmp, lambda f, h: (fm.copy(), dict(hdr)), expid=SCI2)


def _nan_pixels(data):
    out = data.astype("f4")
    out[100:110, 50:60] = np.nan
    return out


CASES = [
    # preproc
    ("preproc: truncated raw file",
     lambda w, t: _preproc(w, t, raw=_truncate(w["raw"][SCI], t)), ["truncated"]),
    ("preproc: NaN raw pixels",
     lambda w, t: _preproc(w, t, raw=_raw_with(w, t, "r0", _nan_pixels)), ["R0", "NaN or infinite"]),
    ("preproc: all-zero raw camera",
     lambda w, t: _preproc(w, t, raw=_raw_with(w, t, "r0", lambda d: np.zeros_like(d))), ["R0", "every pixel is 0"]),
    ("preproc: master bias of another camera",
     lambda w, t: _preproc(w, t, bias=w["bias-b0"]), ["biasnight-b0", "camera b0, not r0"]),
    ("preproc: fibermap of another exposure",
     lambda w, t: _preproc(w, t, fibermap=_other_exposure(w, t)), ["fibermap is for EXPID 403", "402"]),
    ("preproc: duplicated FIBER",
     lambda w, t: _preproc(w, t, fibermap=_fibermap_with(w, t, _dup_fiber)), ["more than once"]),
    ("preproc: fibermap one row short",
     lambda w, t: _preproc(w, t, fibermap=_fibermap_with(w, t, _drop_row)), ["24 rows", "25 fibers"]),
    ("preproc: output is a folder",
     lambda w, t: _preproc(w, t, out=str(t)), ["names a folder"]),
    ("preproc: output is the raw input",
     lambda w, t: (_preproc(w, t, raw=_copy(w["raw"][SCI], t / "in.fits.fz"), out=str(t / "in.fits.fz"))[0], []),
     ["is also an input (--infile)"]),
    ("preproc: output is the master bias",
     lambda w, t: (_preproc(w, t, bias=_copy(w["bias-r0"], t / "b.fits"), out=str(t / "b.fits"))[0], []),
     ["is also an input (--biasnight)"]),
    ("preproc: output folder is a file",
     lambda w, t: _preproc(w, t, out=str(t / "afile" / "p.fits")), ["is not writable"]),
    # extract
    ("extract: PSF of another camera",
     lambda w, t: _extract(w, t, psf=w["psf-b0"]), ["psf-b0", "camera b0, not r0"]),
    ("extract: PSF of another exposure",
     lambda w, t: _extract(w, t, psf=w[f"psf-r0-{SCI2}"]), ["exposure 403, not 402"]),
    ("extract: preproc image of another camera",
     lambda w, t: ["extract", "--config", w["cfg"], "--camera", "r0", "-i", w["pre-b0"], "--psf",
                   w[f"psf-r0-{SCI}"], "-o", str(t / "f.fits")], ["preprocessed image is for camera b0, not r0"]),
    ("extract: truncated preproc image",
     lambda w, t: _extract(w, t, pre=_truncate(w["pre-r0"], t, 0.3)), ["truncated"]),
    ("extract: output is the PSF",
     lambda w, t: (_extract(w, t, psf=_copy(w[f"psf-r0-{SCI}"], t / "psf.fits"), out=str(t / "psf.fits"))[0], []),
     ["is also an input (--psf)"]),
    # sky, fluxcalib, cframe
    ("sky: duplicated FIBER in the frame's fibermap",
     lambda w, t: _sky(w, t, frame=w["frame-dupfiber"]), ["frame-r0-00000101.fits", "more than once"]),
    ("sky: sframe in a folder that is a file (checked before the work)",
     lambda w, t: _sky(w, t, sframe=str(t / "afile" / "sframe.fits")), ["--sframe", "is not writable"]),
    ("sky: sky and sframe the same path",
     lambda w, t: _sky(w, t, out=str(t / "s.fits"), sframe=str(t / "s.fits")), ["same file"]),
    ("fluxcalib: NaN standard-star fluxes",
     lambda w, t: (["fluxcalib", "--config", w["cfg"], "--camera", "r0", "-i", w["sframe"], "--stdstars",
                    w["stdstars-nan"], "-o", str(t / "fc.fits")], [str(t / "fc.fits")]), ["NaN or infinite"]),
    ("cframe: all-zero calibration flagged OK",
     lambda w, t: _cframe(w, t, cal=w["fluxcalib-zero"]), ["FLUXFLAG is OK", "no positive value"]),
    ("cframe: calibration of another exposure",
     lambda w, t: _cframe(w, t, cal=w["fluxcalib-999"]), ["exposure 999, not 101"]),
    ("cframe: output is the sframe",
     lambda w, t: (_cframe(w, t, sframe=_copy(w["sframe"], t / "sf.fits"), out=str(t / "sf.fits"))[0], []),
     ["is also an input (--infile)"]),
    # biasnight
    ("biasnight: a science exposure among the zeros",
     lambda w, t: ["biasnight", "--config", w["cfg"], "--camera", "r0", "-o", str(t / "b.fits"), "-i",
                   w["raw"][ZEROS[0]], w["raw"][SCI]], ["OBSTYPE 'SCIENCE' is not ZERO"]),
    ("biasnight: truncated zero",
     lambda w, t: ["biasnight", "--config", w["cfg"], "--camera", "r0", "-o", str(t / "b.fits"), "-i",
                   w["raw"][ZEROS[0]], _truncate(w["raw"][ZEROS[1]], t)], ["truncated"]),
    # preproc, more
    ("preproc: text file as raw",
     lambda w, t: _preproc(w, t, raw=w["text"]), ["text.fits"]),
    ("preproc: empty raw file",
     lambda w, t: _preproc(w, t, raw=w["empty"]), ["empty.fits"]),
    ("preproc: camera absent from the raw file",
     lambda w, t: ["preproc", "--config", w["cfg"], "--camera", "z0", "-i", w["raw"][SCI], "-o", str(t / "p.fits")],
     ["Z0"]),
    # psf
    ("psf: start PSF of another camera",
     lambda w, t: _psf(w, t, start=w["psf-b0"]), ["psf-b0.fits", "camera b0, not r0"]),
    ("psf: a science image as the arc",
     lambda w, t: _psf(w, t, arc=w["pre-r0"]), ["OBSTYPE is 'SCIENCE'"]),
    ("psf: arc image of another camera",
     lambda w, t: _psf(w, t, arc=w["arc-b0"]), ["b0"]),
    ("psf: output is the start PSF",
     lambda w, t: (_psf(w, t, start=_copy(w["psf-r0"], t / "start.fits"), out=str(t / "start.fits"))[0], []),
     ["is also an input (--start)"]),
    # psfnight
    ("psfnight: arc PSF of another camera",
     lambda w, t: _psfnight(w, t, "-i", w["fitpsf-b0"]), ["camera b0, not r0"]),
    ("psfnight: arc PSF of another night",
     lambda w, t: _psfnight(w, t, "-i", w["fitpsf-r0-other-night"]), [f"night {NIGHT - 1}, not {NIGHT}"]),
    ("psfnight: truncated arc PSF",
     lambda w, t: _psfnight(w, t, "-i", _truncate(w["fitpsf-r0"], t)), ["truncated"]),
    ("psfnight: fallback PSF of another camera",
     lambda w, t: _psfnight(w, t, "--fallback", w["psf-b0"]), ["camera b0, not r0"]),
    # traceshift
    ("traceshift: nightly PSF of another camera",
     lambda w, t: _traceshift(w, t, psf=w["psf-b0"]), ["camera b0, not r0"]),
    ("traceshift: an arc image",
     lambda w, t: _traceshift(w, t, pre=w["arc-r0"]), ["OBSTYPE is 'ARC'"]),
    ("traceshift: image of another camera",
     lambda w, t: _traceshift(w, t, pre=w["pre-b0"]), ["camera b0, not r0"]),
    # extract, more
    ("extract: text file as PSF",
     lambda w, t: _extract(w, t, psf=w["text"]), ["text.fits"]),
    ("extract: PSF with too few fibers",
     lambda w, t: _extract(w, t, psf=w["psf-10fibers"]), ["10 fibers", "25"]),
    ("extract: NaN on unmasked pixels",
     lambda w, t: _extract(w, t, pre=w["pre-nan"]), ["NaN"]),
    ("extract: every pixel masked",
     lambda w, t: _extract(w, t, pre=w["pre-masked"]), ["every pixel is masked"]),
    # fiberflat, fiberflatnight
    ("fiberflat: a science frame as the flat",
     lambda w, t: ["fiberflat", "--config", w["cfg"], "--camera", "r0", "-i", w["frame"], "-o", str(t / "ff.fits")],
     ["OBSTYPE is 'SCIENCE'"]),
    ("fiberflat: flat frame of another camera",
     lambda w, t: ["fiberflat", "--config", w["cfg"], "--camera", "b0", "-i", w["frame-flat"], "-o", str(t / "ff.fits")],
     ["CAMERA is 'r0', expected b0"]),
    ("fiberflatnight: fiberflat of another camera",
     lambda w, t: ["fiberflatnight", "--config", w["cfg"], "--camera", "r0", "--night", str(NIGHT), "-i",
                   w["fiberflat-b0"], "-o", str(t / "ffn.fits")], ["b0"]),
    # sky, more
    ("sky: fiberflat of another camera",
     lambda w, t: _sky(w, t, fiberflat=w["fiberflat-b0"]), ["b0"]),
    ("sky: fiberflat on another wavelength grid",
     lambda w, t: _sky(w, t, fiberflat=w["fiberflat-short"]), ["fiberflat"]),
    ("sky: NaN flux where ivar > 0",
     lambda w, t: _sky(w, t, frame=w["frame-nan"]), ["NaN"]),
    ("sky: frame with 24 fibers",
     lambda w, t: _sky(w, t, frame=w["frame-24"]), ["24 fibers"]),
    ("sky: frame of another camera",
     lambda w, t: _sky(w, t, frame=w["frame-b0"]), ["CAMERA is 'b0', expected r0"]),
    # stdstars, fluxcalib, cframe, fluxcalib-average, more
    ("stdstars: sframes of two exposures",
     lambda w, t: ["stdstars", "--config", w["cfg"], "--spectrograph", "0", "--sframes", w["sframe"], w["frame-102"],
                   "-o", str(t / "st.fits")], ["different exposures"]),
    ("fluxcalib: sframe of another camera",
     lambda w, t: ["fluxcalib", "--config", w["cfg"], "--camera", "r0", "-i", w["frame-b0"], "--stdstars",
                   w["stdstars-nan"], "-o", str(t / "fc.fits")], ["CAMERA is 'b0', expected r0"]),
    ("cframe: calibration of another camera",
     lambda w, t: _cframe(w, t, cal=w["fluxcalib-b0"]), ["b0"]),
    ("cframe: calibration on another wavelength grid",
     lambda w, t: _cframe(w, t, cal=w["fluxcalib-short"]), ["calibration is (25, 30)"]),
    ("cframe: a preproc image as the sframe",
     lambda w, t: _cframe(w, t, sframe=w["pre-r0"]), ["preproc-r0", "is a fiberflow preproc product, not a frame"]),
    ("sky: a frame of a newer datamodel version",
     lambda w, t: _sky(w, t, frame=_with_key(_copy(w["frame"], t / "frame-r0-00000101.fits"), "FFDMVER", "2")),
     ["frame datamodel version 2; this fiberflow reads version 1"]),
    ("psfnight: an arc PSF of an unknown PSF datamodel version",
     lambda w, t: ["psfnight", "--config", w["cfg"], "--camera", "r0", "--night", str(NIGHT), "-i",
                   _with_key(_copy(w["fitpsf-r0"], t / "fit.fits"), "FFDMVER", "9"), "-o", str(t / "pn.fits")],
     ["psf datamodel version 9"]),
    ("fluxcalib-average: calibration of another camera",
     lambda w, t: ["fluxcalib-average", "--config", w["cfg"], "--camera", "r0", "-i", w["fluxcalib-b0"],
                   "-o", str(t / "avg.fits")], ["camera b0, not r0"]),
    # HEALPix
    ("tilepix: a preproc image as the fibermap",
     lambda w, t: ["tilepix", "--config", w["cfg"], "--fibermap", w["pre-r0"], "-o", str(t / "tp.json")],
     ["FIBERMAP"]),
    ("spectra: truncated cframe",
     lambda w, t: ["spectra", "--config", w["cfg"], "--pix", "5261", _cut(_copy(w["sframe"], _mkdir(t / "exposures" / "20251205" / "00000101") / "cframe-r0-00000101.fits")),
                   "-o", str(t / "sp.fits")], ["truncated"]),
    ("coadd: truncated spectra file",
     lambda w, t: ["coadd", "-i", _truncate(w["spectra"], t, 0.6), "-o", str(t / "c.fits")], ["truncated"]),
    ("coadd: text file as spectra",
     lambda w, t: ["coadd", "-i", w["text"], "-o", str(t / "c.fits")], ["text.fits"]),
    # QA
    ("qa-night: a frame QA JSON cut short",
     lambda w, t: _qa_night(w, t, "-i", _text(t / "qa-r0-00000402.json", '{"CAMERA": "r0", "PREPROC": {')),
     ["qa-r0-00000402.json", "not valid JSON"]),
    ("qa-night: thresholds that are not YAML",
     lambda w, t: _qa_night(w, t, thresholds=_text(t / "qa.yaml", "metrics: [unclosed")), ["qa.yaml", "not valid YAML"]),
    ("qa-exposure: the night QA is missing",
     lambda w, t: ["qa-exposure", "--night", str(NIGHT), "--expid", str(SCI), "--prod", str(t), "--nightqa",
                   str(t / "nope.json"), "-o", str(t / "e.html"), "--png", str(t / "e.png")], ["nope.json", "not found"]),
    # coadd: corruption inside a data unit is caught although the coadd reads rows in chunks
    ("coadd: flipped bytes in R_FLUX",
     lambda w, t: (["coadd", "-i", _flip_bytes(_copy(w["spectra"], t / "spectra-main-dark-5261.fits"), "R_FLUX"),
                    "-o", str(t / "coadd.fits")], [str(t / "coadd.fits")]), ["R_FLUX", "checksum mismatch"]),
]


def _argv_outputs(built, tmp):
    if isinstance(built, tuple):
        return built
    return built, [built[built.index("-o") + 1]]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_cleanly(world, tmp_path, capsys, case, monkeypatch):
    monkeypatch.delenv("FIBERFLOW_DEBUG", raising=False)
    name, build, words = case
    (tmp_path / "afile").write_text("not a folder")
    argv, outputs = _argv_outputs(build(world, tmp_path), tmp_path)
    inputs = {a: open(a, "rb").read() for a in argv if os.path.isfile(a)}
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 1, (name, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"fiberflow {argv[0]}: error: "), err
    for word in words:
        assert word in lines[0], (word, lines[0])
    for path, data in inputs.items():  # no input touched
        assert open(path, "rb").read() == data, path
    for out in outputs:
        if os.path.isdir(out):
            continue
        assert not os.path.exists(out), out
        folder = os.path.dirname(out)
        if os.path.isdir(folder):
            assert not [f for f in os.listdir(folder) if f.endswith(".tmp")], os.listdir(folder)


def test_several_outputs_are_all_or_none(tmp_path):
    """A step that fails while writing its second output leaves neither (sky + sframe, ...)."""
    from fiberflow.io.fitsutil import all_or_none, atomic_path

    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    with pytest.raises(RuntimeError):
        with all_or_none():
            with atomic_path(a) as tmp:
                open(tmp, "w").write("first")
            assert not a.exists()  # kept at its temporary path until the step ends
            with atomic_path(b) as tmp:
                open(tmp, "w").write("second")
                raise RuntimeError("disk full while writing b")
    assert not a.exists() and not b.exists() and not list(tmp_path.iterdir())
    with all_or_none():
        for p in (a, b):
            with atomic_path(p) as tmp:
                open(tmp, "w").write("ok")
    assert a.read_text() == b.read_text() == "ok"


def test_disk_full_is_one_line_and_leaves_nothing(world, tmp_path):
    """A file-size limit (`ulimit -f`, as a full disk) stops the write: exit 1, one line naming
    the problem, no output and no temporary file."""
    out = tmp_path / "out" / f"preproc-r0-{SCI:08d}.fits"
    argv, _ = _preproc(world, tmp_path, out=str(out))
    env = {k: v for k, v in os.environ.items() if k != "FIBERFLOW_DEBUG"}
    code = "import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); " \
           "resource.setrlimit(resource.RLIMIT_FSIZE, (200000, 200000)); " \
           "from fiberflow.cli.main import main; sys.exit(main(sys.argv[1:]))"
    res = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env)
    assert res.returncode == 1, res.stdout + res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in res.stderr and lines[0].startswith("fiberflow preproc: error:"), \
        res.stderr
    assert not out.exists() and not [f for f in os.listdir(out.parent) if f.endswith(".tmp")]


def test_debug_shows_the_traceback(world, tmp_path):
    argv, _ = _preproc(world, tmp_path, bias=world["bias-b0"])
    res = subprocess.run([sys.executable, "-m", "fiberflow.cli.main", "--debug", *argv], capture_output=True, text=True)
    assert res.returncode != 0 and "Traceback" in res.stderr and "camera b0, not r0" in res.stderr


def test_products_with_nan_are_not_written(tmp_path):
    """A computed product holding NaN/Inf (a step that produced no sound value) is refused at
    write with one DataError naming the file and HDU; nothing is left on disk."""
    import _factories as fac

    from fiberflow.errors import DataError

    fr = fac.frame(nspec=5, nwave=40)
    fr.flux[2, 7] = np.nan
    out = tmp_path / "frame-r0-00000101.fits"
    with pytest.raises(DataError, match="frame HDU FLUX would hold 1 NaN or infinite values"):
        fr.write(out)
    assert not out.exists() and not list(tmp_path.iterdir())
    fc = fac.fluxcalib(nspec=5, nwave=40)
    fc.calib[0, 0] = np.inf
    with pytest.raises(DataError, match="fluxcalib HDU"):
        fc.write(tmp_path / "fluxcalib-r0-00000101.fits")
    assert not list(tmp_path.iterdir())
    sp, _ = __import__("_factories").healpix_spectra(ntarget=2, nexp=2)
    sp.ivar["r"][1, 3] = np.nan
    with pytest.raises(DataError, match="spectra HDU R_IVAR would hold 1 NaN"):
        sp.write(tmp_path / "spectra-main-dark-5261.fits")
    assert not list(tmp_path.iterdir())


def test_raw_file_of_another_exposure_is_ignored_with_the_reason(world, tmp_path, capsys):
    """A raw file copied into another exposure's folder is not reduced as that exposure: the
    exposure table marks it LASTSTEP ignore with the reason (the rest of the night goes on)."""
    from fiberflow.workflow.exptable import read_table

    raw = tmp_path / "raw"
    for e in (SCI, SCI2):
        dst = raw / str(NIGHT) / f"{e:08d}"
        dst.mkdir(parents=True)
        shutil.copy(world["raw"][SCI], dst / f"desi-{e:08d}.fits.fz")  # SCI's file in SCI2's folder too
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"instrument: tiny\nraw: {raw}\nredux: {tmp_path / 'redux'}\nspecprod: x\n")
    out = tmp_path / "table.csv"
    assert main(["exptable", "--config", str(cfg), "--night", str(NIGHT), "-o", str(out)]) == 0
    rows = {r["EXPID"]: r for r in read_table(out)}
    assert rows[SCI]["LASTSTEP"] == "all" and rows[SCI]["OBSTYPE"] == "SCIENCE"
    assert rows[SCI2]["LASTSTEP"] == "ignore"
    assert f"raw header says NIGHT {NIGHT} EXPID {SCI}" in rows[SCI2]["COMMENTS"]
