"""Helpers shared by the per-camera step commands."""

from __future__ import annotations


def prod_root(cfg):
    """Production root of a configuration, or None when its roots are not set (standalone use)."""
    from ..config import resolve_roots
    from ..errors import ConfigError

    try:
        return resolve_roots(cfg)["prod"]
    except ConfigError:
        return None


def camera_step(args):
    """(config, instrument, camera) of a step command with ``--config`` and ``--camera``.

    Raises DataError when the instrument has no such camera.
    """
    from ..config import load_config
    from ..errors import DataError
    from ..instrument import load_instrument

    cfg = load_config(args.config)
    inst = load_instrument(cfg["instrument"])
    cam = args.camera.lower()
    if cam not in inst.camera_names():
        raise DataError(None, f"instrument {inst.name} has no camera {cam}")
    return cfg, inst, cam


def check_psf(psf, psf_path, inst, image_shape=None, image_path=None, camera=None, expid=None, night=None):
    """A PSF must have the instrument's fibers, the image's CCD size and (when given) be of the
    step's camera, exposure and night; DataError otherwise."""
    from ..errors import DataError

    check_identity(psf.header, psf_path, "PSF", camera=camera, expid=expid, night=night)
    if psf.nfiber != inst.nfiber:
        raise DataError(psf_path, f"PSF has {psf.nfiber} fibers; instrument {inst.name} has {inst.nfiber}")
    if image_shape is not None and tuple(image_shape) != (psf.npix_y, psf.npix_x):
        raise DataError(psf_path, f"PSF is for a {psf.npix_y}x{psf.npix_x} CCD; {image_path} is "
                                  f"{image_shape[0]}x{image_shape[1]}")


def _header_value(header, key):
    val = header.get(key) if header is not None else None
    if isinstance(val, tuple):
        val = val[0]
    return None if val is None or (isinstance(val, str) and not val.strip()) else val


def check_identity(header, path, what, camera=None, night=None, expid=None):
    """A product's header must name the camera (and night / exposure) the step works on.

    Keywords the header lacks are not checked; a value that disagrees raises DataError, e.g.
    ``psf-r0-00000123.fits: PSF is for camera r0, not b0``.
    """
    from ..errors import DataError

    for key, want in (("CAMERA", camera), ("NIGHT", night), ("EXPID", expid)):
        if want is None:
            continue
        have = _header_value(header, key)
        if have is None:
            continue
        if key == "CAMERA":
            bad = str(have).strip().lower() != str(want).strip().lower()
        else:
            try:
                bad = int(have) != int(want)
            except (TypeError, ValueError):
                bad = True
        if bad:
            raise DataError(path, f"{what} is for {'exposure' if key == 'EXPID' else key.lower()} {have}, not {want}")


def check_fibermap(fm, fm_header, path, petal, nfiber, exposure_header=None):
    """The fibermap rows of one petal must belong to the exposure and cover its fibers once.

    Parameters
    ----------
    fm : structured (n,)
        The petal's rows (:func:`fiberflow.io.fibermap.petal_rows`).
    fm_header : dict
        The FIBERMAP HDU header (EXPID, TILEID checked against ``exposure_header`` when both have them).
    petal, nfiber : int
        Petal number and fibers per petal of the instrument.
    """
    import numpy as np

    from ..errors import DataError

    if exposure_header is not None:
        for key in ("EXPID", "TILEID"):
            a, b = _header_value(fm_header, key), _header_value(exposure_header, key)
            if a is not None and b is not None and int(a) != int(b):
                raise DataError(path, f"fibermap is for {key} {a}; the exposure is {key} {b}")
    fiber = np.asarray(fm["FIBER"], np.int64)
    if fiber.size != nfiber:
        raise DataError(path, f"fibermap has {fiber.size} rows for petal {petal}; the petal has {nfiber} fibers")
    srt = np.sort(fiber)
    dup = np.unique(srt[1:][np.diff(srt) == 0])
    if dup.size:
        raise DataError(path, f"fibermap lists FIBER {', '.join(str(int(d)) for d in dup[:5])} more than once")
    lo, hi = petal * nfiber, (petal + 1) * nfiber
    out = fiber[(fiber < lo) | (fiber >= hi)]
    if out.size:
        raise DataError(path, f"fibermap rows of petal {petal} have FIBER {int(out[0])}, outside {lo}-{hi - 1}")


