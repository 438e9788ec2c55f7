"""The demo scene: a 2 m pixel grid in EPSG:4545 near Beihai, its tile lines and its dates.

The upper-left corner is lon 109.05E, lat 21.65N (CGCS2000) converted to EPSG:4545
(3-degree Gauss-Kruger, CM 108E) and snapped down to the 2 m grid.
"""
from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass

import numpy as np
import shapely
from pyproj import Transformer
from affine import Affine

from pipeline.quarter import Quarter

CRS_PROC = "EPSG:4545"
CRS_GEO = "EPSG:4490"
RESOLUTION = 2.0
UL_LONLAT = (109.05, 21.65)


@dataclass(frozen=True)
class Scene:
    """A north-up pixel grid: ``width`` x ``height`` pixels of ``res`` m from (x0, y0), EPSG:4545."""

    x0: float
    y0: float
    width: int
    height: int
    tile_size: int
    res: float = RESOLUTION

    @classmethod
    def near_beihai(cls, width: int, height: int, tile_size: int) -> "Scene":
        """The demo grid whose upper-left corner is at :data:`UL_LONLAT`, snapped to 2 m."""
        to_proc = Transformer.from_crs(CRS_GEO, CRS_PROC, always_xy=True)
        x, y = to_proc.transform(*UL_LONLAT)
        return cls(math.floor(x / RESOLUTION) * RESOLUTION, math.floor(y / RESOLUTION) * RESOLUTION,
                   int(width), int(height), int(tile_size))

    @property
    def wm(self) -> float:
        """Width in metres."""
        return self.width * self.res

    @property
    def hm(self) -> float:
        """Height in metres."""
        return self.height * self.res

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) in EPSG:4545 metres."""
        return self.x0, self.y0 - self.hm, self.x0 + self.wm, self.y0

    @property
    def transform(self):
        """Affine pixel -> EPSG:4545 transform (pixel corners)."""
        return Affine(self.res, 0.0, self.x0, 0.0, -self.res, self.y0)

    def box(self, margin: float = 0.0) -> shapely.Polygon:
        """The scene rectangle grown (or shrunk, if negative) by ``margin`` metres."""
        xmin, ymin, xmax, ymax = self.bounds
        return shapely.box(xmin - margin, ymin - margin, xmax + margin, ymax + margin)

    def at(self, u: float, v: float) -> tuple[float, float]:
        """The point at fraction ``u`` of the width (from the west) and ``v`` of the height (from the north)."""
        return self.x0 + u * self.wm, self.y0 - v * self.hm

    def area_ratio(self) -> float:
        """Scene area relative to the default 3000 x 3000 px demo."""
        return self.width * self.height / 9.0e6

    def tile_lines(self) -> tuple[list[float], list[float]]:
        """EPSG:4545 x of vertical and y of horizontal tile lines strictly inside the scene."""
        step = self.tile_size * self.res
        xs = [self.x0 + k * step for k in range(1, math.ceil(self.width / self.tile_size))]
        ys = [self.y0 - k * step for k in range(1, math.ceil(self.height / self.tile_size))]
        return xs, ys

    def pixel_slices(self, geom, pad: int = 0) -> tuple[slice, slice] | None:
        """Row and column slices of the pixels under ``geom``'s bounds, grown by ``pad``; None if outside."""
        xmin, ymin, xmax, ymax = shapely.bounds(geom)
        r0 = max(int(math.floor((self.y0 - ymax) / self.res)) - pad, 0)
        r1 = min(int(math.ceil((self.y0 - ymin) / self.res)) + pad, self.height)
        c0 = max(int(math.floor((xmin - self.x0) / self.res)) - pad, 0)
        c1 = min(int(math.ceil((xmax - self.x0) / self.res)) + pad, self.width)
        if r0 >= r1 or c0 >= c1:
            return None
        return slice(r0, r1), slice(c0, c1)

    def pixel_centres(self) -> tuple[np.ndarray, np.ndarray]:
        """Column and row pixel-centre coordinates in metres from the upper-left corner (1-D, float32)."""
        cols = (np.arange(self.width, dtype=np.float32) + 0.5) * self.res
        rows = (np.arange(self.height, dtype=np.float32) + 0.5) * self.res
        return cols, rows


def quarter_dates(quarter: str) -> tuple[Quarter, Quarter, _dt.date, _dt.date]:
    """(after quarter, before quarter, before date, after date) of a demo quarter label.

    The before date is the 18th of the middle month of the previous quarter, the after date
    the 23rd of the middle month of ``quarter`` (2026Q3 -> 2026-05-18 and 2026-08-23).
    """
    q = Quarter.parse(quarter)
    prev = q.previous()
    before = _dt.date(prev.year, 3 * prev.q - 1, 18)
    after = _dt.date(q.year, 3 * q.q - 1, 23)
    return q, prev, before, after


#: Days the reference date lies before the after date's anniversary: a year-earlier scene is the
#: nearest clear GF-2 pass to the same day (revisit ~5 days), not the same calendar day.
REFERENCE_DAYS_EARLIER = 6


def reference_dates(quarter: str) -> tuple[Quarter, _dt.date]:
    """(reference quarter, reference date): the same season a year before ``quarter``.

    The reference date is the after date of :func:`quarter_dates` one year earlier, minus
    :data:`REFERENCE_DAYS_EARLIER` days, so it stays in the middle month of the same quarter of
    the previous year (2026Q3 -> 2025Q3, 2025-08-17).
    """
    q, _, _, after = quarter_dates(quarter)
    ref = Quarter(q.year - 1, q.q)
    return ref, _dt.date(ref.year, after.month, after.day) - _dt.timedelta(days=REFERENCE_DAYS_EARLIER)
