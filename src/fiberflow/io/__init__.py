"""Data products: one reader and one writer each (DESI HDU names, dtypes and keywords).

Modules: ``raw`` (raw exposures), ``fibermap``, ``image`` (preproc), ``psf`` (GAUSS-HERMITE),
``frame`` (frame/sframe/cframe), ``calib`` (fiberflat, sky, fluxcalib, stdstars), ``spectra``
(spectra/coadd); ``fitsutil`` (atomic, checked FITS I/O) and ``datamodel`` (the product base).
Submodules are imported explicitly by their users to keep imports cheap.
"""
