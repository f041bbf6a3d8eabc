"""A broadcast subscriber in its own process, for the cross-process fan-out test.

    python -m tests.contract.broadcast_peer URL NAMESPACE QUEUE CHANNEL

Subscribes to QUEUE and CHANNEL; prints ``ready`` when a marker published to QUEUE comes
back (so its subscription is certainly open), then ``got <id> <name>`` for the first
broadcast on CHANNEL, and exits 0. Exits 2 if nothing arrives within the deadline.
"""

from __future__ import annotations

import asyncio
import sys

from stem_core import connect_broker

DEADLINE_S = 60.0
MARKER_NAME = "contract.marker"


async def main(url: str, namespace: str, queue: str, channel: str) -> int:
    broker = await connect_broker(url, namespace=namespace)
    deliveries = broker.consume([queue], channels=[channel], consumer=f"peer-{queue}")
    try:
        async with asyncio.timeout(DEADLINE_S):
            async for delivery in deliveries:
                await broker.ack(delivery)
                if delivery.channel is None and delivery.envelope.name == MARKER_NAME:
                    print("ready", flush=True)
                elif delivery.channel == channel:
                    print(f"got {delivery.envelope.id} {delivery.envelope.name}", flush=True)
                    return 0
    except TimeoutError:
        print("timeout", flush=True)
    finally:
        await deliveries.aclose()  # type: ignore[attr-defined]
        await broker.close()
    return 2


if __name__ == "__main__":
    sys.exit(asyncio.run(main(*sys.argv[1:5])))
