"""One table of path templates for every file fiberflow reads or writes.

The library, the CLI and ``rules/common.smk`` all take file names from here, so no
name is spelled twice anywhere. Names follow DESI's data model (``desispec.io.findfile``).

Every template lives under one of three roots:

``raw``
    raw data (``$DESI_SPECTRO_DATA``): ``{night}/{expid:08d}/desi-{expid:08d}.fits.fz``
``prod``
    the production directory ``{redux}/{specprod}`` (``$DESI_SPECTRO_REDUX/$SPECPROD``)
``truth``
    the simulator's truth folder, which the pipeline never reads

Examples
--------
>>> findfile("cframe", night=20250101, expid=123, camera="r0", prod="/p")
'/p/exposures/20250101/00000123/cframe-r0-00000123.fits'
>>> parse_path("/p/exposures/20250101/00000123/cframe-r0-00000123.fits")
('cframe', {'night': 20250101, 'expid': 123, 'camera': 'r0'})
"""

from __future__ import annotations

import functools
import os
import re

#: filetype -> (root, template relative to that root)
TEMPLATES: dict[str, tuple[str, str]] = {
    # raw data and the fibermap written beside it
    "raw": ("raw", "{night}/{expid:08d}/desi-{expid:08d}.fits.fz"),
    "fibermap": ("raw", "{night}/{expid:08d}/fibermap-{expid:08d}.fits"),
    # workflow tables and the markers of the target rules night, exposure and tile
    "night_done": ("prod", "run/night-{night}.done"),
    "exposure_done": ("prod", "run/exposure-{night}-{expid:08d}.done"),
    "tile_done": ("prod", "run/tile-{tileid}.done"),
    "exposure_table": ("prod", "exposure_tables/{yyyymm}/exposure_table_{night}.csv"),
    "exposure_override": ("prod", "exposure_tables/{yyyymm}/override_{night}.yaml"),
    # nightly calibrations
    "biasnight": ("prod", "calibnight/{night}/biasnight-{camera}-{night}.fits"),
    "psfnight": ("prod", "calibnight/{night}/psfnight-{camera}-{night}.fits"),
    "fiberflatnight": ("prod", "calibnight/{night}/fiberflatnight-{camera}-{night}.fits"),
    # per exposure x camera
    "preproc": ("prod", "preproc/{night}/{expid:08d}/preproc-{camera}-{expid:08d}.fits"),
    # per exposure: which HEALPix pixels each petal's fibers fall in (DESI's tilepix)
    "tilepix": ("prod", "preproc/{night}/{expid:08d}/tilepix-{tileid}.json"),
    "fitpsf": ("prod", "exposures/{night}/{expid:08d}/fit-psf-{camera}-{expid:08d}.fits"),
    "psf": ("prod", "exposures/{night}/{expid:08d}/psf-{camera}-{expid:08d}.fits"),
    "frame": ("prod", "exposures/{night}/{expid:08d}/frame-{camera}-{expid:08d}.fits"),
    "model": ("prod", "exposures/{night}/{expid:08d}/model-{camera}-{expid:08d}.fits"),
    "fiberflat": ("prod", "exposures/{night}/{expid:08d}/fiberflat-{camera}-{expid:08d}.fits"),
    "sky": ("prod", "exposures/{night}/{expid:08d}/sky-{camera}-{expid:08d}.fits"),
    "sframe": ("prod", "exposures/{night}/{expid:08d}/sframe-{camera}-{expid:08d}.fits"),
    "fluxcalib": ("prod", "exposures/{night}/{expid:08d}/fluxcalib-{camera}-{expid:08d}.fits"),
    "cframe": ("prod", "exposures/{night}/{expid:08d}/cframe-{camera}-{expid:08d}.fits"),
    # per exposure x spectrograph
    "stdstars": ("prod", "exposures/{night}/{expid:08d}/stdstars-{spectrograph}-{expid:08d}.fits"),
    # healpix
    "spectra": ("prod", "healpix/{survey}/{program}/{pixgroup}/{pix}/spectra-{survey}-{program}-{pix}.fits"),
    "coadd": ("prod", "healpix/{survey}/{program}/{pixgroup}/{pix}/coadd-{survey}-{program}-{pix}.fits"),
    # tile coadds: every exposure of the tile up to a night (cumulative), or of that night alone
    "spectra_cumulative": ("prod", "tiles/cumulative/{tileid}/{night}/spectra-{spectrograph}-{tileid}-thru{night}.fits"),
    "coadd_cumulative": ("prod", "tiles/cumulative/{tileid}/{night}/coadd-{spectrograph}-{tileid}-thru{night}.fits"),
    "spectra_pernight": ("prod", "tiles/pernight/{tileid}/{night}/spectra-{spectrograph}-{tileid}-{night}.fits"),
    "coadd_pernight": ("prod", "tiles/pernight/{tileid}/{night}/coadd-{spectrograph}-{tileid}-{night}.fits"),
    # redshifts (DESI's redrock) of every coadd
    "redrock": ("prod", "healpix/{survey}/{program}/{pixgroup}/{pix}/redrock-{survey}-{program}-{pix}.fits"),
    "redrock_cumulative": ("prod", "tiles/cumulative/{tileid}/{night}/redrock-{spectrograph}-{tileid}-thru{night}.fits"),
    "redrock_pernight": ("prod", "tiles/pernight/{tileid}/{night}/redrock-{spectrograph}-{tileid}-{night}.fits"),
    # redshift catalogs (one row per target per coadd, ZCAT_NSPEC / ZCAT_PRIMARY) and summaries
    "ztile": ("prod", "zcatalog/ztile-{survey}-{program}-cumulative.fits"),
    "zpix": ("prod", "zcatalog/zpix-{survey}-{program}.fits"),
    "tiles_summary": ("prod", "tiles-{specprod}.fits"),
    "tiles_summary_csv": ("prod", "tiles-{specprod}.csv"),
    "exposures_summary": ("prod", "exposures-{specprod}.fits"),
    "exposures_summary_csv": ("prod", "exposures-{specprod}.csv"),
    # QA
    # tile QA of each cumulative tile (DESI's tile-qa files, beside the tile's coadds)
    "tile_qa": ("prod", "tiles/cumulative/{tileid}/{night}/tile-qa-{tileid}-thru{night}.fits"),
    "tile_qa_png": ("prod", "tiles/cumulative/{tileid}/{night}/tile-qa-{tileid}-thru{night}.png"),
    "qa_frame": ("prod", "qa/exposures/{night}/{expid:08d}/qa-{camera}-{expid:08d}.json"),
    "qa_frame_png": ("prod", "qa/exposures/{night}/{expid:08d}/qa-{camera}-{expid:08d}.png"),
    "qa_frame_blink": ("prod", "qa/exposures/{night}/{expid:08d}/qa-blink-{camera}-{expid:08d}.png"),
    "qa_exposure_png": ("prod", "qa/exposures/{night}/{expid:08d}/qa-focalplane-{expid:08d}.png"),
    "qa_exposure_html": ("prod", "qa/exposures/{night}/{expid:08d}/qa-{expid:08d}.html"),
    "qa_night": ("prod", "qa/nights/{night}/qa-night-{night}.json"),
    "qa_night_html": ("prod", "qa/nights/{night}/qa-night-{night}.html"),
    "nightqa_html": ("prod", "qa/nights/{night}/nightqa-{night}.html"),
    "qc_ingest": ("prod", "qa/nights/{night}/qc1-ingest-{night}.json"),
    "certification": ("prod", "calibnight/{night}/certification-{calibration}-{night}.json"),
    "certification_ledger": ("prod", "calibnight/certification.yaml"),
    "qc_health_html": ("prod", "qa/health/index.html"),
    "qc_health_table": ("prod", "qa/health/qc-health.csv"),
    "qa_night_trends": ("prod", "qa/nights/{night}/qa-night-trends-{night}.png"),
    "qa_night_hist": ("prod", "qa/nights/{night}/qa-night-hist-{night}.png"),
    "qa_production_table": ("prod", "qa/qa-production.csv"),
    "qa_production_html": ("prod", "qa/index.html"),
    "qa_production_trends": ("prod", "qa/qa-production-trends.png"),
    "qa_production_hist": ("prod", "qa/qa-production-hist.png"),
    # night-time quick-look (fiberflow watch): its own subtree, never read by the full reduction
    "ql_calib": ("prod", "quicklook/{night}/{expid:08d}/qlcalib-{expid:08d}.json"),
    "ql_preproc": ("prod", "quicklook/{night}/{expid:08d}/preproc-{camera}-{expid:08d}.fits"),
    "ql_frame": ("prod", "quicklook/{night}/{expid:08d}/qframe-{camera}-{expid:08d}.fits"),
    "ql_fiberflat": ("prod", "quicklook/{night}/{expid:08d}/qfiberflat-{camera}-{expid:08d}.fits"),
    "ql_sky": ("prod", "quicklook/{night}/{expid:08d}/qsky-{camera}-{expid:08d}.fits"),
    "ql_sframe": ("prod", "quicklook/{night}/{expid:08d}/qsframe-{camera}-{expid:08d}.fits"),
    "ql_qa_frame": ("prod", "quicklook/{night}/{expid:08d}/qa-{camera}-{expid:08d}.json"),
    "ql_qa_frame_png": ("prod", "quicklook/{night}/{expid:08d}/qa-{camera}-{expid:08d}.png"),
    "ql_qa": ("prod", "quicklook/{night}/{expid:08d}/qa-{expid:08d}.json"),
    "ql_html": ("prod", "quicklook/{night}/{expid:08d}/qa-{expid:08d}.html"),
    "ql_table": ("prod", "quicklook/{night}/qlexposures-{night}.csv"),
    # simulator truth (never read by the pipeline)
    "truth": ("truth", "{night}/{expid:08d}/truth-{camera}-{expid:08d}.fits"),
    "truth_stdstars": ("truth", "{night}/{expid:08d}/truth-stdstars-{expid:08d}.fits"),
    "truth_calib": ("truth", "{night}/truth-calib-{camera}-{night}.fits"),
    "truth_pixflat": ("truth", "pixflat/pixflat-{camera}.fits"),
    "truth_targets": ("truth", "tiles/{tileid}/truth-targets-{tileid}.fits"),
}

