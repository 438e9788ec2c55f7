"""One file per band (Sentinel-2 style): group band files into scenes.

A date's pattern holds ``{band}``, e.g. ``s2/{quarter}/*/IMG_DATA/{band}.jp2``, and
``[imagery].band_files`` gives, per role, what ``{band}`` stands for (it may hold folders and
wildcards of its own): ``{ blue = "R10m/*_B02_10m", swir = "R20m/*_B11_20m", ... }``. Band files
belong to one scene when the pattern's wildcards *outside* ``{band}`` match the same text, so bands
kept in different folders (R10m, R20m) or at different resolutions still pair up.
"""
from __future__ import annotations

import glob
import re

from tiles.errors import ConfigError, InputFileError

BAND = "{band}"


def glob_to_regex(pattern: str, capture: bool) -> str:
    """Regex source for a ``glob`` pattern (``*``, ``?``, ``[...]``); wildcards become groups
    when ``capture`` (their text is the scene key), non-capturing otherwise."""
    out, i = [], 0
    open_ = "(" if capture else "(?:"
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append(open_ + "[^/]*)")
        elif c == "?":
            out.append(open_ + "[^/])")
        elif c == "[":
            j = pattern.find("]", i + 2 if pattern[i + 1:i + 2] in ("!", "]") else i + 1)
            if j < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:j]
                body = "^" + body[1:] if body.startswith("!") else body
                out.append(open_ + "[" + body.replace("\\", "\\\\") + "])")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def group_band_files(pattern: str, band_files: dict[str, str], roles: list[str],
                     key: str) -> list[dict[str, str]]:
    """Scenes of one date as ``{role: path}``, sorted by the scene key (the shared wildcard text).

    ``pattern`` has its placeholders other than ``{band}`` filled. Raises InputFileError naming
    the file and the missing role when a scene lacks a band, and ConfigError for a role without
    a ``band_files`` entry.
    """
    if pattern.count(BAND) != 1:
        raise ConfigError(f"[imagery].{key} = {pattern!r}: a one-file-per-band pattern holds {BAND} "
                          f"exactly once (where [imagery].band_files fill in each band)")
    head, tail = pattern.split(BAND)
    scenes: dict[tuple, dict[str, str]] = {}
    for role in roles:
        if role not in band_files:
            raise ConfigError(f"[imagery].band_files has no entry for band {role!r} "
                              f"(add e.g. {role} = \"B08_10m\")")
        rx = re.compile(glob_to_regex(head, True) + glob_to_regex(band_files[role], False)
                        + glob_to_regex(tail, True) + r"\Z")
        files = sorted(glob.glob(head + band_files[role] + tail))
        if not files:
            raise InputFileError(f"[imagery].{key}: no {role} band file matches "
                                 f"{head + band_files[role] + tail!r} (check [imagery].band_files.{role})")
        for f in files:
            m = rx.match(f)
            if m is None:  # glob matched across a '/' inside a bracket: not expected, be explicit
                raise InputFileError(f"{f}: matched the glob but not the pattern {pattern!r}")
            scene = scenes.setdefault(m.groups(), {})
            if role in scene:
                raise InputFileError(f"{f} and {scene[role]}: two {role} band files for one scene "
                                     f"(make [imagery].band_files.{role} match one file per scene)")
            scene[role] = f
    out = []
    for scene_key in sorted(scenes):
        scene = scenes[scene_key]
        missing = [r for r in roles if r not in scene]
        if missing:
            some = next(iter(scene.values()))
            raise InputFileError(f"{some}: the scene has no {', '.join(missing)} band file "
                                 f"(expected {head + band_files[missing[0]] + tail!r} with the same "
                                 f"wildcard text; add the file or drop the role from [imagery].bands)")
        out.append(scene)
    return out
