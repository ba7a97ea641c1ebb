"""Self-documenting, versioned data products (in the spirit of PypeIt's DataContainer).

A product class is a dataclass whose fields carry their HDUs: an attribute stored in the file is
declared once, as ``flux: np.ndarray = hdu("FLUX", dtype="f4", ndim=2, descr=..., pos=0)``
(:func:`hdu`: EXTNAME, kind, dtype, ndim, required, units, description, position in the file).
:meth:`Product.datamodel` collects them in file order. :class:`Product` then gives every
product exactly one reader
(:meth:`Product.read`) and one writer (:meth:`Product.write`), both checked:

- writing is atomic and stamps ``FFDMNAME``/``FFDMVER`` (product name and datamodel version)
  plus whatever provenance the caller put in ``header``;
- reading raises :class:`~fiberflow.errors.DataError` naming the file for a truncated
  file, a missing required HDU, a wrong number of dimensions, inconsistent shapes (each
  product's ``validate``), another product, or a datamodel version it does not know.

``describe()`` renders the datamodel as a text table for the documentation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from ..provenance import with_base_provenance
from . import fitsutil


@dataclass(frozen=True)
class HDU:
    """One HDU of a product.

    Parameters
    ----------
    extname : str
        FITS EXTNAME.
    kind : str
        ``"image"`` or ``"table"``.
    dtype : str, optional
        On-disk dtype of an image (``"f4"``, ``"f8"``, ``"i4"``, ``"i2"``, ``"u2"``).
    ndim : int, optional
        Required dimensions of an image.
    required : bool
        Whether the HDU must exist.
    units : str
        BUNIT written into the HDU header.
    descr : str
        What it holds (with numpy shape).
    compress : str, optional
        fitsio compression for integer images.
    pos : int, optional
        Position in the file (HDUs without one follow in field order).
    """

    extname: str
    kind: str = "image"
    dtype: str | None = None
    ndim: int | None = None
    required: bool = True
    units: str = ""
    descr: str = ""
    compress: str | None = None
    pos: int | None = None


def hdu(extname, *, pos=None, **spec):
    """A dataclass field stored as one HDU (see :class:`HDU` for ``spec``); the field of an
    optional HDU (``required=False``) defaults to None."""
    default = None if spec.get("required", True) is False else dataclasses.MISSING
    return dataclasses.field(default=default, metadata={"hdu": HDU(extname, pos=pos, **spec)})


def check_product(header, path, name, version):
    """A file fiberflow wrote (FFDMNAME in its header) must be product ``name`` at datamodel
    ``version``; files of other writers (DESI's own, without FFDMNAME) are read as they are.

    Raises
    ------
    DataError
        Another product, or a datamodel version this fiberflow does not read.
    """
    have = header.get("FFDMNAME")
    if have is None:
        return
    have = str(have[0] if isinstance(have, tuple) else have).strip()
    if have != name:
        raise DataError(path, f"is a fiberflow {have} product, not a {name}")
    ver = header.get("FFDMVER")
    ver = None if ver is None else str(ver[0] if isinstance(ver, tuple) else ver).strip()
    if ver is not None and ver != str(version):
        raise DataError(path, f"{name} datamodel version {ver}; this fiberflow reads version {version} "
                              "(reprocess the file, or read it with the fiberflow version that wrote it)")


#: datamodel versions of the JSON products (name -> version)
JSON_VERSIONS = {"qa_frame": "1", "qa_night": "1", "tilepix": "1", "qc_ingest": "1", "certification": "2",
                 "ql_calib": "1", "ql_qa": "1"}


def write_json(path, name, obj):
    """Write a JSON product atomically, stamped ``FFDMNAME``/``FFDMVER`` like the FITS products."""
    import json

    data = {"FFDMNAME": name, "FFDMVER": JSON_VERSIONS[name], **obj}
    with fitsutil.atomic_path(path) as tmp, open(tmp, "w") as fh:
        json.dump(data, fh, indent=1, sort_keys=False)
        fh.write("\n")
    return path


def read_json(path, name, what=None):
    """A JSON product as a dict (without its stamp); DataError naming the file when it is missing,
    not JSON, another product or a datamodel version this fiberflow does not read. Files
    without a stamp (other writers) are read as they are."""
    import json

    what = what or f"{name} JSON"
    try:
        with open(path) as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise DataError(path, f"{what} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(path, f"{what} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(path, f"{what} is not a JSON object")
    check_product(data, path, name, JSON_VERSIONS[name])
    data.pop("FFDMNAME", None)
    data.pop("FFDMVER", None)
    return data


class Product:
    """Base class of fiberflow data products. Subclasses are dataclasses with a ``header`` field."""

    NAME = "product"
    VERSION = "1"
    #: True: the first image is the primary HDU with an EXTNAME (DESI frame/fiberflat/sky style);
    #: False: an empty primary HDU carries the header and every HDU is an extension.
    PRIMARY_IMAGE = True
    #: False: a float image with NaN or infinite values is refused on write (a step that computed
    #: no sound value fails instead of writing it; bad bins are ivar 0 and mask bits, as DESI's)
    ALLOW_NONFINITE = False

    @classmethod
    def datamodel(cls):
        """Attribute name -> :class:`HDU`, in file order (from the fields' declarations)."""
        cached = cls.__dict__.get("_datamodel")
        if cached is None:
            specs = [(f.name, f.metadata["hdu"]) for f in dataclasses.fields(cls) if "hdu" in f.metadata]
            order = sorted(range(len(specs)), key=lambda i: (specs[i][1].pos is None, specs[i][1].pos or 0, i))
            cached = {specs[i][0]: specs[i][1] for i in order}
            cls._datamodel = cached
        return cached

    # ------------------------------------------------------------------ hooks
    def validate(self, path=None):
        """Check shapes; raise DataError (with ``path``) when inconsistent."""

    def hdu_header(self, attr):
        """Extra header for the HDU of ``attr`` (besides BUNIT)."""
        return {}

    # ------------------------------------------------------------------ I/O
    def write(self, path):
        """Write the product atomically. Returns ``path``."""
        self.validate()
        header = with_base_provenance(getattr(self, "header", None))
        header["FFDMNAME"] = (self.NAME, "fiberflow data product")
        header["FFDMVER"] = (str(self.VERSION), "datamodel version")
        first = True
        with fitsutil.atomic_fits(path) as fx:
            if not self.PRIMARY_IMAGE:
                fitsutil.write_empty_primary(fx, header)
            for attr, spec in self.datamodel().items():
                value = getattr(self, attr)
                if value is None:
                    if spec.required:
                        raise ValueError(f"{self.NAME}: required {attr} ({spec.extname}) is None")
                    continue
                hdr = dict(self.hdu_header(attr))
                if spec.units:
                    hdr["BUNIT"] = spec.units
                if self.PRIMARY_IMAGE and first:
                    if spec.kind != "image":
                        raise TypeError(f"{self.NAME}: first HDU must be an image")
                    full = dict(header)
                    full.update(hdr)
                    hdr = full
                if spec.kind == "image":
                    arr = np.asarray(value)
                    if spec.dtype:
                        arr = arr.astype(spec.dtype, copy=False)
                    if not self.ALLOW_NONFINITE:
                        fitsutil.refuse_nonfinite(path, f"{self.NAME} HDU {spec.extname}", arr)
                    fitsutil.write_image(fx, arr, spec.extname, hdr, compress=spec.compress)
                else:
                    fitsutil.write_table(fx, value, spec.extname, hdr)
                first = False
        return path

    @classmethod
    def read(cls, path):
        """Read a product, checking required HDUs and shapes."""
        path = str(path)
        values = {}
        header = None
        with fitsutil.open_fits(path) as fx:
            names = fitsutil.hdu_names(fx)
            primary = fitsutil.header_dict(fx[0].read_header())
            cls.check_version(primary, path)  # another product or version: said before anything else
            if not cls.PRIMARY_IMAGE:
                header = primary
            for attr, spec in cls.datamodel().items():
                if spec.extname.upper() not in names:
                    if spec.required:
                        fitsutil.require_hdu(fx, spec.extname, path)
                    values[attr] = None
                    continue
                if spec.kind == "image":
                    data, hdr = fitsutil.read_image(fx, spec.extname, path, ndim=spec.ndim)
                    if spec.dtype:
                        data = data.astype(np.dtype(spec.dtype).newbyteorder("="), copy=False)
                    else:
                        data = fitsutil.native(data)
                else:
                    data, hdr = fitsutil.read_table(fx, spec.extname, path)
                values[attr] = data
                if header is None:
                    header = hdr
        obj = cls._from_hdus(values, header or {}, path)
        obj.validate(path)
        return obj

    @classmethod
    def check_version(cls, header, path):
        """See :func:`check_product`."""
        check_product(header, path, cls.NAME, cls.VERSION)

    @classmethod
    def _from_hdus(cls, values, header, path):
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in values.items() if k in fields}
        if "header" in fields:
            kwargs["header"] = header
        return cls(**kwargs)

    # ------------------------------------------------------------------ docs
    @classmethod
    def describe(cls):
        """The datamodel as a plain-text table."""
        lines = [f"{cls.NAME} (datamodel version {cls.VERSION})", ""]
        lines.append(f"{'EXTNAME':14s} {'kind':6s} {'dtype':6s} {'req':4s} {'units':28s} description")
        for attr, spec in cls.datamodel().items():
            lines.append(
                f"{spec.extname:14s} {spec.kind:6s} {spec.dtype or '-':6s} {'yes' if spec.required else 'no':4s} "
                f"{spec.units or '-':28s} {spec.descr}"
            )
        return "\n".join(lines)


def check_shape(path, name, arr, shape):
    """Raise DataError if ``arr.shape`` differs from ``shape`` (None entries match anything)."""
    if arr is None:
        return
    if len(arr.shape) != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
        raise DataError(path, f"{name} has shape {arr.shape}, expected {tuple(shape)}")
