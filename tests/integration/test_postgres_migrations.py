"""The numbered migrations build exactly the schema the adapter's queries need, and
concurrent first starts of one namespace apply each migration once."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

import psycopg
import pytest

from stem_core import connect_backend, connect_broker
from stem_core.adapters.postgres.fused import FusedStatements
from stem_core.adapters.postgres.connection import quote_ident, schema_name
from stem_core.adapters.postgres.sql import LATEST_VERSION, Queries, migrate, migrations
from tests.specs import require_service
from tests.specs.postgres import URL, drop_namespace

EXPECTED_TABLES = {
    "jobs", "queue_counts", "dead_letters", "broadcasts", "subscribers", "migrations",
    "statuses", "heartbeats", "records", "audit", "schedules",
}
EXPECTED_INDEXES = {
    "jobs_ready", "jobs_delayed", "jobs_leased", "jobs_msg_id", "dead_letters_age", "broadcasts_channel",
    "subscribers_channel", "statuses_updated", "statuses_state", "statuses_queue", "statuses_task", "statuses_expires",
}
EXPECTED_TRIGGERS = {
    "jobs_count_insert", "jobs_count_update", "jobs_count_delete", "dead_count_insert", "dead_count_delete",
}


@pytest.fixture
async def conn(namespace: str) -> AsyncIterator[psycopg.AsyncConnection]:
    require_service("postgres")
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as connection:
        yield connection
    await drop_namespace(URL, namespace)


async def _names(conn: psycopg.AsyncConnection, query: str, schema: str) -> set[str]:
    cur = await conn.execute(query, (schema,))
    return {row[0] for row in await cur.fetchall()}


async def test_migrations_build_the_schema(conn: psycopg.AsyncConnection, namespace: str) -> None:
    schema = schema_name(namespace)
    applied = await migrate(conn, schema)
    assert applied == [v for v, _, _ in migrations()] and applied[-1] == LATEST_VERSION
    assert await _names(conn, "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", schema) == EXPECTED_TABLES
    indexes = await _names(conn, "SELECT indexname FROM pg_indexes WHERE schemaname = %s", schema)
    assert EXPECTED_INDEXES <= indexes
    triggers = await _names(conn, "SELECT trigger_name FROM information_schema.triggers WHERE trigger_schema = %s", schema)
    assert triggers == EXPECTED_TRIGGERS
    # Every named query, and each fused broker+status statement, plans against the migrated
    # schema (catches a column renamed on one side only)
    queries = Queries(schema)
    fused = FusedStatements(queries, queries)
    statements = {**vars(queries), **{name: getattr(fused, name) for name in FusedStatements.__slots__}}
    for name, text in statements.items():
        if name in ("schema", "fragments"):
            continue
        if "{filters}" in text:
            text = text.replace("{filters}", "")
        await conn.execute(f"PREPARE stem_check AS {_positional(text)}")
        await conn.execute("DEALLOCATE stem_check")
    # A second run changes nothing
    assert await migrate(conn, schema) == []


def _positional(text: str) -> str:
    """``%(name)s`` and ``%(name)b`` placeholders to ``$n`` so PREPARE can plan the statement untyped."""
    import re

    names: dict[str, int] = {}

    def sub(match: re.Match[str]) -> str:
        return f"${names.setdefault(match.group(1), len(names) + 1)}"

    return re.sub(r"%\((\w+)\)[sb]", sub, text).replace("%%", "%")


async def test_concurrent_first_starts_apply_each_migration_once(conn: psycopg.AsyncConnection, namespace: str) -> None:
    # Given a namespace nobody has used yet, when brokers and backends start at once
    opened = await asyncio.gather(
        *[connect_broker(URL, namespace=namespace) for _ in range(3)],
        *[connect_backend(URL, namespace=namespace) for _ in range(2)],
    )
    try:
        # Then each migration was recorded exactly once
        cur = await conn.execute(f"SELECT version FROM {quote_ident(schema_name(namespace))}.migrations ORDER BY 1")
        assert [r[0] for r in await cur.fetchall()] == [v for v, _, _ in migrations()]
    finally:
        for adapter in opened:
            await adapter.close()


def test_long_namespaces_get_a_short_unique_schema() -> None:
    a, b = schema_name("n" * 64), schema_name("n" * 63 + "m")
    assert a != b and len(a.encode()) <= 63 and len(b.encode()) <= 63
    assert schema_name("stem") == "stem_stem"
