"""Labelled regions to polygons, traced along pixel edges.

Replaces GDAL's polygonizer (``rasterio.features.shapes``) for change objects: that one visits
every pixel of the tile through GDAL's generic machinery and hands back GeoJSON dicts, 54 ms of
the 80 ms that polygonizing a 2048² tile took. Here Numba follows each region's boundary and the
rings become shapely polygons in one vectorised call.

The tracing walks along the edges between pixels with the region on its right (clockwise on the
image, counter-clockwise once the y axis points north) and, at each corner, turns left if it can,
else goes straight, else turns right. Two pixels of one region that touch only at a corner are
thereby passed through (8-connected tracing). The labels come from 4-connected labelling, so two
such pixels always belong to one region that is connected around the corner too, and the result
is always a valid polygon: the corner becomes a point where a hole touches the shell or another
hole, never a ring touching itself. Every ring goes north somewhere, up the left side of a pixel
that starts a run of its label, so only those pixels are tried as starts. The first ring found
for a label (scanning rows from the top) runs up the left side of its first pixel and is the
shell; every later ring of it is a hole.

On several threads: one scan (a strip of rows per thread) lists the run starts, then the labels
are cut into contiguous ranges of about equal run counts, one per thread. Each thread goes
through all run starts in row-major order and walks from those of its own labels whose north
edge no ring has taken yet. A walk of label L reads only whether pixels are L and marks only
runs of L as taken, so the threads share nothing they write, and every label's rings come out
as on one thread: the polygons do not depend on the thread count.
"""
from __future__ import annotations

import numba
import numpy as np
import shapely
from numba import prange

from detect.jit import parallel, serial

_DR = np.array([0, 1, 0, -1])
_DC = np.array([1, 0, -1, 0])
"""Row / column step of each direction: east, south, west, north. A boundary edge is stored as
(pixel, direction): moving east along the pixel's top, south along its right side, west along
its bottom, north along its left side; the pixel across it lies at direction (d + 3) % 4."""

_SPAN = 64
"""Pixels whose run starts are counted in one vectorised loop before any is looked for."""


@serial
def _inside_label(lab, r, c, label):
    return 0 <= r < lab.shape[0] and 0 <= c < lab.shape[1] and lab[r, c] == label


@serial
def _scan_rows(lab, r0, r1, runs, col, run_label, k):
    """Column and label of each run start of rows r0..r1, in row-major order, from ``k`` on.

    A run start is a pixel of a label (> 0) whose left neighbour has another value. Puts each
    row's count in ``runs``. Spans of ``_SPAN`` pixels are counted first (SIMD, no branches):
    most have no start and are never looked at again.
    """
    w = lab.shape[1]
    for i in range(r0, r1):
        row = lab[i]
        k_row = k
        if row[0] > 0:
            col[k] = 0
            run_label[k] = row[0]
            k += 1
        for j0 in range(1, w, _SPAN):
            a = row[j0:j0 + _SPAN]
            b = row[j0 - 1:j0 - 1 + _SPAN]          # the left neighbours
            left = np.int32(0)
            for q in range(a.size):
                left += np.int32((a[q] > 0) & (a[q] != b[q]))
            q = 0
            while left > 0:
                if a[q] > 0 and a[q] != b[q]:
                    col[k] = j0 + q
                    run_label[k] = a[q]
                    k += 1
                    left -= 1
                q += 1
        runs[i] = k - k_row


@serial
def _run_at(col, lo, hi, c):
    """Index in lo..hi of the run starting at column ``c`` (``col[lo:hi]`` ascending), or -1."""
    a, b = lo, hi
    while a < b:
        mid = (a + b) // 2
        if col[mid] < c:
            a = mid + 1
        else:
            b = mid
    return a if a < hi and col[a] == c else -1


@serial
def _walk(lab, i, j, label, first, col, seen, xy, nv, stop):
    """Trace the ring of ``label`` that runs north up the left side of pixel (i, j).

    Writes its vertices (closed) into ``xy`` from ``nv`` and returns the new ``nv``, or -1 if
    it would pass ``stop`` (a walk that does not close turns forever). Marks the run of every
    northward edge it takes in ``seen``.
    """
    dr, dc = _DR, _DC
    start = nv
    # a vertex is where the direction changes; the edge before the first one also runs north
    # exactly when the ring comes straight up the left side of the pixel below
    below = _inside_label(lab, i + 1, j, label) and not _inside_label(lab, i + 1, j - 1, label)
    prev = 3 if below else -1
    r, c, d = i, j, 3
    while True:
        if d == 3:
            k = _run_at(col, first[r], first[r + 1], c)
            if k < 0:
                return -1
            seen[k] = 1
        if d != prev:
            if nv >= stop:
                return -1
            # the edge's first corner: top-left of the pixel moved by the direction
            xy[nv, 0] = c + (1 if d == 1 or d == 2 else 0)
            xy[nv, 1] = r + (1 if d == 2 or d == 3 else 0)
            nv += 1
            prev = d
        left = (d + 3) % 4
        fr, fc = r + dr[d], c + dc[d]           # the pixel ahead, same side
        lr, lc = fr + dr[left], fc + dc[left]   # the pixel ahead, across the edge
        if _inside_label(lab, lr, lc, label):
            r, c, d = lr, lc, left              # turn left
        elif _inside_label(lab, fr, fc, label):
            r, c = fr, fc                       # straight on
        else:
            d = (d + 1) % 4                     # turn right, same pixel
        if r == i and c == j and d == 3:
            break
    if nv >= stop:
        return -1
    xy[nv, 0] = xy[start, 0]
    xy[nv, 1] = xy[start, 1]
    return nv + 1


