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
