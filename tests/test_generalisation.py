"""Generalisation: the detector's defaults on demo scenes it was not tuned on.

The detector's defaults (detect/detector.py DetectParams) were set while the demo's default seed
(20260930) was the only scene; there it scores recall ~1 and precision 1. Here two other seeds
at 800 x 800 px (tiles of 512 px) go through the whole quarter (run_quarter, one worker) and
are scored against the generator's own truth with pipeline.evaluate.

Bounds, measured over 12 seeds (201-212) at this size with this generator (2026-11-22, after
the harvest rule learnt soil colour and the flood rule McFeeters' water line): pooled recall
0.907 and precision 0.666; per seed recall 0.73-1.0, precision 0.50-0.91. Before that change the
same seeds gave recall 0.897 and precision 0.401. Here 201 + 202 pool to recall 0.929 and
precision 0.636. The bounds are the worst pair of the 12: recall 0.773 (212 + 205) and precision
0.526 (201 + 208), each rounded down: 0.75 and 0.50. Precision is still short of the 0.8 goal
because muddy flooded paddies without seedlings (NDVI about -0.33) look like deep new ponds to
the flood rule; raise the bounds when the detector tells them apart.

The third test holds what already works: crop vigour changes on parcels without a seasonal
event give no false polygon (measured: 1 of 5,519 such parcels over 20 scenes).
"""
from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely

from pipeline.config import load_config
from pipeline.demo import make_demo
from pipeline.evaluate import evaluate
from pipeline.quarter import Quarter
from pipeline.run import run_quarter

SEEDS = (201, 202)
SIZE, TILE = 800, 512
QUARTER = "2026Q3"
RECALL_BOUND = 0.75
PRECISION_BOUND = 0.50
UNCHANGED_FALSE_SHARE = 0.01


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Per seed: (evaluation, changes, truth, seasonal parcels)."""
    out = []
    for seed in SEEDS:
        root = tmp_path_factory.mktemp(f"unseen{seed}")
        make_demo(root, width=SIZE, height=SIZE, tile_size=TILE, seed=seed)
        rd, outcome = run_quarter(load_config(root / "demo.toml"), Quarter.parse(QUARTER), workers=1)
        assert outcome.exit_code == 0, outcome
        changes = gpd.read_file(rd.path / "changes.gpkg", layer="changes")
        truth = gpd.read_file(root / "truth.gpkg", layer="truth")
        seasonal = gpd.read_file(root / "truth.gpkg", layer="seasonal")
        out.append((evaluate(changes, truth), changes, truth, seasonal))
    return out


def _pooled(scenes, num, den):
    n = sum(ev["overall"][den] for ev, *_ in scenes)
    k = sum(ev["overall"][num] for ev, *_ in scenes)
    return k / n, k, n


def test_recall_on_unseen_scenes(scenes):
    recall, k, n = _pooled(scenes, "truth_hit", "truth")
    assert n >= 30, "too few truth polygons to score"
    per_seed = {s: round(ev["overall"]["recall"], 3) for s, (ev, *_) in zip(SEEDS, scenes)}
    assert recall >= RECALL_BOUND, f"recall {recall:.3f} ({k}/{n}) per seed {per_seed}"


def test_precision_on_unseen_scenes(scenes):
    precision, k, n = _pooled(scenes, "changes_hit", "changes")
    per_seed = {s: round(ev["overall"]["precision"], 3) for s, (ev, *_) in zip(SEEDS, scenes)}
    assert precision >= PRECISION_BOUND, f"precision {precision:.3f} ({k}/{n}) per seed {per_seed}"


def test_no_false_polygons_on_parcels_without_a_seasonal_event(scenes):
    """A false polygon (no truth hit) lying mostly in a parcel whose crop only grew or thinned."""
    n_parcels = n_flagged = 0
    for _, changes, truth, seasonal in scenes:
        calm = seasonal[seasonal.KIND == "none"].geometry.to_numpy()
        cg = changes.to_crs(truth.crs).geometry.to_numpy()
        tg = truth.geometry.to_numpy()
        ti, ci = shapely.STRtree(cg).query(tg, predicate="intersects")
        inter = shapely.area(shapely.intersection(tg[ti], cg[ci]))
        hit = (inter >= 0.25 * shapely.area(tg[ti])) | (inter >= 0.5 * shapely.area(cg[ci]))
        false = np.setdiff1d(np.arange(len(cg)), ci[hit & (inter > 0)])
        flagged = set()
        for j in false:
            share = shapely.area(shapely.intersection(calm, cg[j])) / cg[j].area
            flagged.update(np.flatnonzero(share >= 0.5).tolist())
        n_parcels += len(calm)
        n_flagged += len(flagged)
    assert n_parcels >= 200
    assert n_flagged <= UNCHANGED_FALSE_SHARE * n_parcels, f"{n_flagged} of {n_parcels} calm parcels"
