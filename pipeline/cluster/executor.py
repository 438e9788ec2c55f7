"""Run independent tasks (tiles, counties) on a Dask cluster: an existing scheduler, or a
LocalCluster started for the run and closed after it.

Tasks carry what ``func`` needs to find its inputs (paths and windows), never arrays or layers:
workers read imagery and layers from storage shared with the client at the same paths and write
their small result files into the run directory. What travels back is the task's small result.

Failures are per task, as with the local executor: a task that raises is retried ``retries``
times, then reported; a worker that dies mid-task has its task rerun on another worker by the
scheduler, and a task that has killed ``allowed_failures + 1`` workers is reported as failed.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections import Counter
from typing import Callable, Iterable, Iterator

from pipeline.cluster.progress import TaskProgress
from pipeline.cluster.settings import DaskSettings
from pipeline.cluster.worker import (WorkerSetup, call, carried_env, machine_cores, numba_threads_for,
                                  process_env, worker_host, worker_report)
from tiles.errors import TianyanError

log = logging.getLogger("tianyan")


def run_tasks_dask(func: Callable, items: Iterable, workers: int, settings: DaskSettings,
                   ) -> Iterator[tuple[object, object, BaseException | None]]:
    """Yield ``(item, result, error)`` for each item as it finishes on the cluster.

    Parameters
    ----------
    func : callable
        A module-level function importable on the workers (pickled by reference), e.g.
        ``pipeline.stages.detect_one_tile``.
    items : iterable
        Small task descriptions (paths, windows), one task each.
    workers : int
        Worker processes of the LocalCluster when ``settings.scheduler`` is empty (one thread
        each); ignored for an existing cluster.
    settings : DaskSettings
        The checked ``[dask]`` table.

    Raises
    ------
    TianyanError
        No scheduler answered, no worker joined, or a worker runs another Tianyan version.
    """
    items = list(items)
    if not items:
        return
    with connect(settings, workers) as client:
        prepare_workers(client, settings, preload=(func.__module__,))
        yield from submit_and_collect(client, func, items, settings)


def submit_and_collect(client, func: Callable, items: list, settings: DaskSettings,
                       ) -> Iterator[tuple[object, object, BaseException | None]]:
    """Submit one task per item to ``client`` and yield ``(item, result, error)`` as they finish.

    Tasks still pending when the caller stops early (or is interrupted) are cancelled.
    """
    from distributed import as_completed  # noqa: PLC0415 - Dask is imported only when used
    from distributed.client import CancelledError  # noqa: PLC0415

    token = uuid.uuid4().hex[:8]
    futures = {client.submit(call, func, item, key=f"{func.__name__}-{token}-{i}",
                             retries=settings.retries, pure=False): i
               for i, item in enumerate(items)}
    progress = TaskProgress(len(items), func.__name__)
    log.info("dask: %d %s task(s) submitted", len(items), func.__name__)
    try:
        for fut in as_completed(list(futures), loop=client.loop):
            i = futures.pop(fut)
            try:
                result, error = fut.result(), None
            except (Exception, CancelledError) as exc:  # noqa: BLE001 - captured per task
                result, error = None, explain(exc, settings)
            fut.release()
            progress.update(failed=error is not None)
            yield items[i], result, error
    finally:
        if futures:
            client.cancel(list(futures))


@contextlib.contextmanager
def connect(settings: DaskSettings, workers: int):
    """A ``distributed.Client`` to the configured scheduler, or to a LocalCluster of ``workers``
    single-threaded processes; the LocalCluster is closed on exit."""
    from distributed import Client  # noqa: PLC0415 - Dask is imported only when used

    timeout = settings.connect_timeout_s
    with _quiet_distributed(), contextlib.ExitStack() as stack:
        if settings.scheduler:
            client, where = _remote_client(settings), settings.scheduler
        else:
            cluster = local_cluster(settings, workers)
            stack.callback(_close_quietly, cluster)
            client, where = Client(cluster, set_as_default=False), f"LocalCluster {cluster.scheduler_address}"
        stack.callback(client.close)  # before the cluster closes
        try:
            client.wait_for_workers(1, timeout=timeout)
        except TimeoutError:
            raise TianyanError(f"{where}: no Dask worker joined within {timeout:g} s (start workers with "
                               f"`dask worker {settings.scheduler or 'ADDRESS'}`, or raise "
                               f"[dask].connect_timeout_s)") from None
        yield client


def _remote_client(settings: DaskSettings):
    """A client of an existing scheduler (an address, or a scheduler file that may still be being
    written by a batch job: it is waited for up to ``connect_timeout_s``)."""
    from distributed import Client  # noqa: PLC0415

    where, timeout = settings.scheduler, settings.connect_timeout_s
    if settings.scheduler_file:
        deadline = time.monotonic() + timeout  # Client would wait for the file without a limit
        while not os.path.isfile(settings.scheduler_file):
            if time.monotonic() > deadline:
                raise TianyanError(f"{where}: scheduler file not found within {timeout:g} s (start the "
                                   f"scheduler with --scheduler-file {where}, or give its tcp:// address)")
            time.sleep(0.2)
    try:
        if settings.scheduler_file:
            return Client(scheduler_file=settings.scheduler_file, timeout=timeout, set_as_default=False)
        return Client(settings.scheduler, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise TianyanError(f"{where}: no Dask scheduler answered within {timeout:g} s ({exc}); check "
                           f"--scheduler / [dask].scheduler and that `dask scheduler` runs there") from None


def local_cluster(settings: DaskSettings, workers: int):
    """A LocalCluster of ``workers`` single-threaded worker processes on this machine, each started
    with the GDAL / Numba environment (Numba threads x workers <= cores)."""
    import dask  # noqa: PLC0415
    from distributed import LocalCluster  # noqa: PLC0415

    workers = max(1, workers)
    threads = numba_threads_for(machine_cores(), workers, settings.numba_threads)
    env = process_env(carried_env(dict(os.environ), settings.env), threads, settings.gdal_cachemax_mb)
    # No dashboard: the scheduler's HTTP server (health, metrics) still starts; a random port for it.
    http = ({"dashboard_address": settings.dashboard} if settings.dashboard else
            {"dashboard_address": None, "scheduler_kwargs": {"dashboard_address": ":0"}})
    with dask.config.set({"distributed.scheduler.allowed-failures": settings.allowed_failures}):
        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                            memory_limit=settings.memory_limit, env=env, **http)


def _close_quietly(cluster) -> None:
    """Close a LocalCluster. A worker process full of Numba, GDAL and Arrow takes seconds to
    finalize, and the nanny kills it after 4 s with a warning; its results are already written,
    so that warning says nothing here."""
    nanny = logging.getLogger("distributed.nanny")
    saved = nanny.level
    nanny.setLevel(logging.ERROR)
    try:
        cluster.close()
    finally:
        nanny.setLevel(saved)


@contextlib.contextmanager
def _quiet_distributed():
    """Dask's own INFO chatter (connections, plugins, shutdown) only with -vv (root at DEBUG)."""
    logger = logging.getLogger("distributed")
    saved = logger.level
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(saved)