def read_camera_frame(path, cam, inst, obstypes=None):
    """Read a frame and check its camera (unless ``cam`` is None), fiber count and (optionally) OBSTYPE; DataError otherwise."""
    import numpy as np

    from ..errors import DataError
    from ..io.frame import read_frame

    frame = read_frame(path)
    fcam = str(frame.header.get("CAMERA", cam)).strip().lower()
    if cam is not None and fcam != cam:
        raise DataError(path, f"CAMERA is {fcam!r}, expected {cam}")
    if frame.nspec != inst.nfiber:
        raise DataError(path, f"frame has {frame.nspec} fibers; instrument {inst.name} has {inst.nfiber}")
    if obstypes is not None:
        obstype = str(frame.header.get("OBSTYPE", "")).strip().upper()
        if obstype not in obstypes:
            raise DataError(path, f"OBSTYPE is {obstype or 'missing'!r}; expected {' or '.join(obstypes)}")
    good = frame.ivar > 0
    if not np.all(np.isfinite(frame.flux[good])):
        raise DataError(path, "FLUX has NaN or infinite values where IVAR > 0")
    if frame.fibermap is not None:
        import re

        fm = frame.fibermap
        m = re.fullmatch(r"[brz](\d)", str(fcam))
        petal = int(m.group(1)) if m else (int(np.min(fm["FIBER"])) // inst.nfiber if len(fm) else 0)
        if len(fm) != frame.nspec:
            raise DataError(path, f"FIBERMAP has {len(fm)} rows for {frame.nspec} spectra")
        check_fibermap(fm, {}, path, petal, inst.nfiber)
    return frame


def add_certification_arguments(p):
    """The certification options of psfnight and fiberflatnight: the frame QA of the night's own
    exposures, scored as the certify job scores them, and the ledger's decision."""
    p.add_argument("--qa", nargs="*", default=[],
                   help="frame QA JSON of the night's own exposures of this camera (qa-{camera}-{expid}.json): "
                        "certified before use, a REJECTED calibration is replaced by --fallback")
    p.add_argument("--thresholds", default=None, help="QA thresholds YAML (with --qa)")
    p.add_argument("--history", nargs="*", default=[],
                   help="earlier nights' certification records of this calibration (dynamic thresholds)")
    p.add_argument("--ledger-decision", default="auto", choices=("auto", "CERTIFIED", "REJECTED"),
                   help="the certification ledger's decision on this calibration (overrides the automatic one)")


def certification_state(args, calibration, cam):
    """Certify the night's own calibration of one camera before using it: the automatic decision
    from its exposures' frame QA (:func:`fiberflow.qa.certify.certify_night`, as the workflow's
    certify job decides it), unless the ledger decided.

    Returns
    -------
    usable : bool
    cards : dict
        Header cards CERTSTAT, CERTSRC, CERTWHY (empty without ``--qa``).
    why : str
        The decision's reason.

    Raises
    ------
    DataError
        A frame QA of another night, camera or OBSTYPE; an unreadable record.
    """
    if not getattr(args, "qa", None):
        return True, {}, ""
    from ..errors import ConfigError, DataError
    from ..io.datamodel import read_json
    from ..qa import certify
    from ..qa.scoring import load_thresholds
    from ..qa.tables import history_from_nights

    if not args.thresholds:
        raise ConfigError("--qa needs --thresholds")
    obstype = certify.CALIBRATIONS[calibration][0]
    frames = []
    for f in args.qa:
        fr = read_json(f, "qa_frame", "frame QA JSON")
        if int(fr.get("NIGHT", -1)) != int(args.night) or fr.get("OBSTYPE") != obstype or fr.get("CAMERA") != cam:
            raise DataError(f, f"is the frame QA of {fr.get('OBSTYPE')} {fr.get('CAMERA')} of night {fr.get('NIGHT')}, "
                               f"not of a {obstype} {cam} of night {args.night}")
        frames.append(fr)
    thr = load_thresholds(args.thresholds)
    earlier = []
    for f in args.history:
        rec = read_json(f, "certification", "certification record")
        if rec.get("CALIBRATION") == calibration and int(rec.get("NIGHT", 0)) < int(args.night):
            earlier.append(rec)
    ledger = []
    if args.ledger_decision != "auto":
        ledger = [{"calibration": calibration, "night": int(args.night), "camera": cam, "decision": args.ledger_decision,
                   "who": "ledger", "when": "", "reason": "decided in the certification ledger"}]
    rec = certify.certify_night(int(args.night), calibration, frames, thr,
                                history_from_nights(earlier, thr["history"]["nights"]), ledger, 0.0)
    d = certify.decision_of(rec, cam)
    if d is None:
        return True, {"CERTSTAT": ("NA", "the night's own was not scored")}, ""
    src = "ledger" if d["SOURCE"].startswith("ledger") else "auto"
    cards = {"CERTSTAT": (d["STATUS"], "certification of the night's own"),
             "CERTSRC": (src, "auto or ledger"),
             "CERTWHY": (str(d["REASON"])[:48], "reason (abridged)")}
    return bool(d["USABLE"]), cards, str(d["REASON"])
