"""Bulk intersection + union per target against a plain per-target shapely computation,
and the benchmark script at a tiny scale (its own exit code checks areas within 0.01 %)."""
import importlib.util
from pathlib import Path

import numpy as np
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.overlap import _PAD_MAX, intersecting_pairs, union_by_target

coord = st.integers(0, 40)


@st.composite
def rects(draw, n_min, n_max):
    out = []
    for _ in range(draw(st.integers(n_min, n_max))):
        x, y = draw(coord), draw(coord)
        out.append(shapely.box(x, y, x + draw(st.integers(1, 20)), y + draw(st.integers(1, 20))))
    return np.array(out, dtype=object)


@settings(max_examples=60, deadline=None)
@given(targets=rects(1, 6), features=rects(0, 12))
def test_union_per_target_equals_reference(targets, features):
    ti, fi, pieces = intersecting_pairs(targets, features)
    got = shapely.area(union_by_target(pieces, ti, len(targets)))
    got = np.nan_to_num(got)
    for i, t in enumerate(targets):
        ref = shapely.union_all([shapely.intersection(t, f) for f in features]).area if len(features) else 0.0
        assert abs(got[i] - ref) <= 1e-9 * max(ref, 1.0)


def test_many_pieces_take_the_unpadded_path():
    target = np.array([shapely.box(0, 0, 100, 1)], dtype=object)
    # _PAD_MAX + 10 overlapping slivers: unioned one target at a time
    feats = np.array([shapely.box(i, 0, i + 2, 1) for i in range(_PAD_MAX + 10)], dtype=object)
    ti, fi, pieces = intersecting_pairs(target, feats)
    assert np.bincount(ti).max() > _PAD_MAX
    assert shapely.area(union_by_target(pieces, ti, 1))[0] == 75.0


def test_bench_runs_small(tmp_path):
    path = Path(__file__).resolve().parents[1] / "bench" / "bench_overlay.py"
    spec = importlib.util.spec_from_file_location("bench_overlay", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--parcels", "3000", "--changes", "150", "--dir", str(tmp_path)]) == 0
