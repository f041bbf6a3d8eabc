"""Keep the churning tables small: VACUUM them when dead rows pile up.

Every claim and settle leaves dead row versions in ``jobs`` (and every status write in
``statuses``). Autovacuum normally reclaims them, but it may be off (it is on some test
and CI servers), slow to get round (``autovacuum_naptime`` is a minute by default), or
busy elsewhere; a queue table that is not vacuumed grows without bound and its claims
slow down. So the adapters check ``pg_stat_user_tables`` every ``VACUUM_CHECK_S`` and
run a plain ``VACUUM`` (no exclusive lock: claims and publishes continue) on a table
whose dead rows exceed ``max(VACUUM_MIN_DEAD_ROWS, VACUUM_DEAD_FRACTION x live rows)``.
A session advisory lock makes one process do it at a time.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from ...errors import BrokerUnavailable
from .connection import PostgresDatabase, quote_ident

log = logging.getLogger(__name__)

VACUUM_CHECK_S = 10.0
VACUUM_MIN_DEAD_ROWS = 5_000
VACUUM_DEAD_FRACTION = 0.2
VACUUM_LOCK_PREFIX = "stem-vacuum:"


async def vacuum_if_needed(db: PostgresDatabase, schema: str, tables: tuple[str, ...]) -> list[str]:
    """VACUUM (ANALYZE) each of ``tables`` that needs it; returns the names vacuumed."""
    rows = await db.fetch(
        "SELECT relname, n_dead_tup, n_live_tup FROM pg_stat_user_tables WHERE schemaname = %s AND relname = ANY(%s)",
        (schema, list(tables)),
    )
    due = [name for name, dead, live in rows if dead >= max(VACUUM_MIN_DEAD_ROWS, VACUUM_DEAD_FRACTION * live)]
    if not due:
        return []

    async def go(conn: psycopg.AsyncConnection) -> list[str]:
        key = VACUUM_LOCK_PREFIX + schema
        cur = await conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (key,))
        row = await cur.fetchone()
        if row is None or not row[0]:
            return []  # another process is vacuuming this namespace right now
        try:
            for name in due:
                await conn.execute(f"VACUUM (ANALYZE) {quote_ident(schema)}.{quote_ident(name)}")
        finally:
            await conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (key,))
        return due

    vacuumed: list[str] = await db.run(go)
    if vacuumed:
        log.debug("stem: vacuumed %s in %s", ", ".join(vacuumed), schema)
    return vacuumed


async def janitor_pass(db: PostgresDatabase, schema: str, tables: tuple[str, ...]) -> Any:
    """One check, logging instead of raising when the server is away (the loop goes on)."""
    try:
        return await vacuum_if_needed(db, schema, tables)
    except BrokerUnavailable as exc:
        log.warning("stem: vacuum check skipped: %s", exc)
        return []


__all__ = ["VACUUM_CHECK_S", "janitor_pass", "vacuum_if_needed"]