@serial
def _trace_labels(lab, lo, hi, first, col, run_label, seen, xy, x0, x1, ring_label, ring_end,
                  q0):
    """Every ring of labels lo..hi-1, tried from their run starts in row-major order.

    Vertices go to ``xy[x0:x1]``, rings to ``ring_label`` / ``ring_end`` (end of each ring in
    ``xy``) from ``q0``. Returns (vertices, rings) written, or (-1, -1) if a walk failed.
    """
    nv = x0
    nr = q0
    for i in range(lab.shape[0]):
        for k in range(first[i], first[i + 1]):
            label = run_label[k]
            if label < lo or label >= hi or seen[k]:
                continue
            nv = _walk(lab, i, col[k], label, first, col, seen, xy, nv, x1)
            if nv < 0:
                return -1, -1
            ring_label[nr] = label
            ring_end[nr] = nv
            nr += 1
    return nv - x0, nr - q0


def trace_rings(lab):
    """Every boundary ring of every region of ``lab`` (int, 0 = background).

    Labels should be about 1..n: the threads' split keeps a count per label up to the largest.

    Returns
    -------
    xy : (m, 2) float64
        Vertices in pixel-corner units (x = column, y = row), only where the boundary turns; each
        ring closed (its first vertex repeated).
    ring_label : (k,) int64
        Label of each ring. Rings come in ascending ranges of labels (one range per thread);
        within a label, in the order found (its shell before its holes).
    ring_offsets : (k + 1,) int64
        Ring i is ``xy[ring_offsets[i]:ring_offsets[i + 1]]``.
    """
    # read here: in a kernel it is a ctypes call, which stops Numba caching the kernel
    return _trace_rings(lab, numba.get_num_threads())


@serial
def _trace_rings(lab, nt):
    """:func:`trace_rings` on ``nt`` threads."""
    h, w = lab.shape
    if h == 0 or w == 0:
        return np.empty((0, 2)), np.empty(0, np.int64), np.zeros(1, np.int64)
    first, col, run_label = _run_starts(lab, nt)
    lo, x0, q0 = _split_labels(run_label, nt)
    xy, ring_label, ring_end, got = _trace_threads(lab, first, col, run_label, lo, x0, q0)
    return _join(xy, ring_label, ring_end, x0, q0, got)


