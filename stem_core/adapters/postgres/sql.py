"""The SQL beside this module: named queries from ``queries.sql`` and numbered migrations.

Both are templates with three placeholders, filled once per namespace: ``{schema}`` (the
quoted schema), ``{queue_channel}`` and ``{result_channel}`` (NOTIFY channel names). Our
schema names are checked identifiers, so plain substitution cannot inject anything; user
values always travel as bind parameters. A ``-- fragment:`` block is SQL written once
and included by statements (and fragments) as ``{@name}``, or composed in Python.

Migrations run in one transaction under a transaction-level advisory lock keyed by the
schema, so concurrent first starts (several workers booting at once) apply each file
exactly once: the losers wait on the lock, then find the versions already recorded.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

import psycopg

from .connection import QUEUE_CHANNEL_SUFFIX, RESULT_CHANNEL_SUFFIX, quote_ident

_NAME_RE = re.compile(r"^--\s*(name|fragment):\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)
_INCLUDE_RE = re.compile(r"\{@([a-z_][a-z0-9_]*)\}")
_MIGRATION_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
MIGRATION_LOCK_PREFIX = "stem-migrations:"


def render(text: str, schema: str) -> str:
    return (
        text.replace("{schema}", quote_ident(schema))
        .replace("{queue_channel}", schema + QUEUE_CHANNEL_SUFFIX)
        .replace("{result_channel}", schema + RESULT_CHANNEL_SUFFIX)
    )


@functools.cache
def _query_templates() -> tuple[dict[str, str], dict[str, str]]:
    """``(statements, fragments)`` of ``queries.sql``, includes expanded."""
    text = resources.files(__package__).joinpath("queries.sql").read_text(encoding="utf-8")
    blocks: dict[str, str] = {}
    fragments: set[str] = set()
    matches = list(_NAME_RE.finditer(text))
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        body = text[match.end() : end].strip()
        # Keep only SQL: the comment lines documenting a block stay in the file.
        lines = [line for line in body.splitlines() if not line.lstrip().startswith("--")]
        blocks[match.group(2)] = "\n".join(lines).strip().rstrip(";")
        if match.group(1) == "fragment":
            fragments.add(match.group(2))
    # "{@name}" includes fragment ``name`` (written once, used by several statements);
    # fragments may include fragments.
    def expand(body: str, depth: int = 0) -> str:
        if depth > 5:
            raise ValueError("queries.sql: fragments include each other in a cycle")
        return _INCLUDE_RE.sub(lambda m: expand(blocks[m.group(1)], depth + 1), body)

    expanded = {name: expand(body) for name, body in blocks.items()}
    return ({k: v for k, v in expanded.items() if k not in fragments},
            {k: v for k, v in expanded.items() if k in fragments})


class Queries:
    """Attribute access to the named queries of one schema: ``q.claim``; the rendered
    fragments are in ``q.fragments``."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        statements, fragments = _query_templates()
        for name, template in statements.items():
            setattr(self, name, render(template, schema))
        self.fragments = {name: render(template, schema) for name, template in fragments.items()}

    def __getattr__(self, name: str) -> str:
        raise AttributeError(f"queries.sql has no block named {name!r}")


def migrations() -> list[tuple[int, str, str]]:
    """``(version, name, template)`` for every migration file, in version order."""
    folder = resources.files(__package__).joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        match = _MIGRATION_RE.match(entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    return sorted(found)


LATEST_VERSION = max(v for v, _, _ in migrations())


async def migrate(conn: psycopg.AsyncConnection, schema: str) -> list[int]:
    """Bring ``schema`` to the latest version; returns the versions applied now."""
    ident = quote_ident(schema)
    try:
        cur = await conn.execute(f"SELECT coalesce(max(version), 0) FROM {ident}.migrations")
        row = await cur.fetchone()
        if row is not None and row[0] >= LATEST_VERSION:
            return []
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
        pass
    applied: list[int] = []
    async with conn.transaction():
        # Taken before CREATE SCHEMA: concurrent CREATE SCHEMA IF NOT EXISTS can still
        # fail on the catalog's unique index, so only one session may try at a time.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (MIGRATION_LOCK_PREFIX + schema,))
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {ident}")
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {ident}.migrations ("
            "version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cur = await conn.execute(f"SELECT version FROM {ident}.migrations")
        done = {row[0] for row in await cur.fetchall()}
        for version, name, template in migrations():
            if version in done:
                continue
            await conn.execute(render(template, schema))
            await conn.execute(f"INSERT INTO {ident}.migrations (version, name) VALUES (%s, %s)", (version, name))
            applied.append(version)
    return applied


__all__ = ["LATEST_VERSION", "Queries", "migrate", "migrations", "render"]
