"""Accuracy on the real Landsat change pairs (Wu, Du & Zhang 2014) against two baselines.

Labels mark every change (not only land-use change), so the detector is scored with
``landuse_rules = false``: the IR-MAD chi-square test plus the morphology. Baselines,
computed here in the same run: plain change vector analysis (magnitude of the raw
band difference) + Otsu, and |delta NDVI| + Otsu. Scored on labelled pixels only.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from detect.detector import DetectParams, detect_tile, fit_model

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "landsat_taizhou_nanjing"
PAIRS = {"Taizhou": ("2000TM", "2003TM"),
         "Nanjing": ("LT51200382000124BJC00_Nanjing", "LT51200382002193BJC00_Nanjing")}
BANDS = ("blue", "green", "red", "nir", "swir", "-")


def otsu(values, bins=256):
    """Otsu's threshold (maximum between-class variance) of the finite values."""
    v = values[np.isfinite(values)]
    hist, edges = np.histogram(v, bins)
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(hist).astype(float)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = w0 * w1 * (m0 / w0 - (m0[-1] - m0) / w1) ** 2
    return centres[np.nanargmax(between)]


def oa_kappa(pred, changed, unchanged):
    """Overall accuracy and Cohen's kappa on the labelled pixels."""
    tp = np.sum(pred & changed)
    fn = np.sum(~pred & changed)
    fp = np.sum(pred & unchanged)
    tn = np.sum(~pred & unchanged)
    n = tp + fn + fp + tn
    oa = (tp + tn) / n
    pe = ((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)) / n ** 2
    return oa, (oa - pe) / (1 - pe)


def load(city):
    import rasterio

    a, b = PAIRS[city]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the ENVI / BMP files carry no georeferencing
        with rasterio.open(DATA / city / a) as s:
            x = s.read().astype(np.float32)
        with rasterio.open(DATA / city / b) as s:
            y = s.read().astype(np.float32)
        with rasterio.open(DATA / city / "change.bmp") as s:
            ch = s.read(1) == 255
        with rasterio.open(DATA / city / "unchanged.bmp") as s:
            un = s.read(1) == 255
    return x, y, ch, un


def scores(city, params):
    x, y, ch, un = load(city)
    valid = np.ones(x.shape[1:], bool)
    model = fit_model(x, y, valid, BANDS, params)
    layers = detect_tile(x, y, valid, BANDS, model, params)
    cva = np.sqrt(((y[:5] - x[:5]) ** 2).sum(axis=0))
    ndvi = lambda s: (s[3] - s[2]) / np.maximum(s[3] + s[2], 1e-6)
    dndvi = np.abs(ndvi(y) - ndvi(x))
    return {"tianyan": oa_kappa(layers.changed, ch, un),
            "cva_otsu": oa_kappa(cva > otsu(cva), ch, un),
            "dndvi_otsu": oa_kappa(dndvi > otsu(dndvi), ch, un)}


def test_otsu_on_a_bimodal_sample():
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.normal(0, 1, 5000), rng.normal(10, 1, 5000)])
    assert 3.0 < otsu(v) < 7.0


def test_oa_kappa_by_hand():
    pred = np.array([1, 1, 0, 0, 1, 0], bool)
    ch = np.array([1, 1, 1, 0, 0, 0], bool)
    un = ~ch
    oa, k = oa_kappa(pred, ch, un)  # tp 2, fn 1, fp 1, tn 2
    assert oa == pytest.approx(4 / 6)
    pe = (3 * 3 + 3 * 3) / 36
    assert k == pytest.approx((4 / 6 - pe) / (1 - pe))


@pytest.mark.parametrize("city", list(PAIRS))
def test_tianyan_beats_baselines(city):
    if not (DATA / city).exists():
        pytest.skip(f"real Landsat data not found at {DATA / city}")
    s = scores(city, DetectParams(landuse_rules=False))
    print(city, {k: tuple(round(float(v), 4) for v in s[k]) for k in s})
    for base in ("cva_otsu", "dndvi_otsu"):
        assert s["tianyan"][0] > s[base][0], (city, s)
        assert s["tianyan"][1] > s[base][1], (city, s)
