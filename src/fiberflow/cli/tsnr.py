"""``fiberflow tsnr-ensemble``: build the template signal-to-noise ensembles from the shipped
templates (see :mod:`fiberflow.models.tsnr` for the method).

The tracers, with DESI's tile-QA redshift ranges and the simulator's typical brightness:

====== ========================================= =========== ==================================
tracer templates                                 redshifts   normalisation
====== ========================================= =========== ==================================
BGS    DESI LRG lite templates (all, in turn)    0.05 - 0.4  r = 19.5 (DESI's BGS nominal)
ELG    flat-f_nu continuum + ELG emission lines  0.6 - 1.6   g = 23.0, [OII] 1e-16 erg/s/cm^2,
                                                             60 km/s
LRG    DESI LRG lite templates (all, in turn)    0.4 - 1.0   z = 20.2
QSO    SDSS quasar eigenspectra with the         0.9 - 2.1   r = 21.0, mean Lyman-alpha forest
       coefficients of real SDSS quasars
====== ========================================= =========== ==================================

``--snr2time FILE`` (a previous ensemble file) carries its EFFTIME calibration over;
``benchmarks/calibrate_tsnr.py`` measures a new one.
"""

from __future__ import annotations

import numpy as np

#: observed grid of the ensembles [Angstrom]
WAVE = np.arange(3500.0, 10600.0, 1.0)
NZ = 400

SPECS = {
    "BGS": {"templates": "lrg_templates_v2.0-lite", "zmin": 0.05, "zmax": 0.4, "band": "r", "mag": 19.5},
    "ELG": {"templates": "ELG lines, flat f_nu continuum", "zmin": 0.6, "zmax": 1.6, "band": "g", "mag": 23.0},
    "LRG": {"templates": "lrg_templates_v2.0-lite", "zmin": 0.4, "zmax": 1.0, "band": "z", "mag": 20.2},
    "QSO": {"templates": "qso_templates_v2.0-lite SDSS_EIGEN/PCA", "zmin": 0.9, "zmax": 2.1, "band": "r", "mag": 21.0},
}
ELG_OII = 1e-16
ELG_SIGV = 60.0


def add_arguments(p, name):
    p.add_argument("-o", "--outfile", required=True, help="ensemble FITS file to write")
    p.add_argument("--snr2time", default=None,
                   help="ensemble file whose SNR2TIME (EFFTIME calibration) the new file keeps")


def build(names=None):
    """The ensembles of ``names`` (default: all of :data:`SPECS`) on :data:`WAVE`.

    Returns
    -------
    dflux2 : (ntracer, nwave)
    tracers : structured (ntracer,), :data:`fiberflow.io.tsnr.TRACER_DTYPE` with SNR2TIME 0
    """
    specs = {n: SPECS[n] for n in (names or SPECS)}
    from ..io.tsnr import TRACER_DTYPE
    from ..models import tsnr
    from ..sim import library

    lrg_wave, lrg_flux = library.lrg_templates()
    qwave, eigen, coeff, qz = library.qso_eigenspectra()
    out = np.zeros((len(specs), len(WAVE)))
    tab = np.zeros(len(specs), TRACER_DTYPE)
    for i, (name, s) in enumerate(specs.items()):
        zs = np.linspace(s["zmin"], s["zmax"], NZ)
        band = "grz".index(s["band"])
        if name in ("BGS", "LRG"):
            out[i] = tsnr.template_ensemble(WAVE, lrg_wave, lrg_flux, zs, band, s["mag"])
        elif name == "QSO":
            near = np.flatnonzero((qz >= s["zmin"]) & (qz <= s["zmax"]))
            rest = coeff[near[np.linspace(0, near.size - 1, 50).astype(int)]] @ eigen
            out[i] = tsnr.template_ensemble(WAVE, qwave, rest, zs, band, s["mag"], forest=True)
        else:
            out[i] = tsnr.elg_ensemble(WAVE, zs, ELG_OII, ELG_SIGV, s["mag"])
        tab[i] = (name, 0.0, s["zmin"], s["zmax"], NZ, s["band"], s["mag"], s["templates"])
    return out, tab


def run(args):
    from ..io.tsnr import TsnrEnsemble, read_ensemble

    dflux2, tab = build()
    if args.snr2time:
        old = read_ensemble(args.snr2time)
        for row in tab:
            if row["TRACER"] in old.names:
                row["SNR2TIME"] = old.snr2time(row["TRACER"])
    hdr = {"SMOOTH": (100.0, "running median removed from the templates [A]"),
           "ESMOOTH": (20.0, "running mean of the ensemble DFLUX2 [A]")}
    TsnrEnsemble(WAVE, dflux2.astype("f4"), tab, hdr).write(args.outfile)
    for row in tab:
        print(f"{row['TRACER']}: z {row['ZMIN']:.2f}-{row['ZMAX']:.2f}, {row['BAND']} = {row['MAG']:.1f}, "
              f"SNR2TIME {row['SNR2TIME']:.4g} s")
    print(f"tsnr-ensemble -> {args.outfile}")
    return 0
