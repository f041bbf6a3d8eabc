"""Redis on 127.0.0.1:6379, database 9 (kept apart from other work on the shared server).

Every test has its own namespace; cleanup deletes every key under it (a ``SCAN`` is fine
here: tests only, never the adapter's hot path).
"""

from __future__ import annotations

from tests.specs import AdapterSpec

REDIS_TEST_URL = "redis://127.0.0.1:6379/9"
SCAN_COUNT = 1000


async def delete_namespace(url: str, namespace: str) -> None:
    """Delete every key of ``namespace`` (queue, channel, registry and result keys)."""
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        batch = []
        async for key in client.scan_iter(match=f"{namespace}:*", count=SCAN_COUNT):
            batch.append(key)
            if len(batch) >= SCAN_COUNT:
                await client.unlink(*batch)
                batch.clear()
        if batch:
            await client.unlink(*batch)
    finally:
        await client.aclose()


SPEC = AdapterSpec(id="redis", url=lambda tmp: REDIS_TEST_URL, service="redis", cleanup=delete_namespace)
