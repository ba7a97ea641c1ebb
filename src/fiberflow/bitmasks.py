"""DESI bit masks (ccdmask, specmask, fibermask) with DESI's names and bit values.

Names and values are exactly those of desispec 0.70 ``desispec.maskbits`` (a test checks
every bit against it), so DESI tools interpret fiberflow masks correctly.
"""

from __future__ import annotations

import numpy as np


class BitMask:
    """A named set of bits.

    Parameters
    ----------
    name : str
        Name of the mask (e.g. ``"ccdmask"``).
    bits : dict[str, tuple[int, str]]
        ``{NAME: (bit, description)}``.
    """

    def __init__(self, name, bits):
        self.name = name
        self._bits = dict(bits)
        seen = {}
        for key, (bit, _) in self._bits.items():
            if bit in seen:
                raise ValueError(f"{name}: bit {bit} used by {seen[bit]} and {key}")
            seen[bit] = key

    def __getattr__(self, key):
        bits = self.__dict__.get("_bits", {})
        if key in bits:
            return 1 << bits[key][0]
        raise AttributeError(f"{self.__dict__.get('name', 'BitMask')} has no bit {key!r}")

    def __getitem__(self, key):
        return self.__getattr__(key)

    def __contains__(self, key):
        return key in self._bits

    def bitnum(self, key):
        """Bit number of ``key``."""
        return self._bits[key][0]

    def comment(self, key):
        """Description of ``key``."""
        return self._bits[key][1]

    def mask(self, *keys):
        """OR of the values of ``keys`` (names, or a single '|'-separated string)."""
        value = 0
        for key in keys:
            for part in str(key).split("|"):
                part = part.strip()
                if part:
                    value |= self.__getattr__(part)
        return value

    def names(self, value):
        """Names of the bits set in the integer ``value``."""
        value = int(value)
        return [k for k, (b, _) in sorted(self._bits.items(), key=lambda kv: kv[1][0]) if value & (1 << b)]

    def items(self):
        """``(name, bit, description)`` sorted by bit."""
        return [(k, b, c) for k, (b, c) in sorted(self._bits.items(), key=lambda kv: kv[1][0])]

    def is_set(self, values, key):
        """Boolean array: where ``key`` is set in ``values``."""
        return (np.asarray(values) & self.mask(key)) != 0

    def header_cards(self, prefix="MB"):
        """Header cards documenting the bits, e.g. ``("MB00", "BAD", "ccdmask bit 0")``."""
        return [(f"{prefix}{b:02d}", k, f"{self.name} bit {b}: {c}"[:70]) for k, b, c in self.items()]


ccdmask = BitMask(
    "ccdmask",
    {
        "BAD": (0, "Pre-determined bad pixel (any reason)"),
        "HOT": (1, "Hot pixel"),
        "DEAD": (2, "Dead pixel"),
        "SATURATED": (3, "Saturated pixel from object"),
        "COSMIC": (4, "Cosmic ray"),
        "PIXFLATZERO": (5, "pixflat is 0"),
        "PIXFLATLOW": (6, "pixflat < 0.1"),
        "HIGHVAR": (7, "High variability in pixel value"),
        "BADREADNOISE": (8, "Very high CCD read noise"),
        "BADAMP": (9, "Bad amplifier"),
    },
)

#: ccdmask bits that make a pixel unusable for extraction (desispec extractmaskval).
EXTRACT_MASKVAL = ccdmask.mask("BAD|HOT|DEAD|SATURATED|COSMIC|PIXFLATZERO|PIXFLATLOW|HIGHVAR|BADAMP")

specmask = BitMask(
    "specmask",
    {
        "SOMEBADPIX": (0, "Some input pixels were masked or ivar=0"),
        "ALLBADPIX": (1, "All input pixels were masked or ivar=0"),
        "COSMIC": (2, "Input pixels included a masked cosmic"),
        "LOWFLAT": (3, "Fiber flat < 0.5"),
        "BADFIBERFLAT": (4, "Bad fiber flat solution"),
        "BRIGHTSKY": (5, "Bright sky level (details TBD)"),
        "BADSKY": (6, "Bad sky model"),
        "BAD2DFIT": (7, "Bad fit of extraction 2D model to pixel data"),
        "NODATA": (8, "No data exists"),
        "BADFIBER": (9, "fibermask has a non-zero bit"),
        "BADCOLUMN": (10, "Bad CCD column biases the flux"),
    },
)

#: specmask bits that do not make a flux bin unusable: SOMEBADPIX bins still have a valid
#: flux whose ivar already accounts for the masked pixels
SPECMASK_HARMLESS = specmask.mask("SOMEBADPIX")


def usable_bins(mask, ivar, flux=None):
    """Bool array: bins a fit may use (ivar > 0, finite flux, no harmful specmask bit)."""
    ok = ((np.asarray(mask).astype(np.int64) & ~SPECMASK_HARMLESS) == 0) & (np.asarray(ivar) > 0)
    if flux is not None:
        ok &= np.isfinite(flux)
    return ok


