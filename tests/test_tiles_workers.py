"""Workers (issue 4): each worker process gets NUMBA_NUM_THREADS with threads x workers <= cores
and its own GDAL block cache; asked from inside the workers, not from the environment we set."""
import os

import pytest

from pipeline.executor import run_tasks, worker_env

CORES = os.cpu_count() or 1


def probe(_item):
    """What a worker sees: its pid, Numba's thread count and GDAL's effective block cache."""
    import numba
    from rasterio._env import get_gdal_config

    return {"pid": os.getpid(), "env_threads": int(os.environ.get("NUMBA_NUM_THREADS", "0")),
            "numba_threads": numba.get_num_threads(),
            "gdal_cache_bytes": int(get_gdal_config("GDAL_CACHEMAX"))}


@pytest.mark.parametrize("workers", sorted({1, CORES}))
def test_worker_env_keeps_threads_times_workers_within_cores(workers):
    env = worker_env(workers)
    assert int(env["NUMBA_NUM_THREADS"]) * workers <= CORES
    assert int(env["NUMBA_NUM_THREADS"]) >= 1 and int(env["GDAL_CACHEMAX"]) > 0


@pytest.mark.skipif(CORES < 2, reason="a process pool needs at least 2 cores")
def test_settings_arrive_inside_each_worker():
    workers = 2
    env = worker_env(workers)
    seen = [result for _, result, error in run_tasks(probe, list(range(6)), workers) if error is None]
    assert len(seen) == 6
    assert {s["pid"] for s in seen}.isdisjoint({os.getpid()})     # ran in other processes
    assert len({s["pid"] for s in seen}) <= workers
    for s in seen:
        assert s["env_threads"] == int(env["NUMBA_NUM_THREADS"])
        assert s["numba_threads"] == int(env["NUMBA_NUM_THREADS"])
        assert s["numba_threads"] * workers <= CORES
        assert s["gdal_cache_bytes"] == int(env["GDAL_CACHEMAX"]) * 2 ** 20   # MB as GDAL reads it


def test_one_worker_is_a_plain_loop_in_this_process():
    seen = [result for _, result, _ in run_tasks(probe, [0, 1], 1)]
    assert [s["pid"] for s in seen] == [os.getpid()] * 2


def test_more_workers_than_cores_are_capped(monkeypatch, caplog):
    """threads x workers <= cores: asking for 4 workers on a 1-core machine runs in-process."""
    import logging
    import os as _os

    from pipeline import executor

    monkeypatch.setattr(_os, "cpu_count", lambda: 1)
    pids = []
    with caplog.at_level(logging.WARNING, logger="tianyan"):
        for _, result, error in executor.run_tasks(_pid, [1, 2, 3], 4):
            assert error is None
            pids.append(result)
    assert set(pids) == {_os.getpid()}
    assert "4 workers asked for on 1 cores" in caplog.text


def _pid(_item):
    import os as _os

    return _os.getpid()
