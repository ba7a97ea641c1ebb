"""Which exposures feed which HEALPix pixel: the per-exposure tilepix maps.

The healpix stage's DAG must know every spectra job's input cframes when Snakemake builds it,
without reading any cframe and without a checkpoint on the hot path. A science exposure's raw
fibermap (present before any reduction) says where its fibers point. The ``tilepix`` rule,
run early beside preproc, records that as DESI's ``preproc/{night}/{expid}/tilepix-{tileid}.json``
(``{"TILEID": {"PETAL": [pixels]}}``, plus an ``NSIDE`` key). At parse time the workflow reads
the tilepix file when it is there, up to date and of the configured nside, and otherwise
computes the same mapping from the raw fibermap (a few milliseconds per exposure), so
``snakemake -n`` shows every spectra job of a fresh production too.

Adding a night adds exposures to the pixels they touch only: the other pixels' input lists
do not change, so Snakemake leaves their spectra and coadds alone.
"""

from __future__ import annotations

import os

from ..errors import DataError


def tilepix_from_fibermap(path, nside):
    """(tileid, {petal: [pixels]}) of a raw fibermap file.

    Raises
    ------
    DataError
        When the fibermap cannot be read, lacks TILEID in its header or a needed column.
    """
    from ..io.fibermap import read_fibermap
    from ..steps.regroup import petal_pixels

    fm, hdr = read_fibermap(path)
    tileid = hdr.get("TILEID")
    if tileid is None or int(tileid) < 0:
        raise DataError(path, "no TILEID in the FIBERMAP header")
    return int(tileid), petal_pixels(fm, nside)


def write_tilepix(path, tileid, pixmap, nside):
    """Write a tilepix JSON atomically: ``{"<tileid>": {"<petal>": [pix, ...]}, "NSIDE": nside}``
    (DESI's layout, plus NSIDE and the datamodel stamp)."""
    from ..io.datamodel import write_json

    data = {str(int(tileid)): {str(p): [int(x) for x in pix] for p, pix in sorted(pixmap.items())},
            "NSIDE": int(nside)}
    return write_json(path, "tilepix", data)


def read_tilepix(path):
    """(tileid, {petal: [pixels]}, nside or None) of a tilepix JSON; DataError when malformed."""
    from ..io.datamodel import read_json

    data = read_json(path, "tilepix", "tilepix file")
    try:
        nside = data.pop("NSIDE", None)
        if len(data) != 1:
            raise ValueError(f"expected one tile, found {len(data)}")
        (tile, petals), = data.items()
        return int(tile), {int(p): [int(x) for x in v] for p, v in petals.items()}, nside
    except (ValueError, TypeError, AttributeError) as exc:
        raise DataError(path, f"not a tilepix file: {exc}") from None


def exposure_pixmap(fibermap_path, tilepix_path, nside):
    """{petal: [pixels]} of one exposure: from its tilepix file when that is newer than the
    fibermap and of the same nside, else from the raw fibermap."""
    if tilepix_path and os.path.exists(tilepix_path):
        try:
            fresh = os.path.getmtime(tilepix_path) >= os.path.getmtime(fibermap_path)
        except OSError:
            fresh = True
        if fresh:
            try:
                _, pixmap, file_nside = read_tilepix(tilepix_path)
                if file_nside == int(nside):
                    return pixmap
            except DataError:
                pass
    return tilepix_from_fibermap(fibermap_path, nside)[1]


def name_part(value, default):
    """A survey or program name usable in file names: lower case, [a-z][a-z0-9]*, else ``default``."""
    text = "".join(ch for ch in str(value or "").strip().lower() if ch.isalnum())
    return text if text[:1].isalpha() else default


def pixel_groups(exposures, nside, default_survey="main", default_program="other"):
    """Which (night, expid, petal) feed each (survey, program, pixel).

    Parameters
    ----------
    exposures : iterable of dict
        One per science exposure: NIGHT, EXPID, SURVEY, PROGRAM, ``petals`` (set of petals
        with cameras in the exposure), ``fibermap`` (raw fibermap path), ``tilepix`` (cache path).
    nside : int

    Returns
    -------
    dict (survey, program, pix) -> sorted list of (night, expid, petal)
    """
    out = {}
    for e in exposures:
        pixmap = exposure_pixmap(e["fibermap"], e.get("tilepix"), nside)
        survey = name_part(e.get("SURVEY"), default_survey)
        program = name_part(e.get("PROGRAM"), default_program)
        for petal, pixels in pixmap.items():
            if petal not in e["petals"]:
                continue
            for pix in pixels:
                out.setdefault((survey, program, int(pix)), []).append((int(e["NIGHT"]), int(e["EXPID"]), int(petal)))
    return {k: sorted(v) for k, v in sorted(out.items())}
