"""Type checking of configuration values against their defaults (shared by every TOML table)."""
from __future__ import annotations

from tiles.errors import ConfigError


def check_type(value, default, key: str, source):
    """Return ``value`` if it has the default's type (ints accepted and converted for floats);
    otherwise raise ConfigError naming ``source`` (file), ``key`` and the expected type."""
    if default is None:
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(f"{source}: {key} = {value!r} should be {type(default).__name__}")
    return value
