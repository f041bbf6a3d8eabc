"""Scenario 5's bad envelopes, written straight into each broker's storage (as a buggy
producer or another program would), each carrying its key (``poison-x<n>``) in its raw text so
its dead letter can be matched to it.

Kinds: ``malformed`` (not JSON; PostgreSQL stores ``jsonb``, so there: JSON that is not an
object), ``mistyped`` (a JSON object whose fields have the wrong types), ``oversized``
(a well-formed envelope over ``STEM_MAX_ENVELOPE_BYTES``; 200 KB on SQS, whose messages stop
at 256 KiB, with an argument the task does not take).
"""

from __future__ import annotations

import json
import re
import sqlite3
from typing import Any
from urllib.parse import urlsplit

from stem_core.limits import DEFAULT_MAX_ENVELOPE_BYTES

# "x" is no hex digit: a key never matches inside a UUID (SQS ids of undecodable messages).
KEY_RE = re.compile(r"poison-x[0-9]{4}")
QUEUE = "default"


def payload(kind: str, key: str, broker: str) -> str:
    if kind == "malformed":
        return json.dumps([key, "not an envelope"]) if broker == "postgres" else f'{{"chaos": "{key}", not json'
    if kind == "mistyped":
        return json.dumps({"chaos": key, "id": key, "name": 7, "queue": QUEUE, "args": 5, "attempt": "zero"})
    if kind == "oversized":
        size = 200_000 if broker == "sqs" else DEFAULT_MAX_ENVELOPE_BYTES + 1024
        return json.dumps({"id": key, "name": "chaos.work", "queue": QUEUE, "args": {"pad": key + "x" * size}})
    raise ValueError(kind)


async def inject(broker_name: str, broker_url: str, namespace: str, items: list[tuple[str, str]]) -> None:
    """Write ``items`` (key, raw text) into the default queue of ``namespace``."""
    await WRITERS[broker_name](broker_url, namespace, items)


async def _sqlite(url: str, namespace: str, items: list[tuple[str, str]]) -> None:
    path = url.removeprefix("sqlite://")
    conn = sqlite3.connect(path, timeout=30)
    try:
        with conn:
            conn.executemany("INSERT INTO jobs (ns, msg_id, queue, priority, envelope) VALUES (?, ?, ?, 0, ?)",
                             [(namespace, key, QUEUE, text) for key, text in items])
    finally:
        conn.close()


async def _postgres(url: str, namespace: str, items: list[tuple[str, str]]) -> None:
    import psycopg

    from stem_core.adapters.postgres.connection import quote_ident, schema_name

    schema = quote_ident(schema_name(namespace))
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        async with conn.cursor() as cur:
            await cur.executemany(f"INSERT INTO {schema}.jobs (msg_id, queue, name, state, envelope) "
                                  "VALUES (%s, %s, 'junk', 'ready', %s::jsonb)", [(key, QUEUE, text) for key, text in items])


async def _redis(url: str, namespace: str, items: list[tuple[str, str]]) -> None:
    from redis.asyncio import Redis

    from stem_core.adapters.redis.keys import queue_block

    stream = queue_block(namespace, QUEUE)[0]  # band 0's stream
    client = Redis.from_url(url)
    try:
        for _, text in items:
            await client.xadd(stream, {"e": text, "r": "0"})
    finally:
        await client.aclose()


async def _rabbitmq(url: str, namespace: str, items: list[tuple[str, str]]) -> None:
    import aiormq
    from pamqp.commands import Basic

    from stem_core.adapters.rabbitmq.names import RabbitMQNames

    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        await channel.confirm_delivery()
        for _, text in items:
            await channel.basic_publish(text.encode(), routing_key=RabbitMQNames(namespace).work(QUEUE),
                                        properties=Basic.Properties(delivery_mode=2))
    finally:
        await connection.close()


async def _sqs(url: str, namespace: str, items: list[tuple[str, str]]) -> None:
    from stem_core.adapters.sqs.names import SQSNames
    from tests.specs.sqs import raw_clients

    endpoint = dict(part.split("=", 1) for part in urlsplit(url).query.split("&"))["endpoint"]
    async with raw_clients(endpoint) as (sqs, _):
        queue_url = (await sqs.get_queue_url(QueueName=SQSNames("", namespace).queue(QUEUE, "p0")))["QueueUrl"]
        for _, text in items:
            await sqs.send_message(QueueUrl=queue_url, MessageBody=text)


WRITERS: dict[str, Any] = {"sqlite": _sqlite, "postgres": _postgres, "redis": _redis, "rabbitmq": _rabbitmq, "sqs": _sqs}
