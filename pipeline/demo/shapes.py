"""Shape primitives of the demo landscape, in metres (EPSG:4545): wiggly lines, blobs, rectangles."""
from __future__ import annotations

import math

import numpy as np
import shapely
from scipy.ndimage import gaussian_filter1d


def wiggly_line(p0, p1, rng: np.random.Generator, *, spacing: float = 25.0,
                amplitude: float | None = None) -> np.ndarray:
    """Vertices (n, 2) of a smooth irregular line from ``p0`` to ``p1`` (both kept exactly).

    The sideways displacement is a smoothed random walk tapered to zero at both ends, at most
    ``amplitude`` metres (default 4 % of the length), so the line never crosses itself.
    """
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    d = p1 - p0
    length = float(np.hypot(*d))
    n = max(int(math.ceil(length / spacing)), 2)
    t = np.linspace(0.0, 1.0, n + 1)
    walk = gaussian_filter1d(np.cumsum(rng.standard_normal(n + 1)), sigma=max(n / 12, 1.0))
    walk = (walk - np.linspace(walk[0], walk[-1], n + 1)) * np.sin(np.pi * t)
    amp = 0.04 * length if amplitude is None else amplitude
    peak = float(np.abs(walk).max()) or 1.0
    normal = np.array([-d[1], d[0]]) / length
    pts = p0 + t[:, None] * d + (walk * amp / peak)[:, None] * normal
    pts[0], pts[-1] = p0, p1
    return pts


def smooth_profile(x: np.ndarray, rng: np.random.Generator, amplitude: float,
                   wavelengths=(180.0, 420.0, 900.0)) -> np.ndarray:
    """A smooth random function of ``x`` (metres): a sum of sines, peak about ``amplitude``."""
    out = np.zeros_like(np.asarray(x, float))
    for lam in wavelengths:
        out += rng.uniform(0.5, 1.0) * np.sin(2 * np.pi * x / (lam * rng.uniform(0.8, 1.25))
                                              + rng.uniform(0, 2 * np.pi))
    return out * amplitude / len(wavelengths) * 1.6


def blob(center, radius: float, rng: np.random.Generator, *, roughness: float = 0.15,
         n: int = 72, aspect: float = 1.0, angle: float = 0.0) -> shapely.Polygon:
    """A star-shaped irregular polygon of mean radius ``radius`` m around ``center``.

    The radius varies with a few random low harmonics (relative amplitude ``roughness``), so the
    ring is always simple; ``aspect`` stretches it along ``angle`` (radians from east).
    """
    theta = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    r = np.ones(n)
    for k in range(2, 7):
        r += roughness * rng.uniform(0.3, 1.0) / (k - 1) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    r = radius * np.clip(r, 0.35, None)
    a, b = r * math.sqrt(aspect) * np.cos(theta), r / math.sqrt(aspect) * np.sin(theta)
    ca, sa = math.cos(angle), math.sin(angle)
    x = center[0] + a * ca - b * sa
    y = center[1] + a * sa + b * ca
    return shapely.Polygon(np.column_stack([x, y]))


def oriented_rect(cx: float, cy: float, length: float, width: float, angle: float) -> shapely.Polygon:
    """A rectangle centred on (cx, cy): ``length`` m along ``angle`` (radians from east), ``width`` m across."""
    ca, sa = math.cos(angle), math.sin(angle)
    hl, hw = length / 2, width / 2
    corners = [(-hl, -hw), (hl, -hw), (hl, hw), (-hl, hw)]
    return shapely.Polygon([(cx + u * ca - v * sa, cy + u * sa + v * ca) for u, v in corners])


def main_angle(geom) -> float:
    """Direction (radians from east) of the long side of ``geom``'s minimum rotated rectangle."""
    rect = shapely.minimum_rotated_rectangle(geom)
    xy = np.asarray(rect.exterior.coords)
    if len(xy) < 4:
        return 0.0
    e1, e2 = xy[1] - xy[0], xy[2] - xy[1]
    e = e1 if np.hypot(*e1) >= np.hypot(*e2) else e2
    return math.atan2(e[1], e[0])


def random_point_in(geom, rng: np.random.Generator, tries: int = 200):
    """A uniformly random point (x, y) inside polygon ``geom``, or None after ``tries`` misses."""
    if geom is None or geom.is_empty:
        return None
    xmin, ymin, xmax, ymax = geom.bounds
    shapely.prepare(geom)
    for _ in range(tries):
        x, y = rng.uniform(xmin, xmax), rng.uniform(ymin, ymax)
        if shapely.contains_xy(geom, x, y):
            return x, y
    return None


def explode_polygons(geoms, min_area: float = 1.0) -> list:
    """The polygon parts of ``geoms`` larger than ``min_area`` m^2, with their source index."""
    parts, idx = shapely.get_parts(np.asarray(geoms, dtype=object), return_index=True)
    keep = (shapely.get_type_id(parts) == 3) & (shapely.area(parts) > min_area)
    return list(zip(idx[keep].tolist(), parts[keep].tolist()))
