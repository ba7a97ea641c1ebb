"""The simulator: raw nights in DESI's raw format with truth.

It must not import the reduction algorithms (preproc, extract, sky, ...): its truth is what the
pipeline is measured against. It uses only the foundation: data products, paths, instrument
presets and the PSF model.
"""
