"""Read the next tile while the current one is processed: one background thread, one slot.

In the one-process tile loop (``--workers 1``) Numba's parallel kernels use every core while a
tile is detected, but while GDAL decodes the next tile they wait and one core sits idle. A
:class:`Prefetcher` runs the next tile's read in one background thread while the caller
detects the current tile in its own thread; GDAL and NumPy release the GIL while they work.

* One slot: at most one read is ahead of the caller, so memory grows by one tile of both dates.
* Keyed: :meth:`Prefetcher.take` hands a read over only for the key it was started with; a read
  nobody takes is dropped by the next :meth:`~Prefetcher.start` or by :meth:`~Prefetcher.close`.
* Errors travel with the read: the returned Future's ``result()`` raises what the read raised,
  so it is reported on the tile that read it, as if that tile had read in its own task.
* The thread runs the reading function only. It must not call Numba's parallel kernels (their
  workqueue layer aborts when entered from two threads) nor test footprints (GEOS prepared
  geometries are not thread-safe): :func:`tiles.reader.read_pair` given its ``scenes`` does
  neither (rasterio and NumPy only, one dataset handle per read).
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Hashable


class Prefetcher:
    """A single-slot read-ahead: one thread (started on first use), at most one pending read.

    Examples
    --------
    >>> ahead = Prefetcher()
    >>> ahead.start("1_0", sum, [1, 2, 3])          # while tile 0_0 is processed
    >>> ahead.take("1_0").result()
    6
    >>> ahead.take("1_1") is None                   # nothing was started for it: read it now
    True
    >>> ahead.close()
    """

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._slot: tuple[Hashable, Future] | None = None

    def start(self, key: Hashable, read: Callable, /, *args, **kwargs) -> None:
        """Begin ``read(*args, **kwargs)`` in the background thread for ``key``.

        A read still in the slot is dropped first (it finishes before this one starts: one
        thread). Call it when the previous read has been taken, so that at most one read is
        ahead of the caller.
        """
        self.drop()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tianyan-prefetch")
        self._slot = (key, self._pool.submit(read, *args, **kwargs))

    def take(self, key: Hashable) -> Future | None:
        """The read started for ``key`` (the slot is emptied), or None when the slot holds none."""
        if self._slot is None or self._slot[0] != key:
            return None
        future, self._slot = self._slot[1], None
        return future

    def drop(self) -> None:
        """Forget the read in the slot: cancelled if not begun, else its result is left unused."""
        if self._slot is not None:
            self._slot[1].cancel()
            self._slot = None

    def close(self) -> None:
        """Drop the slot and stop the thread, waiting for a read in progress to end."""
        self.drop()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
