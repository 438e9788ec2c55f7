"""Radiometric normalisation of the after date to the before date.

Per band, an orthogonal (total least squares) regression ``before = gain * after
+ offset`` on invariant pixels, i.e. pixels that IR-MAD gives a high no-change
probability (Canty & Nielsen 2008). Orthogonal regression treats both dates as
noisy, so the fit is symmetric, unlike ordinary least squares.
"""
from __future__ import annotations

import numpy as np


def orthogonal_regression(mean_x, mean_y, var_x, var_y, cov_xy):
    """Slope and intercept of the orthogonal regression of y on x from moments.

    Parameters
    ----------
    mean_x, mean_y, var_x, var_y, cov_xy : array_like
        Per-band (weighted) means, variances and covariance.

    Returns
    -------
    (gain, offset) : numpy.ndarray float64
        ``y ~ gain * x + offset``; gain = 1, offset = mean_y - mean_x where the
        covariance vanishes (no information: fall back to a shift).
    """
    mx, my = np.asarray(mean_x, float), np.asarray(mean_y, float)
    sxx, syy, sxy = np.asarray(var_x, float), np.asarray(var_y, float), np.asarray(cov_xy, float)
    d = syy - sxx
    ok = np.abs(sxy) > 1e-12 * np.maximum(sxx + syy, 1e-300)
    safe = np.where(ok, sxy, 1.0)
    gain = np.where(ok, (d + np.sqrt(d * d + 4.0 * sxy * sxy)) / (2.0 * safe), 1.0)
    offset = my - gain * mx
    return gain, offset


def normalisation_from_moments(mean, cov, p):
    """Gains/offsets mapping after to before from the joint moments of (before, after).

    Parameters
    ----------
    mean : (2p,) array, before bands then after bands.
    cov : (2p, 2p) array, joint covariance over the invariant pixels.
    p : int, number of bands.

    Returns
    -------
    (gain, offset) : (p,) float64 each; ``before ~ gain * after + offset``.
    """
    mean = np.asarray(mean, float)
    cov = np.asarray(cov, float)
    k = np.arange(p)
    return orthogonal_regression(mean[p:], mean[:p], cov[p + k, p + k], cov[k, k], cov[k, p + k])
