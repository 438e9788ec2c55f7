"""The flags-only per-pixel pass and the per-object sums computed from the pair.

detect_tile keeps only the flags per pixel (kernels.pixel_flags); the float32 layers are summed
per object from the pair itself (kernels.object_sums_pair, ChangeLayers.object_sums) and made
whole only on demand (ChangeLayers.probability, ...). Each must equal what the full per-pixel
pass (kernels.detect_pixels) gives, and the sums the NumPy sums (np.bincount) of NumPy-computed
layers (tests.test_detect_kernels.ref_change) over each label.
"""
from __future__ import annotations

import numba
import numpy as np
import pytest

from detect import kernels
from detect.detector import DetectParams, detect_tile, fit_model
from tests.test_detect_fused import pass_args, ref_wet_box
from tests.test_detect_kernels import _realistic_pair, ref_change

RNG = np.random.default_rng(11)
TALL = 2 * kernels.CHUNK + 13  # three row blocks, the last one short


def _bincount_sums(lab, n, layers):
    """NumPy: pixel count and the sums of ``kernels.object_sums`` over each label."""
    flat = lab.ravel()
    cols = [np.bincount(flat, minlength=n + 1)[1:].astype(np.float64)]
    for k, layer in enumerate(layers):
        v = np.asarray(layer).ravel().astype(np.float64)
        cols.append(np.bincount(flat, weights=v, minlength=n + 1)[1:])
        if k == 6:  # bright_after: also the sum of squares
            cols.append(np.bincount(flat, weights=v * v, minlength=n + 1)[1:])
    return np.stack(cols, axis=1)


@pytest.mark.parametrize("radius, swir, landuse", [(1, False, True), (2, True, True),
                                                   (0, False, True), (1, True, False)])
def test_pixel_flags_equal_detect_pixels(radius, swir, landuse):
    x, y = _realistic_pair(TALL, 45, swir)
    valid = RNG.random((TALL, 45)) > 0.05
    args, _ = pass_args(x, y, swir, landuse, radius)
    flags = kernels.pixel_flags(x, y, valid, *args, radius)
    np.testing.assert_array_equal(flags, kernels.detect_pixels(x, y, valid, *args, radius)[-1])
    assert (flags & kernels.FLAG_CROP).any() and (flags & kernels.FLAG_CHANGED).any()


@pytest.mark.parametrize("swir", [False, True])
def test_object_sums_pair_equal_sums_of_layers(swir):
    h, w = TALL, 53
    x, y = _realistic_pair(h, w, swir)
    valid = RNG.random((h, w)) > 0.05
    args, params = pass_args(x, y, swir)
    layers = kernels.detect_pixels(x, y, valid, *args, 1)
    flags = layers[-1]
    # labels on a window of the arrays (a tile's core inside its halo), on valid pixels only
    r0, c0, hc, wc = 3, 5, h - 7, w - 9
    n = 40
    lab = RNG.integers(0, n + 1, (hc, wc)).astype(np.int32)
    lab[~valid[r0:r0 + hc, c0:c0 + wc]] = 0
    lab[:, 7] = 0  # runs end and start again within a row
    got = kernels.object_sums_pair(lab, n, r0, c0, x, y, flags, *args[:-1])
    # the labels are summed in groups, one per thread: the same bits on one thread
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = kernels.object_sums_pair(lab, n, r0, c0, x, y, flags, *args[:-1])
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_array_equal(got, one)
    window = (slice(r0, r0 + hc), slice(c0, c0 + wc))
    bits = [(flags & kernels.FLAG_EVIDENCE) > 0, (flags & kernels.FLAG_STRONG) > 0]
    # the same float32 layers as the full pass, added in the same order: equal to float rounding
    # (the pass's own layers and its own summing kernel)
    full = kernels.object_sums(lab, n, *(a[window] for a in (*layers[:8], *bits)))
    np.testing.assert_allclose(got, full, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got, _bincount_sums(lab, n, [a[window] for a in
                                                             (*layers[:8], *bits)]),
                               rtol=1e-9, atol=1e-9)
    # and NumPy's layers (whole-array reference of the per-pixel pass)
    ys = ref_wet_box(y, valid, args[8], args[6], args[7], params.wet_ndwi, 1)
    ref = ref_change(x, y, ys, valid, *args)
    ref_bits = [(ref[-1] & kernels.FLAG_EVIDENCE) > 0, (ref[-1] & kernels.FLAG_STRONG) > 0]
    want = _bincount_sums(lab, n, [a[window] for a in (*ref[:8], *ref_bits)])
    np.testing.assert_allclose(got[:, :10], want[:, :10], rtol=2e-5, atol=2e-4)
    # evidence / strong counts: the flags may differ from NumPy's at a few threshold pixels
    assert np.abs(got[:, 10:] - want[:, 10:]).sum() <= 0.002 * got[:, 0].sum()


