"""County assignment: each change polygon goes to the county holding the largest share of it.

Polygons across a county border keep one county (the larger share) and are flagged KXZQ = "是"
so both counties can be told; polygons in no county (sea, a neighbouring province, a layer with
a gap) get an empty code and are listed, never dropped.
"""
from __future__ import annotations

import numpy as np
import shapely

from overlay.overlap import intersecting_pairs

#: Shares below this (m², planar in the processing CRS) are shared-edge noise, not overlap.
MIN_SHARE_M2 = 0.01


def assign_counties(targets: np.ndarray, counties: np.ndarray, codes, names) -> dict:
    """County code and name for each target polygon, by largest overlap.

    Parameters
    ----------
    targets : numpy.ndarray of shapely polygons in a projected CRS (metres), None allowed
    counties : numpy.ndarray of county polygons in the same CRS
    codes, names : sequence of str
        Code (XZQDM) and name (XZQMC) of each county.

    Returns
    -------
    dict of numpy.ndarray, one entry per target
        ``code`` and ``name`` (object, "" when outside every county), ``straddles`` (bool: more
        than one county holds at least ``MIN_SHARE_M2``), ``outside`` (bool).
    """
    n = len(targets)
    code = np.full(n, "", dtype=object)
    name = np.full(n, "", dtype=object)
    straddles = np.zeros(n, dtype=bool)
    ti, ci, pieces = intersecting_pairs(targets, counties)
    share = shapely.area(pieces)
    share = np.where(np.isnan(share), 0.0, share)
    real = share >= MIN_SHARE_M2
    ti, ci, share = ti[real], ci[real], share[real]
    if len(ti):
        # Largest share first within each target; ties go to the smaller county code.
        codes = np.asarray(codes, dtype=object)
        order = np.lexsort((codes[ci].astype(str), -share, ti))
        ti, ci = ti[order], ci[order]
        first = np.ones(len(ti), dtype=bool)
        first[1:] = ti[1:] != ti[:-1]
        code[ti[first]] = codes[ci[first]]
        name[ti[first]] = np.asarray(names, dtype=object)[ci[first]]
        straddles = np.bincount(ti, minlength=n) > 1
    outside = code == ""
    return {"code": code, "name": name, "straddles": straddles, "outside": outside}
