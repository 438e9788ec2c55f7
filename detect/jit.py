"""The one place that sets Numba's jit options for every kernel in ``detect``.

``cache=True`` keeps compiled code on disk (set NUMBA_CACHE_DIR to a writable
folder under cron); ``fastmath`` is limited to flags that keep NaN/Inf handling;
``error_model="numpy"``: a division by zero gives inf/NaN like NumPy instead of a
Python ZeroDivisionError check on every division (which also blocks SIMD code).
``parallel`` kernels must only be called from one thread per process. The
on-disk cache is keyed on the kernel module's source, not on these options:
after changing them, touch ``detect/kernels.py`` (or clear NUMBA_CACHE_DIR).

Threading layer: ``workqueue`` unless NUMBA_THREADING_LAYER says otherwise. The
OpenMP layer keeps its worker threads spinning after every parallel kernel, and
on a machine whose cores are all busy (workers x threads = cores) they take the
core from the main thread's serial work between kernels (SciPy, GDAL, shapely).
Measured on the shared 2-core machine: ten 4 x 4 SciPy solves after a small
parallel kernel took 23-36 ms with OpenMP and 0.4-0.7 ms with workqueue, and the
spinning threads doubled the process CPU time. Workqueue threads sleep when idle;
it must not be entered from two Python threads at once (it aborts), which the
pipeline guarantees (process pools; one task at a time per Dask worker process).
"""
import os

import numba

if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

serial = numba.njit(cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy")
# small per-pixel helpers called inside SIMD loops: inlined in Numba's IR, so LLVM's
# inliner cost limit cannot leave a call in the loop (a call stops vectorisation;
# measured 5x on the chi-square survival function)
inline = numba.njit(inline="always", nogil=True, fastmath=FASTMATH, error_model="numpy")
# float arithmetic whose every rounding is part of the result (sums that must equal another
# kernel's bit for bit): no fast-math flags, so LLVM may neither regroup a sum ('reassoc'),
# nor turn a division into a product by the reciprocal ('arcp'), nor fuse a multiply-add
# ('contract'). fastmath=False must be given: a kernel that leaves it unset takes the flags
# of the kernel that calls it (Numba's CPUTargetOptions.finalize). ``exact_inline`` helpers
# are lowered with their caller's flags once inlined: call them from ``exact`` kernels only.
exact = numba.njit(cache=True, nogil=True, fastmath=False, error_model="numpy")
exact_inline = numba.njit(inline="always", nogil=True, fastmath=False, error_model="numpy")


def parallel(fn):
    """Jit ``fn`` with its ``prange`` loops run on Numba's threads (and nothing else).

    Only ``prange`` is parallelised: NumPy calls and array expressions in the
    kernel (np.zeros, .sum(), ...) stay serial, since each one would otherwise
    become a parallel region of its own, compiled separately (about 0.5 s each,
    measured: 4.5 s for a wrapper whose helpers were already compiled).
    """
    only_prange = {"prange": True, "comprehension": False, "reduction": False,
                   "inplace_binop": False, "setitem": False, "numpy": False, "stencil": False,
                   "fusion": False}  # a fresh dict: Numba consumes it
    return numba.njit(cache=True, nogil=True, parallel=only_prange, fastmath=FASTMATH,
                      error_model="numpy")(fn)
