"""Helpers shared by the ops unit tests and the CLI tests: memory-backed ``Ops``, fake
heartbeats, claiming deliveries as a named consumer."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

from stem_core import Broker, Delivery, ResultBackend, WorkerHeartbeat, connect_backend, connect_broker
from stem_core.clock import to_iso, utcnow
from stem_core.ops import Ops

# Deadlines only bound a hang; no test asserts how fast anything happened.
DEADLINE_S = 60.0


def memory_url() -> str:
    return f"memory://{uuid.uuid4().hex}"


async def open_memory(namespace: str, **ops_options: Any) -> tuple[Ops, Broker, ResultBackend, str]:
    url = memory_url()
    broker = await connect_broker(url, namespace=namespace)
    backend = await connect_backend(url, namespace=namespace)
    return Ops(broker, backend, actor="tester@host", **ops_options), broker, backend, url


def heartbeat(
    worker_id: str,
    queues: list[str],
    *,
    concurrency: int = 2,
    inflight: list[dict[str, Any]] | None = None,
    processed: int = 0,
    age: float = 0.0,
    paused: list[str] | None = None,
    namespace: str = "stem",
) -> WorkerHeartbeat:
    return WorkerHeartbeat(
        worker_id=worker_id, namespace=namespace, host="host", pid=123, queues=queues, concurrency=concurrency,
        inflight=list(inflight or []), processed=processed, failed=0, retried=0, paused_queues=list(paused or []),
        version="test", timestamp=utcnow() - timedelta(seconds=age),
    )


def inflight_entry(delivery: Delivery, *, active: bool = True, running_for: float = 5.0) -> dict[str, Any]:
    started = to_iso(utcnow() - timedelta(seconds=running_for)) if active else None
    expires = to_iso(delivery.lease_expires_at) if delivery.lease_expires_at else None
    return {"id": delivery.envelope.id, "name": delivery.envelope.name, "queue": delivery.queue, "started_at": started,
            "lease_expires_at": expires, "state": "active" if active else "reserved", "attempt": 0}


async def claim(broker: Broker, queues: list[str], consumer: str, count: int) -> list[Delivery]:
    """Lease ``count`` deliveries as ``consumer`` (they stay leased after the iterator closes)."""
    out: list[Delivery] = []
    stream = broker.consume(queues, prefetch=count, consumer=consumer)
    try:
        async with asyncio.timeout(DEADLINE_S):
            async for delivery in stream:
                out.append(delivery)
                if len(out) >= count:
                    break
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    return out