def prepare_workers(client, settings: DaskSettings, preload: tuple[str, ...] = ()) -> dict:
    """Register :class:`WorkerSetup` on every worker (present and future), check that the workers
    run this Tianyan, and log the cluster and its dashboard. Returns ``worker_report`` per worker."""
    from pipeline.versions import versions  # noqa: PLC0415

    info = client.scheduler_info(n_workers=-1)["workers"]
    per_host = Counter(worker_host(addr) for addr in info)
    env = carried_env(dict(os.environ), settings.env)
    client.register_plugin(WorkerSetup(env, settings.gdal_cachemax_mb, settings.numba_threads,
                                       dict(per_host), preload), name=WorkerSetup.name)
    reports = client.run(worker_report)
    mine = versions()
    for addr, rep in sorted(reports.items()):
        theirs = rep["versions"]
        if theirs["tianyan"] != mine["tianyan"]:
            raise TianyanError(f"Dask worker {addr} runs Tianyan {theirs['tianyan']}, this client "
                               f"{mine['tianyan']}: install the same version on every worker")
        for lib in ("gdal", "numba", "proj"):
            if theirs.get(lib) != mine.get(lib):
                log.warning("Dask worker %s has %s %s, this client %s: results may differ slightly",
                            addr, lib, theirs.get(lib), mine.get(lib))
    many = sorted(addr for addr, w in info.items() if w.get("nthreads", 1) > 1)
    if many:
        log.warning("Dask worker(s) %s have several threads: their tasks run one at a time per process "
                    "(Numba's parallel kernels are not thread-safe); start workers with --nthreads 1 "
                    "and --nworkers N for throughput", ", ".join(many))
    threads = sorted({rep["numba_threads"] for rep in reports.values()})
    log.info("dask: scheduler %s, %d worker process(es) on %d host(s), Numba threads per process %s",
             client.scheduler.address, len(info), len(per_host), "/".join(map(str, threads)))
    log.info("dask: dashboard %s", dashboard_link(client, settings))
    return reports


def dashboard_link(client, settings: DaskSettings) -> str:
    """The dashboard address, or why there is none."""
    if not settings.scheduler and not settings.dashboard:
        return "off ([dask].dashboard is empty)"
    try:
        return client.dashboard_link
    except Exception as exc:  # noqa: BLE001 - the dashboard is a convenience, never a failure
        return f"unknown ({exc})"


def explain(exc: BaseException, settings: DaskSettings) -> BaseException:
    """The task's error, with what it means on a cluster when that is not obvious."""
    from distributed.client import CancelledError  # noqa: PLC0415
    from distributed.scheduler import KilledWorker  # noqa: PLC0415

    if isinstance(exc, KilledWorker):
        limit = "its scheduler's distributed.scheduler.allowed-failures" if settings.scheduler \
            else f"[dask].allowed_failures = {settings.allowed_failures}"
        return TianyanError(f"every worker that ran this task died while running it ({limit} "
                            f"exceeded): out of memory, or a crash in a library; see the worker logs")
    if isinstance(exc, CancelledError):
        return TianyanError(f"task cancelled: the client lost the scheduler ({exc})")
    if isinstance(exc, FileNotFoundError) and settings.scheduler:
        return TianyanError(f"{exc} (every Dask worker must see the run directory and the inputs at "
                            f"the same path as this client: shared storage)")
    return exc
