"""IR-MAD against an independent NumPy / SciPy implementation, on random data and on the
real Landsat pair (Taizhou), plus the normalisation and error cases."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
from scipy.stats import chi2

from detect.normalize import orthogonal_regression
from detect.statistic import canonical, fit_irmad
from tiles.errors import InputError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "landsat_taizhou_nanjing"


def reference_irmad(x, y, valid, max_iter=30, tol=1e-3, start=None):
    """Nielsen (2007) IR-MAD written directly: weighted covariance, generalised eigh.

    ``start`` (m, A, B, rho) of an earlier fit: begin with its no-change weights."""
    p = x.shape[0]
    X = x[:, valid].astype(np.float64)
    Y = y[:, valid].astype(np.float64)
    Z = np.vstack([X, Y])
    w = np.ones(X.shape[1])
    rho_old = None
    if start is not None:
        m, A, B, rho0 = start
        mad = A.T @ (X - m[:p, None]) - B.T @ (Y - m[p:, None])
        w = chi2.sf(((mad / np.sqrt(2 * (1 - rho0))[:, None]) ** 2).sum(axis=0), p)
    for it in range(1, max_iter + 1):
        m = Z @ w / w.sum()  # the weighted mean and covariance (np.cov with aweights, bias)
        Zc = Z - m[:, None]
        c = (Zc * w) @ Zc.T / w.sum()
        s11, s22, s12 = c[:p, :p], c[p:, p:], c[:p, p:]
        lam, A = scipy.linalg.eigh(s12 @ np.linalg.solve(s22, s12.T), s11)  # ascending
        rho = np.sqrt(np.clip(lam, 0, 1))
        A = A / np.sqrt(np.diag(A.T @ s11 @ A))
        B = np.linalg.solve(s22, s12.T) @ A
        B = B / np.sqrt(np.diag(B.T @ s22 @ B))
        mad = A.T @ (X - m[:p, None]) - B.T @ (Y - m[p:, None])
        zz = ((mad / np.sqrt(2 * (1 - rho))[:, None]) ** 2).sum(axis=0)
        w = chi2.sf(zz, p)
        if rho_old is not None and np.max(np.abs(rho - rho_old)) < tol:
            break
        rho_old = rho
    return rho, A, B, it, s11, s12, m


def random_pair(seed, h=60, w=70, p=4, frac_change=0.1):
    rng = np.random.default_rng(seed)
    latent = rng.normal(0, 1, (p, h * w))
    mix = rng.normal(0, 1, (p, p)) + 3 * np.eye(p)
    x = 1000 + 150 * (mix @ latent) + rng.normal(0, 20, (p, h * w))
    y = 300 + 0.8 * x + rng.normal(0, 25, (p, h * w))
    ch = rng.random(h * w) < frac_change
    y[:, ch] += rng.normal(0, 400, (p, ch.sum()))
    return (x.reshape(p, h, w).astype(np.float32), y.reshape(p, h, w).astype(np.float32))


def check_against_reference(x, y, valid, names):
    idx = np.arange(x.shape[0], dtype=np.int64)
    fit = fit_irmad(x, y, idx, valid, names, max_iter=30, tol=1e-3, ridge=0.0)
    rho, A, B, it, s11, s12, _ = reference_irmad(x, y, valid)
    assert fit.iterations == it and fit.coarse_iterations == 0
    np.testing.assert_allclose(fit.rho, rho, rtol=1e-6, atol=1e-8)
    # canonical vectors agree up to the sign convention, which we check separately
    np.testing.assert_allclose(np.abs(fit.a), np.abs(A), rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(np.abs(fit.b), np.abs(B), rtol=1e-4, atol=1e-9)
    assert np.all(np.diff(fit.rho) >= 0)  # ascending
    # Nielsen's signs: sum of correlations of the before bands with each variate > 0 ...
    sd = np.sqrt(np.diag(s11))
    assert np.all(((s11 @ fit.a) / sd[:, None]).sum(axis=0) > 0)
    # ... and each pair of canonical variates positively correlated (= rho)
    np.testing.assert_allclose(np.diag(fit.a.T @ s12 @ fit.b), fit.rho, rtol=1e-5, atol=1e-8)
    return fit


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_irmad_matches_reference_on_random_data(seed):
    x, y = random_pair(seed)
    valid = np.random.default_rng(seed).random(x.shape[1:]) > 0.05
    fit = check_against_reference(x, y, valid, ["blue", "green", "red", "nir"])
    assert fit.converged
    assert fit.weights[~valid].max() == 0.0


def landsat_pair(site, before, after):
    """Bands 1-5 (blue, green, red, nir, swir) of a real Landsat pair, float32; skips without
    the data."""
    if not (DATA / site / before).exists():
        pytest.skip(f"real Landsat data not found at {DATA}")
    import rasterio

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dates = []
        for name in (before, after):
            with rasterio.open(DATA / site / name) as src:
                dates.append(src.read(indexes=[1, 2, 3, 4, 5]).astype(np.float32))
    return dates


def test_irmad_matches_reference_on_landsat():
    x, y = landsat_pair("Taizhou", "2000TM", "2003TM")
    valid = np.ones(x.shape[1:], bool)
    fit = check_against_reference(x, y, valid, ["blue", "green", "red", "nir", "swir"])
    assert fit.converged and 0.3 < fit.rho[0] < fit.rho[-1] < 1.0


def test_coarse_start_matches_reference_schedule():
    """Iterations on every 3rd row and column, then on all pixels from that transform, equal
    the reference run the same way."""
    x, y = random_pair(7, h=240, w=280)
    valid = np.random.default_rng(7).random(x.shape[1:]) > 0.05
    idx = np.arange(4, dtype=np.int64)
    fit = fit_irmad(x, y, idx, valid, ["blue", "green", "red", "nir"], ridge=0.0,
                    coarse_pixels=4096)  # int(sqrt(63800 / 4096)) = 3: every 3rd pixel
    xs, ys, vs = (np.ascontiguousarray(a[..., ::3, ::3]) for a in (x, y, valid))
    rho_c, A, B, it_c, _, _, m = reference_irmad(xs, ys, vs)
    rho, A, B, it, _, _, _ = reference_irmad(x, y, valid, start=(m, A, B, rho_c))
    assert (fit.coarse_iterations, fit.iterations) == (it_c, it)
    assert it < it_c  # the subsample did most of the work
    np.testing.assert_allclose(fit.rho, rho, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(np.abs(fit.b), np.abs(B), rtol=1e-4, atol=1e-9)


def test_coarse_start_judges_the_bands_on_all_pixels():
    """A band constant on the subsample but not on the whole sample is no error: the fit starts
    from equal weights on all pixels instead. Constant and duplicate bands of the whole sample
    still raise, with the subsample in use."""
    x, y = random_pair(8, h=240, w=280)
    valid = np.ones(x.shape[1:], bool)
    idx = np.arange(4, dtype=np.int64)
    names = ["blue", "green", "red", "nir"]
    xc = x.copy()
    xc[2, ::4, ::4] = 1234.0  # int(sqrt(67200 / 4096)) = 4: the subsample sees a constant red
    fit = fit_irmad(xc, y, idx, valid, names, coarse_pixels=4096)
    plain = fit_irmad(xc, y, idx, valid, names, coarse_pixels=0)
    assert fit.coarse_iterations == 0 and fit.iterations == plain.iterations
    np.testing.assert_array_equal(fit.rho, plain.rho)
    xc[2] = 1234.0
    with pytest.raises(InputError, match="'red' of the before image is constant"):
        fit_irmad(xc, y, idx, valid, names, coarse_pixels=4096)
    yd = y.copy()
    yd[1] = yd[0]
    with pytest.raises(InputError, match="'blue' and 'green' of the after image are duplicates"):
        fit_irmad(x, yd, idx, valid, names, coarse_pixels=4096)


def test_coarse_start_ends_near_the_fixed_point_on_landsat():
    """On the real Nanjing pair (640,000 px: the subsample is every 3rd pixel) the coarse
    start lands nearer the fixed point (the reference iterated to 1e-5) than iterating on all
    pixels from equal weights does (measured: 2.8e-3 after 21 + 6 iterations against 7.2e-3
    after 19; IR-MAD converges slowly, so a step below tol = 1e-3 is not 1e-3 from it)."""
    x, y = landsat_pair("Nanjing", "LT51200382000124BJC00_Nanjing",
                        "LT51200382002193BJC00_Nanjing")
    valid = np.ones(x.shape[1:], bool)
    idx = np.arange(5, dtype=np.int64)
    names = ["blue", "green", "red", "nir", "swir"]
    fixed = reference_irmad(x, y, valid, max_iter=500, tol=1e-5)[0]
    coarse = fit_irmad(x, y, idx, valid, names, ridge=0.0)
    plain = fit_irmad(x, y, idx, valid, names, ridge=0.0, coarse_pixels=0)
    assert coarse.coarse_iterations > 0 and plain.coarse_iterations == 0
    err_coarse = np.abs(coarse.rho - fixed).max()
    err_plain = np.abs(plain.rho - fixed).max()
    assert err_coarse < 5e-3 and err_coarse < err_plain
    assert coarse.iterations < plain.iterations


def test_ridge_only_perturbs_slightly():
    x, y = random_pair(3)
    c = np.cov(np.vstack([x.reshape(4, -1), y.reshape(4, -1)]).astype(np.float64), bias=True)
    _, _, r0 = canonical(c, 4, ridge=0.0)
    _, _, r1 = canonical(c, 4, ridge=1e-6)
    np.testing.assert_allclose(r0, r1, atol=1e-5)
    # a singular covariance (a band that is an exact combination of others) still factorises
    c2 = c.copy()
    c2[3, :4] = c2[:4, 3] = c[0, :4] + c[1, :4]
    c2[3, 3] = c[0, 0] + 2 * c[0, 1] + c[1, 1]
    c2[3, 4:] = c2[4:, 3] = c[0, 4:] + c[1, 4:]
    _, _, r2 = canonical(c2, 4, ridge=1e-6)
    assert np.all(np.isfinite(r2))


def test_orthogonal_regression_against_svd():
    """Total least squares slope = direction of the first principal axis (SVD)."""
    rng = np.random.default_rng(5)
    t = rng.normal(0, 300, 2000)
    x = 1000 + t + rng.normal(0, 30, t.size)
    y = 200 + 1.3 * t + rng.normal(0, 30, t.size)
    c = np.cov(x, y, bias=True)
    g, o = orthogonal_regression(x.mean(), y.mean(), c[0, 0], c[1, 1], c[0, 1])
    _, _, vt = np.linalg.svd(np.vstack([x - x.mean(), y - y.mean()]).T, full_matrices=False)
    slope = vt[0, 1] / vt[0, 0]
    np.testing.assert_allclose(g, slope, rtol=1e-10)
    np.testing.assert_allclose(o, y.mean() - slope * x.mean(), rtol=1e-10)
