"""The [dask] table, the executor choice and the per-worker settings (no cluster started here)."""
import logging
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from pipeline.cluster.progress import TaskProgress
from pipeline.cluster.settings import DASK_DEFAULTS, DaskSettings, choose_executor, dask_settings
from pipeline.cluster.worker import (carried_env, numba_threads_for, process_env, usable_here,
                                  worker_host)
from tiles.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_default_toml_documents_every_dask_key():
    doc = tomllib.loads((REPO / "configs" / "default.toml").read_text(encoding="utf-8"))
    assert doc["dask"] == DASK_DEFAULTS


def test_defaults_give_a_local_cluster():
    s = dask_settings({})
    assert s == DaskSettings()
    assert s.scheduler == "" and s.scheduler_file is None


def test_unknown_key_names_file_and_key():
    with pytest.raises(ConfigError, match=r"run\.toml: unknown key \[dask\]\.schedular"):
        dask_settings({"schedular": "tcp://a:8786"}, "run.toml")


@pytest.mark.parametrize("key, value, fragment", [
    ("retries", "2", r"\[dask\]\.retries = '2' should be int"),
    ("retries", -1, r"\[dask\]\.retries = -1 must be 0 or more"),
    ("gdal_cachemax_mb", 0, r"gdal_cachemax_mb = 0 must be 1 or more"),
    ("numba_threads", True, r"numba_threads = True should be int"),
    ("connect_timeout_s", 0, r"connect_timeout_s = 0.0 must be > 0"),
    ("scheduler", "10.0.0.5:8786", r"not a scheduler address \(use tcp://HOST:PORT"),
    ("env", {"GDAL HTTP": "1"}, r"\[dask\]\.env\.GDAL HTTP"),
])
def test_bad_values_are_refused_naming_the_key(key, value, fragment):
    with pytest.raises(ConfigError, match=fragment):
        dask_settings({key: value}, "run.toml")


def test_ints_are_accepted_for_floats_and_env_values_become_text():
    s = dask_settings({"connect_timeout_s": 5, "env": {"GDAL_HTTP_TIMEOUT": 30}})
    assert s.connect_timeout_s == 5.0 and s.env == {"GDAL_HTTP_TIMEOUT": "30"}


def test_command_line_scheduler_overrides_the_config():
    s = dask_settings({"scheduler": "tcp://a:8786"}, scheduler="tcp://b:8786")
    assert s.scheduler == "tcp://b:8786"
    with pytest.raises(ConfigError, match="--scheduler = 'b:8786'"):
        dask_settings({}, scheduler="b:8786")
    assert dask_settings({"scheduler": "/shared/scheduler.json"}).scheduler_file == "/shared/scheduler.json"


@pytest.mark.parametrize("executor, scheduler, table, expected", [
    (None, None, {}, "local"),
    (None, None, {"scheduler": "tcp://a:8786"}, "dask"),
    (None, "tcp://a:8786", {}, "dask"),
    ("local", None, {"scheduler": "tcp://a:8786"}, "local"),
    ("dask", None, {}, "dask"),
])
def test_executor_choice(executor, scheduler, table, expected):
    assert choose_executor(executor, scheduler, table) == expected


def test_unknown_executor_is_refused():
    with pytest.raises(ConfigError, match="--executor 'ray'"):
        choose_executor("ray", None, {})


@given(cores=st.integers(1, 256), processes=st.integers(1, 256))
def test_numba_threads_times_processes_never_exceed_cores(cores, processes):
    threads = numba_threads_for(cores, processes)
    assert threads >= 1
    if processes <= cores:
        assert threads * processes <= cores
        assert (threads + 1) * processes > cores  # and no core is left idle that could be used


def test_numba_threads_configured_wins():
    assert numba_threads_for(64, 8, configured=3) == 3


@pytest.mark.parametrize("address, host", [
    ("tcp://10.0.0.5:40123", "10.0.0.5"), ("tls://node7.cluster:8786", "node7.cluster"),
    ("tcp://[::1]:5000", "::1"),
])
def test_worker_host(address, host):
    assert worker_host(address) == host


def test_carried_env_takes_gdal_and_numba_settings_not_credentials():
    client = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "CPL_VSIL_CURL_CACHE_SIZE": "1000",
              "NUMBA_CACHE_DIR": "/x", "NUMBA_NUM_THREADS": "64", "GDAL_CACHEMAX": "4096",
              "AWS_SECRET_ACCESS_KEY": "secret", "HOME": "/root", "PATH": "/bin"}
    env = carried_env(client, {"GDAL_HTTP_TIMEOUT": "30", "CPL_VSIL_CURL_CACHE_SIZE": "5"})
    assert env == {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "CPL_VSIL_CURL_CACHE_SIZE": "5",
                   "NUMBA_CACHE_DIR": "/x", "GDAL_HTTP_TIMEOUT": "30"}


def test_process_env_sets_threads_and_cache_and_drops_missing_paths(tmp_path):
    cache = tmp_path / "numba"
    env = process_env({"GDAL_DATA": str(tmp_path / "missing"), "NUMBA_CACHE_DIR": str(cache),
                       "GDAL_HTTP_TIMEOUT": "30"}, numba_threads=3, gdal_cachemax_mb=128)
    assert env["NUMBA_NUM_THREADS"] == "3" and env["GDAL_CACHEMAX"] == "128"
    assert env["OMP_NUM_THREADS"] == "1" and env["GDAL_HTTP_TIMEOUT"] == "30"
    assert "GDAL_DATA" not in env                   # a client path absent here is not applied
    assert env["NUMBA_CACHE_DIR"] == str(cache) and cache.is_dir()  # a cache folder is made


def test_usable_here_refuses_an_unwritable_cache(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert not usable_here("NUMBA_CACHE_DIR", str(blocker / "cache"))
    assert usable_here("GDAL_HTTP_TIMEOUT", "30") and usable_here("PROJ_DATA", str(tmp_path))


def test_progress_logs_every_tenth_when_not_on_a_terminal(caplog):
    caplog.set_level(logging.INFO, logger="tianyan")
    p = TaskProgress(40, "detect_one_tile", quiet=False)
    for i in range(40):
        p.update(failed=(i == 7))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 10
    assert lines[0].startswith("dask detect_one_tile: 4/40 done")
    assert lines[-1].startswith("dask detect_one_tile: 40/40 done (1 failed)")


def test_progress_is_quiet_on_a_terminal(caplog):
    caplog.set_level(logging.INFO, logger="tianyan")
    p = TaskProgress(3, quiet=True)
    for _ in range(3):
        p.update()
    assert not caplog.records and p.done == 3
