"""Pure Numba kernels of the change detector: ndarrays and scalars in, ndarrays out.

No I/O, no objects, no configuration: the wrappers in ``detect.statistic``,
``detect.detector`` and ``detect.objects`` know dtypes, nodata and parameters.
Every kernel has a plain NumPy reference in ``tests/test_detect_kernels.py``,
``tests/test_detect_fused.py`` or ``tests/test_detect_lazy.py``; ``bench/bench_detect.py``
times each against it.

Array conventions: image stacks are ``(nbands, h, w)`` float32 in DN units;
``idx`` is an int64 vector selecting the bands of the statistic (array order,
1 to ``P_MAX`` bands: one per band role); masks are ``(h, w)`` bool. Per-pixel
output for invalid pixels is NaN (floats) or 0.

How they are fast: each parallel kernel splits the rows into blocks of ``CHUNK``
rows (``prange``) and hands each block to a serial helper, so the parallel part
compiles quickly and every block owns its scratch rows. Inner loops run along a
row without branches (selects instead of ``if``), so the compiler turns them into
SIMD code; scalar work (``exp``, neighbourhood look-ups) runs in a second loop
over the row. Neighbourhood operations are separable: a pass along the rows into
block-local scratch (the block plus its halo rows), then a pass down the
columns, vectorised across the row; the whole decision + morphology chain runs
inside one block (:func:`clean_decision`, its morphology on rows packed 64 pixels
to a word), so no full-size temporary is written. Inner loops index row views
from 0 (``row = a[r]``; ``row[c]``) or index with unsigned integers: a computed
index such as ``a[r, c + d]`` may be negative to Numba, whose wraparound select
turns SIMD loads into gathers (measured 10x on the morphology). Byte flags are
tested as bytes (``np.uint8(f & FLAG)``): as int64, LLVM vectorised them 8 to a
vector, not 64.

Compile cost: constant flags are passed to helpers as ``np.bool_`` / ``np.int64``
(a bare ``True`` or ``0`` is typed as a literal and compiles the helper once
more), and ``weighted_moments`` / ``irmad_moments`` share one parallel kernel.
"""
import math

import numba
import numpy as np
from numba import prange

from detect.jit import exact, exact_inline, inline, parallel, serial

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
R_SOIL_REDNESS = 18
N_RULE = 19

P_MAX = 5  # bands of the statistic: blue, green, red, nir, swir at most
CHUNK = 32  # rows per parallel work item
CLEAN_ROWS = 64  # rows per work item of clean_decision, whose halo rows each item recomputes
BLOCK = 128  # columns per block of the moment sums (scratch within the L1 cache)

# Columns of :func:`object_sums` (the per-object sums of ``detect.objects``).
N_SUMS = 12


@inline
def _first(ch):
    """First row of block ``ch`` (int64 whatever integer type prange gives ``ch``)."""
    return np.int64(ch) * CHUNK


@inline
def _stop(ch, h):
    """End row (exclusive) of block ``ch`` of an image of ``h`` rows."""
    return min(np.int64(h), (np.int64(ch) + 1) * CHUNK)


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


_LN2_HI = 6.93147180369123816490e-01  # ln 2 in two parts (fdlibm): k * _LN2_HI is exact
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.44269504088896338700e+00


