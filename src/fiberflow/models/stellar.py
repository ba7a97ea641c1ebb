"""fiberflow's F-star model grid (standard stars), made from physical ingredients.

No stellar templates are available to the project, so fiberflow ships this parametric model
of F/G dwarfs and subgiants, used both to simulate standard stars and (later) to fit them.

How a spectrum ``f(lambda; Teff, logg, [Fe/H])`` is made (vacuum wavelengths):

1. **Continuum**: Planck ``B_lambda(Teff)``.
2. **Balmer jump**: below 3646 A the continuum is multiplied by ``1 - J`` with
   ``J = 0.25 + 0.25 * clip((Teff - 5000)/2500, 0, 1) - 0.04 (logg - 4)`` (bound-free H opacity
   grows with Teff over the F range and with lower gravity).
3. **Blue line blanketing**: ``exp(-tau_b)``, ``tau_b = 0.12 * 10**[Fe/H] * (6000/Teff)**3 *
   (4000/lambda)**4``, the cumulative effect of the metal-line forest in the near-UV.
4. **Balmer lines** (H-alpha to H10): Voigt-like optical-depth profiles: a Lorentzian of
   half-width ``gamma = 1.2 A * W(Teff) * 10**(0.25 (logg - 4)) * (lambda/4861)**2`` (Stark
   broadening grows with gravity) times an amplitude set so the equivalent width of H-beta is
   ``EW = 7.5 A * W(Teff)``, ``W = exp(-((Teff - 8500)/2300)**2)`` (Balmer strength peaks at
   early A types and falls through the F range); higher series members scale with their
   oscillator strengths.
5. **Metal lines** (Ca II H&K, Ca I 4227, CH G band, Fe I, Mg b, Na D, Ca II triplet and a
   fixed list of weaker Fe lines): Gaussian optical-depth profiles with equivalent widths
   ``EW0 * 10**(0.8 [Fe/H]) * (6000/Teff)**4 * (1 + 0.05 (4 - logg))``.

All absorption is applied as ``exp(-tau)`` so strong lines saturate. The grid itself
(:func:`grid_parameters`) spans Teff 5000-7500 K (250 K steps), logg 3.0-5.0 (0.5), [Fe/H]
-2.0..+0.5 (0.5). Flux is erg/s/cm^2/Angstrom per steradian-like unit; only its shape matters
(stars are scaled to their photometry).
"""

from __future__ import annotations

import numpy as np

H_C_K = 1.438777e8  # h c / k in Angstrom K

#: Balmer lines (vacuum Angstrom) and relative oscillator-strength weights (H-beta = 1)
BALMER = [
    (6564.61, 1.45), (4862.68, 1.0), (4341.69, 0.75), (4102.89, 0.6), (3971.20, 0.5),
    (3890.16, 0.42), (3836.47, 0.36), (3798.98, 0.3),
]

#: metal lines (vacuum Angstrom, solar equivalent width at 6000 K in Angstrom, gaussian sigma A)
METALS = [
    (3934.78, 6.0, 1.2), (3969.59, 4.5, 1.2),  # Ca II K, H
    (4227.92, 1.0, 0.5),  # Ca I
    (4305.0, 2.5, 6.0),  # G band (CH), a blend
    (4046.56, 0.35, 0.3), (4064.0, 0.3, 0.3), (4144.0, 0.3, 0.3), (4384.78, 0.45, 0.3),
    (4405.99, 0.35, 0.3), (4958.0, 0.25, 0.3), (5270.4, 0.35, 0.3), (5329.0, 0.3, 0.3),
    (5373.0, 0.25, 0.3), (5407.0, 0.25, 0.3), (5893.0, 0.2, 0.3), (6496.0, 0.15, 0.3),
    (5168.76, 0.6, 0.35), (5174.13, 0.7, 0.35), (5185.05, 0.8, 0.35),  # Mg b
    (5891.58, 0.6, 0.3), (5897.56, 0.45, 0.3),  # Na D
    (8500.36, 0.9, 0.6), (8544.44, 2.2, 0.8), (8664.52, 1.8, 0.8),  # Ca II triplet
    (8808.0, 0.2, 0.4), (6104.0, 0.12, 0.3), (6164.0, 0.15, 0.3), (6440.0, 0.12, 0.3),
]

