"""The scene-wide sample: both dates read on a decimated grid, chunk by chunk.

The detector's scene-wide model is fitted on it, and the same pass measures each scene's
footprint (where it has valid data) at no extra read. A chunk that cannot be read (a corrupt
block) is left out of the sample and counted as covered by every scene whose outline meets it,
so the tiles there are read, fail and name the file and window.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import shapely
from affine import Affine
from rasterio.windows import Window

from tiles.errors import TileError
from tiles.footprint import grow, mask_polygon, outline
from tiles.grid import Grid
from tiles.imagery import DateImagery
from tiles.reader import clear_of_clouds, describe, grid_view, read_date

log = logging.getLogger("tianyan")

CHUNK = 256  # decimated pixels per chunk side: a corrupt block costs the sample at most a few chunks


@dataclass
class Sample:
    """Decimated arrays of both dates (and the reference) over the whole grid, and what the
    pass learnt."""

    before: np.ndarray      # float32 (nroles, H, W)
    after: np.ndarray
    valid: np.ndarray       # bool (H, W): valid in both dates and cloud-free
    decimate: int
    footprints: dict[str, dict[str, str]] = field(default_factory=dict)  # label -> scene -> WKT
    failed: list[str] = field(default_factory=list)                      # chunk read errors
    reference: np.ndarray | None = None        # float32 (nroles, H, W), with a reference date
    reference_valid: np.ndarray | None = None  # bool (H, W): reference and after valid and clear


def sample_pair(before: DateImagery, after: DateImagery, grid: Grid, decimate: int, *,
                resampling: str = "bilinear", chunk: int = CHUNK,
                reference: DateImagery | None = None) -> Sample:
    """Read every ``decimate``-th pixel of both dates (and of the optional reference date) and
    measure the scenes' footprints.

    Parameters
    ----------
    before, after : DateImagery
        The two dates. Their ``footprints`` are set to the scene outlines for this pass (so each
        chunk opens only the scenes that meet it) and left as they were on return.
    grid : Grid
        The processing grid (CRS in metres).
    decimate : int
        Sampling step in grid pixels (>= 1).

    Returns
    -------
    Sample
        Footprints are WKT polygons in the grid CRS holding every pixel the scene can supply to
        a full-resolution read: the sampled valid pixels, grown by one sampling step plus two
        pixels (bilinear reach) — only a valid patch narrower than one step between samples
        can escape it.
    """
    transform, shape, _ = grid_view(grid, Window(0, 0, grid.width, grid.height), decimate)
    H, W = shape
    b = np.zeros((len(before.roles), H, W), np.float32)
    a = np.zeros((len(after.roles), H, W), np.float32)
    valid = np.zeros((H, W), bool)
    dates = (before, after) if reference is None else (before, after, reference)
    if reference is not None:
        ref = np.zeros((len(reference.roles), H, W), np.float32)
        ref_valid = np.zeros((H, W), bool)
    saved = {d.label: d.footprints for d in dates}
    outlines = {}
    for date in dates:
        outlines[date.label] = {s: outline([r[0] for r in date.scene_reads(s, None)], grid.crs)
                                for s in date.files}
        date.footprints = {s: g.wkt for s, g in outlines[date.label].items()}
    pieces: dict[str, dict[str, list]] = {d.label: {s: [] for s in d.files} for d in dates}
    failed = []
    try:
        for r0 in range(0, H, chunk):
            for c0 in range(0, W, chunk):
                h, w = min(chunk, H - r0), min(chunk, W - c0)
                full = Window(c0 * decimate, r0 * decimate, w * decimate, h * decimate)
                seen: dict[tuple[str, str], np.ndarray] = {}
                try:  # each date on its own, so a footprint does not depend on the other date
                    cb, vb = read_date(before, grid, full, resampling=resampling, decimate=decimate,
                                       scene_valid=seen)
                    ca, va = read_date(after, grid, full, resampling=resampling, decimate=decimate,
                                       scene_valid=seen)
                    va = clear_of_clouds(after, va, grid, full, decimate=decimate)
                    cv = clear_of_clouds(before, vb & va, grid, full, decimate=decimate)
                    if reference is not None:
                        cr, vr = read_date(reference, grid, full, resampling=resampling,
                                           decimate=decimate, scene_valid=seen)
                        vr = clear_of_clouds(reference, vr & va, grid, full, decimate=decimate)
                except TileError as exc:
                    failed.append(str(exc))
                    log.warning("sample: %s (window %s left out of the fit)", exc, describe(full))
                    area = shapely.box(*_bounds(transform, c0, r0, w, h))
                    for date in dates:
                        for s, g in outlines[date.label].items():
                            if g.intersects(area):
                                pieces[date.label][s].append(shapely.intersection(g, area))
                    continue
                b[:, r0:r0 + h, c0:c0 + w] = cb
                a[:, r0:r0 + h, c0:c0 + w] = ca
                valid[r0:r0 + h, c0:c0 + w] = cv
                if reference is not None:
                    ref[:, r0:r0 + h, c0:c0 + w] = cr
                    ref_valid[r0:r0 + h, c0:c0 + w] = vr
                chunk_transform = transform * Affine.translation(c0, r0)
                for date in dates:
                    for s in date.files:
                        ok = seen.get((date.label, s))
                        if ok is not None and ok.any():
                            pieces[date.label][s].append(mask_polygon(ok, chunk_transform))
    finally:
        for date in dates:
            date.footprints = saved[date.label]
    step = decimate * grid.res
    footprints = {}
    for date in dates:
        footprints[date.label] = {}
        for s, parts in pieces[date.label].items():
            if parts:
                footprints[date.label][s] = grow(shapely.union_all(parts), step + 2 * grid.res, step).wkt
            else:
                footprints[date.label][s] = shapely.Polygon().wkt
    sample = Sample(b, a, valid, decimate, footprints, failed)
    if reference is not None:
        sample.reference, sample.reference_valid = ref, ref_valid
    return sample


def _bounds(transform, c0, r0, w, h):
    x0, y0 = transform * (c0, r0)
    x1, y1 = transform * (c0 + w, r0 + h)
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)