@serial
def _sf_coefficients(dof):
    """(5,) coefficients 1 / j! of the Poisson sum of :func:`chi2_sf` (even dof <= 10)."""
    c = np.zeros(5)
    term = 1.0
    for j in range(min(dof // 2, 5)):
        if j > 0:
            term /= j
        c[j] = term
    return c


@inline
def _sf_even(x, c0, c1, c2, c3, c4):
    """chi2_sf(x, dof) for an even dof <= 10 without branches or calls (SIMD in a loop).

    exp(-h), h = x / 2, as 2^-k exp(-r) with h = k ln 2 + r, |r| <= ln 2 / 2: a
    degree-13 Taylor polynomial for exp(-r) (truncation < 1e-17) and 2^-k as a
    product of exact powers of two; the Poisson sum by Horner's rule with
    c0..c4 from :func:`_sf_coefficients` (scalars: an array argument would
    add reference counting calls to the loop, which stop SIMD code). Agrees with
    :func:`chi2_sf` to about 1e-14 relative; NaN stays NaN, x <= 0 gives 1, and
    x / 2 > 700 gives 0.
    """
    h = min(max(0.5 * x, 0.0), 700.0)
    k = np.floor(h * _INV_LN2 + 0.5)
    q = k * _LN2_LO - (h - k * _LN2_HI)  # -r
    # Horner's rule written out: a loop over a tuple index compiles to a switch,
    # which the vectoriser rejects
    e = 1.0 / 6227020800.0
    e = e * q + 1.0 / 479001600.0
    e = e * q + 1.0 / 39916800.0
    e = e * q + 1.0 / 3628800.0
    e = e * q + 1.0 / 362880.0
    e = e * q + 1.0 / 40320.0
    e = e * q + 1.0 / 5040.0
    e = e * q + 1.0 / 720.0
    e = e * q + 1.0 / 120.0
    e = e * q + 1.0 / 24.0
    e = e * q + 1.0 / 6.0
    e = e * q + 0.5
    e = e * q + 1.0
    e = e * q + 1.0
    ki = np.int64(k)
    scale = 1.0
    factor = 0.5
    for i in range(10):  # 2^-k, k <= 1010
        scale *= factor if (ki >> i) & 1 else 1.0
        factor *= factor
    poly = (((c4 * h + c3) * h + c2) * h + c1) * h + c0
    sf = e * scale * poly
    sf = 0.0 if 0.5 * x > 700.0 else sf
    return sf if x == x else np.nan


@serial
def _sf_row(z, dof, coef, out):
    """out[c] = chi2_sf(z[c], dof); SIMD for an even dof <= 10, else one call per pixel."""
    if dof % 2 == 0 and dof <= 10:
        c0, c1, c2, c3, c4 = coef[0], coef[1], coef[2], coef[3], coef[4]
        for c in range(z.size):
            out[c] = _sf_even(z[c], c0, c1, c2, c3, c4)
    else:
        for c in range(z.size):
            out[c] = chi2_sf(z[c], dof)


# ---------------------------------------------------------------- the IR-MAD statistic
@serial
def _padded(idx, mean_x, mean_y, a, b, inv_sigma):
    """The MAD transform padded to ``P_MAX`` bands, with a and b scaled by inv_sigma.

    Returns (ip, mx, my, ca, cb): band index (P_MAX,) int64, centres (P_MAX,)
    and coefficients (P_MAX, P_MAX) float64. Padding rows alias band idx[0] (so a
    NaN there still reaches Z) with zero coefficients; padding columns are zero.
    """
    p = idx.size
    if p < 1 or p > P_MAX:
        raise ValueError("the IR-MAD statistic takes 1 to 5 bands")
    ip = np.empty(P_MAX, dtype=np.int64)
    mx = np.zeros(P_MAX)
    my = np.zeros(P_MAX)
    ca = np.zeros((P_MAX, P_MAX))
    cb = np.zeros((P_MAX, P_MAX))
    for k in range(P_MAX):
        ip[k] = idx[k] if k < p else idx[0]
    for k in range(p):
        mx[k] = mean_x[k]
        my[k] = mean_y[k]
        for i in range(p):
            ca[k, i] = a[k, i] * inv_sigma[i]
            cb[k, i] = b[k, i] * inv_sigma[i]
    return ip, mx, my, ca, cb


@serial
def _z_row(x, y, r, p, ip, mx, my, ca, cb, z):
    """Z = sum_i MAD_i^2 of the scaled transform for row ``r`` into z (w,) float64.

    p bands, padded to P_MAX (:func:`_padded`); four bands (blue, green, red, NIR,
    the common case) skip the padding's zero coefficients: :func:`_z_row4`.
    """
    if p == 4:
        _z_row4(x, y, r, ip, mx, my, ca, cb, z)
    else:
        _z_row_padded(x, y, r, ip, mx, my, ca, cb, z)


@serial
def _z_row4(x, y, r, ip, mx, my, ca, cb, z):
    """:func:`_z_row_padded` for four bands, bit for bit, with 32 instead of 50 products.

    The padding band's terms are products with zero coefficients: adding them leaves a
    finite sum as it is, and makes it NaN where a value is infinite (inf * 0), which
    the last select does here (float32 inputs cannot overflow Z otherwise).
    """
    x0 = x[ip[0], r]
    x1 = x[ip[1], r]
    x2 = x[ip[2], r]
    x3 = x[ip[3], r]
    y0 = y[ip[0], r]
    y1 = y[ip[1], r]
    y2 = y[ip[2], r]
    y3 = y[ip[3], r]
    for c in range(z.size):
        d0 = x0[c] - mx[0]
        d1 = x1[c] - mx[1]
        d2 = x2[c] - mx[2]
        d3 = x3[c] - mx[3]
        e0 = y0[c] - my[0]
        e1 = y1[c] - my[1]
        e2 = y2[c] - my[2]
        e3 = y3[c] - my[3]
        acc = 0.0
        for i in range(4):
            m = (d0 * ca[0, i] + d1 * ca[1, i] + d2 * ca[2, i] + d3 * ca[3, i]
                 - e0 * cb[0, i] - e1 * cb[1, i] - e2 * cb[2, i] - e3 * cb[3, i])
            acc += m * m
        z[c] = acc if acc < np.inf else np.nan


@serial
def _z_row_padded(x, y, r, ip, mx, my, ca, cb, z):
    """Z = sum_i MAD_i^2 of the scaled transform for row ``r`` into z (w,) float64.

    Fixed P_MAX-band arithmetic: the compiler unrolls the band loops and
    vectorises along the row.
    """
    x0 = x[ip[0], r]
    x1 = x[ip[1], r]
    x2 = x[ip[2], r]
    x3 = x[ip[3], r]
    x4 = x[ip[4], r]
    y0 = y[ip[0], r]
    y1 = y[ip[1], r]
    y2 = y[ip[2], r]
    y3 = y[ip[3], r]
    y4 = y[ip[4], r]
    for c in range(z.size):
        d0 = x0[c] - mx[0]
        d1 = x1[c] - mx[1]
        d2 = x2[c] - mx[2]
        d3 = x3[c] - mx[3]
        d4 = x4[c] - mx[4]
        e0 = y0[c] - my[0]
        e1 = y1[c] - my[1]
        e2 = y2[c] - my[2]
        e3 = y3[c] - my[3]
        e4 = y4[c] - my[4]
        acc = 0.0
        for i in range(P_MAX):
            m = (d0 * ca[0, i] + d1 * ca[1, i] + d2 * ca[2, i] + d3 * ca[3, i] + d4 * ca[4, i]
                 - e0 * cb[0, i] - e1 * cb[1, i] - e2 * cb[2, i] - e3 * cb[3, i] - e4 * cb[4, i])
            acc += m * m
        z[c] = acc


@serial
def _accumulate_row(x, y, idx, r, wr, shift, v, wv, s1, s2):
    """Add row ``r`` to the weighted raw moments s1 (q,), s2 (q, q) (upper triangle).

    wr (w,) float64: the weights, set to 0 here where a value is NaN; v, wv
    (q, BLOCK) scratch. Blocks of BLOCK columns keep the scratch in the L1 cache;
    within a block each moment is one dot product, which runs as SIMD code.
    Returns the row's sum of weights.
    """
    p = idx.size
    q = 2 * p
    wd = wr.size
    sw = 0.0
    for c0 in range(0, wd, BLOCK):
        n = min(BLOCK, wd - c0)
        wb = wr[c0:c0 + n]
        for k in range(q):
            row = x[idx[k], r, c0:c0 + n] if k < p else y[idx[k - p], r, c0:c0 + n]
            sh = shift[k]
            vk = v[k]
            for c in range(n):
                val = row[c]
                wb[c] = 0.0 if val != val else wb[c]
                vk[c] = val - sh
        for k in range(q):
            vk = v[k]
            for c in range(n):
                vk[c] = vk[c] if wb[c] > 0.0 else 0.0
        t = 0.0
        for c in range(n):
            t += wb[c]
        sw += t
        for i in range(q):
            vi = v[i]
            wvi = wv[i]
            t = 0.0
            for c in range(n):
                u = wb[c] * vi[c]
                wvi[c] = u
                t += u
            s1[i] += t
        for i in range(q):
            wvi = wv[i]
            for j in range(i, q):
                vj = v[j]
                t = 0.0
                for c in range(n):
                    t += wvi[c] * vj[c]
                s2[i, j] += t
    return sw


@serial
def _moment_rows(x, y, idx, weight, valid, shift, ip, mx, my, ca, cb, from_z, r0, r1,
                 acc_w, acc_1, acc_2, ch):
    """Moments of rows r0..r1 into slot ``ch`` of the accumulators.

    Weights: ``weight`` (<= 0 or NaN skip a pixel) or, with ``from_z``, the
    chi-square survival probability of Z (rounded to float32, 0 where not valid).
    """
    p = idx.size
    q = 2 * p
    wd = x.shape[2]
    wr = np.empty(wd)
    z = np.empty(wd)
    sf = np.empty(wd)
    coef = _sf_coefficients(p)
    v = np.empty((q, BLOCK))
    wv = np.empty((q, BLOCK))
    s1 = acc_1[ch]
    s2 = acc_2[ch]
    sw = 0.0
    for r in range(r0, r1):
        if from_z:
            _z_row(x, y, r, p, ip, mx, my, ca, cb, z)
            _sf_row(z, p, coef, sf)
            vr = valid[r]
            for c in range(wd):
                ok = vr[c] & (z[c] == z[c])
                wr[c] = np.float32(sf[c]) if ok else 0.0
        else:
            wrow = weight[r]
            for c in range(wd):
                wt = wrow[c]
                wr[c] = wt if wt > 0.0 else 0.0
        sw += _accumulate_row(x, y, idx, r, wr, shift, v, wv, s1, s2)
    acc_w[ch] = sw


@serial
def _reduce_moments(acc_w, acc_1, acc_2):
    """Sum the per-block accumulators; fill the lower triangle of s2."""
    q = acc_1.shape[1]
    sw = acc_w.sum()
    s1 = np.zeros(q)
    s2 = np.zeros((q, q))
    for ch in range(acc_w.size):
        for i in range(q):
            s1[i] += acc_1[ch, i]
            for j in range(i, q):
                s2[i, j] += acc_2[ch, i, j]
    for i in range(q):
        for j in range(i):
            s2[i, j] = s2[j, i]
    return sw, s1, s2


@parallel
def _moments(x, y, idx, weight, valid, shift, ip, mx, my, ca, cb, from_z):
    """Weighted raw moments by row blocks (:func:`weighted_moments`, :func:`irmad_moments`)."""
    p = idx.size
    h, wd = valid.shape if from_z else weight.shape
    nch = (h + CHUNK - 1) // CHUNK
    acc_w = np.zeros(nch)
    acc_1 = np.zeros((nch, 2 * p))
    acc_2 = np.zeros((nch, 2 * p, 2 * p))
    for ch in prange(nch):
        _moment_rows(x, y, idx, weight, valid, shift, ip, mx, my, ca, cb, from_z, _first(ch),
                     _stop(ch, h), acc_w, acc_1, acc_2, np.int64(ch))
    return _reduce_moments(acc_w, acc_1, acc_2)


_NO_BANDS = np.zeros(P_MAX, dtype=np.int64)
_NO_VECTOR = np.zeros(P_MAX)
_NO_MATRIX = np.zeros((P_MAX, P_MAX))
_NO_MASK = np.zeros((1, 1), dtype=np.bool_)
_NO_WEIGHT = np.zeros((1, 1), dtype=np.float32)


def weighted_moments(x, y, idx, weight, shift):
    """Weighted first and second raw moments of the joint vector (x[idx], y[idx]).

    Parameters: x, y (nb, h, w) float32; idx (p,) int64; weight (h, w) float32
    (pixels with weight <= 0 or NaN, or a NaN value, are skipped); shift (2p,)
    float64 subtracted before accumulating (a provisional mean, for precision).
    Returns (sum_w, s1 (2p,), s2 (2p, 2p)) as float64: sum w, sum w v, sum w v v^T.
    (A thin wrapper: it shares one compiled parallel kernel with :func:`irmad_moments`.)
    """
    return _moments(x, y, idx, weight, _NO_MASK, shift, _NO_BANDS, _NO_VECTOR, _NO_VECTOR,
                    _NO_MATRIX, _NO_MATRIX, False)


def irmad_moments(x, y, idx, valid, mean_x, mean_y, a, b, inv_sigma):
    """One IR-MAD iteration in one pass: no-change weights and the moments they give.

    Each pixel's weight is the chi-square survival probability 1 - F(Z) of the
    transform (mean_x, mean_y, a, b, inv_sigma), rounded to float32 as
    :func:`mad_chi2` stores it (0 where not ``valid`` or Z is NaN); the moments
    are those of :func:`weighted_moments` with that weight and
    shift = (mean_x, mean_y). Returns (sum_w, s1 (2p,), s2 (2p, 2p)) float64.
    """
    ip, mx, my, ca, cb = _padded(idx, mean_x, mean_y, a, b, inv_sigma)
    shift = np.concatenate((np.asarray(mean_x, np.float64), np.asarray(mean_y, np.float64)))
    return _moments(x, y, idx, _NO_WEIGHT, valid, shift, ip, mx, my, ca, cb, True)


@serial
def _mad_chi2_rows(x, y, valid, p, ip, mx, my, ca, cb, r0, r1, z, wt):
    wd = valid.shape[1]
    zr = np.empty(wd)
    sf = np.empty(wd)
    coef = _sf_coefficients(p)
    for r in range(r0, r1):
        _z_row(x, y, r, p, ip, mx, my, ca, cb, zr)
        _sf_row(zr, p, coef, sf)
        vr = valid[r]
        zo = z[r]
        wo = wt[r]
        for c in range(wd):
            zz = zr[c]
            ok = vr[c] & (zz == zz)
            zo[c] = zz if ok else np.nan
            wo[c] = sf[c] if ok else 0.0


@parallel
def mad_chi2(x, y, idx, valid, mean_x, mean_y, a, b, inv_sigma):
    """IR-MAD chi-square statistic and no-change weight of every pixel.

    MAD_i = a_i.(x - mean_x) - b_i.(y - mean_y) over the bands ``idx``;
    Z = sum_i (MAD_i * inv_sigma_i)^2 ~ chi2(p) for unchanged pixels; the weight
    is the chi-square survival probability 1 - F(Z). Returns (z, weight), (h, w)
    float32: NaN / 0 where ``valid`` is False or a value is NaN.
    """
    p = idx.size
    h, wd = valid.shape
    ip, mx, my, ca, cb = _padded(idx, mean_x, mean_y, a, b, inv_sigma)
    z = np.empty((h, wd), dtype=np.float32)
    wt = np.empty((h, wd), dtype=np.float32)
    nch = (h + CHUNK - 1) // CHUNK
    for ch in prange(nch):
        _mad_chi2_rows(x, y, valid, p, ip, mx, my, ca, cb, _first(ch), _stop(ch, h),
                       z, wt)
    return z, wt


@serial
def _mad_row(x, y, r, ip, mx, my, ca, cb, m):
    """The first m.shape[0] of the P_MAX (padded) MAD variates of row ``r`` into m (p, w);
    SIMD along the row.

    The ten row views are spelled out here as in :func:`_z_row` on purpose: an inlined helper
    returning them as a tuple measured 5-7 % slower in mad_chi2 (11.5 -> 12.2 ms per 2048² pair).
    """
    x0 = x[ip[0], r]
    x1 = x[ip[1], r]
    x2 = x[ip[2], r]
    x3 = x[ip[3], r]
    x4 = x[ip[4], r]
    y0 = y[ip[0], r]
    y1 = y[ip[1], r]
    y2 = y[ip[2], r]
    y3 = y[ip[3], r]
    y4 = y[ip[4], r]
    for i in range(m.shape[0]):
        a0, a1, a2, a3, a4 = ca[0, i], ca[1, i], ca[2, i], ca[3, i], ca[4, i]
        b0, b1, b2, b3, b4 = cb[0, i], cb[1, i], cb[2, i], cb[3, i], cb[4, i]
        mi = m[i]
        for c in range(mi.size):
            mi[c] = ((x0[c] - mx[0]) * a0 + (x1[c] - mx[1]) * a1 + (x2[c] - mx[2]) * a2
                     + (x3[c] - mx[3]) * a3 + (x4[c] - mx[4]) * a4
                     - (y0[c] - my[0]) * b0 - (y1[c] - my[1]) * b1 - (y2[c] - my[2]) * b2
                     - (y3[c] - my[3]) * b3 - (y4[c] - my[4]) * b4)


SAMPLE = 16384  # pixels on the grid of :func:`_variate_sample`
MARGIN = 4.0  # half-width of a bracket, in standard deviations of the sample median's rank
SHIFT = 0.25  # slack of the deviations' cuts, in widths of the median's bracket
UNBOUNDED = np.array([-np.inf, -np.inf, -np.inf, np.inf, np.inf, np.inf])  # cuts: keep all


@serial
def _usable_row(valid, r, m, ok):
    """ok[c] = pixel c of row ``r`` is valid and its variates m (p, w) are all finite."""
    vr = valid[r]
    for c in range(ok.size):
        ok[c] = vr[c]
    for i in range(m.shape[0]):
        mi = m[i]
        for c in range(ok.size):
            ok[c] = ok[c] & (abs(mi[c]) < np.inf)


@parallel
def _variate_sample(x, y, valid, p, ip, mx, my, ca, cb, step):
    """Every ``step``-th usable pixel (from a staggered start) of every ``step``-th row: its
    variates, (p, n) float64.

    Rows go through :func:`_window_rows`, keeping all, so that :func:`_mad_row` has one
    caller: under fast-math, its copies compiled into different kernels may round
    differently, and the first one loaded serves them all (measured: 1-ulp differences
    that depended on which kernel ran first).
    """
    h, wd = valid.shape
    nr = (h + step - 1) // step
    nc = (wd + step - 1) // step
    keep_all = np.empty((p, 6))
    for i in range(p):
        keep_all[i] = UNBOUNDED
    grid = np.empty((p, nr, nc))
    taken = np.zeros(nr, dtype=np.int64)
    for k in prange(nr):
        r = np.int64(k) * step
        row = np.empty((p, wd))
        counts = np.zeros((3, p), dtype=np.int64)
        _window_rows(x, y, valid, p, ip, mx, my, ca, cb, keep_all, r, r + 1, row, np.int64(0),
                     counts)
        t = 0
        for j in range((np.int64(k) * 3) % step, counts[2, 0], step):
            for i in range(p):
                grid[i, k, t] = row[i, j]
            t += 1
        taken[k] = t
    out = np.empty((p, taken.sum()))
    t = 0
    for k in range(nr):
        for j in range(taken[k]):
            for i in range(p):
                out[i, t] = grid[i, k, j]
            t += 1
    return out


@serial
def _two_smallest(v, k1, k2):
    """The k1-th and k2-th smallest (0-based, k1 <= k2) of the finite values v, exactly.

    Selection by histogram instead of a full partition: count the values in
    4096 equal-width bins of their range (bin order is value order), keep only
    the bins holding ranks k1..k2 and repeat on those until few values are left
    (heavy tails just take another round), then sort them; sort at once the values
    whose range is too narrow (subnormal) or too wide (overflows) to bin.
    """
    nbin = 4096
    cur = v
    below = 0  # values of v smaller than every value in cur
    hist = np.zeros(nbin, dtype=np.int64)
    while cur.size > 2048:
        n = cur.size
        lo = cur[0]
        hi = cur[0]
        for i in range(n):
            lo = min(lo, cur[i])
            hi = max(hi, cur[i])
        if not hi > lo:
            return lo, lo
        scale = nbin / (hi - lo)
        if not 0.0 < scale < np.inf:
            break
        hist[:] = 0
        for i in range(n):
            hist[min(np.int64((cur[i] - lo) * scale), nbin - 1)] += 1
        b1 = 0
        skip = 0
        while skip + hist[b1] <= k1 - below:
            skip += hist[b1]
            b1 += 1
        b2 = b1
        upto = skip + hist[b1]
        while upto <= k2 - below:
            b2 += 1
            upto += hist[b2]
        if upto - skip == n:  # no progress: sort what is left
            break
        nxt = np.empty(upto - skip)
        m = 0
        for i in range(n):
            b = min(np.int64((cur[i] - lo) * scale), nbin - 1)
            if b >= b1 and b <= b2:
                nxt[m] = cur[i]
                m += 1
        below += skip
        cur = nxt
    buf = np.sort(cur)
    return buf[k1 - below], buf[k2 - below]


@serial
def _cuts(sample, centre):
    """Cut points (p, 6) b0 <= .. <= b5 of each variate's values for :func:`_window`, from a
    sample: [b2, b3] brackets the median; (b1, b2) and (b3, b4) hold values nearer to it
    than their median absolute deviation, and values below b0 or above b5 are farther.

    The bounds are the sample's order statistics MARGIN standard deviations either side of
    its median rank, of the values and of their distances to centre[i] (the sample's median
    where NaN), around which (b0, b1) and (b4, b5) are placed, SHIFT x (b3 - b2) wider for
    a median that is not the centre. UNBOUNDED (keep every value) where the sample is too
    small. Any cuts give exact results: :func:`_medians` checks them.
    """
    p, n = sample.shape
    cut = np.empty((p, 6))
    half = np.int64(MARGIN * 0.5 * math.sqrt(n)) + 1
    j1 = (n - 1) // 2 - half
    j2 = n // 2 + half
    for i in range(p):
        cut[i] = UNBOUNDED
        if j1 < 0 or j2 >= n:
            continue
        si = sample[i]
        lo, hi = _two_smallest(si, j1, j2)
        mid = centre[i]
        if mid != mid:
            mid = _two_smallest(si, n // 2, n // 2)[0]
        t = np.empty(n)
        for j in range(n):
            t[j] = abs(si[j] - mid)
        near, far = _two_smallest(t, j1, j2)
        slack = SHIFT * (hi - lo)
        cut[i, 2] = lo
        cut[i, 3] = hi
        cut[i, 1] = min(mid - near + slack, lo)
        cut[i, 0] = min(mid - far - slack, cut[i, 1])
        cut[i, 4] = max(mid + near - slack, hi)
        cut[i, 5] = max(mid + far + slack, cut[i, 4])
    return cut


@serial
def _gather(t, keep, out):
    """The t[c] where keep[c] into out, in order; returns their count. Branch-free: each value
    is written, then kept or not (about 1 ns a value; a branch measured 5)."""
    k = 0
    for c in range(t.size):
        out[k] = t[c]
        k += keep[c]
    return k


@serial
def _window_rows(x, y, valid, p, ip, mx, my, ca, cb, cut, r0, r1, out, base, counts):
    """Rows r0..r1 of :func:`_window`: counts (3, p) added to, values gathered into out[i]
    from index ``base`` on. Returns the block's count of usable pixels.
    """
    wd = valid.shape[1]
    m = np.empty((p, wd))
    ok = np.empty(wd, dtype=np.bool_)
    keep = np.empty(wd, dtype=np.bool_)
    usable = 0
    for r in range(r0, r1):
        _mad_row(x, y, r, ip, mx, my, ca, cb, m)
        _usable_row(valid, r, m, ok)
        for c in range(wd):
            usable += ok[c]
        for i in range(p):
            mi = m[i]
            b0, b1, b2, b3, b4, b5 = cut[i]
            n_below = 0
            n_inner = 0
            for c in range(wd):
                v = mi[c]
                o = ok[c]
                inner = ((b1 < v) & (v < b2)) | ((b3 < v) & (v < b4))
                n_below += o & (v < b2)
                n_inner += o & inner
                keep[c] = o & (v >= b0) & (v <= b5) & ~inner
            counts[0, i] += n_below
            counts[1, i] += n_inner
            counts[2, i] += _gather(mi, keep, out[i, base + counts[2, i]:])
    return usable


@parallel
def _window(x, y, valid, p, ip, mx, my, ca, cb, cut):
    """One pass over the usable pixels (valid, every variate finite): how many values of
    variate i lie below cut[i, 2] and in (cut[i, 1], cut[i, 2]) or (cut[i, 3], cut[i, 4]),
    and the values in [cut[i, 0], cut[i, 5]] outside those two intervals themselves.

    Each row block gathers into its own part of a (p, h * w) buffer, of which only the pages
    written are touched. Returns (usable, counts (3, p) int64: the two counts and the
    number gathered, values (p, h * w) float64: row i's first counts[2, i], in pixel order).
    """
    h, wd = valid.shape
    nch = (h + CHUNK - 1) // CHUNK
    out = np.empty((p, h * wd))
    counts = np.zeros((nch, 3, p), dtype=np.int64)
    usable = np.zeros(nch, dtype=np.int64)
    for ch in prange(nch):
        r0 = _first(ch)
        usable[ch] = _window_rows(x, y, valid, p, ip, mx, my, ca, cb, cut, r0, _stop(ch, h),
                                  out, r0 * wd, counts[ch])
    total = np.zeros((3, p), dtype=np.int64)
    for ch in range(nch):
        base = _first(ch) * wd
        for i in range(p):
            oi = out[i]
            t = total[2, i]
            for j in range(counts[ch, 2, i]):
                oi[t + j] = oi[base + j]
        total += counts[ch]
    return usable.sum(), total, out


@serial
def _medians(values, counts, cut, n):
    """Median and median absolute deviation of each variate from :func:`_window`'s output
    over n usable pixels (np.median's rule: the middle value, or the mean of the two).

    The median's ranks must fall among the gathered values in [cut[i, 2], cut[i, 3]]. Then
    every value in the two open intervals is at most ``near`` from it and every value not
    gathered outside them at least ``far``, so the deviations' ranks must fall among the
    gathered ones between. Returns (median, mad, hit) (p,): hit False where a rank fell
    outside (mad NaN there, and the median too if its own ranks did).
    """
    p = cut.shape[0]
    med = np.full(p, np.nan)
    mad = np.full(p, np.nan)
    hit = np.zeros(p, dtype=np.bool_)
    k1 = (n - 1) // 2
    k2 = n // 2
    for i in range(p):
        g = values[i, :counts[2, i]]
        b0, b1, b2, b3, b4, b5 = cut[i]
        buf = np.empty(g.size)
        keep = np.empty(g.size, dtype=np.bool_)
        for j in range(g.size):
            keep[j] = (g[j] >= b2) & (g[j] <= b3)
        k = _gather(g, keep, buf)
        rank = counts[0, i]
        if rank > k1 or rank + k <= k2:
            continue
        a, b = _two_smallest(buf[:k], k1 - rank, k2 - rank)
        md = (a + b) / 2.0
        med[i] = md
        near = -1.0
        if b1 < b2:
            near = abs(b1 - md)
        if b3 < b4:
            near = max(near, abs(b4 - md))
        far = np.inf
        if n > counts[1, i] + counts[2, i]:  # values below b0 or above b5
            far = min(abs(b0 - md), abs(b5 - md))
        rank = counts[1, i]
        d = np.empty(g.size)
        for j in range(g.size):
            d[j] = abs(g[j] - md)
            rank += d[j] < near
            keep[j] = (d[j] >= near) & (d[j] <= far)
        k = _gather(d, keep, buf)
        if rank > k1 or rank + k <= k2:
            continue
        a, b = _two_smallest(buf[:k], k1 - rank, k2 - rank)
        mad[i] = (a + b) / 2.0
        hit[i] = True
    return med, mad, hit


def variate_median_deviation(x, y, idx, valid, mean_x, mean_y, a, b):
    """Median of each MAD variate a_i.(x - mean_x) - b_i.(y - mean_y) over the usable
    pixels (``valid``, every variate finite), and the median absolute deviation from it.

    Equal to np.median and np.median(|MAD_i - median|) on those pixels, with no variate
    image written: a grid sample of ~SAMPLE pixels places the cuts (:func:`_cuts`), one
    streaming pass counts the values between them and gathers the few that can hold the
    middle ranks (:func:`_window`), where those are selected (:func:`_medians`). A variate
    whose sample misled takes another pass, with its deviations' cuts centred on the median
    found, then one keeping all its values. Returns (median, mad), (p,) float64 each; NaN if
    no pixel is usable.
    """
    p = idx.size
    h, wd = valid.shape
    ip, mx, my, ca, cb = _padded(idx, mean_x, mean_y, a, b, np.ones(p))
    step = max(1, math.isqrt(h * wd // SAMPLE))
    sample = _variate_sample(x, y, valid, p, ip, mx, my, ca, cb, step)
    cut = _cuts(sample, np.full(p, np.nan))
    for attempt in range(3):
        n, counts, values = _window(x, y, valid, p, ip, mx, my, ca, cb, cut)
        if n == 0:
            return np.full(p, np.nan), np.full(p, np.nan)
        med, mad, hit = _medians(values, counts, cut, n)
        if hit.all():
            break
        # a variate missed: its deviations' cuts centred on its median found, then keep all
        redo = _cuts(sample, med) if attempt == 0 else np.tile(UNBOUNDED, (p, 1))
        redo[np.isnan(med)] = UNBOUNDED
        cut[~hit] = redo[~hit]
    return med, mad


# ---------------------------------------------------------------- indices and rules
@inline
def _nd(a, b):
    """Normalised difference (a - b) / (a + b); 0 when the sum is not positive (branch-free)."""
    s = a + b
    q = (a - b) / s
    return q if s > 0.0 else 0.0


@serial
def _wet_row(y, valid, i, ig, inn, g_gain, g_off, n_gain, n_off, wet32, out):
    """The flood rule's wet mask of row i into out (w,) uint8: NDWI of the normalised after
    date > wet_ndwi (valid, g - n > wet_ndwi (g + n) and g + n > 0).

    float32 arithmetic in DN; branch-free (SIMD).
    """
    yg = y[ig, i]
    yn = y[inn, i]
    vr = valid[i]
    for j in range(out.size):
        g = yg[j] * g_gain + g_off
        n = yn[j] * n_gain + n_off
        out[j] = vr[j] & (g - n > wet32 * (g + n)) & (g + n > np.float32(0.0))


@inline
def _wet_mean(y, wet, w0, r, c, radius, ir, inn):
    """Mean after-date red and NIR (DN) over the wet pixels of the window around (r, c).

    wet: rows of :func:`_wet_row` from row w0 on, covering r - radius .. r + radius.
    Sums run along each window row left to right, then over the rows top to bottom, in
    float64 (for radius <= 3: rows of 8 pixels or more LLVM vectorises under 'reassoc',
    into partial sums added in another order); the means, each sum times 1 / count, are
    rounded to float32; NaN when the window holds no wet pixel. :func:`_wet_means3`
    gives the same bits for radius 1.
    """
    h = y.shape[1]
    wd = y.shape[2]
    cnt = 0
    s_r = 0.0
    s_n = 0.0
    # scalar indexing only (a row view costs reference counting, more than the window);
    # the loads are conditional, so LLVM keeps a branch on each wet pixel (_wet_means3
    # loads first and selects); adding 0.0 is exact
    for ii in range(max(r - radius, 0), min(r + radius + 1, h)):
        t_r = 0.0
        t_n = 0.0
        for jj in range(max(c - radius, 0), min(c + radius + 1, wd)):
            w = wet[ii - w0, jj] != 0
            cnt += w
            t_r += y[ir, ii, jj] if w else 0.0
            t_n += y[inn, ii, jj] if w else 0.0
        s_r += t_r
        s_n += t_n
    if cnt == 0:
        return np.float32(np.nan), np.float32(np.nan)
    # one reciprocal for both sums: what LLVM makes of two divisions by cnt under 'arcp'
    # anyway (seen in the assembly); written out, so _wet_means3 does the same without it
    inv = 1.0 / cnt
    return np.float32(s_r * inv), np.float32(s_n * inv)


@exact_inline
def _wet_sum3(wet, v_r, v_n, c):
    """Wet count and wet-masked sums of v_r, v_n over columns c - 1..c + 1 of one row.

    Added left to right from 0.0, as a row of :func:`_wet_mean`; every value is loaded
    and masked by a select, so there is no branch on which pixels are wet.
    """
    w0 = wet[c - 1] != 0
    w1 = wet[c] != 0
    w2 = wet[c + 1] != 0
    r0 = v_r[c - 1]
    r1 = v_r[c]
    r2 = v_r[c + 1]
    n0 = v_n[c - 1]
    n1 = v_n[c]
    n2 = v_n[c + 1]
    t_r = 0.0
    t_r += r0 if w0 else 0.0
    t_r += r1 if w1 else 0.0
    t_r += r2 if w2 else 0.0
    t_n = 0.0
    t_n += n0 if w0 else 0.0
    t_n += n1 if w1 else 0.0
    t_n += n2 if w2 else 0.0
    return w0 + w1 + w2, t_r, t_n


@exact
def _wet_means3(y_r, y_n, wet, k, r, cols, m, m_r, m_n):
    """:func:`_wet_mean` with radius 1 at pixels (r, cols[t]), t < m, into m_r[t], m_n[t].

    y_r, y_n (h, w): after-date red and NIR; wet: rows of :func:`_wet_row`, image row
    r at k, 0 < r < h - 1. Pixels on the left or right edge are left to
    :func:`_wet_mean` (their entries are not written). The same sums in the same order,
    bit for bit: compiled without fast-math flags, so LLVM cannot regroup the unrolled
    3 x 3 sums (in :func:`_wet_mean` a loop keeps them in order). Branch-free, on row
    views: 27 ns a window of the 2048² bench tile (one thread), against 61 ns in
    :func:`_wet_mean`, whose loop branches on each wet pixel.
    """
    wd = y_r.shape[1]
    wa, wb, wc = wet[k - 1], wet[k], wet[k + 1]
    ra, rb, rc = y_r[r - 1], y_r[r], y_r[r + 1]
    na, nb, nc = y_n[r - 1], y_n[r], y_n[r + 1]
    for t in range(m):
        c = cols[t]
        if c < 1 or c > wd - 2:
            continue
        k_a, a_r, a_n = _wet_sum3(wa, ra, na, c)
        k_b, b_r, b_n = _wet_sum3(wb, rb, nb, c)
        k_c, c_r, c_n = _wet_sum3(wc, rc, nc, c)
        s_r = 0.0
        s_r += a_r
        s_r += b_r
        s_r += c_r
        s_n = 0.0
        s_n += a_n
        s_n += b_n
        s_n += c_n
        cnt = k_a + k_b + k_c
        inv = 1.0 / cnt  # inf for cnt == 0 (error_model numpy): NaN is stored then
        m_r[t] = np.float32(s_r * inv) if cnt > 0 else np.float32(np.nan)
        m_n[t] = np.float32(s_n * inv) if cnt > 0 else np.float32(np.nan)


@serial
def _true_columns(words, flag, cols):
    """Columns of the set entries of flag (w,) bool into cols, in order; returns how many.

    flag is a view of words ((w + 7) // 8,) uint64 whose bytes past w are 0: where a
    word is 0, its 8 columns are skipped in one test (the flood rule's candidates are
    few and in patches). The compaction itself is branch-free.
    """
    wd = flag.size
    m = 0
    for q in range(words.size):
        if words[q] != 0:
            for c in range(8 * q, min(8 * q + 8, wd)):
                cols[m] = c
                m += flag[c]
    return m


@serial
def _dates_row(xb, xg, xr, xn, yb, yg, yr, yn, scale, nvis, gb_, ob_, gg_, og_, gr_, or_, gn_,
               on_, vb, va, wb, wa, brb, bra, sa):
    """Indices of both dates along one row (float64), the after date normalised.

    Reflectance = DN * scale; after = (gain * DN + offset) * scale per role. NDVI,
    NDWI, visible brightness of both dates and (red - blue) / (red + blue) after.
    """
    for c in range(vb.size):
        bb = xb[c] * scale
        gb = xg[c] * scale
        rb = xr[c] * scale
        nb = xn[c] * scale
        ba = (gb_ * yb[c] + ob_) * scale
        ga = (gg_ * yg[c] + og_) * scale
        ra = (gr_ * yr[c] + or_) * scale
        na = (gn_ * yn[c] + on_) * scale
        vb[c] = _nd(nb, rb)
        va[c] = _nd(na, ra)
        wb[c] = _nd(gb, nb)
        wa[c] = _nd(ga, na)
        brb[c] = (bb + gb + rb) / nvis
        bra[c] = (ba + ga + ra) / nvis
        sa[c] = _nd(ra, ba)


@serial
def _indices_row(x, y, r, roles, gain, offset, scale, zero, sc):
    """:func:`_dates_row` of row ``r`` of the pair, bands found by role, into sc[0..6].

    An absent band reads ``zero`` (a row of zeros) with gain and offset 0.
    """
    ib = roles[0]
    ig = roles[1]
    ir = roles[2]
    inn = roles[3]
    nvis = 0
    for rr in (ib, ig, ir):
        if rr >= 0:
            nvis += 1
    gb_, ob_ = (gain[ib], offset[ib]) if ib >= 0 else (0.0, 0.0)
    gg_, og_ = (gain[ig], offset[ig]) if ig >= 0 else (0.0, 0.0)
    gr_, or_ = (gain[ir], offset[ir]) if ir >= 0 else (0.0, 0.0)
    gn_, on_ = (gain[inn], offset[inn]) if inn >= 0 else (0.0, 0.0)
    _dates_row(x[ib, r] if ib >= 0 else zero, x[ig, r] if ig >= 0 else zero,
               x[ir, r] if ir >= 0 else zero, x[inn, r] if inn >= 0 else zero,
               y[ib, r] if ib >= 0 else zero, y[ig, r] if ig >= 0 else zero,
               y[ir, r] if ir >= 0 else zero, y[inn, r] if inn >= 0 else zero,
               scale, nvis, gb_, ob_, gg_, og_, gr_, or_, gn_, on_,
               sc[0], sc[1], sc[2], sc[3], sc[4], sc[5], sc[6])


@serial
def _ndbi_row(xs, xn, ys, yn, scale, gs_, os_, gn_, on_, nbb, nba):
    """NDBI (SWIR, NIR) of both dates along one row, the after date normalised."""
    for c in range(nbb.size):
        nbb[c] = _nd(xs[c] * scale, xn[c] * scale)
        nba[c] = _nd((gs_ * ys[c] + os_) * scale, (gn_ * yn[c] + on_) * scale)


@serial
def _rules_row(zr, vr, vb, va, wb, wa, brb, bra, sa, nbb, nba, rule, flags, cand):
    """The rule flags of one row (FLAG_* bits; 0 where not valid or Z is NaN).

    Also marks in ``cand`` the pixels the flood rule must look at, and sets zr
    to NaN where the pixel is not valid. Branch-free, so it runs as SIMD code.
    """
    zcrit = rule[R_ZCRIT]
    veg_ndvi = rule[R_VEG_NDVI]
    veg_gain = rule[R_VEG_GAIN]
    veg_loss = rule[R_VEG_LOSS]
    bright_gain = rule[R_BRIGHT_GAIN]
    dark_drop = rule[R_DARK_DROP]
    water_ndwi = rule[R_WATER_NDWI]
    ndwi_gain = rule[R_NDWI_GAIN]
    residue_ndvi = rule[R_RESIDUE_NDVI]
    crop_bright_max = rule[R_CROP_BRIGHT_MAX]
    fs = rule[R_STRONG_FACTOR]
    ndbi_gain = rule[R_NDBI_GAIN]
    optional = not rule[R_REQUIRE_EVIDENCE] > 0.5
    bare_ndvi = rule[R_BARE_NDVI]
    wet_ndwi = rule[R_WET_NDWI]
    farm_ndvi = rule[R_FARM_NDVI]
    any_change = not rule[R_LANDUSE] > 0.5
    soil_redness = rule[R_SOIL_REDNESS]
    for c in range(zr.size):
        zz = zr[c]
        ok = vr[c] & (zz == zz)
        vb_ = vb[c]
        va_ = va[c]
        wa_ = wa[c]
        dv = va_ - vb_
        dw = wa_ - wb[c]
        dbr = bra[c] - brb[c]
        dnb = nba[c] - nbb[c]
        built = nba[c] > 0.0
        # land-use signatures: weak (decision) and strong (confidence) thresholds
        nonveg = va_ < veg_ndvi
        dry = wa_ <= water_ndwi
        wet = wa_ > water_ndwi
        weak = ((dbr > bright_gain) & nonveg) | ((dv < -veg_loss) & nonveg) \
            | (wet & (dw > ndwi_gain)) | ((dbr < -dark_drop) & dry & nonveg) \
            | (built & (dnb > ndbi_gain))
        strong = weak & (((dbr > fs * bright_gain) & nonveg) | ((dv < -fs * veg_loss) & nonveg)
                         | (wet & (dw > fs * ndwi_gain)) | ((dbr < -fs * dark_drop) & dry & nonveg)
                         | (built & (dnb > fs * ndbi_gain)))
        sig = zz > zcrit
        vgain = (dv > veg_gain) & (va_ >= bare_ndvi) & dry
        # green crop -> stubble or ploughed soil: residue and soil keep the NIR of the
        # soil line and are red-tinted (iron oxides, dry straw), which dark panels,
        # asphalt, concrete, blue steel and water are not
        mild = dbr < crop_bright_max
        harvest = mild & (vb_ >= veg_ndvi) & (va_ >= residue_ndvi) & (sa[c] >= soil_redness)
        # crop or soil -> flooded paddy: decided by the caller for these pixels
        cand[c] = ok & mild & (not harvest) & (vb_ >= farm_ndvi) & (wa_ > wet_ndwi)
        changed = sig & (any_change | ((not vgain) & (not harvest) & (weak | optional)))
        fl = (sig * FLAG_SIG + weak * FLAG_EVIDENCE + strong * FLAG_STRONG
              + vgain * FLAG_VEG_GAIN + harvest * FLAG_CROP + changed * FLAG_CHANGED)
        flags[c] = fl if ok else 0
        zr[c] = zz if ok else np.nan


@serial
def _outputs_row(zr, vb, va, wb, wa, brb, bra, sa, d_ndvi, d_ndwi, d_bri, ndvi_a, ndwi_a, bri_a,
                 soil_a):
    """The float32 layers of one row; NaN where zr is NaN (not valid)."""
    nan = np.float32(np.nan)
    for c in range(zr.size):
        ok = zr[c] == zr[c]
        d_ndvi[c] = va[c] - vb[c] if ok else nan
        d_ndwi[c] = wa[c] - wb[c] if ok else nan
        d_bri[c] = bra[c] - brb[c] if ok else nan
        ndvi_a[c] = va[c] if ok else nan
        ndwi_a[c] = wa[c] if ok else nan
        bri_a[c] = bra[c] if ok else nan
        soil_a[c] = sa[c] if ok else nan


@serial
def _pixel_rows(x, y, ys, valid, p, ip, mx, my, ca, cb, gain, offset, roles, scale, rule,
                lazy, radius, layers, r0, r1, prob, d_ndvi, d_ndwi, d_bri, ndvi_a, ndwi_a, bri_a,
                soil_a, flags):
    """Rows r0..r1 of :func:`change_pixels` (``lazy``: :func:`detect_pixels`).

    Without ``layers`` only the flags are written (:func:`pixel_flags`): the eight
    float32 layers are neither computed nor stored.

    Per row: Z, the indices of both dates and the rule flags in loops that run
    as SIMD code (each touches few arrays, so the compiler's alias checks stay
    within its limits); then one scalar loop for the chi-square probability
    (exp) and, for the few pixels that could be a flooded paddy (listed by
    :func:`_true_columns`), the smoothed NDVI of the flood rule (``lazy``: from
    the block's wet mask, made once; at radius 1 by :func:`_wet_means3` but on
    the image's edges).
    """
    wd = valid.shape[1]
    ig = roles[1]
    ir = roles[2]
    inn = roles[3]
    isw = roles[4]
    flood_ndvi = rule[R_FLOOD_NDVI]
    landuse = rule[R_LANDUSE] > 0.5
    wet32 = np.float32(rule[R_WET_NDWI])
    # NIR's and SWIR's gain and offset of the after date for the NDBI (0 for an absent band)
    gn_, on_ = (gain[inn], offset[inn]) if inn >= 0 else (0.0, 0.0)
    gs_, os_ = (gain[isw], offset[isw]) if isw >= 0 else (0.0, 0.0)
    zero = np.zeros(wd, dtype=np.float32)
    zr = np.empty(wd)
    sf = np.empty(wd)
    coef = _sf_coefficients(p)
    sc = np.zeros((9, wd))
    # the flood rule's candidates, as bytes of words (see _true_columns), and their columns
    cand_words = np.zeros((wd + 7) // 8, dtype=np.uint64)
    cand = cand_words.view(np.bool_)[:wd]
    cols = np.empty(wd, dtype=np.int64)
    m_r = np.empty(wd, dtype=np.float32)
    m_n = np.empty(wd, dtype=np.float32)
    y_r = y[ir]  # 2-D views for _wet_means3, once per block
    y_n = y[inn]
    # the flood rule's wet mask of the block's rows and halo (SIMD), if a window is read
    h = valid.shape[0]
    w0 = max(r0 - radius, 0)
    wet = np.empty((min(r1 + radius, h) - w0 if lazy and radius > 0 else 0, wd), dtype=np.uint8)
    if lazy and radius > 0:
        if ig >= 0 and inn >= 0:
            g_gain, g_off = np.float32(gain[ig]), np.float32(offset[ig])
            n_gain, n_off = np.float32(gain[inn]), np.float32(offset[inn])
            for g in range(w0, w0 + wet.shape[0]):
                _wet_row(y, valid, g, ig, inn, g_gain, g_off, n_gain, n_off, wet32, wet[g - w0])
        else:
            wet[:] = 0
    for r in range(r0, r1):
        _z_row(x, y, r, p, ip, mx, my, ca, cb, zr)
        _indices_row(x, y, r, roles, gain, offset, scale, zero, sc)
        if isw >= 0:  # otherwise sc[7], sc[8] stay 0: no NDBI signature
            _ndbi_row(x[isw, r], x[inn, r], y[isw, r], y[inn, r], scale, gs_, os_, gn_, on_,
                      sc[7], sc[8])
        _rules_row(zr, valid[r], sc[0], sc[1], sc[2], sc[3], sc[4], sc[5], sc[6], sc[7], sc[8],
                   rule, flags[r], cand)
        if layers:
            _outputs_row(zr, sc[0], sc[1], sc[2], sc[3], sc[4], sc[5], sc[6], d_ndvi[r],
                         d_ndwi[r], d_bri[r], ndvi_a[r], ndwi_a[r], bri_a[r], soil_a[r])
            _sf_row(zr, p, coef, sf)
            pr = prob[r]
            for c in range(wd):
                pr[c] = 1.0 - sf[c]  # NaN where not valid
        # flooded paddy or deep pond: NDVI of the local mean after spectrum; shallow water
        # over mud keeps NDVI above that of deep open water. The candidates are listed
        # first; at radius 1, the window means of those off the image's edges in one call.
        m = _true_columns(cand_words, cand, cols)
        inner = lazy and radius == 1 and r > 0 and r < h - 1
        if inner and m > 0:
            _wet_means3(y_r, y_n, wet, r - w0, r, cols, m, m_r, m_n)
        for t in range(m):
            c = cols[t]
            if not lazy:
                sr = ys[0, r, c]
                sn = ys[1, r, c]
            elif radius == 0:
                sr = y[ir, r, c]
                sn = y[inn, r, c]
            elif inner and c > 0 and c < wd - 1:
                sr = m_r[t]
                sn = m_n[t]
            else:
                sr, sn = _wet_mean(y, wet, w0, r, c, radius, ir, inn)
            vsa = _nd(gain[inn] * sn + offset[inn], gain[ir] * sr + offset[ir])
            if vsa > flood_ndvi:
                f = flags[r, c] | FLAG_CROP
                if landuse:
                    f &= ~FLAG_CHANGED
                flags[r, c] = f


@serial
def _layers(h, w):
    """The eight float32 output layers of :func:`change_pixels`, as separate arrays.

    Separate (h, w) arrays rather than one (8, h, w) block: glibc serves blocks
    up to 32 MB from its reusable heap, so a tile's layers reuse the memory of
    the previous tile instead of mapping (and page-faulting) fresh pages.
    """
    return (np.empty((h, w), dtype=np.float32), np.empty((h, w), dtype=np.float32),
            np.empty((h, w), dtype=np.float32), np.empty((h, w), dtype=np.float32),
            np.empty((h, w), dtype=np.float32), np.empty((h, w), dtype=np.float32),
            np.empty((h, w), dtype=np.float32), np.empty((h, w), dtype=np.float32))


@parallel
def change_pixels(x, y, ys, valid, idx, mean_x, mean_y, a, b, inv_sigma,
                  gain, offset, roles, scale, rule):
    """The per-pixel change decision in one pass over both dates.

    x, y (nb, h, w) float32 DN; ys (2, h, w): red and NIR of the after date
    averaged over the wet pixels of a small window (see :func:`detect_pixels`), read only for the NDVI that tells
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
    h, wd = valid.shape
    ip, mx, my, ca, cb = _padded(idx, mean_x, mean_y, a, b, inv_sigma)
    o = _layers(h, wd)
    flags = np.empty((h, wd), dtype=np.uint8)
    nch = (h + CHUNK - 1) // CHUNK
    for ch in prange(nch):
        _pixel_rows(x, y, ys, valid, p, ip, mx, my, ca, cb, gain, offset, roles, scale, rule,
                    np.bool_(False), np.int64(0), np.bool_(True), _first(ch), _stop(ch, h), *o,
                    flags)
    return (*o, flags)


@parallel
def _pixel_pass(x, y, valid, idx, mean_x, mean_y, a, b, inv_sigma, gain, offset, roles, scale,
                rule, radius, layers):
    """:func:`detect_pixels` (``layers``) or :func:`pixel_flags` (1 x 1 layers, not written)."""
    p = idx.size
    h, wd = valid.shape
    ip, mx, my, ca, cb = _padded(idx, mean_x, mean_y, a, b, inv_sigma)
    o = _layers(h, wd) if layers else _layers(1, 1)
    flags = np.empty((h, wd), dtype=np.uint8)
    none = np.zeros((2, 1, 1), dtype=np.float32)
    nch = (h + CHUNK - 1) // CHUNK
    for ch in prange(nch):
        _pixel_rows(x, y, none, valid, p, ip, mx, my, ca, cb, gain, offset, roles, scale, rule,
                    np.bool_(True), radius, layers, _first(ch), _stop(ch, h), *o, flags)
    return (*o, flags)


def detect_pixels(x, y, valid, idx, mean_x, mean_y, a, b, inv_sigma, gain, offset, roles, scale,
                  rule, radius):
    """:func:`change_pixels` with the flood rule's smoothing done in place.

    Equal to ``change_pixels(x, y, ys, ...)`` with ys = the mean of the
    after-date red and NIR over the wet pixels (float32 DN: valid and
    (g - n) > wet_ndwi (g + n) > 0 for the normalised green g and NIR n) of the
    (2 radius + 1)^2 window, or the red and NIR themselves when radius is 0; the
    window is read only for the pixels the flood rule looks at, so no smoothed
    image is made. Returns the same nine (h, w) arrays.
    """
    return _pixel_pass(x, y, valid, idx, mean_x, mean_y, a, b, inv_sigma, gain, offset, roles,
                       scale, rule, radius, np.bool_(True))


def pixel_flags(x, y, valid, idx, mean_x, mean_y, a, b, inv_sigma, gain, offset, roles, scale,
                rule, radius):
    """The flags of :func:`detect_pixels` alone: (h, w) uint8 ``FLAG_*`` bits.

    The decision needs only the flags; the float32 layers (8 x 4 bytes per pixel
    written) are summed per object, so :func:`object_sums_pair` computes them for
    the changed pixels only. Same arguments as :func:`detect_pixels`.
    """
    return _pixel_pass(x, y, valid, idx, mean_x, mean_y, a, b, inv_sigma, gain, offset, roles,
                       scale, rule, radius, np.bool_(False))[-1]


@serial
def _noise_rows(x, y, valid, weight, roles, gain, offset, scale, r0, r1, acc, ch):
    """Weighted sums of the index differences of rows r0..r1 into acc[ch] (3, 3).

    acc[ch, k] = (sum w, sum w d, sum w d^2) for d = dNDVI, dNDWI, dBright over
    the valid pixels where d is finite; each date's index is rounded to float32,
    as ``detect.indices`` gives it (the indices are those of :func:`_dates_row`).
    """
    wd = valid.shape[1]
    zero = np.zeros(wd, dtype=np.float32)
    sc = np.empty((7, wd))
    for r in range(r0, r1):
        _indices_row(x, y, r, roles, gain, offset, scale, zero, sc)
        vr = valid[r]
        wr = weight[r]
        for k in range(3):
            before = sc[2 * k]  # vb, wb, brb; the after date follows each
            after = sc[2 * k + 1]
            s0 = 0.0
            s1 = 0.0
            s2 = 0.0
            for c in range(wd):
                dd = np.float64(np.float32(after[c])) - np.float64(np.float32(before[c]))
                ok = vr[c] & (abs(dd) < np.inf)
                wt = np.float64(wr[c]) if ok else 0.0
                dd = dd if ok else 0.0
                s0 += wt
                s1 += wt * dd
                s2 += wt * dd * dd
            acc[ch, k, 0] += s0
            acc[ch, k, 1] += s1
            acc[ch, k, 2] += s2


@parallel
def index_noise(x, y, valid, weight, roles, gain, offset, scale):
    """Weighted mean and standard deviation of dNDVI, dNDWI and dBrightness.

    The after date normalised (gain * after + offset), reflectance = DN * scale;
    indices as ``detect.indices.indices`` (each rounded to float32), over the
    ``valid`` pixels with weight ``weight`` (float32, no-change probability).
    One pass of raw sums: the differences are bounded and their no-change means
    are near 0, so E[d^2] - E[d]^2 loses no significant digits. Returns (sum_w,
    mean, sd), (3,) float64 each; NaN where the weights sum to 0.
    """
    h, wd = valid.shape
    nch = (h + CHUNK - 1) // CHUNK
    acc = np.zeros((nch, 3, 3))
    for ch in prange(nch):
        _noise_rows(x, y, valid, weight, roles, gain, offset, scale, _first(ch), _stop(ch, h),
                    acc, np.int64(ch))
    sw = np.zeros(3)
    mean = np.full(3, np.nan)
    sd = np.full(3, np.nan)
    for k in range(3):
        s1 = 0.0
        s2 = 0.0
        for ch in range(nch):
            sw[k] += acc[ch, k, 0]
            s1 += acc[ch, k, 1]
            s2 += acc[ch, k, 2]
        if sw[k] > 0:
            mean[k] = s1 / sw[k]
            sd[k] = math.sqrt(max(s2 / sw[k] - mean[k] * mean[k], 0.0))
    return sw, mean, sd


# ---------------------------------------------------------------- neighbourhoods
@serial
def _hcount(src, dst, radius):
    """dst[j] = sum of src[j + d], |d| <= radius, within the row, for integer rows.

    Integer sums do not depend on the order of the additions, so each offset is one
    pass over a pair of views (SIMD) without padding the row (float sums would need the
    left-to-right order).
    """
    w = src.size
    for j in range(w):
        dst[j] = src[j]
    for d in range(1, min(radius, w - 1) + 1):
        right = src[d:]  # src[j + d] for j < w - d
        head = dst[:w - d]
        for j in range(w - d):
            head[j] += right[j]
        left = src[:w - d]  # src[j - d] for j >= d
        tail = dst[d:]
        for j in range(w - d):
            tail[j] += left[j]


VOTE_R_MAX = 90  # (2 r + 1)^2 < 2^15: the vote's int16 sums stay exact


@serial
def _vote_rows(flags, valid, radius, require, vote, r0, r1, out, t0, cnt, row, s):
    """Rows r0..r1 of the per-pixel decision into out[g - t0] (uint8 0/1), AND valid.

    ``vote``: the decision of :func:`vote_decide`; otherwise the kernel's own
    FLAG_CHANGED. More than half of a window's valid pixels are crop-flagged when
    the sum over them of +1 (crop-flagged) or -1 (not) is positive: one box sum of
    one small integer per pixel, separable (along rows, then down the columns).
    cnt (rows r0 - radius .. r1 + radius, w), row, s (w,): int16 scratch (radius <=
    VOTE_R_MAX; int8 sums, for radius <= 5, were 16 % faster but compiled the pass
    twice, 4 s more). Inner loops index row views from 0, so they compile to SIMD code.
    """
    h, w = flags.shape
    vu = valid.view(np.uint8)
    optional = not require
    u8 = np.uint8  # a flag's test on the byte itself: f & FLAG is an int64 to Numba, and
    # LLVM left it so in the vector code (8 pixels a vector instead of 64: 5x slower)
    if not vote:
        for g in range(r0, r1):
            o = out[g - t0]
            fr = flags[g]
            vr = vu[g]
            for j in range(w):
                o[j] = (u8(fr[j] & FLAG_CHANGED) != 0) & (vr[j] != 0)
        return
    ta = max(r0 - radius, 0)
    tb = min(r1 + radius, h)
    for g in range(ta, tb):
        fr = flags[g]
        vr = vu[g]
        for j in range(w):
            crop = u8(fr[j] & FLAG_CROP) != 0
            row[j] = (1 if crop else -1) if vr[j] != 0 else 0
        _hcount(row, cnt[g - ta], radius)
    # down the columns, the window slides: the sum of row r0's window without its last
    # row, then each row adds the row entering (``row``, now 0, where none) and takes
    # out the one leaving, in the pass that decides
    for j in range(w):
        s[j] = 0
        row[j] = 0
    for g in range(ta, min(r0 + radius, h)):
        t = cnt[g - ta]
        for j in range(w):
            s[j] += t[j]
    for g in range(r0, r1):
        enter = cnt[g + radius - ta] if g + radius < h else row
        leave = cnt[g - radius - 1 - ta] if g > r0 and g - radius - 1 >= 0 else row
        o = out[g - t0]
        fr = flags[g]
        vr = vu[g]
        for j in range(w):
            f = fr[j]
            s[j] += enter[j] - leave[j]
            o[j] = (vr[j] != 0) & (u8(f & FLAG_SIG) != 0) & (u8(f & FLAG_VEG_GAIN) == 0) \
                & ((u8(f & FLAG_EVIDENCE) != 0) | optional) \
                & ((u8(f & FLAG_CROP) == 0) | (s[j] <= 0))


@serial
def _decide_rows(flags, valid, radius, require, vote, r0, r1, out, t0):
    """:func:`_vote_rows` with its scratch."""
    w = flags.shape[1]
    n = r1 - r0 + 2 * radius if vote else 0
    _vote_rows(flags, valid, radius, require, vote, r0, r1, out, t0,
               np.empty((n, w), dtype=np.int16), np.empty(w, dtype=np.int16),
               np.empty(w, dtype=np.int16))


@parallel
def vote_decide(flags, valid, radius, require):
    """The per-pixel decision with a majority vote on the seasonal crop flag.

    A pixel is seasonal when it carries FLAG_CROP and so do more than half of
    the valid pixels of its (2 radius + 1)^2 window (the vote only clears
    isolated crop-like pixels, it never adds any). Returns (h, w) bool: valid and
    FLAG_SIG, not FLAG_VEG_GAIN, not seasonal, and (if ``require``) FLAG_EVIDENCE.
    radius <= VOTE_R_MAX.
    """
    if radius > VOTE_R_MAX:
        raise ValueError("vote_decide: the vote's radius must be <= VOTE_R_MAX (90)")
    h, w = flags.shape
    out = np.empty((h, w), dtype=np.uint8)
    nch = (h + CHUNK - 1) // CHUNK
    for ch in prange(nch):
        _decide_rows(flags, valid, radius, require, np.bool_(True), _first(ch), _stop(ch, h), out,
                     np.int64(0))
    return out.view(np.bool_)


# Binary rows packed 64 pixels to a uint64 word: bit b of word q is pixel 64 q + b. The
# morphology of clean_decision runs on them, 64 pixels per word operation.
@serial
def _pack_row(src, words):
    """words (nw,) uint64 = the non-zero bytes of src (w,) as bits; bits past w are 0."""
    w = src.size
    full = w // 64
    for q in range(full):
        s = src[64 * q:64 * q + 64]
        acc = np.uint64(0)
        for b in range(64):  # a constant trip count: compiled to a vector compare and its mask
            acc |= np.uint64(s[b] != 0) << np.uint64(b)
        words[q] = acc
    if full < words.size:
        acc = np.uint64(0)
        for j in range(64 * full, w):
            acc |= np.uint64(src[j] != 0) << np.uint64(j - 64 * full)
        words[full] = acc


@serial
def _unpack_row(words, dst):
    """dst[j] = bit j of the packed row words (uint8 0/1), j < dst.size.

    A word of zeros (most of a change mask) is one vector store of zeros.
    """
    w = dst.size
    full = w // 64
    for q in range(full):
        wq = words[q]
        d = dst[64 * q:64 * q + 64]
        if wq == 0:
            for b in range(64):
                d[b] = 0
        else:
            for b in range(64):
                d[b] = (wq >> np.uint64(b)) & np.uint64(1)
    if full < words.size:
        wq = words[full]
        for j in range(64 * full, w):
            dst[j] = (wq >> np.uint64(j - 64 * full)) & np.uint64(1)


@serial
def _hbits(u, t, i0, i1, olo, ohi, dilate):
    """t[i] = OR (dilate) / AND (erode) over d in olo..ohi of pixel 64 i + d of u, i in i0..i1.

    u, t: packed rows laid end to end (flat uint64); u's words i0 - k .. i1 + k are
    read, k = 1 + max(-olo, ohi) // 64. A shift by d pixels shifts each word by
    d mod 64 bits and carries from the next word; one branch-free loop per offset
    over all the rows at once (SIMD).
    """
    out = t[i0:i1]
    for d in range(olo, ohi + 1):
        bd = np.uint64(d & 63)
        lo = u[i0 + (d >> 6):]  # the word holding pixel 64 i + d, and the next one
        hi = u[i0 + (d >> 6) + 1:]
        # (hi << 1) << (63 - bd): hi << (64 - bd), and 0 for bd == 0 (a shift by 64 is undefined)
        if d == olo:
            for i in range(i1 - i0):
                out[i] = (lo[i] >> bd) | ((hi[i] << np.uint64(1)) << (np.uint64(63) - bd))
        elif dilate:
            for i in range(i1 - i0):
                out[i] |= (lo[i] >> bd) | ((hi[i] << np.uint64(1)) << (np.uint64(63) - bd))
        else:
            for i in range(i1 - i0):
                out[i] &= (lo[i] >> bd) | ((hi[i] << np.uint64(1)) << (np.uint64(63) - bd))


@serial
def _morph_bits(src, dst, tmp, vbits, t0, a, b, h, olo, ohi, dilate, pre_unknown, post_valid, nw,
                last):
    """Rows a..b of a separable binary erosion / dilation over offsets olo..ohi, on packed rows.

    dst[g] = AND (erosion) / OR (dilation) over (di, dj) in [olo, ohi]^2 of
    src[g + di, j + dj]; rows and columns beyond the image are neutral (True for
    erosion, False for dilation). ``pre_unknown``: OR the input with ``not valid``
    first; ``post_valid``: AND the output with ``valid``.

    src, dst, tmp, vbits (the valid pixels): (rows, stride) uint64, image row g at
    row g - t0, nw words of pixels then k pad words (:func:`_hbits`), with rows to
    spare above and below for the offsets (and one more). ``last``: mask of the
    pixels in a row's last word. The pads and the bits past the row's end are set
    to the neutral value, and so are the rows beyond the image, so that each
    pass runs over the block's rows as one flat array. src's pads are overwritten;
    dst also holds src | not valid (``pre_unknown``) before the result.
    """
    stride = src.shape[1]
    ta = max(a + olo, 0)
    tb = min(b + ohi, h)
    neutral = np.uint64(0) if dilate else ~np.uint64(0)
    if pre_unknown:
        for g in range(ta, tb):
            s = src[g - t0]
            v = vbits[g - t0]
            o = dst[g - t0]
            for q in range(nw):
                o[q] = s[q] | ~v[q]
        u = dst
    else:
        u = src
    for g in range(ta - 1, tb):  # row ta - 1's pads are row ta's left pads
        r = u[g - t0]
        for q in range(nw, stride):
            r[q] = neutral
    for g in range(ta, tb):
        r = u[g - t0]
        r[nw - 1] = (r[nw - 1] & last) | (neutral & ~last)
    uf = u.reshape(-1)
    tf = tmp.reshape(-1)
    _hbits(uf, tf, (ta - t0) * stride, (tb - t0) * stride - (stride - nw), olo, ohi, dilate)
    for g in range(a + olo, b + ohi):
        if g < ta or g >= tb:
            r = tmp[g - t0]
            for q in range(stride):
                r[q] = neutral
    df = dst.reshape(-1)
    i0 = (a - t0) * stride
    i1 = (b - t0) * stride
    out = df[i0:i1]
    for d in range(olo, ohi + 1):
        t = tf[i0 + d * stride:]
        if d == olo:
            for i in range(i1 - i0):
                out[i] = t[i]
        elif dilate:
            for i in range(i1 - i0):
                out[i] |= t[i]
        else:
            for i in range(i1 - i0):
                out[i] &= t[i]
    if post_valid:
        v = vbits.reshape(-1)[i0:i1]
        for i in range(i1 - i0):
            out[i] &= v[i]


@serial
def _clean_chunk(flags, valid, vote_r, require, vote, open_px, close_px, r0, r1, changed):
    """Rows r0..r1 of :func:`clean_decision`: every stage on block-local scratch.

    Each stage is computed on the block's rows plus the halo the later stages
    read, so the block's result equals the whole-image result. The decision is
    made in bytes, then it and ``valid`` are packed 64 pixels to a word for the
    morphology (:func:`_morph_bits`), and the result unpacked once.
    """
    h, w = flags.shape
    vu = valid.view(np.uint8)
    o_lo = -(open_px // 2)
    o_hi = open_px - 1 + o_lo
    c_lo = -(close_px // 2)
    c_hi = close_px - 1 + c_lo
    ho = max(-o_lo, o_hi) if open_px > 1 else 0
    hc = max(-c_lo, c_hi) if close_px > 1 else 0
    # stage extents, last to first: close erode, close dilate, open dilate, open erode, decision
    e3a, e3b = max(r0 - hc, 0), min(r1 + hc, h)
    e2a, e2b = max(e3a - hc, 0), min(e3b + hc, h)
    e1a, e1b = max(e2a - ho, 0), min(e2b + ho, h)
    e0a, e0b = max(e1a - ho, 0), min(e1b + ho, h)
    n = e0b - e0a
    dec = np.empty((n, w), dtype=np.uint8)
    _decide_rows(flags, valid, vote_r, require, vote, e0a, e0b, dec, e0a)
    out = changed.view(np.uint8)
    if open_px == 1 and close_px == 1:
        for g in range(r0, r1):
            s = dec[g - e0a]
            o = out[g]
            for j in range(w):
                o[j] = s[j]
        return
    nw = (w + 63) // 64
    last = ~np.uint64(0) >> np.uint64(64 * nw - w)
    spare = max(ho, hc) + 1  # rows to spare above and below the block's (_morph_bits)
    stride = nw + 1 + max(ho, hc) // 64  # a row's words, then its pad words (_hbits)
    t0 = e0a - spare
    size = (n + 2 * spare, stride)
    cur = np.empty(size, dtype=np.uint64)
    nxt = np.empty(size, dtype=np.uint64)
    tmp = np.empty(size, dtype=np.uint64)
    vbits = np.empty(size, dtype=np.uint64)
    for g in range(e0a, e0b):
        _pack_row(dec[g - e0a], cur[g - t0])
        _pack_row(vu[g], vbits[g - t0])
    yes = np.bool_(True)  # np.bool_: no literal-typed arguments, so _morph_bits compiles once
    no = np.bool_(False)
    if open_px > 1:
        _morph_bits(cur, nxt, tmp, vbits, t0, e1a, e1b, h, o_lo, o_hi, no, yes, yes, nw, last)
        _morph_bits(nxt, cur, tmp, vbits, t0, e2a, e2b, h, -o_hi, -o_lo, yes, no, yes, nw, last)
    if close_px > 1:
        _morph_bits(cur, nxt, tmp, vbits, t0, e3a, e3b, h, -c_hi, -c_lo, yes, no, no, nw, last)
        _morph_bits(nxt, cur, tmp, vbits, t0, r0, r1, h, c_lo, c_hi, no, yes, yes, nw, last)
    for g in range(r0, r1):
        _unpack_row(cur[g - t0], out[g])


@parallel
def clean_decision(flags, valid, vote_r, require, vote, open_px, close_px):
    """The decision, then morphological opening and closing, in one kernel.

    raw = ``vote_decide(flags, valid, vote_r, require)`` when ``vote``, else the
    FLAG_CHANGED bit. Opening (side ``open_px``: removes speckle and thin lines), then
    closing (``close_px``: fills pinholes), by squares; 1 skips the step. Invalid pixels
    (nodata, cloud) and pixels beyond the array are unknown: they never erode a neighbour
    and are never set, so padding a halo with nodata or clipping it at the scene edge gives
    the same result, and a core pixel depends only on pixels within ``open_px + close_px - 2``
    (and the vote's radius). The tests compare it with that whole-array composition in NumPy.
    Returns changed (h, w) bool.
    """
    if vote and vote_r > VOTE_R_MAX:
        raise ValueError("clean_decision: the vote's radius must be <= VOTE_R_MAX (90)")
    h, w = flags.shape
    changed = np.empty((h, w), dtype=np.bool_)
    nch = (h + CLEAN_ROWS - 1) // CLEAN_ROWS
    for ch in prange(nch):
        r0 = np.int64(ch) * CLEAN_ROWS
        _clean_chunk(flags, valid, vote_r, require, vote, open_px, close_px, r0,
                     min(np.int64(h), r0 + CLEAN_ROWS), changed)
    return changed


# ---------------------------------------------------------------- objects
@serial
def label_counts(lab, n, r0, c0, a, b):
    """Per label, how many of its pixels are set in ``a`` and in ``b``.

    lab (hc, wc) int32 labels 1..n of the window whose first pixel is (r0, c0) of the
    (h, w) bool masks a and b. Returns (n, 2) int64 (as ``np.bincount`` of the labels of
    the set pixels); one pass over the window, reading the masks only where labelled.
    """
    hc, wc = lab.shape
    out = np.zeros((n, 2), dtype=np.int64)
    for i in range(hc):
        li = lab[i]
        ai = a[r0 + i]
        bi = b[r0 + i]
        for j in range(wc):
            k = li[j] - 1
            if k >= 0:
                out[k, 0] += ai[c0 + j]
                out[k, 1] += bi[c0 + j]
    return out


@serial
def object_sums(lab, n, prob, d_ndvi, d_ndwi, d_bri, ndvi_a, ndwi_a, bri_a, soil_a, evidence,
                strong):
    """Pixel count and per-object sums of the change layers, in one pass over the labels.

    lab (h, w) int32 labels 1..n (0: background); the layers (h, w) float32 /
    bool, any strides. Returns (n, N_SUMS) float64, columns: NPIX, S_P, S_DNDVI,
    S_DNDWI, S_DBRI, S_NDVIA, S_NDWIA, S_BRIA, S_BRIA2 (sum of squares), S_SOILA,
    N_EVID, N_STRONG. Pixels are added in row-major order (as ``np.bincount``).
    """
    h, w = lab.shape
    out = np.zeros((n, N_SUMS))
    for i in range(h):
        for j in range(w):
            k = lab[i, j] - 1
            if k < 0:
                continue
            bri = np.float64(bri_a[i, j])
            out[k, 0] += 1.0
            out[k, 1] += prob[i, j]
            out[k, 2] += d_ndvi[i, j]
            out[k, 3] += d_ndwi[i, j]
            out[k, 4] += d_bri[i, j]
            out[k, 5] += ndvi_a[i, j]
            out[k, 6] += ndwi_a[i, j]
            out[k, 7] += bri
            out[k, 8] += bri * bri
            out[k, 9] += soil_a[i, j]
            out[k, 10] += 1.0 if evidence[i, j] else 0.0
            out[k, 11] += 1.0 if strong[i, j] else 0.0
    return out


GROUP = 16  # pixels of a row object_sums_pair computes together if one is labelled (8 k)


@serial
def _mark_row(li, words):
    """Byte j of words (uint64) = li[j] != 0: the GROUP // 8 words of group g are 0
    unless it holds a label.

    Bytes past li.size are left as they are (0). SIMD, like a count: testing each
    group's labels in a loop of their own measured 7x slower.
    """
    nz = words.view(np.uint8)
    for j in range(li.size):
        nz[j] = li[j] != 0


@serial
def _mark_groups(lab, a, b, marks):
    """marks[i, g] = 1 where group g (a row's last may be shorter) of row i of lab holds a
    label, else 0, for rows a..b (and 0 past the row's groups); returns how many are marked."""
    ng = (lab.shape[1] + GROUP - 1) // GROUP
    words = np.zeros((ng, GROUP // 8), dtype=np.uint64)
    row = words.reshape(-1)
    n = 0
    for i in range(a, b):
        _mark_row(lab[i], row)
        mi = marks[i]
        for g in range(ng):
            seen = np.uint64(0)
            for k in range(GROUP // 8):
                seen |= words[g, k]
            mi[g] = seen != 0
            n += mi[g]
        for g in range(ng, mi.size):
            mi[g] = 0
    return n


@inline
def _copy8(src, r, c, dst, t):
    """dst[t + j] = src[r, c + j] for j < 8, with unsigned indices.

    All eight are loaded before any is stored: LLVM cannot rule out that src and dst
    overlap, and only so it makes one vector copy of them (a loop copies one by one).
    """
    u = np.uint64
    a0, a1, a2, a3 = src[r, c], src[r, c + u(1)], src[r, c + u(2)], src[r, c + u(3)]
    a4, a5, a6, a7 = src[r, c + u(4)], src[r, c + u(5)], src[r, c + u(6)], src[r, c + u(7)]
    dst[t], dst[t + u(1)], dst[t + u(2)], dst[t + u(3)] = a0, a1, a2, a3
    dst[t + u(4)], dst[t + u(5)], dst[t + u(6)], dst[t + u(7)] = a4, a5, a6, a7


@inline
def _copy8_band(src, k, r, c, dst, t):
    """:func:`_copy8` of band k: dst[k, 0, t + j] = src[k, r, c + j], j < 8."""
    u = np.uint64
    a0, a1, a2, a3 = src[k, r, c], src[k, r, c + u(1)], src[k, r, c + u(2)], src[k, r, c + u(3)]
    a4, a5 = src[k, r, c + u(4)], src[k, r, c + u(5)]
    a6, a7 = src[k, r, c + u(6)], src[k, r, c + u(7)]
    dst[k, 0, t], dst[k, 0, t + u(1)], dst[k, 0, t + u(2)], dst[k, 0, t + u(3)] = a0, a1, a2, a3
    dst[k, 0, t + u(4)], dst[k, 0, t + u(5)], dst[k, 0, t + u(6)] = a4, a5, a6
    dst[k, 0, t + u(7)] = a7


@serial
def _group_pixels(lab, marks, flags, x, y, r0, c0, a, b, t0, label, bits, xg, yg):
    """The pixels of the marked groups (:func:`_mark_groups`) of rows a..b, row-major.

    From position t0 of label (npix,) int32 and bits (npix,) uint8 (the pixels'
    labels and flags), and from 0 of xg, yg (nb, 1, m) float32 (their band values);
    a group cut by the row's end repeats its last pixel. Whole groups are copied, not
    pixels: the few unlabelled pixels among them (label 0) are computed but never
    added. The groups are listed first (eight marks at a time, most of them 0), so
    the copies run without a branch between them (the loads of many groups in
    flight: they come from memory). Unsigned indices: Numba adds no wraparound
    select, and eight pixels are one vector copy. Groups of 16 measured 10-25 % faster
    than groups of 8 (bench tile, one thread; 32 no faster), though they compute 21 %
    more pixels than are labelled there (8: 16 %).
    """
    nb = x.shape[0]
    wc = lab.shape[1]
    ng = xg.shape[2] // GROUP
    m64 = marks.view(np.uint64)
    gi = np.empty(ng + 1, dtype=np.uint64)
    gj = np.empty(ng + 1, dtype=np.uint64)
    q = 0
    for i in range(a, b):
        for w in range(m64.shape[1]):
            if m64[i, w] != 0:
                for g in range(8 * w, 8 * w + 8):
                    gi[q] = i
                    gj[q] = g * GROUP
                    q += marks[i, g]
    u = np.uint64
    for q in range(ng):
        i = gi[q]
        j0 = gj[q]
        n = min(u(GROUP), u(wc) - j0)
        ri = u(r0) + i
        cj = u(c0) + j0
        t = u(q * GROUP)
        tl = u(t0) + t
        if n == GROUP:
            for h in range(0, GROUP, 8):
                o = u(h)
                _copy8(lab, i, j0 + o, label, tl + o)
                _copy8(flags, ri, cj + o, bits, tl + o)
                for k in range(nb):
                    _copy8_band(x, k, ri, cj + o, xg, t + o)
                    _copy8_band(y, k, ri, cj + o, yg, t + o)
        else:  # the end of a row: its last pixel repeated, with label 0
            for j in range(GROUP):
                jj = min(u(j), n - u(1))
                label[tl + u(j)] = lab[i, j0 + jj] if u(j) < n else 0
                bits[tl + u(j)] = flags[ri, cj + jj]
                for k in range(nb):
                    xg[k, 0, t + u(j)] = x[k, ri, cj + jj]
                    yg[k, 0, t + u(j)] = y[k, ri, cj + jj]


@serial
def _pixel_layers(xg, yg, p, ip, mx, my, ca, cb, gain, offset, roles, scale, vals, t0):
    """The float32 layers of :func:`detect_pixels` of the pixels of xg, yg (nb, 1, m).

    The row helpers of :func:`_pixel_rows` (:func:`_z_row`, :func:`_dates_row`,
    :func:`_outputs_row`, :func:`_sf_row`) run on the gathered pixels as on a row:
    one formula, the same float arithmetic. vals (8, npix) float32, the pixels at
    t0 .. t0 + m: probability, d_ndvi, d_ndwi, d_bright, ndvi_a, ndwi_a, bright_a,
    soil_a.
    """
    m = xg.shape[2]
    zero = np.zeros(m, dtype=np.float32)
    zr = np.empty(m)
    sf = np.empty(m)
    sc = np.empty((7, m))
    _z_row(xg, yg, 0, p, ip, mx, my, ca, cb, zr)
    _indices_row(xg, yg, 0, roles, gain, offset, scale, zero, sc)
    t1 = t0 + m
    _outputs_row(zr, sc[0], sc[1], sc[2], sc[3], sc[4], sc[5], sc[6], vals[1, t0:t1],
                 vals[2, t0:t1], vals[3, t0:t1], vals[4, t0:t1], vals[5, t0:t1], vals[6, t0:t1],
                 vals[7, t0:t1])
    _sf_row(zr, p, _sf_coefficients(p), sf)
    pr = vals[0, t0:t1]
    for t in range(m):
        pr[t] = 1.0 - sf[t]


@serial
def _label_runs(label, t0, t1, runs, at):
    """Where the runs of one label (0 too) start among positions t0..t1 of label.

    Into runs[at:], in order; returns how many.
    """
    n = 0
    prev = np.int32(-1)
    for t in range(t0, t1):
        lt = label[t]
        if lt != prev:
            runs[at + n] = t
            n += 1
        prev = lt
    return n


@serial
def _block_values(lab, marks, r0, c0, x, y, flags, p, ip, mx, my, ca, cb, gain, offset, roles,
                  scale, a, b, t0, t1, label, bits, vals, runs, at):
    """The pixels of the marked groups of rows a..b of lab, positions t0..t1 of the list.

    label (npix,) int32: the pixel's label (0: not labelled, never added); bits (npix,)
    uint8: its flags; vals (8, npix): its layers (:func:`_pixel_layers`, while the
    block's rows are in cache); runs[at:]: where its runs of one label start
    (:func:`_label_runs`), whose number it returns.
    """
    nb = x.shape[0]
    xg = np.empty((nb, 1, t1 - t0), dtype=np.float32)
    yg = np.empty((nb, 1, t1 - t0), dtype=np.float32)
    _group_pixels(lab, marks, flags, x, y, r0, c0, a, b, t0, label, bits, xg, yg)
    _pixel_layers(xg, yg, p, ip, mx, my, ca, cb, gain, offset, roles, scale, vals, t0)
    return _label_runs(label, t0, t1, runs, at)


@serial
def _add_square(s, v):
    """s + v * v with one rounding (a fused multiply-add): S_BRIA2 as it has always been summed.

    Not inlined in Numba's IR, so it keeps the fast-math 'contract' flag under which LLVM
    fuses the two (:func:`_add_runs` is compiled without fast-math).
    """
    return s + v * v


@exact
def _add_runs(label, bits, vals, runs, nr, end, lo, hi, out):
    """Add the pixels of labels lo + 1 .. hi among nr runs of one label to out (n, N_SUMS).

    label, bits, vals: of :func:`_block_values`; the runs start at runs[:nr], the last
    ends at end. Pixels are added in list order, row-major (as ``np.bincount``); a run's
    sums are kept in registers, and compiled without fast-math, so none is regrouped.
    Its counts are summed as integers, then added: exact, as adding each 1.0.
    """
    for r in range(nr):
        t = runs[r]
        e = runs[r + 1] if r + 1 < nr else end
        k = label[t] - 1
        if k < lo or k >= hi:
            continue
        s1, s2, s3, s4 = out[k, 1], out[k, 2], out[k, 3], out[k, 4]
        s5, s6, s7, s8, s9 = out[k, 5], out[k, 6], out[k, 7], out[k, 8], out[k, 9]
        n_evid = 0
        n_strong = 0
        for u in range(np.uint64(t), np.uint64(e)):  # unsigned: no wraparound selects
            f = bits[u]
            bri = np.float64(vals[6, u])
            s1 += vals[0, u]
            s2 += vals[1, u]
            s3 += vals[2, u]
            s4 += vals[3, u]
            s5 += vals[4, u]
            s6 += vals[5, u]
            s7 += bri
            s8 = _add_square(s8, bri)
            s9 += vals[7, u]
            n_evid += (f & FLAG_EVIDENCE) != 0
            n_strong += (f & FLAG_STRONG) != 0
        out[k, 0] += e - t
        out[k, 1], out[k, 2], out[k, 3], out[k, 4] = s1, s2, s3, s4
        out[k, 5], out[k, 6], out[k, 7], out[k, 8], out[k, 9] = s5, s6, s7, s8, s9
        out[k, 10] += n_evid
        out[k, 11] += n_strong


def object_sums_pair(lab, n, r0, c0, x, y, flags, idx, mean_x, mean_y, a, b, inv_sigma, gain,
                     offset, roles, scale):
    """:func:`object_sums` of the layers of :func:`detect_pixels`, computed from the pair.

    lab (hc, wc) int32 labels 1..n of a window of the tile whose pixel (0, 0) is
    pixel (r0, c0) of x, y (nb, h, w) float32 and flags (h, w) uint8 (from
    :func:`pixel_flags`); the model arguments as :func:`detect_pixels`. Only the
    labelled pixels (the changed ones: a few per cent of a tile) are read, by groups
    of GROUP along a row; their layers come from the row helpers of the per-pixel
    pass (:func:`_pixel_layers`), so the sums equal ``object_sums`` over that pass's
    layers, added in the same row-major order. N_EVID / N_STRONG count the
    FLAG_EVIDENCE / FLAG_STRONG bits. Labelled pixels must be valid (changed pixels
    are). Returns (n, N_SUMS) float64.

    In parallel: the labelled groups counted by row blocks; then the blocks in
    parts of rows, one per Numba thread, the first part adding its pixels as their
    layers are computed, the others listing them; then the listed pixels added by
    parts of the labels. Each object's pixels are added by one thread at a time,
    in row-major order, so the sums do not depend on the number of threads.
    """
    return _sums_pair(lab, n, r0, c0, x, y, flags, idx, mean_x, mean_y, a, b, inv_sigma, gain,
                      offset, roles, scale, numba.get_num_threads())


@parallel
def _sums_pair(lab, n, r0, c0, x, y, flags, idx, mean_x, mean_y, a, b, inv_sigma, gain, offset,
               roles, scale, parts):
    """:func:`object_sums_pair` with the row blocks, then the labels, in ``parts``."""
    p = idx.size
    ip, mx, my, ca, cb = _padded(idx, mean_x, mean_y, a, b, inv_sigma)
    hc = lab.shape[0]
    nrb = (hc + CHUNK - 1) // CHUNK
    # a byte per group, in rows of whole uint64 words (_group_pixels skips 8 at a time)
    marks = np.empty((hc, 8 * ((lab.shape[1] + 8 * GROUP - 1) // (8 * GROUP))), dtype=np.uint8)
    # the row blocks in parts, one per thread: the first part's pixels, first in every
    # object's row-major order, are added as they are computed (its blocks marked then,
    # while their labels are in cache); the others' are listed, then added in order by
    # parts of the labels
    per = (nrb + parts - 1) // parts
    first = min(per, nrb)  # blocks of the first part
    listed = np.zeros(nrb - first + 1, dtype=np.int64)  # where the others' pixels go
    for k in prange(nrb - first):
        listed[k + 1] = GROUP * _mark_groups(lab, _first(first + k), _stop(first + k, hc), marks)
    for k in range(nrb - first):
        listed[k + 1] += listed[k]
    npix = listed[nrb - first]
    label = np.empty(npix, dtype=np.int32)
    bits = np.empty(npix, dtype=np.uint8)
    vals = np.empty((8, npix), dtype=np.float32)
    runs = np.empty(npix, dtype=np.int64)
    nruns = np.zeros(nrb - first, dtype=np.int64)
    out = np.zeros((n, N_SUMS))
    for q in prange(parts):
        for ch in range(np.int64(q) * per, min(np.int64(q) * per + per, nrb)):
            k = ch - first
            if k < 0:  # block-local lists, added at once
                t0, t1 = np.int64(0), GROUP * _mark_groups(lab, _first(ch), _stop(ch, hc), marks)
                lb = np.empty(t1, dtype=np.int32)
                bb = np.empty(t1, dtype=np.uint8)
                vb = np.empty((8, t1), dtype=np.float32)
                rb = np.empty(t1, dtype=np.int64)
            else:
                t0, t1 = listed[k], listed[k + 1]
                lb, bb, vb, rb = label, bits, vals, runs
            # one call: LLVM inlines it, and a second call site compiled it twice (+4 s)
            nr = _block_values(lab, marks, r0, c0, x, y, flags, p, ip, mx, my, ca, cb, gain,
                               offset, roles, scale, _first(ch), _stop(ch, hc), t0, t1, lb, bb,
                               vb, rb, t0)
            if k < 0:
                _add_runs(lb, bb, vb, rb, nr, t1, 0, n, out)
            else:
                nruns[k] = nr
    for g in prange(parts):
        lo = np.int64(g) * n // parts
        hi = (np.int64(g) + 1) * n // parts
        for k in range(nrb - first):
            _add_runs(label, bits, vals, runs[listed[k]:], nruns[k], listed[k + 1], lo, hi, out)
    return out
