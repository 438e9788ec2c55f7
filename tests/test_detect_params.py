"""DetectParams from the [detect] table and the ChangeModel round trip."""
from __future__ import annotations

import json

import numpy as np
import pytest

from detect.detector import HALO_PX, ChangeModel, DetectParams, fit_model
from tiles.errors import ConfigError, InputError


def test_defaults_and_from_dict():
    p = DetectParams.from_dict({"significance": 0.05, "min_area_m2": 300, "open_px": 1})
    assert p.significance == 0.05 and p.min_area_m2 == 300.0 and p.open_px == 1
    assert DetectParams.from_dict({}) == DetectParams()
    assert DetectParams().reach_px <= HALO_PX


@pytest.mark.parametrize("d, key", [
    ({"signifcance": 0.01}, "signifcance"),
    ({"significance": 1.5}, "significance"),
    ({"significance": "0.01"}, "significance"),
    ({"open_px": 2.5}, "open_px"),
    ({"require_evidence": 1}, "require_evidence"),
    ({"open_px": 6, "close_px": 6}, "close_px"),
])
def test_bad_keys_name_the_key(d, key):
    with pytest.raises(ConfigError, match=key):
        DetectParams.from_dict(d)


def _pair(seed=1, n=40):
    rng = np.random.default_rng(seed)
    x = rng.normal(1000, 100, (4, n, n)).astype(np.float32)
    y = (0.9 * x + rng.normal(0, 30, x.shape)).astype(np.float32)
    return x, y, np.ones((n, n), bool)


def test_model_round_trips_through_json():
    x, y, v = _pair()
    m = fit_model(x, y, v, ("blue", "green", "red", "nir"), DetectParams())
    m2 = ChangeModel.from_dict(json.loads(json.dumps(m.to_dict())))
    assert m2 == m


def test_constant_and_duplicate_bands_raise():
    x, y, v = _pair()
    bands = ("blue", "green", "red", "nir")
    xc = x.copy()
    xc[2] = 1234.0
    with pytest.raises(InputError, match="'red' of the before image is constant"):
        fit_model(xc, y, v, bands, DetectParams())
    yd = y.copy()
    yd[1] = yd[0]
    with pytest.raises(InputError, match="'blue' and 'green' of the after image are duplicates"):
        fit_model(x, yd, v, bands, DetectParams())
    with pytest.raises(InputError, match="valid pixels"):
        fit_model(x, y, np.zeros_like(v), bands, DetectParams())


def test_band_roles_checked():
    x, y, v = _pair()
    with pytest.raises(ConfigError, match="lacks the role"):
        fit_model(x, y, v, ("blue", "green", "red", "-"), DetectParams())
    with pytest.raises(ConfigError, match="'infrared' .*unknown"):
        fit_model(x, y, v, ("blue", "green", "red", "infrared"), DetectParams())
    with pytest.raises(ConfigError, match="names 3 bands"):
        fit_model(x, y, v, ("green", "red", "nir"), DetectParams())


def test_reflectance_warning_tells_the_units_apart():
    from detect.detector import reflectance_warning

    rng = np.random.default_rng(3)
    refl = rng.uniform(0.03, 0.25, (4, 50, 50))     # a land scene, reflectance 0-1
    valid = np.ones((50, 50), bool)
    bands = ("blue", "green", "red", "nir")
    assert reflectance_warning(refl * 10000, valid, bands, 1e-4) is None
    assert reflectance_warning(refl, valid, bands, 1.0) is None
    float_msg = reflectance_warning(refl, valid, bands, 1e-4)      # reflectance read as x 10000
    assert "reflectance_scale 0.0001" in float_msg and "1 for reflectance" in float_msg
    assert reflectance_warning(refl * 255, valid, bands, 1e-4)     # 8-bit DN: ~0.004
    assert reflectance_warning(refl * 10000, valid, bands, 1e-3)   # ten times too bright
    # the median of the visible bands over valid pixels only; none visible or valid: no opinion
    dark = refl * 10000
    dark[:, :, :30] = 0.0
    assert reflectance_warning(dark, valid, bands, 1e-4)
    assert reflectance_warning(dark, dark[0] > 0, bands, 1e-4) is None
    assert reflectance_warning(refl, valid, ("nir", "swir", "-", "-"), 1e-4) is None
    assert reflectance_warning(refl, ~valid, bands, 1e-4) is None