@pytest.mark.parametrize("wc", [1, 5, 15, 16, 17, 31, 33, 40])
def test_object_sums_pair_groups_and_window(wc):
    """Pixels are read by groups of kernels.GROUP along a row, the last one cut by the row's
    end: the sums of a window are the same bits as those of the window's arrays cut out,
    or with unlabelled columns added (groups and row ends moved), or with the labels
    renamed; and equal to the sums of the full pass's layers."""
    h, w = TALL, wc + 12
    x, y = _realistic_pair(h, w, False)
    valid = RNG.random((h, w)) > 0.05
    args, _ = pass_args(x, y, False)
    flags = kernels.pixel_flags(x, y, valid, *args, 1)
    r0, c0, hc, n = 4, 7, h - 9, 9
    lab = RNG.integers(0, n + 1, (hc, wc)).astype(np.int32)
    lab[:, -1] = RNG.integers(1, n + 1, hc)  # labels at the row's end
    lab[RNG.random((hc, wc)) < 0.5] = 0
    lab[~valid[r0:r0 + hc, c0:c0 + wc]] = 0
    model = args[:-1]
    got = kernels.object_sums_pair(lab, n, r0, c0, x, y, flags, *model)
    cut = (slice(r0, r0 + hc), slice(c0, c0 + wc))
    alone = kernels.object_sums_pair(lab, n, 0, 0, np.ascontiguousarray(x[:, cut[0], cut[1]]),
                                     np.ascontiguousarray(y[:, cut[0], cut[1]]),
                                     np.ascontiguousarray(flags[cut]), *model)
    np.testing.assert_array_equal(got, alone)
    wider = np.zeros((hc, wc + 5), np.int32)
    wider[:, 3:3 + wc] = lab
    np.testing.assert_array_equal(
        kernels.object_sums_pair(wider, n, r0, c0 - 3, x, y, flags, *model), got)
    perm = RNG.permutation(n) + 1
    renamed = np.where(lab > 0, perm[lab - 1], 0).astype(np.int32)
    np.testing.assert_array_equal(
        kernels.object_sums_pair(renamed, n, r0, c0, x, y, flags, *model)[perm - 1], got)
    layers = kernels.detect_pixels(x, y, valid, *args, 1)
    bits = [(flags & kernels.FLAG_EVIDENCE) > 0, (flags & kernels.FLAG_STRONG) > 0]
    full = kernels.object_sums(lab, n, *(a[cut] for a in (*layers[:8], *bits)))
    np.testing.assert_allclose(got, full, rtol=1e-12, atol=1e-12)


def test_object_sums_pair_no_labels():
    x, y = _realistic_pair(9, 11, False)
    args, _ = pass_args(x, y, False)
    flags = np.zeros((9, 11), np.uint8)
    lab = np.zeros((9, 11), np.int32)
    got = kernels.object_sums_pair(lab, 0, 0, 0, x, y, flags, *args[:-1])
    assert got.shape == (0, kernels.N_SUMS)


def test_change_layers_are_the_full_pass_on_demand():
    x, y = _realistic_pair(TALL, 40, False)
    y[:, 10:30, 10:25] = x[:, 10:30, 10:25] * 0.3 + 2500  # a brightened block
    valid = RNG.random((TALL, 40)) > 0.05
    bands = ("blue", "green", "red", "nir")
    params = DetectParams()
    model = fit_model(x, y, valid, bands, params)
    layers = detect_tile(x, y, valid, bands, model, params)
    full = kernels.detect_pixels(*layers.pixel_args)
    np.testing.assert_array_equal(layers.flags, full[-1])
    names = ("probability", "d_ndvi", "d_ndwi", "d_bright", "ndvi_after", "ndwi_after",
             "bright_after", "soil_after")
    for k, name in enumerate(names):
        np.testing.assert_array_equal(getattr(layers, name), full[k], err_msg=name)
    assert np.isnan(layers.probability[~valid]).all()
    np.testing.assert_array_equal(layers.evidence, (full[-1] & kernels.FLAG_EVIDENCE) > 0)
    np.testing.assert_array_equal(layers.strong, (full[-1] & kernels.FLAG_STRONG) > 0)

