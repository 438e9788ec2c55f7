"""Band roles and spectral indices (NDVI, NDWI, brightness, NDBI) in NumPy.

The per-pixel pass of the detector computes the same indices inside the Numba
kernel ``detect.kernels.change_pixels``; these NumPy versions serve the
scene-wide fit (noise scales of index differences) and analysts.
Reflectance = DN * ``scale`` (1e-4 for the usual uint16 x 10000 products).
"""
from __future__ import annotations

import numpy as np

from tiles.errors import ConfigError

ROLES = ("blue", "green", "red", "nir", "swir")
SKIP = "-"
REQUIRED = ("green", "red", "nir")


def role_index(bands) -> np.ndarray:
    """Array index of each role of ``ROLES`` in ``bands`` (-1 when absent).

    Parameters
    ----------
    bands : sequence of str
        Role of each band in array order; ``"-"`` marks a band to ignore.

    Returns
    -------
    numpy.ndarray
        int64 (5,): index of blue, green, red, nir, swir.
    """
    bands = tuple(bands)
    out = np.full(len(ROLES), -1, dtype=np.int64)
    for i, name in enumerate(bands):
        if name == SKIP:
            continue
        if name not in ROLES:
            raise ConfigError(
                f"band role {name!r} (band {i + 1}) is unknown: use one of "
                f"{', '.join(ROLES)} or '-' to skip the band")
        k = ROLES.index(name)
        if out[k] >= 0:
            raise ConfigError(f"band role {name!r} is given twice in bands={list(bands)}: "
                              "name each role once")
        out[k] = i
    missing = [r for r in REQUIRED if out[ROLES.index(r)] < 0]
    if missing:
        raise ConfigError(f"bands={list(bands)} lacks the role(s) {', '.join(missing)}: "
                          "the detector needs green, red and nir")
    return out


def used_bands(bands) -> np.ndarray:
    """Array indices (int64) of the bands that carry a role (everything but ``"-"``)."""
    return np.array([i for i, b in enumerate(bands) if b != SKIP], dtype=np.int64)


def normalized_difference(a, b):
    """(a - b) / (a + b), 0 where a + b <= 0; float32."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    s = a + b
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(s > 0, (a - b) / np.where(s > 0, s, 1.0), 0.0)
    return out.astype(np.float32)


def indices(stack, roles, scale=1e-4):
    """NDVI, NDWI (green / NIR, McFeeters), visible brightness and NDBI of one date.

    Parameters
    ----------
    stack : numpy.ndarray
        (nbands, ...) DN values.
    roles : numpy.ndarray
        Output of :func:`role_index`.
    scale : float
        DN -> reflectance factor.

    Returns
    -------
    dict
        ``ndvi``, ``ndwi``, ``bright`` (mean visible reflectance: blue, green,
        red bands present) and ``ndbi`` (None without SWIR), float32 arrays.
    """
    refl = {r: stack[i].astype(np.float64) * scale
            for r, i in zip(ROLES, roles) if i >= 0}
    vis = [refl[r] for r in ("blue", "green", "red") if r in refl]
    out = {
        "ndvi": normalized_difference(refl["nir"], refl["red"]),
        "ndwi": normalized_difference(refl["green"], refl["nir"]),
        "bright": (sum(vis) / len(vis)).astype(np.float32),
        "ndbi": normalized_difference(refl["swir"], refl["nir"]) if "swir" in refl else None,
    }
    return out
