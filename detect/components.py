"""4-connected components of a change mask, labelled by row strips in parallel.

Same labels as ``scipy.ndimage.label`` with a cross structuring element (1..n, numbered in the
order of each component's first pixel in row-major order). Each strip of rows is scanned on its
own thread, linking every changed pixel to the component above or to the left (union-find on
provisional labels, each strip numbering its own range); the strips are then joined across
their boundary rows, the components numbered, and every pixel given its number, again by
strips. Provisional labels grow in row-major order within a strip and from strip to strip, so
a component's smallest one is the label made at its first pixel whatever the strip count: the
result does not depend on the number of threads.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import prange

from detect.jit import parallel, serial


@serial
def _root(parent, k):
    while parent[k] != k:
        parent[k] = parent[parent[k]]               # path halving
        k = parent[k]
    return k


@serial
def _union(parent, a, b):
    """Join the components of provisional labels a and b, keeping the older (smaller) root."""
    ra = _root(parent, a)
    rb = _root(parent, b)
    if ra < rb:
        parent[rb] = ra
    elif rb < ra:
        parent[ra] = rb


@serial
def _scan_strip(mask, lab, parent, r0, r1, base):
    """Provisional labels base + 1 .. of rows r0..r1, 0 outside the mask (up-links only within
    the strip); returns how many were made."""
    w = mask.shape[1]
    nprov = base
    for i in range(r0, r1):
        for j in range(w):
            if not mask[i, j]:
                lab[i, j] = 0
                continue
            up = lab[i - 1, j] if i > r0 else 0
            left = lab[i, j - 1] if j > 0 else 0
            if up == 0 and left == 0:
                nprov += 1
                parent[nprov] = nprov
                lab[i, j] = nprov
            elif up == 0 or left == 0 or up == left:
                lab[i, j] = up if up > 0 else left
            else:                                   # two components meet
                _union(parent, up, left)
                lab[i, j] = left
    return nprov - base


@serial
def _relabel_strip(lab, final, r0, r1, shift):
    """Final numbers of rows r0..r1, whose provisional labels k are at final[k + shift]."""
    w = lab.shape[1]
    for i in range(r0, r1):
        for j in range(w):
            if lab[i, j] > 0:
                lab[i, j] = final[lab[i, j] + shift]


def label4(mask, strips=None):
    """Labels 1..n of the 4-connected regions of ``mask`` (bool, (h, w)); returns (lab int32, n).

    ``strips``: row strips scanned in parallel (default: one per Numba thread); at least 16 rows
    each. The labels are the same for any number.
    """
    mask = np.ascontiguousarray(mask, dtype=np.bool_)
    ns = numba.get_num_threads() if strips is None else int(strips)
    return _label4(mask, max(min(ns, mask.shape[0] // 16), 1))


@parallel
def _label4(mask, ns):
    h, w = mask.shape
    first = np.empty(ns + 1, np.int64)
    base = np.empty(ns + 1, np.int64)
    first[0] = 0
    base[0] = 0
    for s in range(ns):
        first[s + 1] = (h * (s + 1)) // ns
        # a checkerboard has the most provisional labels: half the strip's pixels, rounded up
        base[s + 1] = base[s] + ((first[s + 1] - first[s]) * w + 1) // 2
    lab = np.empty((h, w), np.int32)               # every pixel written by its strip's scan
    parent = np.empty(base[ns] + 1, np.int32)
    parent[0] = 0
    count = np.zeros(ns, np.int64)
    for s in prange(ns):
        count[s] = _scan_strip(mask, lab, parent, first[s], first[s + 1], base[s])
    for s in range(1, ns):                          # join strips across their boundary rows
        i = first[s]
        if i == 0 or i >= h:
            continue
        for j in range(w):
            if lab[i - 1, j] > 0 and lab[i, j] > 0:
                _union(parent, lab[i - 1, j], lab[i, j])
    # a root is its component's smallest provisional label, made at its first pixel; final
    # numbers are kept compactly, strip after strip (a table over every possible provisional
    # label would be half the tile's pixels)
    off = np.zeros(ns + 1, np.int64)
    for s in range(ns):
        off[s + 1] = off[s] + count[s]
    final = np.empty(off[ns] + 1, np.int32)
    n = 0
    for s in range(ns):
        for k in range(base[s] + 1, base[s] + count[s] + 1):
            r = _root(parent, k)
            if r == k:
                n += 1
                final[k - base[s] + off[s]] = n
            else:
                t = s
                while r <= base[t]:                 # the root's strip: this one or earlier
                    t -= 1
                final[k - base[s] + off[s]] = final[r - base[t] + off[t]]
    for s in prange(ns):
        _relabel_strip(lab, final, first[s], first[s + 1], off[s] - base[s])
    return lab, n
