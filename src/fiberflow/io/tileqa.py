"""Tile QA products: ``tile-qa-{tileid}-thru{night}.fits`` (FIBERQA, PETALQA; the tile's metrics,
scores and status in the header of FIBERQA) and the reference they are compared with
(``tile-qa-reference.fits``: n(z) and success rate per tracer)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from .datamodel import Product, hdu

REFERENCE_FILE = "tile-qa-reference.fits"

METRICS_DTYPE = [("NAME", "U24"), ("VALUE", "f8"), ("STATUS", "U8"), ("NORMAL_LO", "f8"), ("NORMAL_HI", "f8"),
                 ("WARNING_LO", "f8"), ("WARNING_HI", "f8"), ("DETAIL", "U64")]


@dataclass
class TileQA(Product):
    """Tile QA of one cumulative tile (see :mod:`fiberflow.qa.tileqa`).

    Attributes
    ----------
    fiberqa : structured (nfiber,)
    petalqa : structured (npetal,)
    metrics : structured (nmetric,)
        NAME, VALUE, STATUS (NORMAL / WARNING / ALARM / NA), the NORMAL and WARNING ranges,
        DETAIL (where: tracer and redshift bin, petal).
    header : dict
        TILEID, LASTNIGHT, SURVEY, PROGRAM, EFFTIME, GOALTIME, QASTATUS (worst score), NALARM.
    """

    fiberqa: np.ndarray = hdu("FIBERQA", kind="table", descr="one row per fiber", pos=0)
    petalqa: np.ndarray = hdu("PETALQA", kind="table", descr="one row per petal", pos=1)
    metrics: np.ndarray = hdu("METRICS", kind="table", descr="the tile's scored metrics", pos=2)
    header: dict = field(default_factory=dict)

    NAME = "tile_qa"
    VERSION = "2"
    PRIMARY_IMAGE = False

    @property
    def status(self):
        return str(self.header.get("QASTATUS", "NA")).strip()

    def metric(self, name):
        """The METRICS row of ``name`` (KeyError when the tile has none)."""
        rows = self.metrics[np.char.strip(self.metrics["NAME"].astype(str)) == name]
        if not len(rows):
            raise KeyError(name)
        return rows[0]


@dataclass
class TileQAReference(Product):
    """n(z) (tracer x redshift bin: TRACER, ZLO, ZHI, N, FRAC) and redshift success (TRACER,
    NVALID, NGOODZ, SUCCESS) of a production known to be good."""

    nz: np.ndarray = hdu("NZ", kind="table", descr="good redshifts per tracer and redshift bin", pos=0)
    success: np.ndarray = hdu("SUCCESS", kind="table", descr="redshift success of the valid targets per tracer", pos=1)
    header: dict = field(default_factory=dict)

    NAME = "tile_qa_reference"
    VERSION = "1"
    PRIMARY_IMAGE = False


@functools.lru_cache(maxsize=4)
def read_reference(path=None):
    """The tile QA reference ``path``, or the one shipped with fiberflow."""
    if path is None:
        from ..reference import reference_file

        path = reference_file("qa", REFERENCE_FILE)
    return TileQAReference.read(path)
