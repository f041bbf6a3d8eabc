from __future__ import annotations

from pathlib import Path

from tests.specs import AdapterSpec

URL = "postgresql://postgres@127.0.0.1:5432/test"


def cluster_command(action: str, *extra: str) -> list[str]:
    """``pg_ctlcluster`` for the machine's (newest) cluster: the one command the tests that
    restart the shared server use (``restart -m immediate`` is a crash)."""
    versions = sorted(p.name for p in Path("/etc/postgresql").iterdir())
    return ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", action, *extra]


async def drop_namespace(url: str, namespace: str) -> None:
    """Drop the namespace's schema (every table, trigger and function of the test)."""
    import psycopg

    from stem_core.adapters.postgres.connection import quote_ident, schema_name

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(schema_name(namespace))} CASCADE")


SPEC = AdapterSpec(id="postgres", url=lambda tmp: URL, service="postgres", cleanup=drop_namespace)
