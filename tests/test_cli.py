"""Exit codes and one-line messages of the command line (CliRunner)."""
import pytest
from click.testing import CliRunner

from cli import main


@pytest.fixture
def runner():
    return CliRunner()


def test_version_names_the_libraries(runner):
    r = runner.invoke(main, ["--version"])
    assert r.exit_code == 0
    for name in ("Tianyan", "GDAL", "PROJ", "Numba"):
        assert name in r.output


def test_missing_config_file_is_exit_2_with_one_line(runner, tmp_path):
    r = runner.invoke(main, ["run", "--config", str(tmp_path / "missing.toml"), "--quarter", "2026Q3"])
    assert r.exit_code == 2
    assert "missing.toml" in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_bad_key_is_exit_2_naming_the_key(runner, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[imagery]\nbefore = "a.tif"\nafter = "b.tif"\nbandz = []\n'
                   '[layers.counties]\npath = "x.gpkg"\n', encoding="utf-8")
    r = runner.invoke(main, ["run", "--config", str(cfg), "--quarter", "2026Q3"])
    assert r.exit_code == 2 and "[imagery].bandz" in r.output


def test_bad_quarter_is_exit_2(runner, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[imagery]\nbefore = "a.tif"\nafter = "b.tif"\n[layers.counties]\npath = "x.gpkg"\n',
                   encoding="utf-8")
    r = runner.invoke(main, ["run", "--config", str(cfg), "--quarter", "2026Q7"])
    assert r.exit_code == 2 and "2026Q7" in r.output


def test_missing_imagery_is_exit_2_naming_the_pattern(runner, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[imagery]\nbefore = "img/{prev_quarter}/*.tif"\nafter = "img/{quarter}/*.tif"\n'
                   '[layers.counties]\npath = "x.gpkg"\n', encoding="utf-8")
    r = runner.invoke(main, ["run", "--config", str(cfg), "--quarter", "2026Q3", "--workdir", str(tmp_path / "w")])
    assert r.exit_code == 2
    assert "[imagery].before" in r.output and "img/2026Q2/*.tif" in r.output


def test_evaluate_without_run_is_exit_2(runner, tmp_path):
    r = runner.invoke(main, ["evaluate", "--run", str(tmp_path), "--truth", str(tmp_path / "t.gpkg")])
    assert r.exit_code == 2 and "changes.gpkg" in r.output


def test_detect_with_missing_file_is_exit_2(runner, tmp_path):
    r = runner.invoke(main, ["detect", str(tmp_path / "a.tif"), str(tmp_path / "b.tif"), "-o", str(tmp_path / "o.gpkg")])
    assert r.exit_code == 2 and "a.tif" in r.output


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    from pipeline.demo import make_demo

    out = tmp_path_factory.mktemp("demo400")
    make_demo(out, width=400, height=400, tile_size=256)
    return out


def test_validate_passes_on_the_demo(runner, small_demo):
    r = runner.invoke(main, ["validate", "--config", str(small_demo / "demo.toml"), "--quarter", "2026Q3"])
    assert r.exit_code == 0, r.output
    assert "layers.farmland" in r.output and "ERROR" not in r.output


def test_validate_names_a_missing_field_and_exits_2(runner, small_demo, tmp_path):
    text = (small_demo / "demo.toml").read_text(encoding="utf-8").replace('code_field = "DLBM"', 'code_field = "DLBMX"')
    bad = small_demo / "bad.toml"
    bad.write_text(text, encoding="utf-8")
    r = runner.invoke(main, ["validate", "--config", str(bad), "--quarter", "2026Q3"])
    assert r.exit_code == 2
    line = next(l for l in r.output.splitlines() if l.startswith("ERROR"))
    assert "layers.farmland" in line and "DLBMX" in line and "dltb.gpkg" in line


def test_detect_command_on_a_pair_writes_polygons_and_a_cog(runner, small_demo, tmp_path):
    import geopandas as gpd
    import numpy as np
    import rasterio

    before = next((small_demo / "imagery" / "2026Q2").glob("*_MS.tif"))
    after = next((small_demo / "imagery" / "2026Q3").glob("*_MS.tif"))
    out, prob = tmp_path / "pair.gpkg", tmp_path / "p.tif"
    r = runner.invoke(main, ["detect", str(before), str(after), "-o", str(out), "--tile-size", "128",
                             "--probability", str(prob), "--bands", "blue,green,red,nir"])
    assert r.exit_code == 0, r.output
    changes = gpd.read_file(out, layer="changes")
    truth = gpd.read_file(small_demo / "truth.gpkg", layer="truth").to_crs(changes.crs)
    big = truth[truth.geometry.area >= 400]
    found = [g.intersects(changes.geometry.union_all()) for g in big.geometry]
    assert len(big) and np.mean(found) >= 0.6   # no cloud mask is given to `detect`: a loose bound
    with rasterio.open(prob) as src:
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        p = src.read(1, masked=True)
        assert 0 <= p.min() and p.max() <= 1


