"""Read-ahead in the one-process tile loop (issue 4): tile i+1 is read in a background thread while
tile i is detected. It must change no part file, read at most one tile ahead, keep Numba's
kernels in the main thread, report a failed read on the tile that read it, and leave no thread
behind; a process pool gets no read-ahead."""
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from affine import Affine

import pipeline.stages as stages
from pipeline.config import config_from_dict
from pipeline.executor import keep_freed_buffers
from pipeline.quarter import Quarter
from pipeline.rundir import RunDir
from tiles.errors import TileError
from tiles.prefetch import Prefetcher
from tiles.reader import describe

T = Affine(2, 0, 600000, 0, -2, 2400000)
N = 384
QUARTER = Quarter.parse("2026Q3")
THREAD = "tianyan-prefetch"


def _write(path, data, nodata=0):
    with rasterio.open(path, "w", driver="GTiff", width=N, height=N, count=data.shape[0],
                       dtype=data.dtype, crs="EPSG:4545", transform=T, nodata=nodata, tiled=True,
                       blockxsize=128, blockysize=128, compress="deflate") as dst:
        dst.write(data)


@pytest.fixture(scope="module")
def imagery(tmp_path_factory):
    """4-band uint16 pair of 384 px: the before date has a nodata collar in the north-west (the
    tiles there are skipped unread), the after date changed rectangles (some across tile edges)
    and a cloud mask; tiles of 128 px: 3 x 3."""
    tmp = tmp_path_factory.mktemp("prefetch")
    rng = np.random.default_rng(11)
    r, c = np.mgrid[0:N, 0:N]
    base = 2000 + 300 * np.sin(r / 17.0) * np.cos(c / 23.0)
    img = np.stack([base * f + rng.normal(0, 10, (N, N)) for f in (0.5, 0.7, 0.6, 1.4)])
    before = np.clip(img, 1, 60000).astype("uint16")
    before[:, c + r < 300] = 0                        # tile 0_0 has no data
    after = img.copy()
    for r0, c0 in ((120, 120), (250, 60), (200, 250), (60, 300), (300, 300)):
        after[:, r0:r0 + 14, c0:c0 + 18] *= np.array([1.8, 1.7, 1.6, 0.6])[:, None, None]
    after = np.clip(after + rng.normal(0, 10, after.shape), 1, 60000).astype("uint16")
    cloud = np.zeros((1, N, N), "uint8")
    cloud[0, 330:360, 20:60] = 1
    _write(tmp / "before_20260501.tif", before)
    _write(tmp / "after_20260801.tif", after)
    _write(tmp / "cloud_20260801.tif", cloud, nodata=255)
    return tmp


def _run(imagery, name):
    """A run directory with its plan: the same plan (copied) for every run of a test."""
    raw = {"run": {"workdir": str(imagery / name), "tile_size": 128, "workers": 1},
           "imagery": {"before": str(imagery / "before_20260501.tif"),
                       "after": str(imagery / "after_20260801.tif"),
                       "cloud_mask_after": str(imagery / "cloud_20260801.tif"),
                       "bands": ["blue", "green", "red", "nir"]},
           "detect": {"min_area_m2": 50, "landuse_rules": False},
           "layers": {"counties": {"path": str(imagery / "none.gpkg")}}}
    cfg = config_from_dict(raw, imagery / "run.toml")
    rd = RunDir(cfg.workdir, str(QUARTER))
    rd.create()
    plan = imagery / "plan.json"
    if not plan.exists():
        stages.stage_plan(cfg, QUARTER, rd, {}, stages.Outcome())
        shutil.copy2(rd.path / "plan.json", plan)
    else:
        shutil.copy2(plan, rd.path / "plan.json")
    return cfg, rd


def _events(rd, name):
    lines = [json.loads(x) for x in rd.log_path.read_text(encoding="utf-8").splitlines()]
    return [e for e in lines if e["event"] == name]


def _parts(rd) -> dict:
    return {p.stem: gpd.read_parquet(p) for p in sorted(rd.tiles.glob("*.parquet"))}


def _assert_same_parts(a: gpd.GeoDataFrame, b: gpd.GeoDataFrame, tile: str):
    assert list(a.columns) == list(b.columns), tile
    pd.testing.assert_frame_equal(pd.DataFrame(a.drop(columns="geometry")),
                                  pd.DataFrame(b.drop(columns="geometry")), check_exact=True, obj=tile)
    assert shapely.equals_exact(a.geometry.to_numpy(), b.geometry.to_numpy(), tolerance=0).all(), tile


@pytest.fixture(scope="module")
def reference(imagery):
    """Every tile through ``detect_one_tile((run, tile))``: no read-ahead, each read in its task."""
    _, rd = _run(imagery, "reference")
    plan = stages.load_plan(rd.path)
    results = [stages.detect_one_tile((str(rd.path), t)) for t in plan["tiles"]]
    assert not any(r["prefetched"] for r in results)
    return plan, _parts(rd)