fibermask = BitMask(
    "fibermask",
    {
        "UNASSIGNED": (0, "Fiber has no target assigned"),
        "STUCKPOSITIONER": (1, "Stuck positioner"),
        "BROKENFIBER": (2, "Broken fiber"),
        "RESTRICTED": (3, "Positioner has restricted reach"),
        "MISSINGPOSITION": (8, "Fiber location information is missing"),
        "BADPOSITION": (9, "Fiber >100 microns from target location"),
        "POORPOSITION": (10, "Fiber 30-100 microns from target location"),
        "LOWTRANSMISSION": (12, "Fiber has low transmission"),
        "NEARCHARGETRAP": (13, "Fiber near a CCD charge trap"),
        "VARIABLETHRU": (14, "Fiber has variable throughput"),
        "LOWEFFTIME": (15, "Fiber has low effective exposure time"),
        "BADFIBER": (16, "Unusable fiber"),
        "BADTRACE": (17, "Bad trace solution"),
        "BADFLAT": (18, "Bad fiber flat"),
        "BADARC": (19, "Bad arc solution"),
        "MANYBADCOL": (20, ">10% of pixels are bad columns"),
        "MANYREJECTED": (21, "Excessive number of rejected pixels"),
        "BADAMPB": (22, "Issues in the amplifier readouts of camera B"),
        "BADAMPR": (23, "Issues in the amplifier readouts of camera R"),
        "BADAMPZ": (24, "Issues in the amplifier readouts of camera Z"),
        "BADPETALPOS": (25, "Petal-level QA: positioning"),
        "BADPETALSKY": (26, "Petal-level QA: sky"),
        "BADPETALSTDSTAR": (27, "Petal-level QA: standard stars"),
        "BADPETALFLUXCAL": (28, "Petal-level QA: flux calibration"),
        "BADPETALSNR": (29, "Petal-level QA: signal to noise"),
        "BADREADNOISE": (30, "Petal-level QA: read noise"),
    },
)

#: FIBERSTATUS bits that make a fiber unusable for sky / stdstars / coadds.
BAD_FIBERSTATUS = fibermask.mask(
    "UNASSIGNED|BROKENFIBER|MISSINGPOSITION|BADPOSITION|LOWTRANSMISSION|BADFIBER|BADTRACE|BADFLAT|BADARC|MANYREJECTED"
)

#: FIBERSTATUS bits that keep an exposure out of a coadd, in every band (DESI's choice,
#: desispec.fiberbitmasking: an UNASSIGNED or LOW-TRANSMISSION fiber still coadds).
COADD_BAD_FIBERSTATUS = fibermask.mask(
    "BROKENFIBER|MISSINGPOSITION|BADPOSITION|BADFIBER|BADTRACE|BADARC|BADFLAT|MANYBADCOL|MANYREJECTED"
)


def coadd_bad_fiberstatus(band):
    """FIBERSTATUS bits that keep an exposure out of the coadd of ``band`` ('b', 'r' or 'z'):
    :data:`COADD_BAD_FIBERSTATUS` plus that band's BADAMP bit."""
    band = str(band).lower()
    if band not in ("b", "r", "z"):
        raise ValueError(f"band must be b, r or z, not {band!r}")
    return COADD_BAD_FIBERSTATUS | fibermask.mask(f"BADAMP{band.upper()}")


#: DESI_TARGET bits used by fiberflow (subset of desitarget's desi_mask).
desi_target = BitMask(
    "desi_mask",
    {
        "LRG": (0, "LRG"),
        "ELG": (1, "ELG"),
        "QSO": (2, "QSO"),
        "SKY": (32, "Blank sky locations"),
        "STD_FAINT": (33, "Standard stars for dark/gray conditions"),
        "STD_WD": (34, "White Dwarf stars"),
        "STD_BRIGHT": (35, "Standard stars for BRIGHT conditions"),
        "BAD_SKY": (36, "Blank sky locations that are imperfect but still useable"),
        "SUPP_SKY": (37, "SKY is based on Gaia-avoidance (SKY will be set too)"),
        "BGS_ANY": (60, "Any BGS bit is set"),
        "MWS_ANY": (61, "Any MWS bit is set"),
    },
)


def bad_fiberstatus(fibermap, nspec):
    """(nspec,) bool: fibers whose FIBERSTATUS has a bit of :data:`BAD_FIBERSTATUS` (all False
    without a fibermap or a FIBERSTATUS column)."""
    if fibermap is None or "FIBERSTATUS" not in (fibermap.dtype.names or ()):
        return np.zeros(nspec, bool)
    return (np.asarray(fibermap["FIBERSTATUS"]).astype(np.int64) & BAD_FIBERSTATUS) != 0