@parallel
def _run_starts(lab, nt):
    """Every run start in row-major order: (first, col, run_label), row i's being the runs
    first[i] .. first[i + 1] - 1. One strip of rows per thread, each into its own part of
    buffers with room for a start per pixel (only the pages written are ever mapped).
    """
    h, w = lab.shape
    runs = np.empty(h, np.int64)
    wide_col = np.empty(h * w, np.int32)
    wide_label = np.empty(h * w, lab.dtype)
    for s in prange(nt):
        r0 = s * h // nt
        _scan_rows(lab, r0, (s + 1) * h // nt, runs, wide_col, wide_label, r0 * w)
    return _compact(runs, wide_col, wide_label, nt, w)


@serial
def _compact(runs, wide_col, wide_label, nt, w):
    """The strips' run starts of :func:`_run_starts`, one after another."""
    h = runs.size
    first = np.zeros(h + 1, np.int64)
    for i in range(h):
        first[i + 1] = first[i] + runs[i]
    col = np.empty(first[h], np.int32)
    run_label = np.empty(first[h], wide_label.dtype)
    for s in range(nt):
        r0, r1 = s * h // nt, (s + 1) * h // nt
        for k in range(first[r1] - first[r0]):
            col[first[r0] + k] = wide_col[r0 * w + k]
            run_label[first[r0] + k] = wide_label[r0 * w + k]
    return first, col, run_label


@serial
def _split_labels(run_label, nt):
    """Contiguous label ranges of about equal run counts, one per thread, and room for each.

    Thread t takes labels lo[t] .. lo[t + 1] - 1 (a ring's length grows with its runs: two of
    its edges are the sides of each), its vertices go to xy[x0[t]:x0[t + 1]] and its rings
    from q0[t] on.
    """
    n = 0
    for k in range(run_label.size):
        n = max(n, np.int64(run_label[k]))
    label_runs = np.zeros(n + 1, np.int64)
    for k in range(run_label.size):
        label_runs[run_label[k]] += 1
    lo = np.empty(nt + 1, np.int64)
    lo[0] = 1
    t = 1
    acc = 0
    for label in range(1, n + 1):
        while t < nt and nt * (2 * acc + label_runs[label]) > 2 * t * run_label.size:
            lo[t] = label
            t += 1
        acc += label_runs[label]
    for t in range(t, nt + 1):
        lo[t] = n + 1
    # the rings of a label have at most 4 vertices per run (two per vertical side) plus a
    # closing one each, and at most one ring per run
    x0 = np.zeros(nt + 1, np.int64)
    q0 = np.zeros(nt + 1, np.int64)
    for t in range(nt):
        r = 0
        for label in range(lo[t], lo[t + 1]):
            r += label_runs[label]
        x0[t + 1] = x0[t] + 5 * r
        q0[t + 1] = q0[t] + r
    return lo, x0, q0


@parallel
def _trace_threads(lab, first, col, run_label, lo, x0, q0):
    """Each thread traces the rings of its labels (:func:`_split_labels`) into its own part of
    the buffers; returns them and (vertices, rings) written per thread."""
    nt = lo.size - 1
    xy = np.empty((x0[nt], 2))
    ring_label = np.empty(q0[nt], np.int64)
    ring_end = np.empty(q0[nt], np.int64)
    seen = np.zeros(col.size, np.uint8)
    got = np.empty((nt, 2), np.int64)
    for t in prange(nt):
        got[t, 0], got[t, 1] = _trace_labels(lab, lo[t], lo[t + 1], first, col, run_label, seen,
                                             xy, x0[t], x0[t + 1], ring_label, ring_end, q0[t])
    return xy, ring_label, ring_end, got


@serial
def _join(xy, ring_label, ring_end, x0, q0, got):
    """The threads' rings of :func:`_trace_threads`, one after another."""
    nv = 0
    nr = 0
    for t in range(got.shape[0]):
        if got[t, 0] < 0:
            raise RuntimeError("trace_rings: boundary walk did not close")
        nv += got[t, 0]
        nr += got[t, 1]
    out_xy = np.empty((nv, 2))
    out_label = np.empty(nr, np.int64)
    offsets = np.zeros(nr + 1, np.int64)
    v = 0
    q = 0
    for t in range(got.shape[0]):
        for k in range(got[t, 0]):
            out_xy[v + k, 0] = xy[x0[t] + k, 0]
            out_xy[v + k, 1] = xy[x0[t] + k, 1]
        for k in range(q0[t], q0[t] + got[t, 1]):
            out_label[q] = ring_label[k]
            offsets[q + 1] = ring_end[k] - x0[t] + v
            q += 1
        v += got[t, 0]
    return out_xy, out_label, offsets


def polygons(lab, n, transform):
    """One shapely polygon (holes kept) per label 1..n of ``lab``, in ``transform``'s space.

    Parameters
    ----------
    lab : (h, w) int array
        Labels 1..n of 4-connected regions (e.g. ``scipy.ndimage.label`` with a cross), 0 outside.
    n : int
        Number of labels; each of 1..n must occur.
    transform : affine.Affine
        Pixel corner (column, row) -> map coordinates.

    Returns
    -------
    numpy.ndarray
        (n,) of shapely Polygons; element k is label k + 1.
    """
    if n == 0:
        return np.empty(0, dtype=object)
    xy, ring_label, ring_offsets = trace_rings(np.ascontiguousarray(lab))
    order = np.argsort(ring_label, kind="stable")        # per label: shell, then its holes
    lengths = np.diff(ring_offsets)[order]
    new_offsets = np.concatenate(([0], np.cumsum(lengths)))
    take = np.repeat(ring_offsets[:-1][order] - new_offsets[:-1], lengths) + np.arange(new_offsets[-1])
    x, y = xy[take, 0], xy[take, 1]
    t = transform
    coords = np.column_stack((t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f))
    labels = ring_label[order]
    first_ring = np.flatnonzero(np.diff(labels, prepend=-1))
    if len(first_ring) != n or labels[first_ring[-1]] != n:
        raise ValueError(f"labels must be 1..{n} with every label present")
    poly_offsets = np.concatenate((first_ring, [len(labels)]))
    return shapely.from_ragged_array(shapely.GeometryType.POLYGON, coords,
                                     (new_offsets, poly_offsets))
