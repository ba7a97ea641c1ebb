"""The reduction steps, in production order: preproc, psffit, traceshift, extract (boxcar),
fiberflat, sky, stdstars, fluxcalib, regroup and coadd. Each takes arrays and products and
returns products; no step module imports another (shared numerics live in fiberflow.linalg,
shared physics in fiberflow.models)."""
