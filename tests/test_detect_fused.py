"""The fused and fast kernels of detect.kernels against NumPy / SciPy references.

Each fused kernel must equal the composition of the simpler kernels (or plain
NumPy) it replaces: detect_pixels = the mean over the wet pixels of a window +
change_pixels; clean_decision = vote_decide / FLAG_CHANGED + opening and closing;
irmad_moments = mad_chi2
weights + weighted_moments; variate_median_deviation = np.median. Shapes cross the
kernels' row blocks (kernels.CHUNK rows) so the block halos are exercised.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import chi2

from detect import kernels
from detect.detector import DetectParams, decide
from detect.indices import indices, role_index
from detect.rules import rule_vector
from tests.test_detect_kernels import _realistic_pair, nd, ref_box_mean_np, ref_change, \
    ref_clean_mask, ref_mad, ref_moments, ref_vote_decide

RNG = np.random.default_rng(7)
TALL = 2 * kernels.CHUNK + 13  # three row blocks, the last one short


# ---------------------------------------------------------------- references
def ref_index_noise(x, y, v, weights, roles, gain, offset, scale):
    """The NumPy code fit_model used before the kernel (weighted sd of index changes)."""
    w = weights[v].astype(np.float64)
    xb = x[:, v]
    ya = y[:, v] * gain[:, None] + offset[:, None]
    ib = indices(xb, roles, scale)
    ia = indices(ya, roles, scale)
    out = []
    for key in ("ndvi", "ndwi", "bright"):
        d = ia[key].astype(np.float64) - ib[key]
        ok = np.isfinite(d)
        sw = w[ok].sum()
        m = (w[ok] * d[ok]).sum() / sw
        out.append(np.sqrt((w[ok] * (d[ok] - m) ** 2).sum() / sw))
    return np.array(out)


def ref_wet_box(y, valid, roles, gain, offset, wet_ndwi, radius):
    """Red and NIR averaged over the wet pixels of each window (NumPy, float32 wet test)."""
    ir, ig, inn = roles[2], roles[1], roles[3]
    rn = np.ascontiguousarray(y[[ir, inn]])
    if radius == 0:
        return rn
    g = y[ig] * np.float32(gain[ig]) + np.float32(offset[ig])
    n = rn[1] * np.float32(gain[inn]) + np.float32(offset[inn])
    wet = valid & (g - n > np.float32(wet_ndwi) * (g + n)) & (g + n > 0)
    return ref_box_mean_np(rn, wet, radius)


def ref_wet_means(rn, wet, radius):
    """Means of rn (2, h, w) over the wet pixels of each window, in the kernels' float order.

    Per window row, the values are added left to right from 0.0, then the row sums top to
    bottom from 0.0 (float64; pixels outside the image or not wet add 0.0, which changes no
    sum); each sum times 1 / count, rounded to float32; NaN where no pixel is wet.
    """
    nb, h, w = rn.shape
    v = np.pad(np.where(wet, rn, 0).astype(np.float64), ((0, 0), (radius, radius),
                                                         (radius, radius)))
    k = np.pad(wet.astype(np.int64), radius)
    s = np.zeros((nb, h, w))
    n = np.zeros((h, w), np.int64)
    for di in range(2 * radius + 1):
        t = np.zeros((nb, h, w))
        for dj in range(2 * radius + 1):
            t = t + v[:, di:di + h, dj:dj + w]
            n += k[di:di + h, dj:dj + w]
        s = s + t
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n > 0, s * (1.0 / n), np.nan).astype(np.float32)


def ref_clean_decision(flags, valid, vote_r, require, vote, open_px, close_px):
    """Decision (crop vote or FLAG_CHANGED), opening and closing, in whole-array NumPy."""
    if vote:
        m = ref_vote_decide(flags, valid, vote_r, require)
    else:
        m = (flags & kernels.FLAG_CHANGED) > 0
    return ref_clean_mask(m, valid, open_px, close_px)


def ref_robust_sigma(x, y, idx, valid, mean_x, mean_y, a, b):
    """The NumPy code robust_sigma used before the kernels (1.4826 x MAD of the variates)."""
    dx = x[idx][:, valid].astype(np.float64) - mean_x[:, None]
    dy = y[idx][:, valid].astype(np.float64) - mean_y[:, None]
    mad = a.T @ dx - b.T @ dy
    mad = mad[:, np.isfinite(mad).all(axis=0)]
    med = np.median(mad, axis=1, keepdims=True)
    return 1.4826 * np.median(np.abs(mad - med), axis=1)


# ---------------------------------------------------------------- chi-square
@pytest.mark.parametrize("dof", list(range(1, 11)))
def test_sf_row_matches_scipy(dof):
    z = np.concatenate([RNG.uniform(0, 6 * dof, 3000), RNG.uniform(0, 1500, 300),
                        [0.0, 1e-12, 50.0, 1399.0, 1400.0, 1400.5, 1e6, -3.0, np.inf, np.nan]])
    out = np.empty_like(z)
    kernels._sf_row(z, dof, kernels._sf_coefficients(dof), out)
    ref = chi2.sf(z, dof)
    ref[z > 1400.0] = 0.0  # chi2_sf's cut-off: exp(-700) is below every float32
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-300)
    assert np.isnan(out[-1]) and out[-3] == 1.0 and out[-4] == 0.0


# ---------------------------------------------------------------- IR-MAD passes
@pytest.mark.parametrize("p, shape", [(4, (4, TALL, 41)), (5, (6, 37, 29)), (1, (2, 5, 7))])
def test_irmad_moments_is_mad_chi2_weights_then_moments(p, shape):
    nb, h, w = shape
    x = RNG.uniform(200, 3000, shape).astype(np.float32)
    y = (x * 1.05 + RNG.normal(0, 60, shape)).astype(np.float32)
    x[RNG.random(shape) < 0.01] = np.nan
    idx = np.arange(p, dtype=np.int64)[::-1].copy()
    valid = RNG.random((h, w)) > 0.1
    mx, my = RNG.uniform(900, 1700, p), RNG.uniform(900, 1700, p)
    a, b = RNG.normal(0, 3e-3, (p, p)), RNG.normal(0, 3e-3, (p, p))
    inv_sigma = RNG.uniform(0.5, 2, p)
    got = kernels.irmad_moments(x, y, idx, valid, mx, my, a, b, inv_sigma)
    _, wref = ref_mad(x, y, idx, valid, mx, my, a, b, inv_sigma)
    ref = ref_moments(x, y, idx, wref.astype(np.float32), np.concatenate([mx, my]))
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, rtol=1e-7, atol=1e-6)


def test_the_statistic_takes_at_most_five_bands():
    x = np.ones((6, 3, 3), np.float32)
    with pytest.raises(ValueError, match="1 to 5 bands"):
        kernels.mad_chi2(x, x, np.arange(6), np.ones((3, 3), bool), np.zeros(6), np.zeros(6),
                         np.eye(6), np.eye(6), np.ones(6))


def exact_variates(v, valid, scale):
    """Inputs whose MAD variates are exactly v[i] * scale[i] in float64 (a diagonal
    transform, zero means, no after-date term), and those variates over the usable pixels
    (valid, every variate finite) as NumPy computes them."""
    p = v.shape[0]
    args = (v, np.zeros_like(v), np.arange(p, dtype=np.int64), valid, np.zeros(p), np.zeros(p),
            np.diag(scale), np.zeros((p, p)))
    m = v.reshape(p, -1).astype(np.float64) * scale[:, None]
    return args, m[:, valid.ravel() & np.isfinite(m).all(axis=0)]


def ref_median_deviation(m):
    """np.median of each row and np.median of the absolute deviations from it (NaN if none)."""
    if m.shape[1] == 0:
        return np.full(m.shape[0], np.nan), np.full(m.shape[0], np.nan)
    med = np.median(m, axis=1)
    return med, np.median(np.abs(m - med[:, None]), axis=1)


def assert_exact(args, m):
    for got, ref in zip(kernels.variate_median_deviation(*args), ref_median_deviation(m)):
        np.testing.assert_array_equal(got, ref)


# heights x widths: odd and even counts, blocks of kernels.CHUNK rows; up to 2 x
# kernels.SAMPLE pixels all in the sample, then sampled on every 2nd, 3rd row and column
SHAPES = [(1, 1), (1, 2), (1, 3), (2, 5), (TALL, 41), (1, 4099), (128, 257), (256, 257),
          (384, 385)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", ["normal", "ties", "equal", "cauchy", "huge", "tiny"])
def test_variate_median_deviation_equals_numpy(shape, kind):
    p = 3
    h, w = shape
    scale = np.array([1.0, 0.5, 3.0])
    if kind == "normal":
        v = RNG.normal(0, 1, (p, h, w))
    elif kind == "ties":  # a few distinct values: medians and deviations tied many times
        v = RNG.integers(0, 4, (p, h, w))
    elif kind == "equal":
        v = np.full((p, h, w), 7.25)
    elif kind == "cauchy":  # heavy tails: selection rounds on a skewed spread
        v = RNG.standard_cauchy((p, h, w)) ** 3
    elif kind == "huge":
        v, scale = RNG.normal(0, 1, (p, h, w)), np.array([1e250, 3e300, 1e200])
    else:  # down to subnormal numbers
        v, scale = RNG.normal(0, 1, (p, h, w)), np.array([1e-300, 1e-310, 1e-250])
    args, m = exact_variates(v.astype(np.float32), np.ones(shape, bool), scale)
    assert_exact(args, m)


@pytest.mark.parametrize("shape", SHAPES)
def test_variate_median_deviation_skips_unusable_pixels(shape):
    h, w = shape
    v = RNG.normal(0, 1, (4, h, w)).astype(np.float32)
    v[1][RNG.random(shape) < 0.1] = np.nan  # NaN in one band: the pixel is skipped in all
    v[3, 0, 0] = -np.inf
    valid = RNG.random(shape) > 0.3
    args, m = exact_variates(v, valid, np.ones(4))
    assert_exact(args, m)


def test_variate_median_deviation_without_usable_pixels():
    v = RNG.normal(0, 1, (2, 40, 50)).astype(np.float32)
    args, _ = exact_variates(v, np.zeros((40, 50), bool), np.ones(2))
    assert np.isnan(kernels.variate_median_deviation(*args)).all()
    v[0] = np.nan
    args, _ = exact_variates(v, np.ones((40, 50), bool), np.ones(2))
    assert np.isnan(kernels.variate_median_deviation(*args)).all()


def first_attempt(x, y, idx, valid, mean_x, mean_y, a, b):
    """Which variates' median, and both medians, the cuts from the sample held."""
    p = idx.size
    h, w = valid.shape
    ip, mx, my, ca, cb = kernels._padded(idx, mean_x, mean_y, a, b, np.ones(p))
    step = max(1, math.isqrt(h * w // kernels.SAMPLE))
    sample = kernels._variate_sample(x, y, valid, p, ip, mx, my, ca, cb, step)
    cut = kernels._cuts(sample, np.full(p, np.nan))
    n, counts, values = kernels._window(x, y, valid, p, ip, mx, my, ca, cb, cut)
    med, _, hit = kernels._medians(values, counts, cut, n)
    return ~np.isnan(med), hit


def test_a_misleading_sample_is_caught():
    """The sample takes every 2nd row here (256 x 256 px): rows unlike the others mislead it.

    Variate 0: the sampled rows sit 50 above the others, so its median's cuts miss; variate
    1: same median, ten times the spread, so only the deviations' cuts miss (twice: the
    retry centred on the median found still uses the sample); variate 2 is not misled.
    """
    h = w = 256
    v = np.random.default_rng(3).normal(0, 1, (3, h, w))
    v[0, ::2] += 50
    v[1, ::2] *= 10
    args, m = exact_variates(v.astype(np.float32), np.ones((h, w), bool), np.ones(3))
    median_held, both_held = first_attempt(*args)
    assert list(median_held) == [False, True, True] and list(both_held) == [False, False, True]
    assert_exact(args, m)


def parcel_pair(size, seed):
    """A 4-band pair of 16-px parcels of six surfaces, 10 % of them changed, with noise,
    gain and offset (the scene of bench/bench_detect.py, smaller)."""
    rng = np.random.default_rng(seed)
    ems = np.array([[0.03, 0.075, 0.04, 0.45], [0.07, 0.10, 0.15, 0.20],
                    [0.05, 0.07, 0.05, 0.02], [0.25, 0.27, 0.28, 0.30],
                    [0.09, 0.12, 0.15, 0.22], [0.035, 0.04, 0.035, 0.045]]).T
    n = size // 16 + 1
    before = rng.integers(0, 6, (n, n))
    after = np.where(rng.random((n, n)) < 0.1, rng.integers(0, 6, (n, n)), before)
    up = lambda lab: lab.repeat(16, 0).repeat(16, 1)[:size, :size]
    x = ems[:, up(before)] * 10000 + rng.normal(0, 40, (4, size, size))
    y = (ems[:, up(after)] * 10000 + rng.normal(0, 60, (4, size, size))) * 1.07 + 250
    return np.ascontiguousarray(x, np.float32), np.ascontiguousarray(y, np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_robust_sigma_on_a_fitted_transform(seed):
    from detect.detector import fit_model
    from detect.statistic import robust_sigma

    x, y = parcel_pair(320, seed)
    x[2, 5, 7] = np.nan
    valid = np.ones((320, 320), bool)
    valid[:40, :50] = False
    model = fit_model(x, y, valid, ("blue", "green", "red", "nir"), DetectParams())
    idx, mx, my, a, b = model.arrays()[:5]
    p = idx.size
    got = robust_sigma(x, y, idx, valid, mx, my, a, b)
    np.testing.assert_allclose(got, ref_robust_sigma(x, y, idx, valid, mx, my, a, b), rtol=1e-9)
    # the kernel's own variates, all gathered, are NumPy's; its medians are exactly theirs
    ip, mx_, my_, ca, cb = kernels._padded(idx, mx, my, a, b, np.ones(p))
    n, _, values = kernels._window(x, y, valid, p, ip, mx_, my_, ca, cb,
                                   np.tile(kernels.UNBOUNDED, (p, 1)))
    dx = x[idx][:, valid].astype(np.float64) - mx[:, None]
    dy = y[idx][:, valid].astype(np.float64) - my[:, None]
    mad = a.T @ dx - b.T @ dy
    mad = mad[:, np.isfinite(mad).all(axis=0)]
    assert n == mad.shape[1]
    np.testing.assert_allclose(values[:, :n], mad, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(got, 1.4826 * ref_median_deviation(values[:, :n])[1])


@pytest.mark.parametrize("swir", [False, True])
def test_index_noise_equals_numpy(swir):
    x, y = _realistic_pair(TALL, 37, swir)
    bands = ("blue", "green", "red", "nir", "swir") if swir else ("-", "green", "red", "nir")
    if not swir:
        x[0] = np.nan  # a skipped band is never read
    roles = role_index(bands)
    valid = RNG.random(x.shape[1:]) > 0.1
    weights = np.where(valid, RNG.random(x.shape[1:]), 0).astype(np.float32)
    gain, offset = RNG.uniform(0.9, 1.1, x.shape[0]), RNG.uniform(-200, 200, x.shape[0])
    _, _, sd = kernels.index_noise(x, y, valid, weights, roles, gain, offset, 1e-4)
    np.testing.assert_allclose(sd, ref_index_noise(x, y, valid, weights, roles, gain, offset,
                                                   1e-4), rtol=1e-9)


# ---------------------------------------------------------------- the per-pixel pass
def pass_args(x, y, swir, landuse=True, radius=1):
    """Random model and rule arguments of the per-pixel pass after (x, y, valid), and the params."""
    nb = x.shape[0]
    idx = np.arange(nb, dtype=np.int64)
    mx, my = np.nanmean(x.reshape(nb, -1), 1), np.nanmean(y.reshape(nb, -1), 1)
    a, b = RNG.normal(0, 3e-3, (nb, nb)), RNG.normal(0, 3e-3, (nb, nb))
    inv_sigma = RNG.uniform(0.5, 2, nb)
    gain, offset = RNG.uniform(0.9, 1.1, nb), RNG.uniform(-200, 200, nb)
    roles = np.array([0, 1, 2, 3, 4 if swir else -1], dtype=np.int64)
    params = DetectParams(landuse_rules=landuse, crop_smooth_px=radius)
    rule = rule_vector(params, nb, 0.01)
    return (idx, mx, my, a, b, inv_sigma, gain, offset, roles, 1e-4, rule), params


@pytest.mark.parametrize("radius, swir, landuse", [(1, False, True), (2, True, True),
                                                   (0, False, True), (1, False, False)])
def test_detect_pixels_is_wet_mean_then_change_pixels(radius, swir, landuse):
    h, w = TALL, 45
    x, y = _realistic_pair(h, w, swir)
    valid = RNG.random((h, w)) > 0.05
    args, params = pass_args(x, y, swir, landuse, radius)
    gain, offset, roles = args[6], args[7], args[8]
    got = kernels.detect_pixels(x, y, valid, *args, radius)
    # the unfused kernel fed the whole-image smoothing (NumPy): equal up to float rounding
    ys = ref_wet_box(y, valid, roles, gain, offset, params.wet_ndwi, radius)
    fed = kernels.change_pixels(x, y, ys, valid, *args)
    for g, f in zip(got[:-1], fed[:-1]):
        np.testing.assert_allclose(g, f, rtol=1e-6, atol=1e-7)
    assert (got[-1] != fed[-1]).mean() < 0.001
    # and the plain NumPy composition
    ref = ref_change(x, y, ys, valid, *args)
    for k, (g, r) in enumerate(zip(got[:-1], ref[:-1])):
        np.testing.assert_allclose(g, r, rtol=2e-5, atol=2e-6, err_msg=f"output {k}")
    assert (got[-1] != ref[-1]).mean() < 0.002
    assert (got[-1] & kernels.FLAG_CROP).any()


@pytest.mark.parametrize("radius", [1, 2])
def test_flood_window_means_bit_for_bit(radius):
    """The flood rule's window means of detect_pixels, bit for bit, on data made to tell.

    Radius 1 takes the kernel's fast path inside the image and the general loop on its
    edges; radius 2 the general loop. The flags must equal change_pixels' fed the means in
    the kernels' order, on integer DN (many equal values), with NaN on
    invalid pixels, flood candidates whose windows hold no wet pixel, sums whose value
    depends on the order of the additions, and a candidate exactly at the threshold.
    """
    h, w = TALL, 45
    x, y = _realistic_pair(h, w, False)
    x, y = np.round(x), np.round(y)
    y[3, 30:] = np.round(y[3, 30:] * 0.25)  # after-date NIR below green: mostly wet
    valid = RNG.random((h, w)) > 0.05
    y[:, ~valid] = np.nan  # never summed: the window reads wet pixels only
    args, _ = pass_args(x, y, False, True, radius)
    gain, offset, rule = args[6], args[7], args[10]
    # normalisation: red and NIR as they are (NumPy computes the rule's NDVI of the means
    # as the kernel does), green's gain 1 in float32 but above 1 in float64, so that where
    # green == NIR the wet mask (float32) sees a tie, not wet, and the rule's NDWI (float64)
    # a flood candidate: patches of them have windows without a wet pixel (NaN means)
    gain[1:4], offset[1:4] = (1 + 2.0 ** -30, 1.0, 1.0), 0.0
    tie = np.zeros((h, w), bool)
    tie[20:30, 10:22] = tie[0:6, 30:45] = True
    y[1][tie] = y[3][tie]
    # the kernels' float32 wet test, exactly: gains 1 and offsets 0 in float32, wet_ndwi 0
    wet = valid & (y[1] - y[3] > 0) & (y[1] + y[3] > 0)
    # red +-2^62 on pairs of wet neighbours: a window sum that adds both of them after a DN
    # rounds the DN to a multiple of 1024 (the spacing of doubles near 2^62), one that adds
    # them first keeps it
    big = np.float32(2.0 ** 62)
    pairs = wet[:-1, :-1] & wet[1:, :-1] & wet[:-1, 1:] & (RNG.random((h - 1, w - 1)) < 0.15)
    for i, j in zip(*np.nonzero(pairs)):
        y[2, i, j] = big
        if RNG.random() < 0.5:
            y[2, i, j + 1] = -big
        else:
            y[2, i + 1, j] = -big
    rn = np.ascontiguousarray(y[[2, 3]])
    ys = ref_wet_means(rn, wet, radius)
    # the flood candidates: the pixels whose flags the smoothed NDVI changes
    high = np.stack([np.zeros((h, w), np.float32), np.ones((h, w), np.float32)])
    cand = (kernels.change_pixels(x, y, high, valid, *args)[-1]
            != kernels.change_pixels(x, y, high[::-1].copy(), valid, *args)[-1])
    edge = np.zeros((h, w), bool)
    edge[[0, -1]] = edge[:, [0, -1]] = True
    assert (cand & edge).sum() > 20 and (cand & np.isnan(ys[0])).sum() > 20
    # other orders of the same additions give other means: reversed, and columns first
    others = [ref_wet_means(rn[:, ::-1, ::-1], wet[::-1, ::-1], radius)[:, ::-1, ::-1],
              ref_wet_means(rn.transpose(0, 2, 1), wet.T, radius).transpose(0, 2, 1)]
    sensitive = cand & ~edge & np.isfinite(ys[0]) & (others[0][0] != ys[0])
    assert sensitive.sum() > 20
    # the threshold at the NDVI of one of those candidates: an exact tie
    vsa = nd(ys[1].astype(np.float64), ys[0].astype(np.float64))
    rule[kernels.R_FLOOD_NDVI] = np.sort(vsa[sensitive])[sensitive.sum() // 2]
    got = kernels.detect_pixels(x, y, valid, *args, radius)[-1]
    np.testing.assert_array_equal(got, kernels.change_pixels(x, y, ys, valid, *args)[-1])
    np.testing.assert_array_equal(got, kernels.pixel_flags(x, y, valid, *args, radius))
    # and these flags would see another order
    for other in others:
        other = np.ascontiguousarray(other)
        assert (kernels.change_pixels(x, y, other, valid, *args)[-1] != got).sum() >= 3


# ---------------------------------------------------------------- decision + morphology
@pytest.mark.parametrize("shape", [(TALL, 45), (kernels.CHUNK, 9), (1, 1), (1, 9), (7, 1)])
@pytest.mark.parametrize("vote_r, require, landuse, open_px, close_px", [
    (1, True, True, 2, 3), (2, False, True, 3, 2), (0, True, True, 2, 3), (1, True, False, 1, 3),
    (1, True, True, 2, 1), (1, True, True, 1, 1), (2, True, True, 4, 4)])
def test_clean_decision_is_decide_then_opening_and_closing(shape, vote_r, require, landuse, open_px,
                                                  close_px):
    params = DetectParams(crop_vote_px=vote_r, require_evidence=require, landuse_rules=landuse,
                          open_px=open_px, close_px=close_px, crop_smooth_px=0)
    for density in (0.9, 0.5):
        flags = RNG.integers(0, 64, shape).astype(np.uint8)
        flags[RNG.random(shape) < 1 - density] = 0
        valid = RNG.random(shape) > 0.1
        flags[~valid] = 0
        vote = landuse and vote_r > 0
        changed = kernels.clean_decision(flags, valid, vote_r, require, vote, open_px, close_px)
        ref = ref_clean_mask(decide(flags, valid, params), valid, open_px, close_px)
        np.testing.assert_array_equal(changed, ref)
        np.testing.assert_array_equal(changed, ref_clean_decision(
            flags, valid, vote_r, require, vote, open_px, close_px))


@pytest.mark.parametrize("w", [1, 2, 63, 64, 65, 127, 128, 129, 130])
def test_clean_decision_packed_rows(w):
    """The morphology runs on rows packed 64 pixels to a word: widths around the words'
    ends, every opening and closing size 1..5, vote radii on both sides of the int8 sums'
    limit, all pixels valid or none; equal to the NumPy composition on 1 and 2 threads."""
    import numba

    h = kernels.CLEAN_ROWS + 11  # two row blocks
    threads = numba.get_num_threads()
    for case in range(6):
        flags = RNG.integers(0, 64, (h, w)).astype(np.uint8)
        flags[RNG.random((h, w)) < 0.3] |= kernels.FLAG_SIG | kernels.FLAG_CHANGED
        valid = RNG.random((h, w)) > (0.15, 0.0, 1.0, 0.15, 0.6, 0.15)[case]
        vote_r = (0, 1, 5, 6, 2, 1)[case]
        for open_px in range(1, 6):
            close_px = (open_px + case) % 5 + 1
            args = (flags, valid, vote_r, case % 2 == 0, case != 1, open_px, close_px)
            want = ref_clean_decision(*args)
            try:
                numba.set_num_threads(1)
                one = kernels.clean_decision(*args)
            finally:
                numba.set_num_threads(threads)
            np.testing.assert_array_equal(kernels.clean_decision(*args), want)
            np.testing.assert_array_equal(one, want)


def test_clean_decision_widest_vote():
    """At VOTE_R_MAX (int16 sums, windows taller than a row block): vote_decide, checked
    against a summed-area table in test_detect_kernels, then the NumPy opening and closing."""
    shape = (2 * kernels.VOTE_R_MAX + 5, 70)
    flags = (RNG.integers(0, 64, shape) | (RNG.random(shape) < 0.6) * kernels.FLAG_CROP)
    flags = (flags | kernels.FLAG_SIG).astype(np.uint8)
    valid = RNG.random(shape) > 0.2
    r = kernels.VOTE_R_MAX
    for open_px, close_px in ((1, 1), (2, 3), (3, 2)):
        want = ref_clean_mask(kernels.vote_decide(flags, valid, r, False), valid, open_px,
                              close_px)
        np.testing.assert_array_equal(
            kernels.clean_decision(flags, valid, r, False, True, open_px, close_px), want)


@pytest.mark.parametrize("radius", [1, 3])
def test_vote_across_row_blocks(radius):
    valid = RNG.random((TALL, 19)) < 0.7
    flags = RNG.integers(0, 64, (TALL, 19)).astype(np.uint8)
    np.testing.assert_array_equal(kernels.vote_decide(flags, valid, radius, True),
                                  ref_vote_decide(flags, valid, radius, True))


# ---------------------------------------------------------------- objects
def test_object_sums_equal_bincount():
    h, w, n = 50, 40, 30
    lab = RNG.integers(0, n + 1, (h, w)).astype(np.int32)
    layers = [RNG.normal(0, 1, (h, w + 3)).astype(np.float32)[:, 1:-2] for _ in range(8)]
    layers += [RNG.random((h, w)) < 0.5, RNG.random((h, w)) < 0.3]
    got = kernels.object_sums(lab, n, *layers)
    flat = lab.ravel()
    cols = [np.bincount(flat, minlength=n + 1)[1:]]
    for k, layer in enumerate(layers):
        v = np.asarray(layer).ravel().astype(np.float64)
        cols.append(np.bincount(flat, weights=v, minlength=n + 1)[1:])
        if k == 6:  # bright_after: also the sum of squares
            cols.append(np.bincount(flat, weights=v * v, minlength=n + 1)[1:])
    np.testing.assert_allclose(got, np.stack(cols, axis=1), rtol=1e-12, atol=1e-12)


def test_label_counts_equal_bincount():
    """kernels.label_counts against np.bincount of the labels of the set pixels, on a window
    offset inside the masks (as tile_objects calls it on a tile's core)."""
    rng = np.random.default_rng(5)
    a = rng.random((70, 90)) < 0.4
    b = a & (rng.random((70, 90)) < 0.5)
    lab = rng.integers(0, 13, (50, 60)).astype(np.int32)
    got = kernels.label_counts(lab, 12, 7, 11, a, b)
    for col, mask in enumerate((a, b)):
        want = np.bincount(lab[mask[7:57, 11:71]], minlength=13)[1:]
        assert got[:, col].tolist() == want.tolist()
    assert kernels.label_counts(np.zeros((3, 3), np.int32), 0, 0, 0, a, b).shape == (0, 2)
