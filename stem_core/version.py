"""``__version__``: the installed distribution's version, defined once.

Read from the package metadata (``pyproject.toml`` is the one place a release bumps), so
heartbeats and ``stem --version`` cannot drift from what is installed. Kept out of
``stem_core/__init__.py``: reading the metadata costs tens of milliseconds, paid only by
the worker and the CLI that report it (``stem_core.__version__`` loads it on first use).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "stem-queue"

try:
    __version__ = version(DISTRIBUTION)
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"

__all__ = ["DISTRIBUTION", "__version__"]
