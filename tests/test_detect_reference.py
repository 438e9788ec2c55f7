"""The reference date's veto (the same season a year earlier) on a synthetic scene with known truth.

Four sites turn from green crop into something else between the before and after dates:
a field flooded as it was a year ago (seasonal: the veto must drop it), the same flooding under a
cloud of the reference (the reference cannot speak: two dates decide), a new roof and a new pond
on fields that were cropped a year ago (land-use change: kept).
"""
from __future__ import annotations

import numpy as np
import pytest

from detect.detector import DetectParams, detect_tile, fit_model
from tiles.errors import ConfigError

BANDS = ("blue", "green", "red", "nir")
SPECTRA = {
    "crop": (0.04, 0.08, 0.05, 0.40),
    "crop2": (0.05, 0.09, 0.06, 0.33),
    "forest": (0.03, 0.06, 0.04, 0.30),
    "village": (0.14, 0.15, 0.17, 0.24),
    "water": (0.06, 0.07, 0.05, 0.02),
    "muddy": (0.08, 0.10, 0.09, 0.04),
    "roof": (0.25, 0.27, 0.28, 0.30),
}
H = W = 192
SITES = {  # name: (rows, cols), after class, reference class
    "flooded_as_last_year": ((slice(16, 56), slice(16, 56)), "water", "muddy"),
    "flooded_under_reference_cloud": ((slice(112, 152), slice(16, 56)), "water", "muddy"),
    "new_roof": ((slice(72, 96), slice(96, 136)), "roof", "crop"),
    "new_pond": ((slice(128, 168), slice(128, 168)), "water", "crop"),
}
CLOUD = (slice(104, 160), slice(8, 64))     # over the second site only, on the reference


def _render(classes, rng, gain, offset, noise=0.004):
    out = np.zeros((4, H, W))
    for name, spec in SPECTRA.items():
        m = classes == name
        for b in range(4):
            out[b][m] = spec[b]
    tex = 1.0 + 0.06 * rng.standard_normal((H // 8, W // 8)).repeat(8, 0).repeat(8, 1)
    out = out * tex + noise * rng.standard_normal(out.shape)
    out = out * np.asarray(gain)[:, None, None] + np.asarray(offset)[:, None, None]
    return np.clip(np.round(out * 10000), 1, 65535).astype(np.float32)


@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(7)
    base = np.empty((H, W), dtype=object)
    kinds = ["crop", "crop", "crop2", "forest", "village"]
    for r0 in range(0, H, 32):
        for c0 in range(0, W, 32):
            base[r0:r0 + 32, c0:c0 + 32] = kinds[rng.integers(len(kinds))]
    before_cls, after_cls, ref_cls = base.copy(), base.copy(), base.copy()
    for (rows, cols), after, ref in SITES.values():
        before_cls[rows, cols] = "crop"
        after_cls[rows, cols] = after
        ref_cls[rows, cols] = ref
    before = _render(before_cls, rng, (1, 1, 1, 1), (0, 0, 0, 0))
    after = _render(after_cls, rng, (1.08, 1.05, 1.1, 0.95), (0.01, 0.008, 0.005, 0.02))
    reference = _render(ref_cls, rng, (0.93, 0.97, 0.95, 1.06), (0.015, 0.01, 0.004, 0.0))
    valid = np.ones((H, W), bool)
    ref_valid = valid.copy()
    ref_valid[CLOUD] = False
    params = DetectParams(min_area_m2=0)
    model = fit_model(before, after, valid, BANDS, params)
    ref_model = fit_model(reference, after, ref_valid, BANDS, params)
    return before, after, valid, reference, ref_valid, params, model, ref_model


def _share(changed, site):
    rows, cols = SITES[site][0]
    return float(changed[rows, cols].mean())


def _outside(changed):
    m = np.ones((H, W), bool)
    for (rows, cols), _, _ in SITES.values():
        m[rows, cols] = False
    return float(changed[m].mean())


def test_two_dates_flag_every_site(scene):
    """Without the reference all four sites change (the seasonal floods too): the test has teeth."""
    before, after, valid, _, _, params, model, _ = scene
    changed = detect_tile(before, after, valid, BANDS, model, params).changed
    for site in SITES:
        assert _share(changed, site) > 0.8, site
    assert _outside(changed) < 0.01


def test_the_reference_drops_what_was_already_there_a_year_ago(scene):
    before, after, valid, reference, ref_valid, params, model, ref_model = scene
    changed = detect_tile(before, after, valid, BANDS, model, params, reference=reference,
                          reference_valid=ref_valid, reference_model=ref_model).changed
    assert _share(changed, "flooded_as_last_year") < 0.05
    # under the reference's cloud two dates decide; land-use change is new since a year ago too
    for site in ("flooded_under_reference_cloud", "new_roof", "new_pond"):
        assert _share(changed, site) > 0.8, site
    assert _outside(changed) < 0.01


def test_a_reference_without_its_model_is_refused(scene):
    before, after, valid, reference, ref_valid, params, model, _ = scene
    with pytest.raises(ConfigError, match="fit_model"):
        detect_tile(before, after, valid, BANDS, model, params, reference=reference,
                    reference_valid=ref_valid)


def test_a_reference_model_with_other_bands_is_refused(scene):
    before, after, valid, reference, ref_valid, params, model, ref_model = scene
    other = type(ref_model).from_dict({**ref_model.to_dict(), "bands": ["green", "blue", "red", "nir"]})
    with pytest.raises(ConfigError, match="reference model"):
        detect_tile(before, after, valid, BANDS, model, params, reference=reference,
                    reference_valid=ref_valid, reference_model=other)
