"""The SQL files beside this module: numbered migrations and named queries.

Migrations (``migrations/NNNN_name.sql``) are applied in order inside one
``BEGIN IMMEDIATE`` transaction and recorded in ``schema_version``. The write lock makes
concurrent first use safe: when several processes open a fresh file at once, one applies
the files and the others wait on the lock, then find the versions already recorded.
SQLite DDL is transactional, so a crash halfway leaves the previous version intact.

Queries (``queries.sql``) are blocks headed ``-- name: <name>``; values are always bound
parameters (``:name``), never formatted into the text.
"""

from __future__ import annotations

import functools
import re
import sqlite3
from importlib import resources

from ...errors import ConfigurationError

_NAME_RE = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)
_MIGRATION_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@functools.cache
def queries() -> dict[str, str]:
    """Every named block of ``queries.sql`` (comment lines dropped)."""
    text = resources.files(__package__).joinpath("queries.sql").read_text(encoding="utf-8")
    blocks: dict[str, str] = {}
    matches = list(_NAME_RE.finditer(text))
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        lines = [line for line in text[match.end() : end].splitlines() if not line.lstrip().startswith("--")]
        blocks[match.group(1)] = "\n".join(lines).strip().rstrip(";")
    return blocks


class _Queries:
    """Attribute access to the named queries: ``Q.claim_ready``."""

    def __getattr__(self, name: str) -> str:
        try:
            return queries()[name]
        except KeyError:
            raise AttributeError(f"queries.sql has no block named {name!r}") from None


Q = _Queries()


@functools.cache
def migrations() -> tuple[tuple[int, str, tuple[str, ...]], ...]:
    """``(version, name, statements)`` for every migration file, in version order."""
    folder = resources.files(__package__).joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        match = _MIGRATION_RE.match(entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), split_statements(entry.read_text(encoding="utf-8"))))
    return tuple(sorted(found))


def latest_version() -> int:
    return max(version for version, _, _ in migrations())


def split_statements(script: str) -> tuple[str, ...]:
    """Statements of a script, one by one (``executescript`` would COMMIT our transaction).
    ``sqlite3.complete_statement`` knows that a trigger body's semicolons end nothing."""
    out: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        if not pending and (not line.strip() or line.lstrip().startswith("--")):
            continue
        pending += line
        if sqlite3.complete_statement(pending):
            out.append(pending.strip())
            pending = ""
    if pending.strip():
        raise ValueError(f"incomplete SQL statement at the end of a migration: {pending[:80]!r}")
    return tuple(out)


def current_version(conn: sqlite3.Connection) -> int:
    """The highest applied migration, 0 for a fresh file."""
    try:
        row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return 0
        raise
    return int(row[0])


def migrate(conn: sqlite3.Connection) -> list[int]:
    """Bring the file to the latest schema; returns the versions applied by this call."""
    latest = latest_version()
    version = current_version(conn)
    if version > latest:
        raise ConfigurationError(f"database schema version {version} is newer than this Stem supports ({latest}); upgrade Stem")
    if version == latest:
        return []
    applied: list[int] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            "version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
            "applied_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0))"
        )
        done = {row[0] for row in conn.execute("SELECT version FROM schema_version")}
        for number, name, statements in migrations():
            if number in done:
                continue
            for statement in statements:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version, name) VALUES (?, ?)", (number, name))
            applied.append(number)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return applied


__all__ = ["Q", "current_version", "latest_version", "migrate", "migrations", "queries", "split_statements"]
