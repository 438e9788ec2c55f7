"""The ``tianyan`` command: one Click group, one function per subcommand.

Data go to files (or stdout); logs and progress go to stderr. Exit codes: 0 done; 1 failed;
2 bad usage, configuration or input (the message names the file and key); 3 finished with some
tiles or counties failed (listed); 75 another run holds the workdir lock.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import sys
from pathlib import Path

import click

from tiles.errors import InputError, LockedError, TianyanError

log = logging.getLogger("tianyan")

EXIT_FAILED, EXIT_USAGE, EXIT_PARTIAL, EXIT_LOCKED = 1, 2, 3, 75


def _fail(code: int, message: str):
    click.echo(f"tianyan: error: {message}", err=True)
    sys.exit(code)


def handle_errors(func):
    """Turn Tianyan's errors into one-line messages and exit codes; no traceback for people."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except LockedError as exc:
            _fail(EXIT_LOCKED, str(exc))
        except InputError as exc:
            _fail(EXIT_USAGE, str(exc))
        except TianyanError as exc:
            _fail(EXIT_FAILED, str(exc))
        except KeyboardInterrupt:
            _fail(EXIT_FAILED, "interrupted; rerun the same command to resume")
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - an unexpected failure: one line, details with -v
            log.debug("unexpected failure", exc_info=True)
            _fail(EXIT_FAILED, f"{type(exc).__name__}: {exc} (rerun with -v for details)")
    return wrapper


def _version_text() -> str:
    from pipeline.versions import versions

    v = versions()
    return (f"Tianyan {v['tianyan']} (GDAL {v['gdal']}, PROJ {v['proj']}, Numba {v['numba']}, "
            f"rasterio {v['rasterio']}, shapely {v['shapely']})")


def _print_version(ctx, _param, value):
    if value and not ctx.resilient_parsing:
        click.echo(_version_text())
        ctx.exit(0)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", count=True, help="Less log output.")
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Print Tianyan, GDAL, PROJ and Numba versions.")
def main(verbose: int, quiet: int) -> None:
    """Tianyan (天眼): quarterly satellite change detection into county verification packages.

    \b
    Example:
      tianyan demo --out demo
      tianyan run --config demo/demo.toml --quarter 2026Q3
    """
    level = max(logging.DEBUG, min(logging.CRITICAL, logging.INFO + 10 * (quiet - verbose)))
    # Tianyan's own messages at the chosen level; libraries' only with -vv.
    logging.basicConfig(level=logging.DEBUG if verbose >= 2 else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    log.setLevel(level)
    os.environ.setdefault("GDAL_CACHEMAX", "256")


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="The run configuration (TOML).")
@click.option("--quarter", required=True, help="The quarter to detect, e.g. 2026Q3, or 'auto'.")
@click.option("--workdir", type=click.Path(file_okay=False), help="Overrides [run].workdir.")
@click.option("--executor", type=click.Choice(["local", "dask"]), default=None,
              help="Where tile tasks run (default: dask when --scheduler or [dask].scheduler is set, else local).")
@click.option("--scheduler", metavar="ADDR", help="Dask scheduler, e.g. tcp://10.0.0.5:8786, or a scheduler "
              "file (.json); with --executor dask and no scheduler a LocalCluster of --workers processes starts.")
@click.option("--workers", type=click.IntRange(min=1), help="Worker processes (default [run].workers or cores).")
@click.option("--from", "from_stage", help="Rerun from this stage: plan, detect, merge, overlay, batches, export.")
@click.option("--fresh", is_flag=True, help="Discard this quarter's run directory and start over.")
@handle_errors
def run(config_path, quarter, workdir, executor, scheduler, workers, from_stage, fresh):
    """Run (or resume) one quarter.

    \b
    Example:
      tianyan run --config demo/demo.toml --quarter 2026Q3 --workers 2
    """
    from pipeline.config import load_config
    from pipeline.quarter import Quarter
    from pipeline.run import run_quarter

    cfg = load_config(config_path)
    q = Quarter.parse(quarter)
    rd, outcome = run_quarter(cfg, q, from_stage=from_stage, fresh=fresh, workers=workers, workdir=workdir,
                              executor=executor, scheduler=scheduler)
    click.echo(f"run directory: {rd.path}")
    _report_failures(outcome)
    sys.exit(outcome.exit_code)


def _report_failures(outcome) -> None:
    for tile, msg in outcome.failed_tiles.items():
        click.echo(f"failed tile {tile}: {msg}", err=True)
    for county, msg in outcome.failed_counties.items():
        click.echo(f"failed county {county}: {msg}", err=True)


