"""Pure Numba kernels of the change detector: ndarrays and scalars in, ndarrays out.

No I/O, no objects, no configuration: the wrappers in ``detect.statistic``,
``detect.detector`` and ``detect.objects`` know dtypes, nodata and parameters.
Every kernel has a plain NumPy reference in ``tests/test_detect_kernels.py``.

Array conventions: image stacks are ``(nbands, h, w)`` float32 in DN units;
``idx`` is an int64 vector selecting the bands used (array order); masks are
``(h, w)`` bool. Per-pixel output for invalid pixels is NaN (floats) or 0.
"""
import math

import numpy as np
from numba import prange

from detect.jit import parallel, serial

# Bits of the per-pixel ``flags`` output of :func:`change_pixels`.
FLAG_SIG = 1  # chi-square statistic beyond the critical value
FLAG_EVIDENCE = 2  # index signature of a land-use change (weak thresholds)
FLAG_STRONG = 4  # the same signature at the strong thresholds
FLAG_VEG_GAIN = 8  # vegetation gain: suppressed
FLAG_CROP = 16  # seasonal crop cycle on vegetated land: suppressed
FLAG_CHANGED = 32  # the per-pixel decision, before morphology

# Slots of the ``rule`` vector of :func:`change_pixels` (built by ``detect.rules``).
R_ZCRIT = 0
R_VEG_NDVI = 1
R_VEG_GAIN = 2
R_VEG_LOSS = 3
R_BRIGHT_GAIN = 4
R_DARK_DROP = 5
R_WATER_NDWI = 6
R_NDWI_GAIN = 7
R_RESIDUE_NDVI = 8
R_FLOOD_NDVI = 9
R_CROP_BRIGHT_MAX = 10
R_STRONG_FACTOR = 11
R_NDBI_GAIN = 12
R_REQUIRE_EVIDENCE = 13
R_BARE_NDVI = 14
R_WET_NDWI = 15
R_FARM_NDVI = 16
R_LANDUSE = 17
R_RESIDUE_BRIGHT = 18
N_RULE = 19


