"""One exception root for all of Tianyan.

It lives in the bottom package (``tiles``) so every later layer (detect, overlay,
pipeline, cli) can import it without breaking the one-way dependency rule.
Each subclass also inherits the built-in exception it resembles, as rasterio does.
The message always names the file, layer, key or value at fault and the fix.
"""


class TianyanError(Exception):
    """Root of every error Tianyan raises on purpose."""


class InputError(TianyanError, ValueError):
    """Bad configuration or input data: the CLI maps it to exit code 2."""


class ConfigError(InputError):
    """A configuration key is missing, of the wrong type or has a bad value."""


class InputFileError(InputError, OSError):
    """An input file is missing, unreadable or lacks something required (CRS, band, field)."""


class TileError(TianyanError, RuntimeError):
    """A tile could not be processed (corrupt block, read failure); the run goes on without it."""


class LockedError(TianyanError, RuntimeError):
    """Another run holds the workdir lock: the CLI maps it to exit code 75."""
