"""Overview map (PNG) of one county: every polygon by priority, batch outlines and routes.

Drawn with Pillow in a projected CRS (the polygons' own when projected, else their UTM
zone) so distances and shapes are true; polygons too small to see are drawn as markers.
Labels are ASCII (batch numbers, legend "YXJ 1".."YXJ 3") so no CJK font is needed.
"""
from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
from pyproj import CRS
from PIL import Image, ImageDraw

from pipeline.package.chips import label_font, nice_length
from pipeline.package.kmz import LEVEL_COLOURS

WIDTH = 1400
MAX_HEIGHT = 1000
MARGIN = 40


def write_overview_map(county: gpd.GeoDataFrame, outlines: gpd.GeoDataFrame,
                       routes: gpd.GeoDataFrame, path: Path, *, title: str,
                       boundary=None) -> Path:
    """Draw the overview map.

    Parameters
    ----------
    county : GeoDataFrame
        Polygons with YXJ, any CRS (projected preferred).
    outlines, routes : GeoDataFrame
        From :mod:`pipeline.package.batch_layer` (EPSG:4490; may be empty).
    path : Path
        The PNG to write.
    title : str
        ASCII title drawn top-left (e.g. "450102 2026Q3").
    boundary : shapely geometry, optional
        County boundary in ``county``'s CRS, drawn in grey.

    Returns
    -------
    Path
    """
    crs = CRS.from_user_input(county.crs)
    crs = crs if crs.is_projected else county.estimate_utm_crs()
    polys = county.to_crs(crs)
    outl = outlines.to_crs(crs) if len(outlines) else outlines
    rts = routes.to_crs(crs) if len(routes) else routes
    bnd = None
    if boundary is not None:
        bnd = gpd.GeoSeries([boundary], crs=county.crs).to_crs(crs).iloc[0]

    boxes = [polys.total_bounds]
    if len(outl):
        boxes.append(outl.total_bounds)
    if bnd is not None:
        boxes.append(np.asarray(bnd.bounds))
    b = np.vstack(boxes)
    minx, miny = b[:, 0].min(), b[:, 1].min()
    maxx, maxy = b[:, 2].max(), b[:, 3].max()
    w_m, h_m = max(maxx - minx, 500.0), max(maxy - miny, 500.0)
    cx, cy = (minx + maxx) / 2, (miny + maxy) / 2
    scale = min((WIDTH - 2 * MARGIN) / w_m, (MAX_HEIGHT - 2 * MARGIN - 30) / h_m)  # px per metre
    height = int(h_m * scale + 2 * MARGIN + 30)
    ox = WIDTH / 2 - cx * scale
    oy = 30 + MARGIN + h_m * scale / 2 + cy * scale

    def px(coords):
        return [(ox + x * scale, oy - y * scale) for x, y, *_ in coords]

    img = Image.new("RGB", (WIDTH, height), (250, 250, 247))
    draw = ImageDraw.Draw(img)
    font = label_font(14)
    big = label_font(20)
    if bnd is not None:
        for ring in _rings(bnd):
            draw.line(px(ring) + px(ring)[:1], fill=(120, 120, 120), width=2)
    for r in outl.itertuples() if len(outl) else ():
        for ring in _rings(r.geometry):
            pts = px(ring)
            draw.polygon(pts, outline=(90, 90, 160), fill=(228, 232, 245))
    for r in rts.itertuples() if len(rts) else ():
        draw.line(px(r.geometry.coords), fill=(60, 60, 60), width=1)
    levels = polys["YXJ"].fillna(3).astype(int).clip(1, 3).to_numpy()
    cen = polys.geometry.centroid
    for level in (3, 2, 1):
        rgb = _rgb(LEVEL_COLOURS[level][0])
        for i in np.flatnonzero(levels == level):
            x, y = px([(cen.iloc[i].x, cen.iloc[i].y)])[0]
            draw.ellipse([x - 5, y - 5, x + 5, y + 5], fill=rgb, outline=(0, 0, 0))
            geom = polys.geometry.iloc[i]
            if max(geom.bounds[2] - geom.bounds[0], geom.bounds[3] - geom.bounds[1]) * scale > 12:
                for ring in _rings(geom):
                    draw.line(px(ring) + px(ring)[:1], fill=rgb, width=2)
    for r in outl.itertuples() if len(outl) else ():
        label = str(r.PCBH).rsplit("-", 1)[-1]
        x0, y0, x1, y1 = r.geometry.bounds
        (lx, ly), = px([(x0, y1)])
        draw.text((lx, ly - 18), label, fill=(40, 40, 120), font=font,
                  stroke_width=2, stroke_fill=(250, 250, 247))

    draw.text((MARGIN / 2, 8), title, fill=(0, 0, 0), font=big)
    _legend(draw, height, font)
    metres = nice_length(WIDTH * 0.2 / scale)
    bar = metres * scale
    x0, y0 = WIDTH - MARGIN - bar, height - 22
    draw.rectangle([x0, y0, x0 + bar, y0 + 5], fill=(0, 0, 0))
    draw.text((x0, y0 - 18), f"{metres / 1000:g} km" if metres >= 1000 else f"{metres:g} m",
              fill=(0, 0, 0), font=font)
    cx = WIDTH - 30
    draw.polygon([(cx, 12), (cx - 9, 36), (cx, 30), (cx + 9, 36)], fill=(0, 0, 0))
    draw.text((cx - 5, 38), "N", fill=(0, 0, 0), font=font)
    img.save(path, format="PNG", optimize=False, compress_level=6)
    return path


def _legend(draw: ImageDraw.ImageDraw, height: int, font) -> None:
    x, y = 12, height - 22 * len(LEVEL_COLOURS) - 12
    draw.rectangle([x - 4, y - 6, x + 90, height - 8], fill=(255, 255, 255), outline=(150, 150, 150))
    for level in LEVEL_COLOURS:
        rgb = _rgb(LEVEL_COLOURS[level][0])
        yy = y + (level - 1) * 22
        draw.ellipse([x, yy, x + 12, yy + 12], fill=rgb, outline=(0, 0, 0))
        draw.text((x + 20, yy - 2), f"YXJ {level}", fill=(0, 0, 0), font=font)


def _rgb(hexstr: str) -> tuple[int, int, int]:
    return tuple(int(hexstr[i:i + 2], 16) for i in (0, 2, 4))


def _rings(geom):
    for p in getattr(geom, "geoms", [geom]):
        if p.geom_type != "Polygon":
            continue
        yield list(p.exterior.coords)