@serial
def chi2_sf(x, dof):
    """Survival function of the chi-square distribution for an integer ``dof`` >= 1.

    Closed forms of the regularised upper incomplete gamma function Q(dof/2, x/2):
    a finite Poisson sum for even ``dof``, erfc plus a finite sum for odd ``dof``.
    """
    if x != x:
        return np.nan
    if x <= 0.0:
        return 1.0
    h = 0.5 * x
    if h > 700.0:
        return 0.0
    if dof % 2 == 0:
        term = 1.0
        acc = 1.0
        for j in range(1, dof // 2):
            term *= h / j
            acc += term
        return math.exp(-h) * acc
    s = math.erfc(math.sqrt(h))
    m = (dof - 1) // 2
    if m >= 1:
        term = math.sqrt(h) / (0.5 * math.sqrt(math.pi))
        acc = term
        for j in range(2, m + 1):
            term *= h / (j - 0.5)
            acc += term
        s += math.exp(-h) * acc
    return s


@parallel
def weighted_moments(x, y, idx, weight, shift):
    """Weighted first and second raw moments of the joint vector (x[idx], y[idx]).

    Parameters: x, y (nb, h, w) float32; idx (p,) int64; weight (h, w) float32
    (pixels with weight <= 0 or NaN, or a NaN value, are skipped); shift (2p,)
    float64 subtracted before accumulating (a provisional mean, for precision).
    Returns (sum_w, s1 (2p,), s2 (2p, 2p)) as float64: sum w, sum w v, sum w v v^T.
    Rows are processed as vectors (one dot product per moment and row), which
    the compiler turns into SIMD code.
    """
    p = idx.size
    q = 2 * p
    h = weight.shape[0]
    wd = weight.shape[1]
    nchunk = min(h, 64)
    acc_w = np.zeros(nchunk)
    acc_1 = np.zeros((nchunk, q))
    acc_2 = np.zeros((nchunk, q, q))
    for ch in prange(nchunk):
        r0 = ch * h // nchunk
        r1 = (ch + 1) * h // nchunk
        v = np.empty((q, wd))
        wv = np.empty((q, wd))
        wr = np.empty(wd)
        sw = 0.0
        s1 = np.zeros(q)
        s2 = np.zeros((q, q))
        for r in range(r0, r1):
            wrow = weight[r]
            for c in range(wd):
                wt = wrow[c]
                wr[c] = wt if wt > 0.0 else 0.0
            for k in range(q):
                row = x[idx[k], r] if k < p else y[idx[k - p], r]
                sh = shift[k]
                for c in range(wd):
                    val = row[c]
                    if val != val:
                        wr[c] = 0.0
                    v[k, c] = val - sh
            for k in range(q):
                for c in range(wd):
                    v[k, c] = v[k, c] if wr[c] > 0.0 else 0.0
            t = 0.0
            for c in range(wd):
                t += wr[c]
            sw += t
            for i in range(q):
                t = 0.0
                for c in range(wd):
                    u = wr[c] * v[i, c]
                    wv[i, c] = u
                    t += u
                s1[i] += t
            for i in range(q):
                for j in range(i, q):
                    t = 0.0
                    for c in range(wd):
                        t += wv[i, c] * v[j, c]
                    s2[i, j] += t
        acc_w[ch] = sw
        for i in range(q):
            acc_1[ch, i] = s1[i]
            for j in range(i, q):
                acc_2[ch, i, j] = s2[i, j]
    sw = acc_w.sum()
    s1 = np.zeros(q)
    s2 = np.zeros((q, q))
    for ch in range(nchunk):
        for i in range(q):
            s1[i] += acc_1[ch, i]
            for j in range(i, q):
                s2[i, j] += acc_2[ch, i, j]
    for i in range(q):
        for j in range(i):
            s2[i, j] = s2[j, i]
    return sw, s1, s2


@serial
def _row_z(x, y, idx, r, mean_x, mean_y, a, b, inv_sigma, dx, dy, m, z):
    """Chi-square statistic of the MAD variates of row ``r`` into z (w,), float64.

    dx, dy (p, w) and m (w,) are scratch rows of the caller.
    """
    p = idx.size
    wd = z.size
    for k in range(p):
        mk = mean_x[k]
        nk = mean_y[k]
        xr = x[idx[k], r]
        yr = y[idx[k], r]
        for c in range(wd):
            dx[k, c] = xr[c] - mk
            dy[k, c] = yr[c] - nk
    for c in range(wd):
        z[c] = 0.0
    for i in range(p):
        for c in range(wd):
            m[c] = 0.0
        for k in range(p):
            aki = a[k, i] * inv_sigma[i]
            bki = b[k, i] * inv_sigma[i]
            for c in range(wd):
                m[c] += dx[k, c] * aki - dy[k, c] * bki
        for c in range(wd):
            z[c] += m[c] * m[c]


@parallel
def mad_chi2(x, y, idx, valid, mean_x, mean_y, a, b, inv_sigma):
    """IR-MAD chi-square statistic and no-change weight of every pixel.

    MAD_i = a_i.(x - mean_x) - b_i.(y - mean_y) over the bands ``idx``;
    Z = sum_i (MAD_i * inv_sigma_i)^2 ~ chi2(p) for unchanged pixels; the weight
    is the chi-square survival probability 1 - F(Z). Returns (z, weight), (h, w)
    float32: NaN / 0 where ``valid`` is False or a value is NaN.
    """
    p = idx.size
    h = valid.shape[0]
    wd = valid.shape[1]
    z = np.empty((h, wd), dtype=np.float32)
    wt = np.empty((h, wd), dtype=np.float32)
    for r in prange(h):
        dx = np.empty((p, wd))
        dy = np.empty((p, wd))
        m = np.empty(wd)
        zr = np.empty(wd)
        _row_z(x, y, idx, r, mean_x, mean_y, a, b, inv_sigma, dx, dy, m, zr)
        for c in range(wd):
            zz = zr[c]
            if not valid[r, c] or zz != zz:
                z[r, c] = np.nan
                wt[r, c] = 0.0
            else:
                z[r, c] = zz
                wt[r, c] = chi2_sf(zz, p)
    return z, wt


@serial
def _nd(a, b):
    """Normalised difference (a - b) / (a + b); 0 when the sum is not positive."""
    s = a + b
    if s > 0.0:
        return (a - b) / s
    return 0.0


@parallel
def change_pixels(x, y, ys, valid, idx, mean_x, mean_y, a, b, inv_sigma,
                  gain, offset, roles, scale, rule):
    """The per-pixel change decision in one pass over both dates.

    x, y (nb, h, w) float32 DN; ys (2, h, w): red and NIR of the after date
    averaged over a small neighbourhood (``box_mean``), read only for the NDVI that tells
    a flooded paddy from a deep pond, a parcel-wide property that sensor noise
    blurs in single dark pixels; valid (h, w) bool; idx (p,) int64 bands of the
    statistic; mean_x, mean_y, a, b, inv_sigma: the fitted IR-MAD transform;
    gain, offset (nb,) float64: after -> before radiometric normalisation per
    band (after_norm = gain * after + offset); roles (5,) int64 band index of
    blue, green, red, nir, swir (-1 if absent); scale: DN -> reflectance;
    rule (N_RULE,) float64 thresholds (see ``detect.rules``).

    Brightness is the mean visible reflectance (blue, green, red present).
    Returns prob (chi-square CDF of Z), d_ndvi, d_ndwi, d_bright (reflectance),
    ndvi_a, ndwi_a, bright_a, soil_a ((red - blue) / (red + blue) after) as
    (h, w) float32, and flags (h, w) uint8 (FLAG_* bits).
    """
    p = idx.size
    h = valid.shape[0]
    wd = valid.shape[1]
    ib = roles[0]
    ig = roles[1]
    ir = roles[2]
    inn = roles[3]
    isw = roles[4]
    zcrit = rule[R_ZCRIT]
    veg_ndvi = rule[R_VEG_NDVI]
    veg_gain = rule[R_VEG_GAIN]
    veg_loss = rule[R_VEG_LOSS]
    bright_gain = rule[R_BRIGHT_GAIN]
    dark_drop = rule[R_DARK_DROP]
    water_ndwi = rule[R_WATER_NDWI]
    ndwi_gain = rule[R_NDWI_GAIN]
    residue_ndvi = rule[R_RESIDUE_NDVI]
    flood_ndvi = rule[R_FLOOD_NDVI]
    crop_bright_max = rule[R_CROP_BRIGHT_MAX]
    fs = rule[R_STRONG_FACTOR]
    ndbi_gain = rule[R_NDBI_GAIN]
    require = rule[R_REQUIRE_EVIDENCE] > 0.5
    bare_ndvi = rule[R_BARE_NDVI]
    wet_ndwi = rule[R_WET_NDWI]
    farm_ndvi = rule[R_FARM_NDVI]
    landuse = rule[R_LANDUSE] > 0.5
    residue_bright = rule[R_RESIDUE_BRIGHT]
    nvis = 0
    for rr in (ib, ig, ir):
        if rr >= 0:
            nvis += 1
    prob = np.empty((h, wd), dtype=np.float32)
    d_ndvi = np.empty((h, wd), dtype=np.float32)
    d_ndwi = np.empty((h, wd), dtype=np.float32)
    d_bri = np.empty((h, wd), dtype=np.float32)
    ndvi_a = np.empty((h, wd), dtype=np.float32)
    ndwi_a = np.empty((h, wd), dtype=np.float32)
    bri_a = np.empty((h, wd), dtype=np.float32)
    soil_a = np.empty((h, wd), dtype=np.float32)
    flags = np.zeros((h, wd), dtype=np.uint8)
    for r in prange(h):
        dx = np.empty((p, wd))
        dy = np.empty((p, wd))
        m = np.empty(wd)
        zr = np.empty(wd)
        _row_z(x, y, idx, r, mean_x, mean_y, a, b, inv_sigma, dx, dy, m, zr)
        for c in range(wd):
            zz = zr[c]
            if not valid[r, c]:
                prob[r, c] = np.nan
                d_ndvi[r, c] = np.nan
                d_ndwi[r, c] = np.nan
                d_bri[r, c] = np.nan
                ndvi_a[r, c] = np.nan
                ndwi_a[r, c] = np.nan
                bri_a[r, c] = np.nan
                soil_a[r, c] = np.nan
                continue
            if zz != zz:
                prob[r, c] = np.nan
                d_ndvi[r, c] = np.nan
                d_ndwi[r, c] = np.nan
                d_bri[r, c] = np.nan
                ndvi_a[r, c] = np.nan
                ndwi_a[r, c] = np.nan
                bri_a[r, c] = np.nan
                soil_a[r, c] = np.nan
                continue
            pr = 1.0 - chi2_sf(zz, p)
            # reflectance of both dates, the after date normalised to the before date
            bb = x[ib, r, c] * scale if ib >= 0 else 0.0
            gb = x[ig, r, c] * scale if ig >= 0 else 0.0
            rb = x[ir, r, c] * scale if ir >= 0 else 0.0
            nb = x[inn, r, c] * scale if inn >= 0 else 0.0
            ba = (gain[ib] * y[ib, r, c] + offset[ib]) * scale if ib >= 0 else 0.0
            ga = (gain[ig] * y[ig, r, c] + offset[ig]) * scale if ig >= 0 else 0.0
            ra = (gain[ir] * y[ir, r, c] + offset[ir]) * scale if ir >= 0 else 0.0
            na = (gain[inn] * y[inn, r, c] + offset[inn]) * scale if inn >= 0 else 0.0
            vb = _nd(nb, rb)
            va = _nd(na, ra)
            wb = _nd(gb, nb)
            wa = _nd(ga, na)
            brb = (bb + gb + rb) / nvis
            bra = (ba + ga + ra) / nvis
            dv = va - vb
            dw = wa - wb
            dbr = bra - brb
            sa = _nd(ra, ba)
            # land-use signatures: weak (decision) and strong (confidence) thresholds
            ev = 0
            for level in range(2):
                f = 1.0 if level == 0 else fs
                hit = False
                if dbr > f * bright_gain and va < veg_ndvi:
                    hit = True  # built / hardened / bare surface appears
                elif dv < -f * veg_loss and va < veg_ndvi:
                    hit = True  # vegetation removed
                elif wa > water_ndwi and dw > f * ndwi_gain:
                    hit = True  # water appears
                elif dbr < -f * dark_drop and wa <= water_ndwi and va < veg_ndvi:
                    hit = True  # dark dry surface that is no canopy (panels, asphalt)
                elif isw >= 0:
                    sb = x[isw, r, c] * scale
                    sw_a = (gain[isw] * y[isw, r, c] + offset[isw]) * scale
                    nbb = _nd(sb, nb)
                    nba = _nd(sw_a, na)
                    if nba > 0.0 and nba - nbb > f * ndbi_gain:
                        hit = True  # built-up index rises (needs SWIR)
                if hit:
                    ev |= FLAG_EVIDENCE if level == 0 else FLAG_STRONG
                else:
                    break
            fl = ev
            if zz > zcrit:
                fl |= FLAG_SIG
            if dv > veg_gain and va >= bare_ndvi and wa <= water_ndwi:
                fl |= FLAG_VEG_GAIN
            # flooded paddy or deep pond: NDVI of the local mean after spectrum
            vsa = _nd(gain[inn] * ys[1, r, c] + offset[inn], gain[ir] * ys[0, r, c] + offset[ir])
            if dbr < crop_bright_max:
                # green crop -> harvested stubble: residue keeps some NIR and, without
                # chlorophyll, reflects more visible light (dark panels do not)
                if vb >= veg_ndvi and va >= residue_ndvi and dbr > residue_bright:
                    fl |= FLAG_CROP
                # crop or soil -> flooded paddy: shallow water over mud, whose bottom keeps
                # NDVI above that of deep open water (a new pond)
                elif vb >= farm_ndvi and wa > wet_ndwi and vsa > flood_ndvi:
                    fl |= FLAG_CROP
            if fl & FLAG_SIG:
                if not landuse:
                    fl |= FLAG_CHANGED
                elif not (fl & (FLAG_VEG_GAIN | FLAG_CROP)):
                    if (fl & FLAG_EVIDENCE) or not require:
                        fl |= FLAG_CHANGED
            prob[r, c] = pr
            d_ndvi[r, c] = dv
            d_ndwi[r, c] = dw
            d_bri[r, c] = dbr
            ndvi_a[r, c] = va
            ndwi_a[r, c] = wa
            bri_a[r, c] = bra
            soil_a[r, c] = sa
            flags[r, c] = fl
    return prob, d_ndvi, d_ndwi, d_bri, ndvi_a, ndwi_a, bri_a, soil_a, flags


@serial
def _and_window_row(src, dst, lo, hi, fill):
    """dst[j] = AND (fill=True) / OR (fill=False) of src[j + d], d in lo..hi, in the row.

    Outside the row the neutral value ``fill`` is assumed; the interior loop has
    no branch, so it vectorises.
    """
    w = src.size
    for j in range(w):
        dst[j] = src[j]
    for d in range(lo, hi + 1):
        if d == 0:
            continue
        j0 = max(0, -d)
        j1 = min(w, w - d)
        if fill:
            for j in range(j0, j1):
                dst[j] = dst[j] & src[j + d]
        else:
            for j in range(j0, j1):
                dst[j] = dst[j] | src[j + d]


@parallel
def erode_rect(m, lo, hi):
    """Binary erosion by the square {lo..hi}^2 (offsets in pixels, lo <= 0 <= hi).

    out[i, j] = AND of m[i + di, j + dj] over the square; neighbours outside the
    array are ignored (treated as True). Separable: rows, then columns.
    """
    h, w = m.shape
    u = m.view(np.uint8)
    tmp = np.empty((h, w), dtype=np.uint8)
    out = np.empty((h, w), dtype=np.uint8)
    for i in prange(h):
        _and_window_row(u[i], tmp[i], lo, hi, True)
    for i in prange(h):
        o = out[i]
        for j in range(w):
            o[j] = tmp[i, j]
        for d in range(lo, hi + 1):
            ii = i + d
            if d != 0 and ii >= 0 and ii < h:
                t = tmp[ii]
                for j in range(w):
                    o[j] = o[j] & t[j]
    return out.view(np.bool_)


@parallel
def dilate_rect(m, lo, hi):
    """Binary dilation by the reflected square {-hi..-lo}^2 (the dual of erode_rect).

    out[i, j] = OR of m[i - di, j - dj] for di, dj in lo..hi; neighbours outside
    the array are ignored (treated as False).
    """
    h, w = m.shape
    u = m.view(np.uint8)
    tmp = np.empty((h, w), dtype=np.uint8)
    out = np.empty((h, w), dtype=np.uint8)
    for i in prange(h):
        _and_window_row(u[i], tmp[i], -hi, -lo, False)
    for i in prange(h):
        o = out[i]
        for j in range(w):
            o[j] = tmp[i, j]
        for d in range(-hi, -lo + 1):
            ii = i + d
            if d != 0 and ii >= 0 and ii < h:
                t = tmp[ii]
                for j in range(w):
                    o[j] = o[j] | t[j]
    return out.view(np.bool_)


@parallel
def box_mean(x, valid, radius):
    """Mean of each band over the valid pixels of the (2 radius + 1)^2 window.

    x (nb, h, w) float32; valid (h, w) bool. Pixels outside the array or not
    valid do not count; NaN where the window holds no valid pixel. Separable:
    sums and counts along rows, then along columns.
    """
    nb, h, w = x.shape
    out = np.empty((nb, h, w), dtype=np.float32)
    cnt_r = np.zeros((h, w), dtype=np.int32)
    for i in prange(h):
        for j in range(w):
            n = 0
            for d in range(-radius, radius + 1):
                jj = j + d
                if jj >= 0 and jj < w and valid[i, jj]:
                    n += 1
            cnt_r[i, j] = n
    cnt = np.zeros((h, w), dtype=np.int32)
    for i in prange(h):
        for j in range(w):
            n = 0
            for d in range(-radius, radius + 1):
                ii = i + d
                if ii >= 0 and ii < h:
                    n += cnt_r[ii, j]
            cnt[i, j] = n
    for k in prange(nb):
        tmp = np.zeros((h, w))
        for i in range(h):
            for j in range(w):
                s = 0.0
                for d in range(-radius, radius + 1):
                    jj = j + d
                    if jj >= 0 and jj < w and valid[i, jj]:
                        s += x[k, i, jj]
                tmp[i, j] = s
        for i in range(h):
            for j in range(w):
                s = 0.0
                for d in range(-radius, radius + 1):
                    ii = i + d
                    if ii >= 0 and ii < h:
                        s += tmp[ii, j]
                out[k, i, j] = s / cnt[i, j] if cnt[i, j] > 0 else np.nan
    return out


@parallel
def vote_decide(flags, valid, radius, require):
    """The per-pixel decision with a majority vote on the seasonal crop flag.

    A pixel is seasonal when it carries FLAG_CROP and so do more than half of
    the valid pixels of its (2 radius + 1)^2 window (the vote only clears
    isolated crop-like pixels, it never adds any). Returns (h, w) bool: valid and
    FLAG_SIG, not FLAG_VEG_GAIN, not seasonal, and (if ``require``) FLAG_EVIDENCE.
    """
    h, w = flags.shape
    cc = np.empty((h, w), dtype=np.int32)
    cv = np.empty((h, w), dtype=np.int32)
    for i in prange(h):
        for j in range(w):
            a = 0
            n = 0
            for d in range(-radius, radius + 1):
                jj = j + d
                if jj >= 0 and jj < w and valid[i, jj]:
                    n += 1
                    if flags[i, jj] & FLAG_CROP:
                        a += 1
            cc[i, j] = a
            cv[i, j] = n
    out = np.empty((h, w), dtype=np.bool_)
    for i in prange(h):
        for j in range(w):
            a = 0
            n = 0
            for d in range(-radius, radius + 1):
                ii = i + d
                if ii >= 0 and ii < h:
                    a += cc[ii, j]
                    n += cv[ii, j]
            f = flags[i, j]
            seasonal = (f & FLAG_CROP) != 0 and 2 * a > n
            ok = valid[i, j] and (f & FLAG_SIG) != 0 and (f & FLAG_VEG_GAIN) == 0 and not seasonal
            if require and (f & FLAG_EVIDENCE) == 0:
                ok = False
            out[i, j] = ok
    return out