class Spy:
    """Records which thread reads each tile and runs the detector, and in what order."""

    def __init__(self, monkeypatch, plan, fail: str | None = None):
        self.log, self.fail = [], fail
        self.by_halo = {tuple(t["halo"]): t["id"] for t in plan["tiles"]}
        read_tile, detect_tile, task = stages.read_tile, stages.detect_tile, stages.detect_one_tile

        def spy_read(before, after, reference, grid, window, **kw):
            key = (int(window.col_off), int(window.row_off), int(window.width), int(window.height))
            tile = self.by_halo[key]
            self.log.append(("read", tile, threading.current_thread().name))
            if tile == self.fail:
                raise TileError(f"{before.files[0]}: read failed in window {describe(window)} "
                                f"of the grid: test")
            return read_tile(before, after, reference, grid, window, **kw)

        def spy_detect(*args, **kw):
            self.log.append(("detect", None, threading.current_thread().name))
            return detect_tile(*args, **kw)

        def spy_task(t):
            self.log.append(("task", t[1]["id"], threading.current_thread().name))
            return task(t)

        monkeypatch.setattr(stages, "read_tile", spy_read)
        monkeypatch.setattr(stages, "detect_tile", spy_detect)
        monkeypatch.setattr(stages, "detect_one_tile", spy_task)

    def readers(self) -> dict:
        return {tile: thread for what, tile, thread in self.log if what == "read"}


def _no_prefetch_thread() -> bool:
    return not any(t.name.startswith(THREAD) for t in threading.enumerate())


def test_read_ahead_gives_the_same_part_files(imagery, reference, monkeypatch):
    plan, ref = reference
    cfg, rd = _run(imagery, "ahead")
    spy = Spy(monkeypatch, plan)
    outcome = stages.Outcome()
    stages.stage_detect(cfg, QUARTER, rd, {}, outcome, workers=1)
    assert not outcome.failed_tiles
    parts = _parts(rd)
    assert parts.keys() == ref.keys() == {t["id"] for t in plan["tiles"]}
    assert sum(len(p) for p in ref.values()) >= 4          # changes were found: the test has teeth
    for tile in ref:
        _assert_same_parts(parts[tile], ref[tile], tile)
    # every read ran in the background thread but the first task's (it had none read ahead);
    # tiles without data were read by nobody; Numba's kernels ran in this thread only
    order = [t["id"] for t in plan["tiles"]]
    events = {e["tile"]: e for e in _events(rd, "tile")}
    read = spy.readers()
    skipped = {t for t, e in events.items() if e["skipped"]}
    assert skipped and read.keys() == set(order) - skipped
    for tile, thread in read.items():
        assert thread in ("MainThread", f"{THREAD}_0"), thread
        assert events[tile]["prefetched"] == (thread != "MainThread"), tile
    assert {t for t in read if not events[t]["prefetched"]} <= {order[0]}
    assert {thread for what, _, thread in spy.log if what == "detect"} == {"MainThread"}
    # at most one tile ahead: tile k's read starts after task k-1 has started
    started = 0
    for what, tile, _ in spy.log:
        if what == "task":
            started += 1
        elif what == "read":
            assert order.index(tile) <= started, spy.log
    assert _no_prefetch_thread()


def test_failed_read_ahead_fails_only_its_tile_and_a_rerun_redoes_it(imagery, reference, monkeypatch):
    plan, ref = reference
    cfg, rd = _run(imagery, "failing")
    bad = "1_1"                                          # read ahead while 1_0 is detected
    spy = Spy(monkeypatch, plan, fail=bad)
    outcome = stages.Outcome()
    stages.stage_detect(cfg, QUARTER, rd, {}, outcome, workers=1)
    assert spy.readers()[bad].startswith(THREAD)
    halo = next(t["halo"] for t in plan["tiles"] if t["id"] == bad)
    expected = (f"{imagery / 'before_20260501.tif'}: read failed in window "
                f"col {halo[0]} row {halo[1]} {halo[2]}x{halo[3]} of the grid: test")
    assert outcome.failed_tiles == {bad: expected}
    assert [(e["tile"], e["error"]) for e in _events(rd, "tile_failed")] == [(bad, expected)]
    parts = _parts(rd)
    assert parts.keys() == ref.keys() - {bad}
    for tile in parts:
        _assert_same_parts(parts[tile], ref[tile], tile)
    assert _no_prefetch_thread()

    spy.fail = None                                      # the input is repaired: run again
    outcome = stages.Outcome()
    stages.stage_detect(cfg, QUARTER, rd, {}, outcome, workers=1)
    assert not outcome.failed_tiles
    assert [e["tile"] for e in _events(rd, "tile")][-1:] == [bad]
    assert len(_events(rd, "tile")) == len(plan["tiles"])  # only the failed tile was redone
    _assert_same_parts(_parts(rd)[bad], ref[bad], bad)


