"""User-facing errors: one line that names the file, key or column and says what to do."""

from __future__ import annotations


class PloutosError(Exception):
    """An error the user can fix. The CLI prints ``str(err)`` as one line and exits non-zero.

    Messages name the file, key or column at fault and say what to do. They never contain secrets.
    """

    exit_code = 2


class DataError(PloutosError):
    """Bad or inconsistent market data (a file, a column, a value)."""


class ConfigError(PloutosError):
    """A configuration file with an unknown key, a wrong type or an impossible combination."""


class SourceError(PloutosError):
    """A data source (Alpaca, Yahoo) refused, failed or returned something unusable."""
