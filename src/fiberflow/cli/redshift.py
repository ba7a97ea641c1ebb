"""``fiberflow redrock``: redshifts of one coadd (HEALPix pixel or tile petal) with DESI's redrock.

DESI's own fitter (redrock, pinned in the dependencies) runs on the coadd with the redrock
templates that ship with fiberflow (``fiberflow.reference.redrock_template_dir``, or the
configuration's ``redshift.templates``) and writes DESI's ``redrock-*.fits`` (REDSHIFTS,
FIBERMAP, EXP_FIBERMAP, TSNR2) atomically; the primary header gains fiberflow's provenance, the
redrock version (RRVER) and the template files used (RRTMPnn). With ``--details`` redrock's
per-template chi2 scans go to an HDF5 file. Under MPI (``srun --mpi=pmi2 -n N``) the targets
are spread over the ranks; otherwise ``--ncpu`` processes, and a coadd of more than
``redshift.max_targets`` targets is fitted in slices one after the other (redrock's memory grows
with the targets of a call), the slices' files merged into the one redrock writes.
"""

from __future__ import annotations

import contextlib
import os
import time

import numpy as np


def add_arguments(p, name):
    p.add_argument("--config", default=None, help="workflow configuration (redshift section)")
    p.add_argument("-i", "--infile", required=True, help="coadd-*.fits (HEALPix pixel or tile petal)")
    p.add_argument("-o", "--outfile", required=True, help="redrock-*.fits")
    p.add_argument("--details", default=None, help="also write redrock's chi2 scans (rrdetails-*.h5)")
    p.add_argument("--ncpu", type=int, default=1, help="processes when not under MPI (default 1)")
    p.add_argument("--max-targets", type=int, default=None,
                   help="targets per redrock call when not under MPI, the slices' files merged "
                        "(default: the configuration's redshift.max_targets; 0: all at once)")


def template_files(folder):
    """The redrock template files of a folder (``rrtemplate-*.fits``), sorted; DataError when none."""
    from ..errors import DataError

    files = sorted(f for f in os.listdir(folder) if f.startswith("rrtemplate-") and f.endswith(".fits")) \
        if os.path.isdir(folder) else []
    if not files:
        raise DataError(folder, "no redrock template (rrtemplate-*.fits) in this folder")
    return [os.path.join(folder, f) for f in files]


def _check_coadd(path):
    """A coadd readable as DESI spectra with at least one target; DataError otherwise."""
    from ..errors import DataError
    from ..io.spectra import read_spectra_meta

    header, fibermap, exp_fibermap, _scores, bands = read_spectra_meta(path)
    if exp_fibermap is None:
        raise DataError(path, "has no EXP_FIBERMAP: redrock runs on coadds (coadd-*.fits), not on spectra files")
    if fibermap is None or len(fibermap) == 0 or not bands:
        raise DataError(path, "has no spectrum to fit")
    return header, len(fibermap)


def _fit_in_slices(rrdesi, argv, ntarget, maxt, outfile, details, exp_targetids):
    """redrock on consecutive slices of at most ``maxt`` targets, one after the other (the peak
    memory of one call grows with its targets), and the slices' files merged into ``outfile``
    (and ``details``) as one call would have written them."""
    import tempfile

    from ..io.zcatalog import merge_redrock, merge_rrdetails

    nslice = -(-ntarget // maxt)
    bounds = np.linspace(0, ntarget, nslice + 1).round().astype(int)
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(outfile)), prefix=".rrslices-") as tmpdir:
        parts, dparts = [], []
        for k, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
            parts.append(os.path.join(tmpdir, f"redrock-{k}.fits"))
            dparts.append(os.path.join(tmpdir, f"rrdetails-{k}.h5"))
            print(f"redrock: targets {lo}..{hi - 1} of {ntarget} (slice {k + 1} of {nslice})", flush=True)
            rrdesi(argv + ["--mintarget", str(lo), "--ntargets", str(hi - lo), "-o", parts[-1]]
                   + (["-d", dparts[-1]] if details else []), comm=None)
        merge_redrock(parts, outfile, exp_targetids)
        if details:
            merge_rrdetails(dparts, details)


def run(args):
    from .. import reference
    from ..config import load_config
    from ..errors import DataError
    from ..io import fitsutil
    from ..parallel import mpi_comm
    from ..provenance import step_header
    from .common import prod_root

    t0 = time.time()
    cfg = load_config(args.config)
    folder = cfg["redshift"]["templates"] or reference.redrock_template_dir()
    templates = template_files(folder)
    _, ntarget = _check_coadd(args.infile)
    comm = mpi_comm()
    rank = 0 if comm is None else comm.rank
    import fitsio
    import redrock
    from redrock.external.desi import rrdesi

    argv = ["-i", args.infile, "-t", *templates]
    if comm is None:
        argv += ["--mp", str(max(1, args.ncpu))]
    with contextlib.ExitStack() as stack:
        tmp = tmp_details = None
        if rank == 0:  # only rank 0 writes; the others need the same command line
            tmp = stack.enter_context(fitsutil.atomic_path(args.outfile))
            tmp_details = stack.enter_context(fitsutil.atomic_path(args.details)) if args.details else None
        if comm is not None:
            tmp, tmp_details = comm.bcast((tmp, tmp_details), root=0)
        maxt = cfg["redshift"]["max_targets"] if args.max_targets is None else args.max_targets
        if comm is None and 0 < maxt < ntarget:
            exp_tids = fitsio.read(args.infile, "EXP_FIBERMAP", columns=["TARGETID"])["TARGETID"]
            _fit_in_slices(rrdesi, argv, ntarget, maxt, tmp, tmp_details, exp_tids)
        else:
            rrdesi(argv + ["-o", tmp] + (["-d", tmp_details] if tmp_details else []), comm=comm)
        if rank == 0:
            if not os.path.exists(tmp):
                raise DataError(args.infile, "redrock wrote no output")
            opts = {"ncpu": args.ncpu, "mpi": 0} if comm is None else {"mpi": comm.size}
            if comm is None:
                opts["max_targets"] = maxt  # under MPI the ranks share the targets: no slices
            hdr = step_header("redrock", opts,
                              [args.infile], cfg, prod_root(cfg))
            hdr["RRVER"] = (redrock.__version__, "redrock version")
            for k, t in enumerate(templates):
                hdr[f"RRTMP{k:02d}"] = (os.path.basename(t), "redrock template file")
            with fitsio.FITS(tmp, "rw") as fx:
                for key, val in hdr.items():
                    value, comment = val if isinstance(val, tuple) else (val, "")
                    fx[0].write_key(key, value, comment=comment)
    if rank == 0:
        print(f"redrock {os.path.basename(args.infile)}: {ntarget} targets, {len(templates)} templates, redrock "
              f"{redrock.__version__} [{time.time() - t0:.1f} s] -> {args.outfile}")
    return 0
