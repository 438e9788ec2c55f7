"""IR-MAD: the iteratively reweighted multivariate alteration detection statistic.

Nielsen (2007), IEEE TIP 16(2): canonical correlation analysis of the two dates,
MAD variates ``MAD_i = a_i.x - b_i.y`` ordered by ascending canonical
correlation rho_i, variance 2 (1 - rho_i); ``Z = sum (MAD_i / sigma_i)^2`` is
chi-square with p degrees of freedom for unchanged pixels. Each iteration weighs
pixels by their no-change probability ``1 - F_chi2(p)(Z)`` and refits, until
``max |delta rho| < tol``.

Each iteration is one streaming Numba pass over the pixels in memory
(``detect.kernels.irmad_moments``): the no-change weights of the previous
transform and the weighted moments they give, with no weight image written; the
generalised eigenproblem is solved outside Numba with a Cholesky factor and ``eigh``.
On a large sample the iterations start on a regular subsample of it and go on over the
whole sample from the transform they reached (:data:`COARSE_PIXELS`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from detect import kernels
from tiles.errors import InputError


@dataclass
class IRMADFit:
    """Result of :func:`fit_irmad` (all float64; band order = ``idx``)."""

    mean_x: np.ndarray  # (p,) weighted mean of the before bands, DN
    mean_y: np.ndarray  # (p,) weighted mean of the after bands, DN
    a: np.ndarray  # (p, p) columns: canonical vectors of the before date
    b: np.ndarray  # (p, p) columns: canonical vectors of the after date
    rho: np.ndarray  # (p,) canonical correlations, ascending
    sigma: np.ndarray  # (p,) standard deviation of each MAD variate, sqrt(2 (1 - rho))
    iterations: int
    converged: bool
    weights: np.ndarray  # (h, w) float32 final no-change weights (0 where invalid)
    cov: np.ndarray  # (2p, 2p) final weighted joint covariance
    coarse_iterations: int = 0  # iterations on the regular subsample before ``iterations``


def moments(x, y, idx, weight, shift=None):
    """Weighted mean (2p,) and covariance (2p, 2p) of (x[idx], y[idx]) by one Numba pass.

    ``shift`` (2p,) is a provisional mean subtracted for precision; zeros if None.
    Returns (sum_w, mean, cov); the covariance is normalised by sum_w.
    """
    p = idx.size
    shift = np.zeros(2 * p) if shift is None else np.asarray(shift, np.float64)
    return _from_sums(*kernels.weighted_moments(x, y, idx, weight, shift), shift)


def _from_sums(sw, s1, s2, shift):
    """(sum_w, mean, cov) from the shifted raw moment sums of ``weighted_moments``."""
    q = s1.size
    if not sw > 0:
        return 0.0, np.full(q, np.nan), np.full((q, q), np.nan)
    m1 = s1 / sw
    cov = s2 / sw - np.outer(m1, m1)
    cov = 0.5 * (cov + cov.T)
    return sw, shift + m1, cov


def check_bands(mean, cov, p, names):
    """Raise InputError for a constant band or two duplicate bands of one date.

    ``names`` are the p band roles; ``mean``/``cov`` the joint moments (before
    bands then after bands).
    """
    var = np.diag(cov)
    for half, date in ((0, "before"), (1, "after")):
        for k in range(p):
            i = half * p + k
            if not var[i] > 1e-10 * max(mean[i] ** 2, 1.0):
                raise InputError(
                    f"band {names[k]!r} of the {date} image is constant (value {mean[i]:.6g}) "
                    "over the valid pixels: mark it '-' in bands, or check its nodata value")
        for k in range(p):
            for j in range(k + 1, p):
                i1, i2 = half * p + k, half * p + j
                r = cov[i1, i2] / np.sqrt(var[i1] * var[i2])
                if r > 1.0 - 1e-9:
                    raise InputError(
                        f"bands {names[k]!r} and {names[j]!r} of the {date} image are "
                        f"duplicates (correlation {r:.12f}): mark one of them '-' in bands")


def canonical(cov, p, ridge=1e-6):
    """Canonical correlation analysis of the joint covariance, Nielsen's conventions.

    Parameters
    ----------
    cov : (2p, 2p) array
        Joint covariance of (before, after).
    p : int
    ridge : float
        Added to each diagonal as a fraction of the mean variance of that date,
        so near-singular covariance stays positive definite.

    Returns
    -------
    a, b : (p, p) canonical vectors (columns) with unit-variance variates;
        the sum of correlations of each before-variate with the before bands is
        positive, and each pair a_i, b_i is positively correlated.
    rho : (p,) canonical correlations, ascending.
    """
    s11 = cov[:p, :p].copy()
    s22 = cov[p:, p:].copy()
    s12 = cov[:p, p:]
    s11 += np.eye(p) * ridge * np.trace(s11) / p
    s22 += np.eye(p) * ridge * np.trace(s22) / p
    # inverse Cholesky factors instead of triangular solves: OpenBLAS wakes its thread
    # pool for every tiny TRSM, which costs milliseconds on a busy machine
    l1i = _inverse_cholesky(s11)
    l2i = _inverse_cholesky(s22)
    s22_s21 = l2i.T @ (l2i @ s12.T)
    c = l1i @ (s12 @ s22_s21) @ l1i.T
    c = 0.5 * (c + c.T)
    lam, u = scipy.linalg.eigh(c)
    a = l1i.T @ u
    rho = np.sqrt(np.clip(lam, 0.0, 1.0))
    inv_sd = 1.0 / np.sqrt(np.diag(s11))
    s = (inv_sd[:, None] * (s11 @ a)).sum(axis=0)
    a = a * np.where(s < 0, -1.0, 1.0)
    b = s22_s21 @ a
    b = b / np.sqrt(np.einsum("ki,kl,li->i", b, s22, b))
    return a, b, rho


def _inverse_cholesky(s):
    """L^-1 for the lower Cholesky factor L of the symmetric positive definite ``s``."""
    lower = scipy.linalg.cholesky(s, lower=True)
    inv, info = scipy.linalg.lapack.dtrtri(lower, lower=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"singular Cholesky factor (dtrtri info {info})")
    return np.tril(inv)


def mad_sigma(rho):
    """Standard deviation sqrt(2 (1 - rho)) of each MAD variate (floored above 0)."""
    return np.sqrt(np.maximum(2.0 * (1.0 - np.asarray(rho, float)), 1e-12))


def robust_sigma(x, y, idx, valid, mean_x, mean_y, a, b):
    """Robust standard deviation of each MAD variate over the valid pixels.

    1.4826 x the median absolute deviation from the median: the no-change spread
    as long as fewer than half the pixels changed. IR-MAD's own sigma comes from
    the chi-square-weighted covariance, and weighting by 1 - F(Z) favours small Z:
    for Gaussian noise and p = 4 the weighted variance is 5/8 of the true one, and
    real, heavy-tailed scenes are worse, so the chi-square test on IR-MAD's sigma
    flags far more than ``significance`` of the unchanged pixels.

    Returns (p,) float64.
    """
    _, deviation = kernels.variate_median_deviation(
        x, y, idx, valid, np.asarray(mean_x, np.float64), np.asarray(mean_y, np.float64),
        np.asarray(a, np.float64), np.asarray(b, np.float64))
    return 1.4826 * deviation


COARSE_PIXELS: int = 65_536
"""IR-MAD first iterates on a regular subsample of about this many valid pixels, then goes on
from that transform over all the pixels. The fixed point is the same; the whole sample then
needs a few passes (2-7 measured) instead of 15-30, and ends nearer the fixed point (tested on
the Landsat Nanjing pair)."""


def fit_irmad(x, y, idx, valid, names, max_iter=30, tol=1e-3, ridge=1e-6,
              coarse_pixels=COARSE_PIXELS):
    """Iterate IR-MAD on the pixels in memory until the correlations settle.

    Parameters
    ----------
    x, y : (nb, h, w) float32
        Before and after, DN.
    idx : (p,) int64
        Bands of the statistic.
    valid : (h, w) bool
        Pixels to use (valid in both dates, not cloud); the others weigh zero.
    names : sequence of str
        Role of each band of ``idx`` (for error messages).
    max_iter : int
        Maximum number of reweighting iterations (on the subsample, then again on all pixels).
    tol : float
        Stop when max |delta rho| < tol.
    ridge : float
        See :func:`canonical`.
    coarse_pixels : int
        With at least 4 x this many valid pixels, iterate first on every k-th row and column
        (about this many valid pixels); 0 never does.

    Returns
    -------
    IRMADFit
    """
    p = idx.size
    # provisional mean from a coarse subsample, for numerically safe moment sums
    sub = valid[::7, ::7]
    if sub.any():
        shift = np.concatenate([x[:, ::7, ::7][idx][:, sub].mean(axis=1),
                                y[:, ::7, ::7][idx][:, sub].mean(axis=1)]).astype(np.float64)
        shift = np.nan_to_num(shift)
    else:
        shift = np.zeros(2 * p)
    state, coarse_it = None, 0
    n = int(np.count_nonzero(valid))
    step = int(np.sqrt(n / coarse_pixels)) if coarse_pixels > 0 else 1
    if step >= 2:
        xs, ys, vs = (np.ascontiguousarray(a[..., ::step, ::step]) for a in (x, y, valid))
        if np.count_nonzero(vs) >= coarse_pixels // 4:
            try:
                state, coarse_it, _ = _iterate(xs, ys, idx, vs, names, None, shift, max_iter,
                                               tol, ridge)
            except InputError:
                pass  # judge the bands on all the pixels, not on the subsample
    # on all the pixels, from the subsample's transform
    (mean, a, b, rho, sigma, cov), it, converged = _iterate(
        x, y, idx, valid, names, state, shift, max_iter, tol, ridge)
    _, weight = kernels.mad_chi2(x, y, idx, valid, mean[:p], mean[p:], a, b, 1.0 / sigma)
    return IRMADFit(mean_x=mean[:p], mean_y=mean[p:], a=a, b=b, rho=rho, sigma=sigma,
                    iterations=it, converged=converged, weights=weight, cov=cov,
                    coarse_iterations=coarse_it)


def _iterate(x, y, idx, valid, names, state, shift, max_iter, tol, ridge):
    """IR-MAD iterations from ``state`` (mean, a, b, rho, sigma, cov), or from equal weights
    (and the band checks) when it is None. Returns (state, iterations, converged)."""
    p = idx.size
    rho_old = None  # two passes here at least: the subsample's rho may match by chance
    if state is not None:
        shift = state[0]
    it = 0
    for it in range(1, max_iter + 1):
        # one pass per iteration: the weights of the last transform and their moments
        if state is None:
            sums = kernels.weighted_moments(x, y, idx, valid.astype(np.float32), shift)
        else:
            mean, a, b, _, sigma, _ = state
            sums = kernels.irmad_moments(x, y, idx, valid, mean[:p], mean[p:], a, b, 1.0 / sigma)
        sw, mean, cov = _from_sums(*sums, shift)
        if not sw > 0:
            raise InputError("IR-MAD has no pixel with weight > 0: the valid mask is empty "
                             "or every pixel is NaN; check nodata and cloud masks")
        if state is None:
            check_bands(mean, cov, p, names)
        shift = mean
        a, b, rho = canonical(cov, p, ridge)
        state = (mean, a, b, rho, mad_sigma(rho), cov)
        if rho_old is not None and np.max(np.abs(rho - rho_old)) < tol:
            return state, it, True
        rho_old = rho
    return state, it, False