#: regular expressions of every identifier (used for parsing and Snakemake wildcard constraints)
ID_REGEX: dict[str, str] = {
    "night": r"\d{8}",
    "expid": r"\d{8}",
    "camera": r"[brz]\d",
    "spectrograph": r"\d",
    "tileid": r"\d+",
    "survey": r"[a-z][a-z0-9]*",
    "program": r"[a-z][a-z0-9]*",
    "pix": r"\d+",
    "pixgroup": r"\d+",
    "yyyymm": r"\d{6}",
    "specprod": r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    "calibration": r"biasnight|psfnight|fiberflatnight",
}

#: identifiers converted to int when parsed
INT_IDS = {"night", "expid", "spectrograph", "pix", "pixgroup", "tileid"}

#: identifiers derived from others (filled by findfile, checked by parse_path)
DERIVED = {"yyyymm", "pixgroup"}
_ID_RE = {k: re.compile(v) for k, v in ID_REGEX.items()}

#: environment variables for the roots (DESI's names)
ROOT_ENV = {"raw": "DESI_SPECTRO_DATA", "truth": "FIBERFLOW_TRUTH"}

_FIELD = re.compile(r"\{(\w+)(?::([^}]*))?\}")


def filetypes():
    """All known file types, sorted."""
    return sorted(TEMPLATES)


