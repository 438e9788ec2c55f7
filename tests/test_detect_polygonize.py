"""Components and outlines of change objects: the Numba labelling against SciPy's, the
edge-tracing polygonizer against GDAL's (rasterio.features.shapes), and hand-drawn cases."""
import numba
import numpy as np
import pytest
import rasterio.features
import scipy.ndimage
import shapely
from affine import Affine

from detect.components import label4
from detect.polygonize import polygons, trace_rings

CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)
T = Affine(2.0, 0.0, 500000.0, 0.0, -2.0, 2500000.0)


def _label(mask):
    return scipy.ndimage.label(np.asarray(mask, bool), structure=CROSS)


@pytest.mark.parametrize("seed", range(40))
def test_label4_equals_scipy(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(1, 64, 2)
    mask = rng.random((h, w)) < rng.uniform(0.1, 0.9)
    lab, n = label4(mask)
    ref, n_ref = _label(mask)
    assert n == n_ref
    np.testing.assert_array_equal(lab, ref)


@pytest.mark.parametrize("seed", range(12))
def test_label4_same_labels_for_any_number_of_strips(seed):
    # components that cross strip boundaries (spirals of an opened random mask, long runs),
    # joined back into one label numbered by its first pixel
    rng = np.random.default_rng(100 + seed)
    h, w = rng.integers(64, 260), rng.integers(1, 200)
    mask = rng.random((h, w)) < rng.uniform(0.3, 0.8)
    if seed % 2:
        mask = scipy.ndimage.binary_opening(mask)
    ref, n_ref = _label(mask)
    for strips in (1, 2, 3, 4):
        lab, n = label4(mask, strips)
        assert n == n_ref
        np.testing.assert_array_equal(lab, ref)


def test_label4_component_joined_only_below_the_strip_boundary():
    # a U: its two arms start in the top strip, their base lies in the bottom strip
    mask = np.zeros((64, 5), bool)
    mask[:, 0] = mask[:, 4] = True
    mask[63, :] = True
    mask[10, 2] = True                               # an island, numbered after the U's start
    lab, n = label4(mask, 2)
    assert n == 2
    assert set(np.unique(lab[:, [0, 4]])) == {1} and lab[63, 2] == 1 and lab[10, 2] == 2


def test_label4_checkerboard_every_pixel_its_own_object():
    mask = np.indices((64, 65)).sum(0) % 2 == 0    # the most components a mask can have
    lab, n = label4(mask, 3)                        # odd strip sizes: rounding of the bound
    assert n == mask.sum()
    assert sorted(lab[mask].tolist()) == list(range(1, n + 1))


def _gdal(lab, n, transform):
    """GDAL's 4-connected polygons of each label, unioned per label."""
    out = [None] * n
    for geom, value in rasterio.features.shapes(lab.astype(np.int32), mask=lab > 0,
                                                connectivity=4, transform=transform):
        k = int(value) - 1
        poly = shapely.geometry.shape(geom)
        out[k] = poly if out[k] is None else shapely.union(out[k], poly)
    return np.array(out, dtype=object)


@pytest.mark.parametrize("seed", range(60))
def test_random_masks_equal_gdal(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(1, 48, 2)
    mask = rng.random((h, w)) < rng.uniform(0.2, 0.8)
    if seed % 2:
        mask = scipy.ndimage.binary_opening(mask)   # blobs with holes, not only speckle
    lab, n = _label(mask)
    transform = T if seed % 3 else Affine(0.5, 0.1, 10.0, -0.05, -0.5, 20.0)  # also a skewed grid
    got = polygons(lab, n, transform)
    ref = _gdal(lab, n, transform)
    assert len(got) == n
    assert shapely.is_valid(got).all()
    px = abs(transform.determinant)
    # same point sets (up to rounding of the skewed corners), same holes
    assert (shapely.area(shapely.symmetric_difference(got, ref)) < 1e-9 * px).all()
    assert (shapely.get_num_interior_rings(got) == shapely.get_num_interior_rings(ref)).all()
    np.testing.assert_allclose(shapely.area(got), np.bincount(lab.ravel(), minlength=n + 1)[1:] * px)


def test_many_labels_with_holes_equal_gdal():
    # a few thousand labels, holes among them: the labels are split among the threads
    rng = np.random.default_rng(7)
    mask = scipy.ndimage.binary_opening(rng.random((300, 400)) < 0.55)
    lab, n = _label(mask)
    got = polygons(lab, n, T)
    ref = _gdal(lab, n, T)
    assert n > 500 and (shapely.get_num_interior_rings(ref) > 0).sum() > 20
    px = abs(T.determinant)
    assert shapely.is_valid(got).all()
    assert (shapely.area(shapely.symmetric_difference(got, ref)) < 1e-9 * px).all()
    assert (shapely.get_num_interior_rings(got) == shapely.get_num_interior_rings(ref)).all()
    np.testing.assert_allclose(shapely.area(got), np.bincount(lab.ravel())[1:] * px)


def _rings_by_label(xy, ring_label, ring_offsets):
    order = np.argsort(ring_label, kind="stable")
    return [(ring_label[i], xy[ring_offsets[i]:ring_offsets[i + 1]].tolist()) for i in order]


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 Numba threads")
@pytest.mark.parametrize("seed", range(12))
def test_one_and_two_threads_give_the_same_polygons(seed):
    rng = np.random.default_rng(seed)
    if seed < 10:
        h, w = rng.integers(1, 64, 2)
        mask = scipy.ndimage.binary_opening(rng.random((h, w)) < rng.uniform(0.3, 0.8))
    else:   # thousands of labels; the edge strips make two that reach down the whole tile, so
        # rings of the threads' label ranges interleave in row-major order
        mask = scipy.ndimage.binary_opening(rng.random((700, 500)) < 0.55)
        mask[:, :3] = mask[:, -3:] = True
    lab, n = _label(mask)
    before = numba.get_num_threads()
    got = {}
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            got[threads] = (_rings_by_label(*trace_rings(lab)),
                            shapely.to_wkb(polygons(lab, n, T)).tolist())
    finally:
        numba.set_num_threads(before)
    assert got[1] == got[2]


def test_l_shape_vertices_by_hand():
    # X X
    # X .      -> an L of three pixels: six corners, clockwise on the image from the top left
    lab = np.array([[1, 1], [1, 0]], dtype=np.int32)
    xy, ring_label, offsets = trace_rings(lab)
    assert ring_label.tolist() == [1] and offsets.tolist() == [0, 7]
    assert xy.tolist() == [[0, 0], [2, 0], [2, 1], [1, 1], [1, 2], [0, 2], [0, 0]]


def test_hole_touching_the_shell_at_a_corner_is_a_valid_hole():
    # the inner gap (1,1),(1,2),(2,1) touches the outside only at the corner between
    # pixels (1,3) and (2,2): for 4-connected objects it is a hole
    mask = np.array([[1, 1, 1, 1],
                     [1, 0, 0, 1],
                     [1, 0, 1, 0],
                     [1, 1, 1, 0]], dtype=bool)
    lab, n = _label(mask)
    assert n == 1
    (poly,) = polygons(lab, n, Affine.identity())
    assert poly.is_valid
    assert len(poly.interiors) == 1 and shapely.Polygon(poly.interiors[0]).area == 3
    assert poly.area == 11


def test_two_objects_touching_at_a_corner_stay_two():
    lab, n = _label([[1, 0], [0, 1]])
    assert n == 2
    got = polygons(lab, n, Affine.identity())
    assert [p.area for p in got] == [1, 1]
    assert shapely.touches(got[0], got[1])


def test_nested_objects_island_in_a_hole():
    mask = np.zeros((7, 7), bool)
    mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = True   # a frame
    mask[3, 3] = True                                              # an island in its hole
    lab, n = _label(mask)
    frame, island = polygons(lab, n, Affine.identity())
    assert frame.area == 24 and len(frame.interiors) == 1
    assert shapely.Polygon(frame.interiors[0]).area == 25
    assert island.area == 1 and frame.disjoint(island)


def test_no_labels_gives_no_polygons():
    assert len(polygons(np.zeros((3, 3), np.int32), 0, T)) == 0


def test_missing_label_is_refused():
    lab = np.array([[1, 0, 3]], dtype=np.int32)
    with pytest.raises(ValueError, match="labels must be 1..3"):
        polygons(lab, 3, T)
