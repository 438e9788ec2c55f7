"""Province summary and report: counts and areas computed by hand on three polygons."""
import geopandas as gpd
from shapely.geometry import box

from pipeline.report import summarize, write_html


def test_summary_counts_and_areas_by_county_level_and_type(tmp_path):
    gdf = gpd.GeoDataFrame({
        "XZQDM": ["450512", "450512", "450503", ""], "XZQMC": ["铁山港区", "铁山港区", "银海区", ""],
        "JCBH": ["a", "b", "c", "d"], "YXJ": [1, 2, 1, 3], "TBLX": ["20", "KT", "20", "QT"],
        "JCMJM": [1.5, 2.0, 0.25, 1.0], "GDMJ": [1000.0, 0.0, 2000 / 3, 0.0],
        "JBNTMJ": [500.0, 0.0, 0.0, 0.0]},
        geometry=[box(0, 0, 1, 1)] * 4, crs="EPSG:4545")
    s = summarize(gdf, quarter="2026Q3", packages={"450512": "p.zip"}, outside=["d"], failed_tiles={},
                  failed_counties={"450503": "disk full"}, manifest={"dates": {"before": "x"}}, overlay_report={})
    t = s["counties"]["450512"]
    assert t["polygons"] == 2 and t["area_mu"] == 3.5 and t["farmland_mu"] == 1.5
    assert t["basic_farmland_mu"] == 0.75 and t["by_level"] == {"1": 1, "2": 1}
    assert s["counties"]["450503"]["farmland_mu"] == 1.0 and s["counties"]["450503"]["package"] is None
    assert s["total"]["polygons"] == 4 and s["total"]["by_type"] == {"20": 2, "KT": 1, "QT": 1}
    assert s["outside_counties"] == ["d"]
    s["suppressed"] = [{"XZQDM": "450512", "QQJCBH": "q", "HCJG": "合法", "reason": "<script>"}]
    write_html(tmp_path / "r.html", s, "示例 <省>")
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<script>" not in html and "&lt;script&gt;" in html and "示例 &lt;省&gt;" in html
    assert "disk full" in html and "未生成" in html


def test_report_shows_the_fitted_normalisation(tmp_path):
    """The after date is the before date x 1.07 + 250 DN plus noise, with changes: the report gives
    gain 1 / 1.07 and offset -250 / 1.07 per band (after_norm = gain x after + offset), and says
    how IR-MAD ran."""
    import numpy as np

    from detect.detector import DetectParams, fit_model

    rng = np.random.default_rng(4)
    x = rng.normal(0, 1, (4, 200, 200)) * np.array([300, 400, 500, 900])[:, None, None] + 1500
    y = 1.07 * x + 250 + rng.normal(0, 20, x.shape)
    y[:, :40, :40] += 2000  # a changed corner: not invariant
    bands = ("blue", "green", "red", "nir")
    model = fit_model(x.astype(np.float32), y.astype(np.float32), np.ones((200, 200), bool), bands,
                      DetectParams()).to_dict()
    gdf = gpd.GeoDataFrame({"XZQDM": [], "XZQMC": [], "YXJ": [], "TBLX": [], "JCMJM": [],
                            "GDMJ": [], "JBNTMJ": []}, geometry=[], crs="EPSG:4545")
    s = summarize(gdf, quarter="2026Q3", packages={}, outside=[], failed_tiles={},
                  failed_counties={}, manifest={"dates": {"before": "2026-05-18", "after": "2026-08-23"},
                                                "model": model}, overlay_report={})
    m = s["models"]["pair"]
    assert list(m["normalisation"]) == list(bands) and "reference" not in s["models"]
    for g in m["normalisation"].values():
        assert abs(g["gain"] - 1 / 1.07) < 0.005 and abs(g["offset"] + 250 / 1.07) < 15
    assert m["converged"] and m["n_invariant"] <= m["n_pixels"] == 40000
    write_html(tmp_path / "r.html", s, "示例")
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "前时相 2026-05-18 → 后时相 2026-08-23" in html and "已收敛" in html
    assert f"<td>blue</td><td>{m['normalisation']['blue']['gain']:.4f}</td>" in html


def test_model_log_line_names_each_band_gain_and_offset():
    model = {"iterations": 6, "coarse_iterations": 21, "converged": False, "rho": [0.5, 0.9],
             "n_pixels": 1000, "n_invariant": 1234, "bands": ["red", "-", "nir"], "idx": [0, 2],
             "gain": [1.25, 1.0, 0.875], "offset": [-12.34, 0.0, 7.0]}
    from pipeline.report import model_text

    assert model_text(model) == (
        "IR-MAD 21 + 6 iterations, NOT converged, rho 0.5000, 0.9000; the after date normalised "
        "from 1,234 invariant px, gain/offset (DN): red 1.2500/-12.3, nir 0.8750/+7.0")
