"""Fixtures of the SQLite integration modules (``test_sqlite_*.py``): the test's database
file, and SQLite brokers and backends opened on it in the test's namespace, every one of
them closed after the test. (Named ``sqlite_*`` so they never shadow the parametrised
``broker``/``backend`` fixtures the other modules here take from tests/conftest.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator

import pytest

from stem_core import Broker, ResultBackend

from .sqlite_helpers import SQLiteOpener


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """The test's SQLite file (created by the first adapter that opens it)."""
    return tmp_path / "stem.db"


@pytest.fixture
def sqlite_url(db_path: Path) -> str:
    return f"sqlite://{db_path}"


@pytest.fixture
async def open_sqlite(db_path: Path, namespace: str) -> AsyncIterator[SQLiteOpener]:
    """``await open_sqlite.broker(**options)`` / ``.backend(**options)``: connected adapters
    on ``db_path`` (or ``path=``) in the test's namespace (or ``namespace=``)."""
    opener = SQLiteOpener(db_path, namespace)
    yield opener
    await opener.close()


@pytest.fixture
async def sqlite_broker(open_sqlite: SQLiteOpener) -> Broker:
    return await open_sqlite.broker()


@pytest.fixture
async def sqlite_backend(open_sqlite: SQLiteOpener) -> ResultBackend:
    return await open_sqlite.backend()