@main.command()
@click.option("--out", type=click.Path(file_okay=False), default="demo", show_default=True,
              help="Folder for the demo region, its configuration and its runs.")
@click.option("--size", type=click.IntRange(min=300), default=3000, show_default=True,
              help="Scene width and height in pixels (2 m).")
@click.option("--workers", type=click.IntRange(min=1), help="Worker processes (default: cores).")
@handle_errors
def demo(out, size, workers):
    """Generate the demo region and run a whole quarter on it.

    \b
    Example:
      tianyan demo --out demo
    """
    from pipeline.config import load_config
    from pipeline.demo import make_demo
    from pipeline.evaluate import evaluate, format_evaluation
    from pipeline.quarter import Quarter
    from pipeline.run import run_quarter
    from pipeline.stages import read_changes
    import geopandas as gpd

    out = Path(out)
    log.info("generating the demo region in %s (%d x %d px)", out, size, size)
    make_demo(out, width=size, height=size)
    cfg = load_config(out / "demo.toml")
    rd, outcome = run_quarter(cfg, Quarter.parse("2026Q3"), fresh=True, workers=workers)
    changes = read_changes(rd.path / "changes.gpkg")
    truth = gpd.read_file(out / "truth.gpkg", layer="truth")
    result = evaluate(changes, truth, min_area_m2=float(cfg.detect.get("min_area_m2", 200)))
    summary = json.loads((rd.path / "summary.json").read_text(encoding="utf-8"))
    click.echo(_summary_text(summary, rd.path))
    click.echo(format_evaluation(result))
    _report_failures(outcome)
    sys.exit(outcome.exit_code)


def _summary_text(summary: dict, run_path: Path) -> str:
    ref = summary.get("reference") or {}
    lines = [f"Quarter {summary['quarter']}  before {summary['dates'].get('before')}  "
             f"after {summary['dates'].get('after')}"
             + (f"  reference {ref['date']} (dropped {ref['vetoed_polygons']} polygon(s), "
                f"{ref['vetoed_mu']:.2f} 亩, as seasonal)"
                if ref else ""),
             f"{'XZQDM':<8}{'XZQMC':<10}{'polygons':>9}{'L1':>5}{'L2':>5}{'L3':>5}{'area 亩':>10}  package"]
    for code, c in summary["counties"].items():
        lv = c["by_level"]
        lines.append(f"{code:<8}{c['name']:<10}{c['polygons']:>9}{lv.get('1', 0):>5}{lv.get('2', 0):>5}"
                     f"{lv.get('3', 0):>5}{c['area_mu']:>10.2f}  {c['package'] or '-'}")
    t = summary["total"]
    lines.append(f"{'total':<18}{t['polygons']:>9}{t['by_level'].get('1', 0):>5}{t['by_level'].get('2', 0):>5}"
                 f"{t['by_level'].get('3', 0):>5}{t['area_mu']:>10.2f}")
    lines.append(f"outside every county: {len(summary['outside_counties'])} polygon(s) "
                 f"{' '.join(summary['outside_counties'])}")
    lines.append(f"outputs: {run_path}/changes.gpkg, {run_path}/packages/, {run_path}/report.html")
    return "\n".join(lines)