def template_fields(filetype):
    """Names of the identifiers a file type needs (derived ones excluded), in template order."""
    return list(_template_fields(filetype))


@functools.lru_cache(maxsize=None)
def _template_fields(filetype):
    _, tmpl = _lookup(filetype)
    out = []
    for name, _spec in _FIELD.findall(tmpl):
        if name not in DERIVED and name not in out:
            out.append(name)
    return tuple(out)


def _lookup(filetype):
    try:
        return TEMPLATES[filetype]
    except KeyError:
        raise KeyError(f"unknown file type {filetype!r}; known: {', '.join(filetypes())}") from None


def _normalise_ids(ids):
    """Fill derived identifiers and coerce types."""
    out = dict(ids)
    for key in ("night", "expid", "spectrograph", "pix"):
        if key in out and out[key] is not None:
            out[key] = int(out[key])
    if out.get("camera") is not None:
        out["camera"] = str(out["camera"]).lower()
    if out.get("night") is not None:
        out["yyyymm"] = str(out["night"])[:6]
    if out.get("pix") is not None:
        out["pixgroup"] = out["pix"] // 100
    return out


def default_root(root):
    """Root folder from the environment: ``raw`` from DESI_SPECTRO_DATA, ``prod`` from
    DESI_SPECTRO_REDUX/SPECPROD, ``truth`` from FIBERFLOW_TRUTH. None when unset."""
    if root == "prod":
        redux = os.environ.get("DESI_SPECTRO_REDUX")
        specprod = os.environ.get("SPECPROD")
        if redux and specprod:
            return os.path.join(redux, specprod)
        return None
    return os.environ.get(ROOT_ENV[root])


def relpath(filetype, **ids):
    """Path of ``filetype`` relative to its root.

    Parameters
    ----------
    filetype : str
        One of :data:`TEMPLATES`.
    **ids
        The identifiers the template needs (night, expid, camera, spectrograph,
        survey, program, pix). Extra ones are ignored.
    """
    _, tmpl = _lookup(filetype)
    vals = _normalise_ids(ids)
    fields = _template_fields(filetype)
    missing = [f for f in fields if vals.get(f) is None]
    if missing:
        raise ValueError(f"findfile({filetype!r}) needs {', '.join(missing)}")
    for f in fields:
        if not _valid_id(f, vals[f]):
            raise ValueError(f"findfile({filetype!r}): invalid {f}={vals[f]!r}")
    return tmpl.format(**vals)


@functools.lru_cache(maxsize=65536)
def _valid_id(name, value):
    """Whether an identifier value is valid for its field (cached: a plan checks the same nights,
    exposures and cameras thousands of times)."""
    return _ID_RE[name].fullmatch(_format_one(name, value)) is not None


