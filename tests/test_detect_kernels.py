"""Every Numba kernel of detect.kernels against a plain NumPy / SciPy reference.

Random inputs and edge cases: NaN values, all-invalid masks, a single pixel.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
from scipy.stats import chi2

from detect import kernels
from detect.detector import DetectParams
from detect.rules import rule_vector

RNG = np.random.default_rng(42)


# ---------------------------------------------------------------- references
def ref_moments(x, y, idx, w, shift):
    v = np.concatenate([x[idx], y[idx]]).reshape(2 * idx.size, -1).astype(np.float64)
    w = w.ravel().astype(np.float64)
    ok = (w > 0) & np.isfinite(v).all(axis=0)
    v = v[:, ok] - shift[:, None]
    w = w[ok]
    return w.sum(), (v * w).sum(axis=1), (v * w) @ v.T


def ref_mad(x, y, idx, valid, mx, my, a, b, inv_sigma):
    p = idx.size
    dx = x[idx].reshape(p, -1).astype(np.float64) - mx[:, None]
    dy = y[idx].reshape(p, -1).astype(np.float64) - my[:, None]
    mad = (a.T @ dx - b.T @ dy) * inv_sigma[:, None]
    z = (mad ** 2).sum(axis=0).reshape(valid.shape)
    z[~valid] = np.nan
    w = chi2.sf(z, p)
    w[~np.isfinite(z)] = 0.0
    return z, w


def nd(a, b):
    s = a + b
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(s > 0, (a - b) / np.where(s > 0, s, 1), 0.0)


def ref_change(x, y, ys, valid, idx, mx, my, a, b, inv_sigma, gain, offset, roles, scale, rule):
    """The decision of detect.kernels.change_pixels written as whole-array NumPy."""
    z, _ = ref_mad(x, y, idx, valid, mx, my, a, b, inv_sigma)
    prob = chi2.cdf(z, idx.size)
    xb = x.astype(np.float64) * scale
    ya = (y.astype(np.float64) * gain[:, None, None] + offset[:, None, None]) * scale
    B, G, R, N, S = roles
    vb, va = nd(xb[N], xb[R]), nd(ya[N], ya[R])
    wb, wa = nd(xb[G], xb[N]), nd(ya[G], ya[N])
    vis = [k for k in (B, G, R) if k >= 0]
    brb, bra = xb[vis].mean(axis=0), ya[vis].mean(axis=0)
    dv, dw, dbr = va - vb, wa - wb, bra - brb
    sa = nd(ya[R], ya[B] if B >= 0 else np.zeros_like(va))  # no blue band: reads as 0
    k = kernels

    def evidence(f):
        e = (dbr > f * rule[k.R_BRIGHT_GAIN]) & (va < rule[k.R_VEG_NDVI])
        e |= (dv < -f * rule[k.R_VEG_LOSS]) & (va < rule[k.R_VEG_NDVI])
        e |= (wa > rule[k.R_WATER_NDWI]) & (dw > f * rule[k.R_NDWI_GAIN])
        e |= (dbr < -f * rule[k.R_DARK_DROP]) & (wa <= rule[k.R_WATER_NDWI]) & (va < rule[k.R_VEG_NDVI])
        if S >= 0:
            nbb, nba = nd(xb[S], xb[N]), nd(ya[S], ya[N])
            e |= (nba > 0) & (nba - nbb > f * rule[k.R_NDBI_GAIN])
        return e

    weak = evidence(1.0)
    strong = weak & evidence(rule[k.R_STRONG_FACTOR])
    sig = z > rule[k.R_ZCRIT]
    veg_gain = (dv > rule[k.R_VEG_GAIN]) & (va >= rule[k.R_BARE_NDVI]) & (wa <= rule[k.R_WATER_NDWI])
    # the flood rule reads the NDVI of the smoothed after spectrum
    sva = nd(ys[1] * gain[N] + offset[N], ys[0] * gain[R] + offset[R])  # ys: red, nir
    mild = dbr < rule[k.R_CROP_BRIGHT_MAX]
    harvest = (mild & (vb >= rule[k.R_VEG_NDVI]) & (va >= rule[k.R_RESIDUE_NDVI])
               & (sa >= rule[k.R_SOIL_REDNESS]))
    flood = mild & (vb >= rule[k.R_FARM_NDVI]) & (wa > rule[k.R_WET_NDWI]) & (sva > rule[k.R_FLOOD_NDVI])
    crop = harvest | flood
    changed = sig & ~veg_gain & ~crop & (weak | (rule[k.R_REQUIRE_EVIDENCE] < 0.5))
    if rule[k.R_LANDUSE] < 0.5:
        changed = sig
    flags = (sig * k.FLAG_SIG + weak * k.FLAG_EVIDENCE + strong * k.FLAG_STRONG
             + veg_gain * k.FLAG_VEG_GAIN + crop * k.FLAG_CROP + changed * k.FLAG_CHANGED)
    ok = valid & np.isfinite(z)
    flags = np.where(ok, flags, 0).astype(np.uint8)
    out = [prob, dv, dw, dbr, va, wa, bra, sa]
    out = [np.where(ok, o, np.nan).astype(np.float32) for o in out]
    return (*out, flags)


def ref_box_mean_np(x, valid, radius):
    """Vectorised windowed mean over valid pixels: sums of shifted, zero-padded arrays."""
    nb, h, w = x.shape
    xv = np.pad(np.where(valid, x, 0).astype(np.float64), ((0, 0), (radius, radius), (radius, radius)))
    vv = np.pad(valid.astype(np.float64), radius)
    s = np.zeros((nb, h, w))
    n = np.zeros((h, w))
    for di in range(2 * radius + 1):
        for dj in range(2 * radius + 1):
            s += xv[:, di:di + h, dj:dj + w]
            n += vv[di:di + h, dj:dj + w]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, s / n, np.nan).astype(np.float32)


def ref_vote_decide(flags, valid, radius, require):
    """The decision with the crop vote, as whole-array NumPy."""
    k = kernels
    crop = ((flags & k.FLAG_CROP) > 0) & valid
    pad = lambda a: np.pad(a.astype(np.int32), radius)
    cp, vp = pad(crop), pad(valid)
    h, w = flags.shape
    a = np.zeros((h, w), np.int32)
    n = np.zeros((h, w), np.int32)
    for di in range(2 * radius + 1):
        for dj in range(2 * radius + 1):
            a += cp[di:di + h, dj:dj + w]
            n += vp[di:di + h, dj:dj + w]
    seasonal = ((flags & k.FLAG_CROP) > 0) & (2 * a > n)
    ok = valid & ((flags & k.FLAG_SIG) > 0) & ((flags & k.FLAG_VEG_GAIN) == 0) & ~seasonal
    if require:
        ok &= (flags & k.FLAG_EVIDENCE) > 0
    return ok


def ref_erode(m, lo, hi):
    h, w = m.shape
    pad = hi - lo + 1
    p = np.pad(m, pad, constant_values=True)
    out = np.ones_like(m)
    for di in range(lo, hi + 1):
        for dj in range(lo, hi + 1):
            out &= p[pad + di:pad + di + h, pad + dj:pad + dj + w]
    return out


def ref_dilate(m, lo, hi):
    h, w = m.shape
    pad = hi - lo + 1
    p = np.pad(m, pad, constant_values=False)
    out = np.zeros_like(m)
    for di in range(lo, hi + 1):
        for dj in range(lo, hi + 1):
            out |= p[pad - di:pad - di + h, pad - dj:pad - dj + w]
    return out


def square_offsets(size):
    """(lo, hi) offsets of a square structuring element of ``size`` pixels per side."""
    lo = -(size // 2)
    return lo, size - 1 + lo


def ref_clean_mask(mask, valid, open_px, close_px):
    """Opening, then closing, by squares of side open_px / close_px (1 skips a step), as
    whole-array NumPy: invalid pixels and pixels beyond the array are unknown, they never
    erode a neighbour and are never set (the morphology of kernels.clean_decision)."""
    m = mask & valid
    if open_px > 1:
        lo, hi = square_offsets(open_px)
        m = ref_dilate(ref_erode(m | ~valid, lo, hi) & valid, lo, hi) & valid
    if close_px > 1:
        lo, hi = square_offsets(close_px)
        m = ref_erode(ref_dilate(m, lo, hi) | ~valid, lo, hi) & valid
    return m


# ---------------------------------------------------------------- tests
@pytest.mark.parametrize("dof", list(range(1, 13)))
def test_chi2_sf_matches_scipy(dof):
    xs = np.concatenate([RNG.uniform(0, 5 * dof, 200), [0.0, 1e-12, 1e-3, 50.0, 300.0, 1400.0, 1e6]])
    got = np.array([kernels.chi2_sf(float(x), dof) for x in xs])
    np.testing.assert_allclose(got, chi2.sf(xs, dof), rtol=1e-10, atol=1e-300)
    assert kernels.chi2_sf(-1.0, dof) == 1.0
    assert np.isnan(kernels.chi2_sf(np.nan, dof))
    assert kernels.chi2_sf(np.inf, dof) == 0.0


def test_z_row_four_bands_equals_the_padded_sum_bit_for_bit():
    """Four bands skip the padding's zero coefficients: the same Z to the bit, NaN where a value
    is NaN or infinite (the padded sum meets inf * 0 there)."""
    nb, h, w = 4, 3, 301
    x = RNG.uniform(0, 4000, (nb, h, w)).astype(np.float32)
    y = RNG.uniform(0, 4000, (nb, h, w)).astype(np.float32)
    for arr, value in ((x, np.nan), (y, np.nan), (x, np.inf), (y, -np.inf)):
        arr[RNG.integers(0, nb, 9), RNG.integers(0, h, 9), RNG.integers(0, w, 9)] = value
    idx = np.array([2, 0, 3, 1], np.int64)
    a, b = RNG.normal(0, 0.01, (2, 4, 4))
    ip, mx, my, ca, cb = kernels._padded(idx, RNG.uniform(500, 2000, 4),
                                         RNG.uniform(500, 2000, 4), a, b,
                                         RNG.uniform(0.5, 2, 4))
    for r in range(h):
        want = np.empty(w)
        got = np.empty(w)
        kernels._z_row_padded(x, y, r, ip, mx, my, ca, cb, want)
        kernels._z_row(x, y, r, 4, ip, mx, my, ca, cb, got)
        np.testing.assert_array_equal(got, want)
        bad = ~np.isfinite(x[:, r]).all(0) | ~np.isfinite(y[:, r]).all(0)
        assert bad.any() and np.isnan(got[bad]).all() and np.isfinite(got[~bad]).all()


def _stack(nb, h, w, nan_frac=0.0):
    x = RNG.uniform(200, 3000, (nb, h, w)).astype(np.float32)
    if nan_frac:
        x[RNG.random(x.shape) < nan_frac] = np.nan
    return x


@pytest.mark.parametrize("shape", [(4, 37, 53), (5, 1, 1), (4, 130, 3)])
def test_weighted_moments(shape):
    nb, h, w = shape
    x, y = _stack(nb, h, w, 0.05), _stack(nb, h, w, 0.05)
    idx = np.arange(nb, dtype=np.int64)[::-1].copy()
    wt = RNG.random((h, w)).astype(np.float32)
    wt[RNG.random((h, w)) < 0.2] = 0.0
    shift = RNG.uniform(0, 1000, 2 * nb)
    got = kernels.weighted_moments(x, y, idx, wt, shift)
    ref = ref_moments(x, y, idx, wt, shift)
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, rtol=1e-9, atol=1e-6)


def test_weighted_moments_all_invalid():
    x, y = _stack(4, 5, 6), _stack(4, 5, 6)
    sw, s1, s2 = kernels.weighted_moments(x, y, np.arange(4), np.zeros((5, 6), np.float32), np.zeros(8))
    assert sw == 0.0 and not s1.any() and not s2.any()


@pytest.mark.parametrize("shape", [(4, 29, 31), (4, 1, 1), (6, 8, 300)])
def test_mad_chi2(shape):
    nb, h, w = shape
    x, y = _stack(nb, h, w, 0.02), _stack(nb, h, w, 0.02)
    idx = np.arange(nb - 1 if nb > 4 else nb, dtype=np.int64)
    p = idx.size
    valid = RNG.random((h, w)) > 0.1
    mx, my = RNG.uniform(500, 1500, p), RNG.uniform(500, 1500, p)
    a, b = RNG.normal(0, 0.01, (p, p)), RNG.normal(0, 0.01, (p, p))
    inv_sigma = RNG.uniform(0.5, 2, p)
    z, wt = kernels.mad_chi2(x, y, idx, valid, mx, my, a, b, inv_sigma)
    zr, wr = ref_mad(x, y, idx, valid, mx, my, a, b, inv_sigma)
    np.testing.assert_allclose(z, zr, rtol=1e-5)
    np.testing.assert_allclose(wt, wr, rtol=1e-5, atol=1e-7)
    z0, w0 = kernels.mad_chi2(x, y, idx, np.zeros((h, w), bool), mx, my, a, b, inv_sigma)
    assert np.isnan(z0).all() and not w0.any()


def _realistic_pair(h, w, swir):
    """Random reflectance spectra mixing vegetation, soil, water and built surfaces."""
    ems = np.array([[0.03, 0.075, 0.04, 0.45, 0.2], [0.07, 0.10, 0.15, 0.20, 0.3],
                    [0.05, 0.07, 0.05, 0.02, 0.01], [0.25, 0.27, 0.28, 0.30, 0.33],
                    [0.09, 0.12, 0.15, 0.22, 0.3], [0.035, 0.04, 0.035, 0.045, 0.05]]).T
    nb = 5 if swir else 4
    ems = ems[:nb]

    def draw():
        f = RNG.dirichlet(np.full(ems.shape[1], 0.3), size=h * w).T
        return ((ems @ f).reshape(nb, h, w) * 10000 + RNG.normal(0, 40, (nb, h, w))).astype(np.float32)

    return draw(), draw()


@pytest.mark.parametrize("swir, require, landuse", [(False, True, True), (True, True, True),
                                                    (False, False, True), (True, True, False)])
def test_change_pixels(swir, require, landuse):
    h, w = 60, 70
    x, y = _realistic_pair(h, w, swir)
    nb = x.shape[0]
    x[0, 3, 4] = np.nan
    valid = RNG.random((h, w)) > 0.05
    idx = np.arange(nb, dtype=np.int64)
    p = nb
    mx, my = np.nanmean(x.reshape(nb, -1), 1), np.nanmean(y.reshape(nb, -1), 1)
    a, b = RNG.normal(0, 3e-3, (p, p)), RNG.normal(0, 3e-3, (p, p))
    inv_sigma = RNG.uniform(0.5, 2, p)
    gain, offset = RNG.uniform(0.9, 1.1, nb), RNG.uniform(-200, 200, nb)
    roles = np.array([0, 1, 2, 3, 4 if swir else -1], dtype=np.int64)
    rule = rule_vector(DetectParams(require_evidence=require, landuse_rules=landuse), p, 0.01)
    ys = ref_box_mean_np(y[[2, 3]], valid, 1)
    got = kernels.change_pixels(x, y, ys, valid, idx, mx, my, a, b, inv_sigma, gain, offset,
                                roles, 1e-4, rule)
    ref = ref_change(x, y, ys, valid, idx, mx, my, a, b, inv_sigma, gain, offset, roles, 1e-4,
                     rule)
    for k, (g, r) in enumerate(zip(got[:-1], ref[:-1])):
        np.testing.assert_allclose(g, r, rtol=2e-5, atol=2e-6, err_msg=f"output {k}")
    # flags can differ only where a value sits within float32 rounding of a threshold
    assert (got[-1] != ref[-1]).mean() < 0.002
    assert (got[-1] & kernels.FLAG_CHANGED).any() and (got[-1] & kernels.FLAG_CROP).any()


def test_change_pixels_one_pixel_and_all_invalid():
    x, y = _realistic_pair(1, 1, False)
    args = (np.arange(4), x[:, 0, 0].astype(float), y[:, 0, 0].astype(float) + 1,
            np.eye(4) * 1e-3, np.eye(4) * 1e-3, np.ones(4), np.ones(4), np.zeros(4),
            np.array([0, 1, 2, 3, -1]), 1e-4, rule_vector(DetectParams(), 4))
    out = kernels.change_pixels(x, y, y[2:4], np.ones((1, 1), bool), *args)
    ref = ref_change(x, y, y[2:4], np.ones((1, 1), bool), *args)
    for g, r in zip(out, ref):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-9)
    out = kernels.change_pixels(x, y, y[2:4], np.zeros((1, 1), bool), *args)
    assert np.isnan(out[0]).all() and out[-1][0, 0] == 0


@pytest.mark.parametrize("radius, require", [(1, True), (2, False), (0, True)])
@pytest.mark.parametrize("shape", [(37, 41), (1, 1), (1, 6)])
def test_vote_decide(radius, require, shape):
    flags = RNG.integers(0, 64, shape).astype(np.uint8)
    for frac in (1.0, 0.7, 0.0):
        valid = RNG.random(shape) < frac
        np.testing.assert_array_equal(kernels.vote_decide(flags, valid, radius, require),
                                      ref_vote_decide(flags, valid, radius, require))
    # with a 0 radius the vote is the kernel's own per-pixel decision
    f = RNG.integers(0, 32, shape).astype(np.uint8)
    own = ~((f & kernels.FLAG_CROP) > 0) & ((f & kernels.FLAG_SIG) > 0) \
        & ((f & kernels.FLAG_VEG_GAIN) == 0) & ((f & kernels.FLAG_EVIDENCE) > 0)
    np.testing.assert_array_equal(kernels.vote_decide(f, np.ones(shape, bool), 0, True), own)


def test_vote_decide_large_windows():
    """The vote sums +1 per crop-flagged and -1 per other valid pixel, in int16 beyond radius
    5: windows of thousands of pixels, most of them crop-flagged, and a radius wider than the
    image count exactly, and so do the (2 VOTE_R_MAX + 1)^2 windows, all valid and
    crop-flagged, whose sum 32761 nearly fills int16; beyond VOTE_R_MAX the kernels refuse."""
    shape = (97, 83)
    flags = (RNG.integers(0, 64, shape) | (RNG.random(shape) < 0.8) * kernels.FLAG_CROP)
    flags = flags.astype(np.uint8)
    valid = RNG.random(shape) < 0.9
    for radius in (30, 60):  # 60: wider than the image
        np.testing.assert_array_equal(kernels.vote_decide(flags, valid, radius, False),
                                      ref_vote_decide(flags, valid, radius, False))
    # full windows at the largest radius: a summed-area table gives the counts
    r = kernels.VOTE_R_MAX
    size = 2 * r + 5
    flags = np.full((size, size), kernels.FLAG_SIG | kernels.FLAG_CROP, np.uint8)
    flags[size // 2, size // 2 - 1:size // 2 + 2] = kernels.FLAG_SIG  # not crop: 3 votes fewer
    valid = np.ones((size, size), bool)
    crop = np.pad(((flags & kernels.FLAG_CROP) > 0).astype(np.int64), ((1, 0), (1, 0)))
    table = crop.cumsum(0).cumsum(1)
    lo = np.clip(np.arange(size) - r, 0, size)
    hi = np.clip(np.arange(size) + r + 1, 0, size)
    n_crop = (table[hi][:, hi] - table[lo][:, hi] - table[hi][:, lo] + table[lo][:, lo])
    n_valid = (hi - lo)[:, None] * (hi - lo)[None, :]
    assert n_valid.max() == (2 * r + 1) ** 2
    want = ~(((flags & kernels.FLAG_CROP) > 0) & (2 * n_crop > n_valid))
    np.testing.assert_array_equal(kernels.vote_decide(flags, valid, r, False), want)
    with pytest.raises(ValueError, match="VOTE_R_MAX"):
        kernels.vote_decide(flags, valid, kernels.VOTE_R_MAX + 1, True)
    with pytest.raises(ValueError, match="VOTE_R_MAX"):
        kernels.clean_decision(flags, valid, kernels.VOTE_R_MAX + 1, True, True, 2, 3)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5])
def test_reference_erode_dilate_match_scipy(size):
    """The NumPy references of clean_decision's morphology equal scipy.ndimage with the same
    square (scipy centres an even side the same way): erosion with neighbours beyond the
    array True, dilation with them False."""
    lo, hi = square_offsets(size)
    se = np.ones((size, size), bool)
    for density in (0.3, 0.7, 0.9):
        m = RNG.random((50, 60)) < density
        np.testing.assert_array_equal(ref_erode(m, lo, hi),
                                      scipy.ndimage.binary_erosion(m, se, border_value=1))
        np.testing.assert_array_equal(ref_dilate(m, lo, hi),
                                      scipy.ndimage.binary_dilation(m, se))


def test_clean_decision_pad_or_clip_is_the_same():
    """Padding the halo with invalid pixels equals clipping it at the scene edge."""
    clean = lambda m, v: kernels.clean_decision(
        m.astype(np.uint8) * np.uint8(kernels.FLAG_CHANGED), v, 0, False, False, 2, 3)
    m = RNG.random((30, 40)) < 0.6
    valid = RNG.random((30, 40)) > 0.1
    clipped = clean(m, valid)
    mp = np.pad(m, 5, constant_values=True)
    vp = np.pad(valid, 5, constant_values=False)
    padded = clean(mp, vp)[5:-5, 5:-5]
    np.testing.assert_array_equal(clipped, padded)
    assert not clipped[~valid].any()
    # opening then closing: isolated pixels vanish, solid blocks stay
    blk = np.zeros((20, 20), bool)
    blk[5:12, 4:15] = True
    blk[17, 17] = True
    out = clean(blk, np.ones_like(blk))
    assert out[5:12, 4:15].all() and out.sum() == 7 * 11
