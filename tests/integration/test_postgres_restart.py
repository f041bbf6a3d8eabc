"""A PostgreSQL server restart (``-m immediate``, i.e. a crash) in the middle of a running
workload loses nothing that was committed, and the pools and the listener recover by
themselves. This restarts the *shared* server: one quick restart per run, marked slow,
and the server is always running again when the test ends, even on failure."""

from __future__ import annotations

import asyncio
import os
import subprocess

import pytest

from stem_core import Envelope, connect_backend, connect_broker
from stem_core.clock import monotonic
from stem_core.errors import BrokerUnavailable
from tests.specs import require_service, require_tool, service_up
from tests.specs.postgres import URL, cluster_command, drop_namespace

MESSAGES = 400
PUBLISH_PAUSE_S = 0.005
RESTART_AFTER = 120  # messages published before the restart
DEADLINE_S = 90.0


async def _run(cmd: list[str]) -> int:
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return await proc.wait()


async def _ensure_running() -> None:
    deadline = monotonic() + 60
    while not service_up("postgres"):
        await _run(cluster_command("start"))
        if monotonic() > deadline:
            raise RuntimeError("PostgreSQL did not come back")
        await asyncio.sleep(0.5)


@pytest.mark.slow
async def test_server_restart_mid_run_loses_nothing_committed(namespace: str) -> None:
    require_service("postgres")
    if os.environ.get("PYTEST_XDIST_WORKER"):
        pytest.skip("restarts the shared PostgreSQL server, which would break tests running beside it: run without -n")
    require_tool("pg_ctlcluster")
    broker = await connect_broker(URL, namespace=namespace)
    consumer_broker = await connect_broker(URL, namespace=namespace)
    backend = await connect_backend(URL, namespace=namespace)
    committed: set[str] = set()
    seen: set[str] = set()
    restarted = asyncio.Event()
    try:
        async def produce() -> None:
            for i in range(MESSAGES):
                env = Envelope(name="restart.job", args={"i": i})
                while True:  # retry the same envelope until the server accepts it
                    try:
                        await broker.publish(env)
                        committed.add(env.id)
                        break
                    except BrokerUnavailable:
                        await asyncio.sleep(0.1)
                if i == RESTART_AFTER:
                    assert await _run(cluster_command("restart", "-m", "immediate")) == 0
                    restarted.set()
                await asyncio.sleep(PUBLISH_PAUSE_S)

        async def consume() -> None:
            async for delivery in consumer_broker.consume("default", prefetch=8):
                seen.add(delivery.envelope.id)
                try:
                    await consumer_broker.ack(delivery)
                except BrokerUnavailable:
                    pass  # the message comes back after its lease; seen already counts it

        consumer = asyncio.ensure_future(consume())
        await asyncio.wait_for(produce(), DEADLINE_S)
        assert restarted.is_set()
        deadline = monotonic() + DEADLINE_S
        while not committed <= seen and not consumer.done() and monotonic() < deadline:
            await asyncio.sleep(0.05)
        if consumer.done():
            consumer.result()  # the consumer must not have died in the outage
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        # Everything committed was delivered, and both pools work again
        assert committed <= seen and len(committed) == MESSAGES
        await backend.set_status("after-restart", "succeeded")
        assert (await backend.get_status("after-restart")) is not None
        stats = (await broker.queue_stats(["default"]))[0]
        assert stats.enqueued_total >= MESSAGES
    finally:
        await _ensure_running()
        for adapter in (broker, consumer_broker, backend):
            await adapter.close()
        await drop_namespace(URL, namespace)