@main.command()
@click.argument("before", type=click.Path(dir_okay=False))
@click.argument("after", type=click.Path(dir_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Output GeoPackage.")
@click.option("--bands", help="Role of each band in file order, e.g. blue,green,red,nir ('-' skips one).")
@click.option("--min-area", type=click.FloatRange(min=0), help="Minimum mapping unit in m² (default 200).")
@click.option("--tile-size", type=click.IntRange(min=64), default=2048, show_default=True)
@click.option("--probability", type=click.Path(dir_okay=False), help="Also write the change probability (COG).")
@click.option("--reference", type=click.Path(dir_okay=False),
              help="Optional third date, the same season a year earlier: changes whose after state "
                   "was already there then (a paddy flooded as every year) are dropped.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="A [detect] parameter (repeatable), e.g. --set reflectance_scale=1 for "
                   "reflectance 0-1, --set significance=0.001.")
@handle_errors
def detect(before, after, out, bands, min_area, tile_size, probability, reference, settings):
    """Detect change on one pair of rasters (no overlay), for ad hoc checks.

    \b
    Example:
      tianyan detect before.tif after.tif -o changes.gpkg --bands blue,green,red,nir
      tianyan detect 2026-05.tif 2026-08.tif --reference 2025-08.tif -o changes.gpkg
      tianyan detect a.tif b.tif -o changes.gpkg --set reflectance_scale=1
    """
    from pipeline.config import tomllib
    from pipeline.pair import detect_pair
    from tiles.errors import ConfigError

    options = {}
    for item in settings:  # values as TOML reads them; DetectParams checks keys and types
        key, eq, value = (part.strip() for part in item.partition("="))
        try:
            options[key] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            eq = ""
        if not (eq and key):
            raise ConfigError(f"--set {item!r}: give KEY=VALUE with a number or true/false, "
                              "e.g. --set reflectance_scale=1")

    roles = None
    if bands:
        roles = [b.strip() for b in bands.split(",")]
        from pipeline.config import BAND_ROLES
        bad = [r for r in roles if r not in BAND_ROLES]
        if bad:
            raise ConfigError(f"--bands: unknown role {bad[0]!r} (use blue, green, red, nir, swir or -)")
    result = detect_pair(before, after, out, bands=roles, min_area_m2=min_area, tile_size=tile_size,
                         probability=probability, reference_path=reference,
                         detect_options=options)
    click.echo(f"{len(result)} change polygon(s) -> {out}")


@main.command()
@click.option("--run", "run_path", required=True, type=click.Path(file_okay=False),
              help="A run directory, e.g. demo/runs/2026Q3.")
@click.option("--truth", required=True, type=click.Path(dir_okay=False), help="Reference polygons (GPKG).")
@click.option("--layer", default=None, help="Layer of the truth file (default: its only layer).")
@click.option("--min-area", type=float, default=200.0, show_default=True,
              help="Truth polygons smaller than this (m²) do not count for recall.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@handle_errors
def evaluate(run_path, truth, layer, min_area, as_json):
    """Object recall and precision of a run against reference polygons.

    \b
    Example:
      tianyan evaluate --run demo/runs/2026Q3 --truth demo/truth.gpkg
    """
    import geopandas as gpd
    from pipeline.evaluate import evaluate as do_evaluate, format_evaluation
    from pipeline.stages import read_changes
    from tiles.errors import InputFileError

    changes_path = Path(run_path) / "changes.gpkg"
    if not changes_path.exists():
        raise InputFileError(f"{changes_path}: not found (run the quarter first, or check --run)")
    if not Path(truth).exists():
        raise InputFileError(f"{truth}: truth file not found (check --truth)")
    truth_gdf = gpd.read_file(truth, layer=layer) if layer else gpd.read_file(truth)
    result = do_evaluate(read_changes(changes_path), truth_gdf, min_area_m2=min_area)
    click.echo(json.dumps(result, ensure_ascii=False, indent=2) if as_json else format_evaluation(result))


@main.command()
@click.option("--run", "run_path", required=True, type=click.Path(file_okay=False),
              help="A finished run directory, e.g. runs/2026Q3.")
@click.option("--county", "counties", multiple=True, help="Only this county (XZQDM); repeatable.")
@click.option("--formats", help="Comma-separated: gpkg,shp,kmz,xlsx,chips,html,qgis (default: the config's).")
@handle_errors
def export(run_path, counties, formats):
    """(Re)build county packages from a finished run, without detecting again.

    \b
    Example:
      tianyan export --run demo/runs/2026Q3 --county 450512
    """
    from pipeline.config import load_config
    from pipeline.quarter import Quarter
    from pipeline.rundir import RunDir
    from pipeline.stages import Outcome, stage_export
    from tiles.errors import InputFileError

    run_path = Path(run_path).resolve()
    manifest_path = run_path / "run.json"
    if not (run_path / "changes.gpkg").exists() or not manifest_path.exists():
        raise InputFileError(f"{run_path}: not a finished run directory (no run.json / changes.gpkg)")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    cfg = load_config(manifest["config_file"])
    rd = RunDir(run_path.parent, run_path.name)
    outcome = Outcome()
    fmt = [f.strip() for f in formats.split(",")] if formats else None
    stage_export(cfg, Quarter.parse(manifest["quarter"]), rd, manifest, outcome,
                 counties=list(counties) or None, formats=fmt)
    click.echo(f"packages: {rd.packages}")
    _report_failures(outcome)
    sys.exit(outcome.exit_code)


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False))
@click.option("--quarter", default="auto", show_default=True, help="Quarter whose imagery to check.")
@handle_errors
def validate(config_path, quarter):
    """Check the configuration and every input before a long run.

    \b
    Example:
      tianyan validate --config demo/demo.toml --quarter 2026Q3
    """
    from pipeline.config import load_config
    from pipeline.quarter import Quarter
    from pipeline.validate import validate_inputs

    cfg = load_config(config_path)
    findings = validate_inputs(cfg, Quarter.parse(quarter))
    width = max((len(f[1]) for f in findings), default=10)
    for level, what, message in findings:
        click.echo(f"{level:<6} {what:<{width}}  {message}")
    if any(level == "ERROR" for level, _, _ in findings):
        sys.exit(EXIT_USAGE)


@main.command()
@click.option("--run", "run_path", required=True, type=click.Path(file_okay=False),
              help="The run directory that issued the packages, e.g. runs/2026Q3.")
@click.argument("packages", nargs=-1, required=True, type=click.Path(dir_okay=False))
@handle_errors
def ingest(run_path, packages):
    """Take back county packages with the verdict fields filled in.

    Each zip is checked (zip slip, symlinks, size and count limits, safe XML, schema, JCBH of
    this run, verdict codes, dates) and accepted or rejected as a whole: a rejected package
    changes nothing. Exit 0: all accepted; 3: some rejected; 2: all rejected.

    \b
    Example:
      tianyan ingest --run runs/2026Q3 450512_铁山港区_2026Q3_returned.zip
    """
    from pipeline.ingest import ingest_packages

    results = ingest_packages(run_path, list(packages))
    for r in results:
        if r.accepted:
            click.echo(f"accepted {Path(r.package).name}: county {r.xzqdm}, {r.rows} row(s) filled, "
                       f"{r.verified} verdict(s), {r.photos} photo(s) -> {r.stored}")
        else:
            click.echo(f"rejected {Path(r.package).name}: nothing changed", err=True)
            for problem in r.problems[:50]:
                click.echo(f"  {problem}", err=True)
            if len(r.problems) > 50:
                click.echo(f"  ... {len(r.problems) - 50} more", err=True)
    rejected = sum(not r.accepted for r in results)
    sys.exit(0 if not rejected else EXIT_USAGE if rejected == len(results) else EXIT_PARTIAL)


@main.command()
@click.option("--workdir", required=True, type=click.Path(file_okay=False),
              help="The workdir holding registry.gpkg (the runs' parent folder).")
@click.option("--year", type=click.IntRange(min=2000, max=2100),
              help="Calendar year of the quarters (default: the latest in the registry).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="Take the thresholds from this configuration's [stats] table.")
@click.option("--illegal-mu", type=click.FloatRange(min=0), help="Override [stats].illegal_farmland_mu (亩).")
@click.option("--ratio", type=click.FloatRange(0, 1), help="Override [stats].illegal_ratio (0-1).")
@click.option("--out", type=click.Path(file_okay=False), help="Output folder (default <workdir>/stats/<year>).")
@handle_errors
def stats(workdir, year, config_path, illegal_mu, ratio, out):
    """County statistics of a year: verdicts, rectification, 违法占用耕地比例, flags.

    \b
    Example:
      tianyan stats --workdir runs --year 2026
    """
    from pipeline.config import DEFAULTS, load_config
    from pipeline.stats import Thresholds, write_stats

    settings = dict(load_config(config_path).stats if config_path else DEFAULTS["stats"])
    if illegal_mu is not None:
        settings["illegal_farmland_mu"] = illegal_mu
    if ratio is not None:
        settings["illegal_ratio"] = ratio
    thresholds = Thresholds.from_dict(settings)
    table, paths = write_stats(workdir, year, thresholds=thresholds, out_dir=out)
    click.echo(f"{'rank':>4} {'XZQDM':<7} {'XZQMC':<8} {'issued':>6} {'verified':>8} {'illegal':>7} "
               f"{'illegal 耕地亩':>12} {'unrectified 耕地亩':>16} {'ratio':>7}  flag")
    for r in table.to_dict("records"):
        ratio_text = "-" if r["illegal_ratio"] != r["illegal_ratio"] else f"{r['illegal_ratio']:.1%}"
        click.echo(f"{r['rank']:>4} {r['XZQDM']:<7} {r['XZQMC']:<8} {r['issued_n']:>6} {r['verified_n']:>8} "
                   f"{r['v_违法_n']:>7} {r['v_违法_gd_mu']:>12.2f} {r['unrectified_gd_mu']:>16.2f} "
                   f"{ratio_text:>7}  {'约谈' if r['flagged'] else ''}")
    click.echo(f"written: {paths['xlsx']}, {paths['html']}")


if __name__ == "__main__":  # pragma: no cover
    main()
