"""numba kernel adding weighted stamps into an image (reference: fiberflow.sim.project.accumulate_numpy)."""

from numba import njit


@njit(cache=True)
def accumulate_numba(image, stamps, x0, y0, weights):
    """image[y0+l, x0+k] += weights[s] * stamps[s, l, k] for every stamp s, clipped to the image.

    Serial on purpose: stamps overlap, and a fixed summation order keeps results bit-identical.
    """
    ny, nx = image.shape
    n, sy, sx = stamps.shape
    for s in range(n):
        w = weights[s]
        if w == 0.0:
            continue
        for l in range(sy):
            yy = y0[s] + l
            if yy < 0 or yy >= ny:
                continue
            for k in range(sx):
                xx = x0[s] + k
                if xx < 0 or xx >= nx:
                    continue
                image[yy, xx] += w * stamps[s, l, k]
    return image
