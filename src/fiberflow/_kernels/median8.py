"""numba kernel of the 8-neighbour median (reference: fiberflow.steps.preproc.ring_median_numpy)."""

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def ring_median_numba(padded):
    """Rank-4 (upper median) of the 8 neighbours of every pixel of ``padded[1:-1, 1:-1]``.

    Parameters
    ----------
    padded : (ny+2, nx+2) float
        Image padded by one pixel (edge values repeated).

    Returns
    -------
    (ny, nx) float64
    """
    ny, nx = padded.shape[0] - 2, padded.shape[1] - 2
    out = np.empty((ny, nx))
    for y in prange(ny):
        buf = np.empty(8)
        for x in range(nx):
            k = 0
            for dy in range(3):
                for dx in range(3):
                    if dy == 1 and dx == 1:
                        continue
                    v = padded[y + dy, x + dx]
                    j = k
                    while j > 0 and buf[j - 1] > v:
                        buf[j] = buf[j - 1]
                        j -= 1
                    buf[j] = v
                    k += 1
            out[y, x] = buf[4]
    return out
