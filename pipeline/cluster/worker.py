"""What runs inside a Dask worker process: its GDAL / Numba settings and the task call.

Numba's parallel kernels must not be launched from several threads of one process (the default
threading layer aborts), so the tasks of one worker process run one at a time, whatever the
worker's thread count; each process gets ``cores of its machine // worker processes there`` Numba
threads, so Numba threads x concurrently running tasks <= cores on every machine.
"""
from __future__ import annotations

import importlib
import logging
import os
import sys
import threading
from typing import Callable

from distributed import WorkerPlugin

from pipeline.executor import keep_freed_buffers

log = logging.getLogger("tianyan")

# Environment variables of the client carried to the workers (Numba threads and the GDAL cache are
# set from the settings instead). Credentials (AWS_*, ...) are never carried: workers use their own.
CARRIED_PREFIXES = ("GDAL_", "CPL_", "VSI_", "OGR_", "NUMBA_", "PROJ_NETWORK")
COMPUTED = ("NUMBA_NUM_THREADS", "GDAL_CACHEMAX")
_PATH_SUFFIXES = ("_DATA", "_DIR", "_PATH", "_FILE")
SINGLE_THREADED = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

_TASK_LOCK = threading.Lock()
_STATE: dict[str, int | bool | None] = {"numba_threads": None, "malloc_relaxed": False}


def machine_cores() -> int:
    """CPU cores this process may use (its affinity set where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def numba_threads_for(cores: int, processes: int, configured: int = 0) -> int:
    """Numba threads per worker process: ``configured`` if > 0, else ``cores // processes`` (>= 1)."""
    if configured > 0:
        return configured
    return max(1, cores // max(1, processes))


def carried_env(environ: dict[str, str], extra: dict[str, str] | None = None) -> dict[str, str]:
    """The client's GDAL / PROJ / Numba settings to apply on the workers, plus ``extra``
    (``[dask].env``, which wins)."""
    env = {k: v for k, v in environ.items() if k.startswith(CARRIED_PREFIXES) and k not in COMPUTED}
    env.update(extra or {})
    return env


def usable_here(name: str, value: str) -> bool:
    """A path-valued setting (``*_DATA``, ``*_DIR`` ...) is applied only where the path exists or,
    for a cache folder, can be made writable; a client path may not exist on another machine."""
    if not name.endswith(_PATH_SUFFIXES) or not value or not os.path.isabs(value):
        return True
    if name == "NUMBA_CACHE_DIR":
        try:
            os.makedirs(value, exist_ok=True)
        except OSError:
            return False
        return os.access(value, os.W_OK)
    return os.path.exists(value)


def process_env(env: dict[str, str], numba_threads: int, gdal_cachemax_mb: int) -> dict[str, str]:
    """The full environment block set in a worker process (before it imports Numba or GDAL)."""
    out = {k: v for k, v in env.items() if usable_here(k, v)}
    out.update(SINGLE_THREADED)
    out.update({"NUMBA_NUM_THREADS": str(numba_threads), "GDAL_CACHEMAX": str(gdal_cachemax_mb)})
    return out


class WorkerSetup(WorkerPlugin):
    """Set each worker process's environment and Numba threads, and import the task's module
    once (so the first task does not pay for it). Re-run by Dask on workers that join or restart.

    Parameters
    ----------
    env : dict
        Carried environment (:func:`carried_env`).
    gdal_cachemax_mb : int
        GDAL block cache per process, MB.
    numba_threads : int
        Threads per process; 0 chooses ``cores // processes_by_host[host]``.
    processes_by_host : dict
        Worker processes per host, as the client saw them.
    preload : tuple of str
        Modules to import.
    """

    name = "tianyan-setup"

    def __init__(self, env: dict[str, str], gdal_cachemax_mb: int, numba_threads: int,
                 processes_by_host: dict[str, int], preload: tuple[str, ...] = ()):
        self.env = dict(env)
        self.gdal_cachemax_mb = gdal_cachemax_mb
        self.numba_threads = numba_threads
        self.processes_by_host = dict(processes_by_host)
        self.preload = tuple(preload)

    def setup(self, worker) -> None:
        host = worker_host(worker.address)
        # A host the client did not see (a worker joining later) counts one process.
        threads = numba_threads_for(machine_cores(), self.processes_by_host.get(host, 1), self.numba_threads)
        env = process_env(self.env, threads, self.gdal_cachemax_mb)
        if _numba_threads_launched():
            # Numba refuses a changed NUMBA_NUM_THREADS once its pool runs (it rereads the
            # variable when it compiles); set_num_threads in `call` caps the threads instead.
            env.pop("NUMBA_NUM_THREADS", None)
        os.environ.update(env)
        _STATE["numba_threads"] = threads
        _STATE["malloc_relaxed"] = relax_malloc_trim()
        for module in self.preload:
            importlib.import_module(module)


def _numba_threads_launched() -> bool:
    """True when this process's Numba thread pool has started."""
    parallel = sys.modules.get("numba.np.ufunc.parallel")
    return bool(parallel is not None and getattr(parallel, "_is_initialized", False))


def relax_malloc_trim() -> bool:
    """Undo the cost of Dask's ``MALLOC_TRIM_THRESHOLD_=65536`` (set by the nanny) in this process.

    Setting that variable turns off glibc's adaptive mmap threshold, so every tile-sized array is
    mmapped and page-faulted afresh: measured 1.7-1.8x the CPU time per tile. Fixed thresholds at
    glibc's adaptive mmap ceiling (32 MiB) and a 512 MiB trim threshold keep a tile's freed
    buffers for the next tile instead of page-faulting them again.
    Returns True when applied (Linux with glibc, the variable set).
    """
    if not os.environ.get("MALLOC_TRIM_THRESHOLD_"):
        return False
    return keep_freed_buffers()


def worker_host(address: str) -> str:
    """``tcp://10.0.0.5:40123`` -> ``10.0.0.5``."""
    hostport = address.split("://", 1)[-1]
    return hostport.rsplit(":", 1)[0].strip("[]")


def call(func: Callable, item):
    """Run one task in a worker process: one task at a time per process, with its Numba threads
    (``numba.set_num_threads`` is per thread, and Dask runs tasks in a thread pool)."""
    with _TASK_LOCK:
        threads = _STATE["numba_threads"]
        if threads:
            import numba  # noqa: PLC0415 - after WorkerSetup has set NUMBA_NUM_THREADS

            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        return func(item)


def worker_report() -> dict:
    """What the client checks on every worker: versions, cores, Numba threads (``client.run``)."""
    from pipeline.versions import versions  # noqa: PLC0415

    import numba  # noqa: PLC0415

    return {"versions": versions(), "cores": machine_cores(), "numba_threads": _STATE["numba_threads"],
            "numba_max_threads": numba.config.NUMBA_NUM_THREADS,
            "gdal_cachemax": os.environ.get("GDAL_CACHEMAX"), "malloc_relaxed": _STATE["malloc_relaxed"],
            "pid": os.getpid()}
