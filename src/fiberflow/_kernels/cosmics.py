"""numba kernel of the PSF-sharpness cosmic-ray test (reference: fiberflow.steps.preproc.cosmic_candidates_numpy)."""

import math

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def cosmic_candidates_numba(image, var, valid, nsig, cfac, ratios):
    """See fiberflow.steps.preproc.cosmic_candidates_numpy (same arguments and result)."""
    ny, nx = image.shape
    out = np.zeros((ny, nx), dtype=np.bool_)
    dys = (0, 1, 1, 1)
    dxs = (1, 0, 1, -1)
    for y in prange(1, ny - 1):
        for x in range(1, nx - 1):
            if not valid[y, x]:
                continue
            p = image[y, x]
            sp = math.sqrt(max(var[y, x], 1e-12))
            for d in range(4):
                ya, xa = y - dys[d], x - dxs[d]
                yb, xb = y + dys[d], x + dxs[d]
                if not (valid[ya, xa] and valid[yb, xb]):
                    continue
                mean = 0.5 * (image[ya, xa] + image[yb, xb])
                smean = 0.5 * math.sqrt(max(var[ya, xa] + var[yb, xb], 1e-12))
                if p - mean > nsig * math.sqrt(sp * sp + smean * smean) and \
                        (p - cfac * sp) * ratios[d] > mean + cfac * smean:
                    out[y, x] = True
                    break
    return out