def test_validate_warns_when_dn_times_scale_is_no_reflectance(runner, small_demo):
    """The demo is reflectance x 10000: with reflectance_scale = 1e-3 every date reads 10 times
    too bright or more; validate warns, naming the key, and does not block."""
    text = (small_demo / "demo.toml").read_text(encoding="utf-8").replace(
        "[detect]\n", "[detect]\nreflectance_scale = 0.01\n")
    cfg = small_demo / "scale.toml"
    cfg.write_text(text, encoding="utf-8")
    r = runner.invoke(main, ["validate", "--config", str(cfg), "--quarter", "2026Q3"])
    assert r.exit_code == 0, r.output
    warns = [l for l in r.output.splitlines() if l.startswith("WARN") and " units " in l]
    assert len(warns) == 3  # before, after, reference
    assert all("reflectance_scale" in l and "1e-4 for reflectance x 10000" in l for l in warns)
    ok = runner.invoke(main, ["validate", "--config", str(small_demo / "demo.toml"), "--quarter", "2026Q3"])
    assert sum(l.startswith("OK") and " units " in l for l in ok.output.splitlines()) == 3


def _as_reflectance(src_path, dst_path):
    """The demo's uint16 reflectance x 10000 written as float32 reflectance 0-1."""
    import rasterio

    with rasterio.open(src_path) as src:
        data = src.read().astype("float32") / 10000
        profile = dict(src.profile, dtype="float32")  # nodata 0 stays 0
    with rasterio.open(dst_path, "w", **profile) as dst:
        dst.write(data)


def test_detect_set_reflectance_scale_for_reflectance_0_1(runner, small_demo, tmp_path, caplog):
    """The demo pair as float reflectance: read with the default scale it warns for both dates
    and finds less than half the change area (measured 24,128 of 53,900 m²); with --set
    reflectance_scale=1 it finds what the uint16 files give."""
    import geopandas as gpd

    before = next((small_demo / "imagery" / "2026Q2").glob("*_MS.tif"))
    after = next((small_demo / "imagery" / "2026Q3").glob("*_MS.tif"))
    fb, fa = tmp_path / "b.tif", tmp_path / "a.tif"
    _as_reflectance(before, fb)
    _as_reflectance(after, fa)
    common = ["--tile-size", "128", "--bands", "blue,green,red,nir"]
    r = runner.invoke(main, ["detect", str(before), str(after), "-o", str(tmp_path / "dn.gpkg"), *common])
    assert r.exit_code == 0, r.output
    caplog.clear()
    r = runner.invoke(main, ["detect", str(fb), str(fa), "-o", str(tmp_path / "r0.gpkg"), *common])
    assert r.exit_code == 0, r.output
    warned = [m for m in caplog.messages if "reflectance_scale" in m]
    assert len(warned) == 2 and all("1 for reflectance" in m for m in warned)
    caplog.clear()
    r = runner.invoke(main, ["detect", str(fb), str(fa), "-o", str(tmp_path / "r1.gpkg"), *common,
                             "--set", "reflectance_scale=1", "--set", "significance=0.01"])
    assert r.exit_code == 0, r.output
    assert not [m for m in caplog.messages if "reflectance_scale" in m]
    # the same scene once its units are told; read as 1e-4 its brightness rules never fire
    area = {k: gpd.read_file(tmp_path / f"{k}.gpkg").area.sum() for k in ("dn", "r0", "r1")}
    assert abs(area["r1"] / area["dn"] - 1) < 0.01 and area["r0"] < 0.97 * area["dn"]


@pytest.mark.parametrize("item, says", [("reflectance_scale=abc", "KEY=VALUE"),
                                        ("significance", "KEY=VALUE"),
                                        ("bogus=1", "unknown key 'bogus'"),
                                        ("open_px=2.5", "open_px")])
def test_detect_set_bad_item_is_exit_2_naming_it(runner, small_demo, tmp_path, item, says):
    before = next((small_demo / "imagery" / "2026Q2").glob("*_MS.tif"))
    r = runner.invoke(main, ["detect", str(before), str(before), "-o", str(tmp_path / "o.gpkg"),
                             "--set", item])
    assert r.exit_code == 2 and says in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o.gpkg").exists()
