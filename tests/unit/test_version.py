"""``__version__`` is defined once, from the installed metadata, and is what the worker
heartbeat and ``stem --version`` report."""

from __future__ import annotations

from importlib.metadata import version

from typer.testing import CliRunner

import stem_core
from stem_core import Stem, Worker
from stem_tui.cli.main import app as cli_app


def test_the_version_comes_from_the_installed_distribution() -> None:
    assert stem_core.__version__ == version("stem-queue")


def test_the_worker_heartbeat_reports_it() -> None:
    heartbeat = Worker(Stem(broker="memory://", backend="memory://"), worker_id="w1", queues=["q"]).heartbeat()
    assert heartbeat.version == stem_core.__version__


def test_stem_version_prints_it() -> None:
    result = CliRunner().invoke(cli_app, ["--version"], catch_exceptions=False)
    assert result.exit_code == 0 and result.stdout == f"stem {stem_core.__version__}\n"


def test_a_source_tree_that_was_never_installed_says_so(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Given no stem-queue metadata (a checkout on sys.path, never installed)
    import importlib
    import importlib.metadata

    import stem_core.version as module

    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    try:
        # Then the version is the one fallback, not a guess
        assert importlib.reload(module).__version__ == "0+unknown"
    finally:
        monkeypatch.undo()
        importlib.reload(module)
    assert module.__version__ == version("stem-queue")


def test_the_version_is_written_once() -> None:
    # pyproject.toml holds it; no module repeats it
    import re
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    written = tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]
    assert written == version("stem-queue")
    pattern = re.compile(r"(__version__|VERSION)\s*=\s*['\"]\d+\.\d|['\"]" + re.escape(written) + r"['\"]")
    offenders = [str(p) for package in ("stem_core", "stem_tui") for p in (root / package).rglob("*.py")
                 if pattern.search(p.read_text())]
    assert offenders == []
