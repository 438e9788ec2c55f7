"""Quarter arithmetic and configuration checking."""
import datetime as dt
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

from pipeline.config import DEFAULTS, load_config
from pipeline.quarter import Quarter
from tiles.errors import ConfigError, InputFileError

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("today,expected", [
    (dt.date(2026, 11, 22), "2026Q3"), (dt.date(2026, 1, 2), "2025Q4"),
    (dt.date(2026, 4, 1), "2026Q1"), (dt.date(2026, 9, 30), "2026Q2")])
def test_auto_is_last_completed_quarter(today, expected):
    assert str(Quarter.parse("auto", today=today)) == expected


def test_quarter_parse_previous_and_days():
    q = Quarter.parse("2026q1")
    assert str(q.previous()) == "2025Q4"
    assert q.first_day == dt.date(2026, 1, 1) and q.last_day == dt.date(2026, 3, 31)
    assert Quarter.parse("2026Q4").last_day == dt.date(2026, 12, 31)
    with pytest.raises(ConfigError, match="2026Q5"):
        Quarter.parse("2026Q5")


def minimal_toml(tmp_path, extra=""):
    p = tmp_path / "run.toml"
    p.write_text(f"""
[run]
tile_size = 512
resolution = 2
[imagery]
before = "img/{{prev_quarter}}/*.tif"
after = "img/{{quarter}}/*.tif"
[layers.counties]
path = "layers/xzq.gpkg"
{extra}
""", encoding="utf-8")
    return p


def test_paths_resolved_relative_to_config_and_defaults_filled(tmp_path):
    cfg = load_config(minimal_toml(tmp_path))
    assert cfg.imagery["after"] == str(tmp_path / "img/{quarter}/*.tif")
    assert cfg.layers["counties"]["path"] == str(tmp_path / "layers/xzq.gpkg")
    assert cfg.run["resolution"] == 2.0 and isinstance(cfg.run["resolution"], float)
    assert cfg.run["workdir"] == str(tmp_path / "runs")
    assert cfg.batches["max_per_batch"] == 25
    assert cfg.layers["counties"]["code_field"] == "XZQDM"


@pytest.mark.parametrize("extra,needle", [
    ("[run2]\nx = 1", "[run2]"),
    ("[batches]\nmax_per_bach = 3", "max_per_bach"),
    ("[batches]\nmax_per_batch = 'many'", "max_per_batch"),
    ("[layers.farmland]\ncodes = ['0101']", "[layers.farmland].path"),
    ("[layers.roads]\npath = 'x.shp'", "layers.roads"),
    ("[export]\nformats = ['pdf']", "'pdf'"),
])
def test_bad_keys_are_named(tmp_path, extra, needle):
    with pytest.raises(ConfigError) as info:
        load_config(minimal_toml(tmp_path, extra))
    assert needle in str(info.value)
    assert str(tmp_path / "run.toml") in str(info.value)


def test_missing_config_file_names_it(tmp_path):
    with pytest.raises(InputFileError, match="nope.toml"):
        load_config(tmp_path / "nope.toml")


def test_default_toml_documents_every_default():
    """configs/default.toml is the people's copy of DEFAULTS: the same keys and values."""
    doc = tomllib.loads((REPO / "configs" / "default.toml").read_text(encoding="utf-8"))
    for section, defaults in DEFAULTS.items():
        assert doc[section] == defaults, section


def test_config_hash_changes_with_settings(tmp_path):
    a = load_config(minimal_toml(tmp_path)).hash
    b = load_config(minimal_toml(tmp_path, "[batches]\nmax_per_batch = 10")).hash
    assert a != b and len(a) == 16


def test_default_toml_documents_the_priority_defaults():
    from overlay.priority import DEFAULT_PRIORITY

    doc = tomllib.loads((REPO / "configs" / "default.toml").read_text(encoding="utf-8"))
    assert doc["priority"] == DEFAULT_PRIORITY


def test_default_toml_documents_the_detector_defaults():
    import dataclasses

    from detect.detector import DetectParams

    doc = tomllib.loads((REPO / "configs" / "default.toml").read_text(encoding="utf-8"))
    defaults = {f.name: f.default for f in dataclasses.fields(DetectParams)}
    assert doc["detect"] == defaults


@pytest.mark.parametrize("extra,needle", [
    ("[detect]\nsignifcance = 0.01", "signifcance"),
    ("[priority]\nlevel1_mn = 3", "level1_mn"),
    ("[dask]\nretires = 2", "retires"),
])
def test_owned_tables_are_checked_when_the_config_loads(tmp_path, extra, needle):
    with pytest.raises(ConfigError) as info:
        load_config(minimal_toml(tmp_path, extra))
    assert needle in str(info.value) and str(tmp_path / "run.toml") in str(info.value)
