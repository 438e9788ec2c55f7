"""Cloud masks that belong to one scene, named by ``{scene}`` in ``[imagery].cloud_mask_<date>``.

A date of several scenes is mosaicked, first valid pixel wins. A cloud mask of the whole date is
applied after the mosaic, so where the first scene is clouded the pixel is lost even when a later
scene saw the ground there. A mask that belongs to its scene takes the clouded pixels out of that
scene before the mosaic, so the next scene fills them (:func:`tiles.reader.read_date`).

A scene's name is the text ``{scene}`` matches in the date's pattern, e.g.
``after = "imagery/{quarter}/{scene}_MS.tif"``; without ``{scene}`` there, it is the file's name
up to its first dot (multi-band files) or the STAC item's id. A mask pattern with ``{scene}``,
``cloud_mask_after = "imagery/{quarter}/{scene}_cloud.tif"``, then gives each mask to the scene
of that name; a mask pattern without it masks the whole date.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

from tiles.bandfiles import glob_to_regex
from tiles.errors import ConfigError, InputFileError

log = logging.getLogger("tianyan")

SCENE = "{scene}"


def check_pattern(pattern: str, key: str) -> None:
    """Refuse a pattern that holds ``{scene}`` more than once (its text must be one name)."""
    if pattern.count(SCENE) > 1:
        raise ConfigError(f"[imagery].{key} = {pattern!r}: {SCENE} may appear once (it stands for "
                          f"the scene's name)")


def as_glob(pattern: str) -> str:
    """The pattern with ``{scene}`` as a wildcard of one path component."""
    return pattern.replace(SCENE, "*")


def _name_regex(pattern: str) -> re.Pattern:
    """Full-match regex of a filled glob pattern whose one group is the text of ``{scene}``."""
    head, tail = pattern.split(SCENE)
    return re.compile(glob_to_regex(head, False) + "([^/]*)" + glob_to_regex(tail, False) + r"\Z")


def scene_names(pattern: str | None, paths: list[str]) -> list[str]:
    """The name of each scene from the path of its (first) file: the text of ``{scene}`` in
    ``pattern``, or the file's name up to its first dot when the pattern has none (or is None)."""
    if not pattern or SCENE not in pattern:
        return [Path(p).name.split(".")[0] for p in paths]
    rx = _name_regex(pattern)
    names = []
    for p in paths:
        m = rx.match(p)
        if m is None:  # the glob matched across a '/' inside brackets: be explicit
            raise InputFileError(f"{p}: matched the glob but not the pattern {pattern!r}")
        names.append(m.group(1))
    return names


def assign_masks(label: str, mask_pattern: str, masks: list[str], scenes: list[str],
                 names: list[str] | None) -> tuple[list[str], dict[str, list[str]]]:
    """Split a date's cloud masks into those of the whole date and those of each scene.

    ``mask_pattern``: the filled ``[imagery].cloud_mask_<label>`` (``{scene}`` kept); ``masks``:
    the files it matched; ``scenes``: the scene keys in mosaic order; ``names``: their names, or
    None when the date's pattern cannot name them (one file per band without ``{scene}``).
    Returns ``(date masks, {scene key: masks})``. Raises ConfigError when the masks name scenes
    the date cannot name, InputFileError when a mask names no scene or two scenes share a name.
    """
    key = f"cloud_mask_{label}"
    if SCENE not in mask_pattern:
        return list(masks), {}
    if names is None:
        raise ConfigError(f"[imagery].{key} uses {SCENE}, but [imagery].{label} does not say where "
                          f"a scene's name is: put {SCENE} in it too, e.g. "
                          f"'s2/{{quarter}}/{SCENE}.SAFE/GRANULE/*/IMG_DATA/{{band}}.jp2'")
    by_name: dict[str, str] = {}
    for scene, name in zip(scenes, names):
        if name in by_name:
            raise InputFileError(f"{scene} and {by_name[name]}: two scenes of the {label} date are "
                                 f"named {name!r}, so [imagery].{key} cannot tell their masks apart "
                                 f"(put {SCENE} in [imagery].{label} where the names differ)")
        by_name[name] = scene
    own: dict[str, list[str]] = {}
    for mask, name in zip(masks, scene_names(mask_pattern, masks)):
        if name not in by_name:
            known = ", ".join(sorted(by_name)[:5]) + (" …" if len(by_name) > 5 else "")
            raise InputFileError(f"{mask}: [imagery].{key} names scene {name!r}, but the {label} "
                                 f"date has no scene of that name (its scenes: {known}); rename the "
                                 f"mask or fix {SCENE} in the patterns")
        own.setdefault(by_name[name], []).append(mask)
    for scene, name in zip(scenes, names):
        if scene not in own:
            log.warning("%s: no cloud mask of the %s date names scene %r; it is used unmasked",
                        scene, label, name)
    return [], own