GRID_TEFF = np.arange(5000.0, 7501.0, 250.0)
GRID_LOGG = np.arange(3.0, 5.01, 0.5)
GRID_FEH = np.arange(-2.0, 0.51, 0.5)


def planck(wave, teff):
    """Planck B_lambda up to a constant; wave (n,) Angstrom -> (n,)."""
    x = H_C_K / (wave * teff)
    return 1.0 / (wave**5 * np.expm1(np.minimum(x, 700.0)))


def _balmer_strength(teff):
    return np.exp(-(((teff - 8500.0) / 2300.0) ** 2))


def optical_depth(wave, teff, logg, feh):
    """Total absorption optical depth of the model (lines, blanketing), shape (nwave,)."""
    wave = np.asarray(wave, float)
    tau = 0.12 * 10.0**feh * (6000.0 / teff) ** 3 * (4000.0 / wave) ** 4
    w = _balmer_strength(teff)
    gscale = 10.0 ** (0.25 * (logg - 4.0))
    ew_hb = 7.5 * w
    for lam0, weight in BALMER:
        gamma = 1.2 * max(w, 0.05) * gscale * (lam0 / 4861.0) ** 2
        # area of tau (Lorentzian) = pi * amp * gamma; for weak lines EW ~ area
        amp = ew_hb * weight / (np.pi * gamma)
        d = wave - lam0
        tau = tau + amp / (1.0 + (d / gamma) ** 2)
    mscale = 10.0 ** (0.8 * feh) * (6000.0 / teff) ** 4 * (1.0 + 0.05 * (4.0 - logg))
    ascending = wave.ndim == 1 and wave.size > 1 and bool(np.all(wave[1:] >= wave[:-1]))
    for lam0, ew0, sig in METALS:
        half = 8 * sig + 1.0
        if ascending:  # the line's few bins by bisection, not a pass over the whole grid
            sel = slice(np.searchsorted(wave, lam0 - half, "right"), np.searchsorted(wave, lam0 + half, "left"))
        else:
            sel = np.abs(wave - lam0) < half
        d = wave[sel] - lam0
        if d.size:
            tau[sel] += ew0 * mscale / (np.sqrt(2 * np.pi) * sig) * np.exp(-0.5 * (d / sig) ** 2)
    return tau


def stellar_spectrum(wave, teff, logg, feh, rv=0.0):
    """Model spectrum of an F/G star.

    Parameters
    ----------
    wave : (nwave,)
        Observed vacuum wavelengths, Angstrom.
    teff, logg, feh : float
    rv : float
        Radial velocity in km/s (Doppler shift).

    Returns
    -------
    (nwave,)
        Flux density, arbitrary scale (normalised to 1 at 5500 A rest before absorption).
    """
    rest = np.asarray(wave, float) / (1.0 + rv / 299792.458)
    cont = planck(rest, teff) / planck(np.array([5500.0]), teff)[0]
    jump = 0.25 + 0.25 * np.clip((teff - 5000.0) / 2500.0, 0.0, 1.0) - 0.04 * (logg - 4.0)
    cont = np.where(rest < 3646.0, cont * (1.0 - jump), cont)
    return cont * np.exp(-optical_depth(rest, teff, logg, feh))


def grid_parameters():
    """Parameters of the shipped grid.

    Returns
    -------
    ndarray, structured (nmodel,): TEFF, LOGG, FEH
    """
    t, g, f = np.meshgrid(GRID_TEFF, GRID_LOGG, GRID_FEH, indexing="ij")
    out = np.zeros(t.size, dtype=[("TEFF", "f4"), ("LOGG", "f4"), ("FEH", "f4")])
    out["TEFF"], out["LOGG"], out["FEH"] = t.ravel(), g.ravel(), f.ravel()
    return out


def model_grid(wave):
    """The whole grid evaluated at ``wave``.

    Returns
    -------
    params : structured (nmodel,)
    flux : (nmodel, nwave)
    """
    params = grid_parameters()
    flux = np.stack([stellar_spectrum(wave, p["TEFF"], p["LOGG"], p["FEH"]) for p in params])
    return params, flux
