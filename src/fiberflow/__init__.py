"""fiberflow: reduce DESI-like multi-fiber spectrograph data.

Importing the package is cheap on purpose: every Snakemake job is a fresh Python
process, so numba kernels and heavy modules are imported lazily where used.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
