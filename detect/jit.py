"""The one place that sets Numba's jit options for every kernel in ``detect``.

``cache=True`` keeps compiled code on disk (set NUMBA_CACHE_DIR to a writable
folder under cron); ``fastmath`` is limited to flags that keep NaN/Inf handling.
``parallel`` kernels must only be called from one thread per process.
"""
import numba

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

serial = numba.njit(cache=True, nogil=True, fastmath=FASTMATH)
parallel = numba.njit(cache=True, nogil=True, parallel=True, fastmath=FASTMATH)