def test_a_process_pool_gets_no_read_ahead(imagery, monkeypatch):
    """With workers > 1 (or Dask) tiles go to whichever worker is free: tasks carry no next tile."""
    cfg, rd = _run(imagery, "pool")
    seen = []

    def fake_run_tasks(func, items, workers, **kw):
        seen.append(list(items))
        return iter(())

    monkeypatch.setattr(stages, "run_tasks", fake_run_tasks)
    stages.stage_detect(cfg, QUARTER, rd, {}, stages.Outcome(), workers=1)
    stages.stage_detect(cfg, QUARTER, rd, {}, stages.Outcome(), workers=2)
    stages.stage_detect(cfg, QUARTER, rd, {}, stages.Outcome(), workers=1, executor="dask")
    ids = [t["id"] for t in stages.load_plan(rd.path)["tiles"]]
    one, pool, dask = seen
    assert [(t["id"], n and n["id"]) for _, t, n in one] == list(zip(ids, ids[1:] + [None]))
    assert [t["id"] for _, t in pool] == [t["id"] for _, t in dask] == ids


def test_prefetcher_hands_a_read_to_its_key_only_and_raises_its_error():
    ahead = Prefetcher()
    gate = threading.Event()
    ahead.start("a", lambda: gate.wait(5) and np.arange(3))
    assert ahead.take("b") is None                       # another tile: read it yourself
    future = ahead.take("a")
    assert ahead.take("a") is None                       # handed over once
    gate.set()
    assert future.result().tolist() == [0, 1, 2]

    def broken():
        raise TileError("x.tif: read failed")

    ahead.start("c", broken)
    ahead.start("d", np.ones, 2)                         # "c" is dropped, never taken
    with pytest.raises(TileError, match="x.tif: read failed"):
        ahead.start("e", broken)
        ahead.take("e").result()
    ahead.close()
    assert _no_prefetch_thread()


PROBE = """
import ctypes, sys
from pipeline.executor import run_tasks

class Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                               "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
if not hasattr(libc, "mallinfo2"):
    sys.exit(3)
libc.mallinfo2.restype = Mallinfo2
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]

def mmapped_by_20_mib():
    before = libc.mallinfo2().hblkhd
    buf = libc.malloc(20 << 20)
    after = libc.mallinfo2().hblkhd
    libc.free(buf)
    return after - before

assert libc.mallopt(-3, 1 << 20)     # M_MMAP_THRESHOLD 1 MiB: a 20 MiB buffer is mmapped
first = mmapped_by_20_mib()
assert [item for item, _, _ in run_tasks(len, ["ab", "c"], 1)] == ["ab", "c"]   # in-process
print(first, mmapped_by_20_mib())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_one_process_loop_keeps_freed_buffers():
    """workers=1 gets worker_env's glibc thresholds through mallopt: a 20 MiB buffer (under their
    32 MiB mmap threshold) then comes from the heap, so freeing it keeps it for the next tile.
    Probed in a fresh interpreter, whose heap has no free 20 MiB to hand out anyway."""
    run = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])
    if run.returncode == 3:
        pytest.skip("glibc < 2.33: no mallinfo2")
    assert run.returncode == 0, run.stderr
    before, after = map(int, run.stdout.split())
    assert before >= 20 << 20 and after == 0
    assert keep_freed_buffers()


def test_native_read_hands_over_the_files_integers_exactly(imagery):
    """read_pair(native=True) of a single on-grid uint16 file: uint16, equal to the float32 read;
    a warped read (another grid) stays float32."""
    from tiles.grid import Grid
    from tiles.reader import read_pair
    from rasterio.windows import Window

    _, rd = _run(imagery, "native")
    _, grid, before, after, _, _, _ = stages._worker_plan(str(rd.path))
    window = Window(100, 90, 200, 210)
    b32, a32, v32 = read_pair(before, after, grid, window)
    b16, a16, v16 = read_pair(before, after, grid, window, native=True)
    assert b16.dtype == np.uint16 and a16.dtype == np.uint16 and b32.dtype == np.float32
    np.testing.assert_array_equal(b16.astype(np.float32), b32)
    np.testing.assert_array_equal(a16.astype(np.float32), a32)
    np.testing.assert_array_equal(v16, v32)
    shifted = Grid.from_dict({**grid.to_dict(), "left": grid.left + 1.0})   # off the files' grid
    bw, aw, _ = read_pair(before, after, shifted, window, native=True)
    assert bw.dtype == np.float32 and aw.dtype == np.float32