def _format_one(name, value):
    """An identifier as it appears in a file name (expid zero-padded to 8 digits)."""
    return f"{int(value):08d}" if name == "expid" else str(value)


def findfile(filetype, *, raw=None, prod=None, truth=None, **ids):
    """Full path of one file.

    Parameters
    ----------
    filetype : str
        One of :data:`TEMPLATES`.
    raw, prod, truth : str, optional
        Root folders; default from the environment (see :func:`default_root`).
    **ids
        Identifiers (night, expid, camera, spectrograph, survey, program, pix).

    Returns
    -------
    str
    """
    rootname, _ = _lookup(filetype)
    roots = {"raw": raw, "prod": prod, "truth": truth}
    root = roots[rootname] if roots[rootname] is not None else default_root(rootname)
    if root is None:
        raise ValueError(
            f"findfile({filetype!r}): the {rootname!r} root is not set "
            f"(pass {rootname}=... or set {ROOT_ENV.get(rootname, 'DESI_SPECTRO_REDUX and SPECPROD')})"
        )
    return os.path.join(str(root), relpath(filetype, **ids))


def _template_regex(tmpl):
    pos = 0
    parts = []
    seen = set()
    for m in _FIELD.finditer(tmpl):
        parts.append(re.escape(tmpl[pos : m.start()]))
        name = m.group(1)
        if name in seen:
            parts.append(f"(?P={name})")
        else:
            parts.append(f"(?P<{name}>{ID_REGEX[name]})")
            seen.add(name)
        pos = m.end()
    parts.append(re.escape(tmpl[pos:]))
    return "".join(parts)


_PARSERS = {ft: re.compile(r"(?:^|/)" + _template_regex(t) + r"$") for ft, (_, t) in TEMPLATES.items()}


def parse_path(path):
    """Inverse of :func:`findfile`: the file type and identifiers of a path.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    (str, dict)
        File type and identifiers (derived ones such as ``yyyymm`` and ``pixgroup`` are
        checked for consistency and dropped).

    Raises
    ------
    ValueError
        If the path matches no template or its derived identifiers are inconsistent.
    """
    path = os.fspath(path).replace(os.sep, "/")
    for ft, rx in _PARSERS.items():
        m = rx.search(path)
        if not m:
            continue
        ids = {}
        for k, v in m.groupdict().items():
            ids[k] = int(v) if k in INT_IDS else v
        if "yyyymm" in ids and str(ids["night"])[:6] != ids["yyyymm"]:
            raise ValueError(f"{path}: folder {ids['yyyymm']} does not match night {ids['night']}")
        if "pixgroup" in ids and ids["pix"] // 100 != ids["pixgroup"]:
            raise ValueError(f"{path}: folder {ids['pixgroup']} is not {ids['pix']}//100")
        for k in DERIVED:
            ids.pop(k, None)
        return ft, ids
    raise ValueError(f"{path}: not a fiberflow file name")


def wildcard_pattern(filetype, root_prefix=""):
    """Snakemake output pattern of a file type: identifiers become ``{wildcards}``.

    ``{expid:08d}`` becomes ``{expid}``; the expid wildcard therefore holds the
    8-digit string (see :data:`ID_REGEX` for the wildcard constraints).

    Parameters
    ----------
    filetype : str
    root_prefix : str
        Prefix for the root (e.g. the raw folder for raw files; "" for production files,
        whose rules run inside the production directory).
    """
    _, tmpl = _lookup(filetype)
    pattern = _FIELD.sub(lambda m: "{" + m.group(1) + "}", tmpl)
    return os.path.join(root_prefix, pattern) if root_prefix else pattern


def wildcard_constraints():
    """Regular expressions for every identifier, for Snakemake's ``wildcard_constraints``."""
    return dict(ID_REGEX)


def camera_list(npetal=10, arms="brz", petals=None):
    """Camera names ``b0..z9`` for the given petals and arms, arm-major (b0, b1, ..., z9)."""
    petals = range(npetal) if petals is None else petals
    return [f"{arm}{p}" for arm in arms for p in petals]


def production_relpath(path, prod):
    """Path relative to the production root when inside it, else the path itself (for headers)."""
    path = os.path.abspath(os.fspath(path))
    if prod is not None:
        prod = os.path.abspath(os.fspath(prod))
        if path == prod or path.startswith(prod + os.sep):
            return os.path.relpath(path, prod)
    return path


__all__ = [
    "TEMPLATES",
    "ID_REGEX",
    "filetypes",
    "template_fields",
    "relpath",
    "findfile",
    "parse_path",
    "wildcard_pattern",
    "wildcard_constraints",
    "camera_list",
    "production_relpath",
    "default_root",
]
