"""The reference date's verdict (the same season a year earlier) on a synthetic scene with truth.

Five sites turn from green crop into something else between the before and after dates:
a field flooded as it was a year ago (seasonal: it must be dropped), the same flooding under a
cloud of the reference (the reference cannot speak: two dates decide), the same flooding half
under a cloud (the reference sees enough of it: dropped whole), a new roof and a new pond on
fields that were cropped a year ago (land-use change: kept whole). The verdict is per object,
after ``detect_tile``, ``tile_objects`` and ``merge_seams``: ``detect.merge.apply_reference``.
"""
from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from affine import Affine

from detect.detector import DetectParams, detect_tile, fit_model
from detect.merge import apply_reference, merge_seams
from detect.objects import tile_objects
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
H = W = 256
SITES = {  # name: (rows, cols), after class, reference class
    "flooded_as_last_year": ((slice(16, 56), slice(16, 56)), "water", "muddy"),
    "flooded_under_reference_cloud": ((slice(112, 152), slice(16, 56)), "water", "muddy"),
    "flooded_half_under_reference_cloud": ((slice(16, 56), slice(136, 176)), "water", "muddy"),
    "new_roof": ((slice(72, 96), slice(96, 136)), "roof", "crop"),
    "new_pond": ((slice(128, 168), slice(128, 168)), "water", "crop"),
}
CLOUDS = ((slice(104, 160), slice(8, 64)),      # over the second site, on the reference
          (slice(8, 64), slice(156, 184)))      # over the east half of the third
TRANSFORM = Affine(2, 0, 500000, 0, -2, 3000000)
MMU_M2 = 200.0


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
    for cloud in CLOUDS:
        ref_valid[cloud] = False
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


def _objects(scene, tile=H):
    """Objects of the scene cut in square tiles of ``tile`` px (halo 8), merged at the seams."""
    before, after, valid, reference, ref_valid, params, model, ref_model = scene
    frames = []
    for r in range(0, H, tile):
        for c in range(0, W, tile):
            r0, c0 = max(r - 8, 0), max(c - 8, 0)
            rows, cols = slice(r0, min(r + tile + 8, H)), slice(c0, min(c + tile + 8, W))
            layers = detect_tile(before[:, rows, cols], after[:, rows, cols], valid[rows, cols],
                                 BANDS, model, params, reference=reference[:, rows, cols],
                                 reference_valid=ref_valid[rows, cols], reference_model=ref_model)
            core = (slice(r - r0, r - r0 + tile), slice(c - c0, c - c0 + tile))
            frames.append(tile_objects(layers, valid[rows, cols], core,
                                       TRANSFORM * Affine.translation(c0, r0), "EPSG:4545"))
    return merge_seams(gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs="EPSG:4545"))


def _site_box(site):
    (rows, cols), _, _ = SITES[site]
    x0, y0 = TRANSFORM * (cols.start, rows.stop)
    x1, y1 = TRANSFORM * (cols.stop, rows.start)
    return shapely.box(x0, y0, x1, y1)


def _covered(objects, site):
    """Share of the site covered by the objects."""
    box = _site_box(site)
    return float(objects.geometry.intersection(box).area.sum() / box.area)


def test_the_reference_drops_whole_objects_that_were_there_a_year_ago(scene):
    kept, dropped = apply_reference(_objects(scene), MMU_M2)
    assert _covered(kept, "flooded_as_last_year") == 0.0
    assert _covered(dropped, "flooded_as_last_year") > 0.8
    # seen over half its area and not new there: dropped whole, its clouded half too
    assert _covered(kept, "flooded_half_under_reference_cloud") == 0.0
    assert _covered(dropped, "flooded_half_under_reference_cloud") > 0.8
    # under the reference's cloud two dates decide; land-use change is new since a year ago too
    for site in ("flooded_under_reference_cloud", "new_roof", "new_pond"):
        assert _covered(kept, site) > 0.8, site
    # the counts that decided, for the site the reference sees whole
    flooded = dropped[dropped.intersects(_site_box("flooded_as_last_year"))]
    assert len(flooded) == 1 and flooded.N_REFSEEN.iloc[0] == flooded.NPIX.iloc[0]
    assert flooded.N_REFNEW.iloc[0] < 50
    roof = kept[kept.intersects(_site_box("new_roof"))]
    assert roof.N_REFNEW.iloc[0] >= 0.5 * roof.N_REFSEEN.iloc[0] > 0


def test_the_verdict_does_not_depend_on_the_tiles(scene):
    """Counts are per pixel and the verdict is taken on merged objects: tiles cut through the
    sites (48 px tiles put seams across four of them) give the same objects as one tile."""
    whole, _ = apply_reference(_objects(scene), MMU_M2)
    tiled, _ = apply_reference(_objects(scene, tile=48), MMU_M2)
    assert len(tiled) == len(whole)
    for col in ("NPIX", "N_REFSEEN", "N_REFNEW"):
        assert tiled[col].tolist() == whole[col].tolist()
    assert shapely.equals(tiled.geometry.values, whole.geometry.values).all()


def test_apply_reference_by_hand():
    """The rule on counts worked out by hand: MMU 200 m² on 4 m² pixels = 50 px; dropped where
    the reference sees >= min(50, NPIX / 2) px and finds < min(50, seen / 2) px new."""
    rows = [  # NPIX, seen, new, dropped?
        (1000, 0, 0, False),      # clouded over in the reference: two dates decide
        (1000, 400, 0, True),     # seen, nothing new
        (1000, 400, 60, False),   # an MMU of it is new
        (1000, 49, 0, False),     # seen less than an MMU and less than half
        (60, 40, 10, True),       # small object, seen mostly, new 10 < min(50, 20)
        (60, 40, 25, False),      # small object, half of what is seen is new
        (60, 20, 0, False),       # small object, seen less than half
    ]
    frame = gpd.GeoDataFrame(
        {"NPIX": [r[0] for r in rows], "N_REFSEEN": [r[1] for r in rows],
         "N_REFNEW": [r[2] for r in rows], "PX_AREA": 4.0, "ID": range(len(rows))},
        geometry=[shapely.box(i, 0, i + 1, 1) for i in range(len(rows))], crs="EPSG:4545")
    kept, dropped = apply_reference(frame, MMU_M2)
    assert dropped.ID.tolist() == [i for i, r in enumerate(rows) if r[3]]
    assert kept.ID.tolist() == [i for i, r in enumerate(rows) if not r[3]]
    # REFCHK: the reference saw >= min(50, NPIX / 2) px of the object (a confidence signal)
    assert kept.REFCHK.tolist() == [0.0, 1.0, 0.0, 1.0, 0.0]
    assert dropped.REFCHK.tolist() == [1.0, 1.0]
    # without the reference's columns (no reference date) everything is kept
    kept, dropped = apply_reference(frame.drop(columns=["N_REFSEEN", "N_REFNEW"]), MMU_M2)
    assert len(kept) == len(rows) and len(dropped) == 0


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
