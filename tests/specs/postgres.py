from __future__ import annotations

from tests.specs import AdapterSpec

URL = "postgresql://postgres@127.0.0.1:5432/test"


async def drop_namespace(url: str, namespace: str) -> None:
    """Drop the namespace's schema (every table, trigger and function of the test)."""
    import psycopg

    from stem_core.adapters.postgres.connection import quote_ident, schema_name

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(schema_name(namespace))} CASCADE")


SPEC = AdapterSpec(id="postgres", url=lambda tmp: URL, service="postgres", cleanup=drop_namespace)
