"""QGIS project (.qgs) of a county package: double-click and see every layer, styled.

The project points at the package's GeoPackage by a relative path (``./图斑.gpkg``), so it
works wherever the county unzips the package. Polygons and points are categorised by
priority (YXJ, the KMZ colours); batch outlines and routes are drawn underneath. Symbol
properties use the ``<prop k= v=>`` form every QGIS 3 release reads.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from pyproj import CRS

from pipeline.package.kmz import LEVEL_COLOURS
from pipeline.package.fields import GPKG_NAME, LAYER_POINTS, LAYER_POLYGONS
QGIS_VERSION = "3.28.0-Firenze"


def write_qgis_project(path: Path, *, title: str, extent: tuple[float, float, float, float],
                       layers: dict[str, str], gpkg_name: str = GPKG_NAME) -> Path:
    """Write the .qgs.

    Parameters
    ----------
    path : Path
        The .qgs to write, in the same folder as the GeoPackage.
    title : str
        Project title.
    extent : (minx, miny, maxx, maxy)
        Initial view, lon/lat degrees (EPSG:4490).
    layers : dict layer name -> geometry kind ("Polygon", "Point", "Line")
        The GeoPackage layers to show, top of the list drawn on top.

    Returns
    -------
    Path
    """
    root = ET.Element("qgis", projectname=title, version=QGIS_VERSION)
    ET.SubElement(root, "homePath", path="")
    ET.SubElement(root, "title").text = title
    _srs(ET.SubElement(root, "projectCrs"))
    tree = ET.SubElement(root, "layer-tree-group")
    ET.SubElement(tree, "customproperties")
    canvas = ET.SubElement(root, "mapcanvas", name="theMapCanvas", annotationsVisible="1")
    ET.SubElement(canvas, "units").text = "degrees"
    _extent(ET.SubElement(canvas, "extent"), _pad(extent))
    ET.SubElement(canvas, "rotation").text = "0"
    _srs(ET.SubElement(canvas, "destinationsrs"))
    project_layers = ET.SubElement(root, "projectlayers")
    order = ET.SubElement(root, "layerorder")

    for i, (name, kind) in enumerate(layers.items()):
        lid = f"tianyan_layer_{i}"
        source = f"./{gpkg_name}|layername={name}"
        node = ET.SubElement(tree, "layer-tree-layer", id=lid, name=name, source=source,
                             providerKey="ogr", checked="Qt::Checked", expanded="1")
        ET.SubElement(node, "customproperties")
        ET.SubElement(order, "layer", id=lid)
        ml = ET.SubElement(project_layers, "maplayer", type="vector", geometry=kind,
                           autoRefreshEnabled="0", hasScaleBasedVisibilityFlag="0",
                           minScale="100000000", maxScale="0", readOnly="0")
        _extent(ET.SubElement(ml, "extent"), extent)
        ET.SubElement(ml, "id").text = lid
        ET.SubElement(ml, "datasource").text = source
        ET.SubElement(ml, "layername").text = name
        _srs(ET.SubElement(ml, "srs"))
        ET.SubElement(ml, "provider", encoding="UTF-8").text = "ogr"
        ml.append(_renderer(name, kind))
        if name == LAYER_POINTS:
            ml.append(_labels("PCXH"))
    props = ET.SubElement(root, "properties")
    paths = ET.SubElement(props, "Paths")
    ET.SubElement(paths, "Absolute", type="bool").text = "false"
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    path.write_text("<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + body + "\n",
                    encoding="utf-8")
    return path


def _renderer(name: str, kind: str) -> ET.Element:
    if name in (LAYER_POLYGONS, LAYER_POINTS):
        r = ET.Element("renderer-v2", type="categorizedSymbol", attr="YXJ", symbollevels="0",
                       forceraster="0", enableorderby="0")
        cats = ET.SubElement(r, "categories")
        syms = ET.SubElement(r, "symbols")
        for k, (level, (rgb, label)) in enumerate(LEVEL_COLOURS.items()):
            ET.SubElement(cats, "category", value=str(level), label=f"优先级 {label}",
                          symbol=str(k), render="true")
            syms.append(_symbol(str(k), kind, _rgb(rgb)))
        src = ET.SubElement(r, "source-symbol")
        src.append(_symbol("0", kind, (128, 128, 128)))
        return r
    r = ET.Element("renderer-v2", type="singleSymbol", symbollevels="0", forceraster="0",
                   enableorderby="0")
    syms = ET.SubElement(r, "symbols")
    syms.append(_symbol("0", kind, (70, 70, 160) if kind == "Polygon" else (40, 40, 40), batch=True))
    return r


def _symbol(name: str, kind: str, rgb: tuple[int, int, int], batch: bool = False) -> ET.Element:
    colour = ",".join(map(str, rgb))
    if kind == "Point":
        s = ET.Element("symbol", type="marker", name=name, alpha="1", clip_to_extent="1", force_rhr="0")
        layer = ET.SubElement(s, "layer", {"class": "SimpleMarker", "enabled": "1", "locked": "0", "pass": "0"})
        _props(layer, {"name": "circle", "color": f"{colour},255", "outline_color": "0,0,0,255",
                       "outline_width": "0.3", "size": "3", "size_unit": "MM"})
    elif kind == "Line":
        s = ET.Element("symbol", type="line", name=name, alpha="1", clip_to_extent="1", force_rhr="0")
        layer = ET.SubElement(s, "layer", {"class": "SimpleLine", "enabled": "1", "locked": "0", "pass": "0"})
        _props(layer, {"line_color": f"{colour},255", "line_width": "0.5", "line_width_unit": "MM",
                       "line_style": "dash" if batch else "solid"})
    else:
        s = ET.Element("symbol", type="fill", name=name, alpha="1", clip_to_extent="1", force_rhr="0")
        layer = ET.SubElement(s, "layer", {"class": "SimpleFill", "enabled": "1", "locked": "0", "pass": "0"})
        fill = f"{colour},40" if batch else f"{colour},90"
        _props(layer, {"color": fill, "outline_color": f"{colour},255", "outline_style": "solid",
                       "outline_width": "0.6" if not batch else "0.4", "outline_width_unit": "MM",
                       "style": "solid"})
    return s


def _labels(field: str) -> ET.Element:
    lab = ET.Element("labeling", type="simple")
    settings = ET.SubElement(lab, "settings", calloutType="simple")
    ET.SubElement(settings, "text-style", fieldName=field, isExpression="0", fontSize="9",
                  fontSizeUnit="Point", textColor="0,0,0,255", fontWeight="75")
    ET.SubElement(settings, "text-buffer", bufferDraw="1", bufferSize="0.8", bufferSizeUnits="MM",
                  bufferColor="255,255,255,255")
    ET.SubElement(settings, "placement", placement="0", dist="1.5", distUnits="MM")
    ET.SubElement(settings, "rendering", drawLabels="1", scaleVisibility="0")
    return lab


def _props(layer: ET.Element, props: dict[str, str]) -> None:
    for k, v in props.items():
        ET.SubElement(layer, "prop", k=k, v=v)


def _srs(parent: ET.Element) -> None:
    crs = CRS.from_epsg(4490)
    s = ET.SubElement(parent, "spatialrefsys", nativeFormat="Wkt")
    ET.SubElement(s, "wkt").text = crs.to_wkt()
    ET.SubElement(s, "proj4").text = "+proj=longlat +ellps=GRS80 +no_defs"
    ET.SubElement(s, "srsid").text = "0"
    ET.SubElement(s, "srid").text = "4490"
    ET.SubElement(s, "authid").text = "EPSG:4490"
    ET.SubElement(s, "description").text = crs.name
    ET.SubElement(s, "projectionacronym").text = "longlat"
    ET.SubElement(s, "ellipsoidacronym").text = "EPSG:1024"
    ET.SubElement(s, "geographicflag").text = "true"


def _extent(el: ET.Element, ext: tuple[float, float, float, float]) -> None:
    for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), ext):
        ET.SubElement(el, tag).text = repr(float(v))


def _pad(ext: tuple[float, float, float, float], frac: float = 0.05) -> tuple[float, float, float, float]:
    minx, miny, maxx, maxy = ext
    dx = max(maxx - minx, 0.01) * frac
    dy = max(maxy - miny, 0.01) * frac
    return (minx - dx, miny - dy, maxx + dx, maxy + dy)


def _rgb(hexstr: str) -> tuple[int, int, int]:
    return tuple(int(hexstr[i:i + 2], 16) for i in (0, 2, 4))
