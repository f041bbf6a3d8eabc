"""Redis: Stem's scripts run as one Redis Functions library (``FCALL``) on Redis >= 7,
loaded once per server; a library that is gone is loaded again and the call repeated;
processes load it concurrently; a new Stem version loads its own library beside the old;
older servers and servers refusing ``FUNCTION LOAD`` get ``EVALSHA``.

Real server, database 9. Commands are recorded where Stem writes them to the socket
(``StemConnection.send_packed_command``).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, AsyncIterator

import pytest
from redis.asyncio import Redis

from stem_core import Envelope, TaskState, connect_backend, connect_broker
from stem_core.adapters.redis import scripts as redis_scripts
from stem_core.adapters.redis.internals import StemConnection
from stem_core.adapters.redis.scripts import function_library
from tests.contract.helpers import receive_one, stats_of
from tests.specs import require_service
from tests.specs.redis import REDIS_TEST_URL, delete_namespace


# What redis-py sends while opening a connection: not part of the calls under test.
CONNECTION_SETUP = {b"CLIENT", b"PING", b"SELECT", b"HELLO", b"AUTH"}


class Sent:
    """Names of the commands Stem wrote to Redis (upper case), connection setup left out."""

    def __init__(self) -> None:
        self.names: list[bytes] = []

    def clear(self) -> None:
        self.names.clear()


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Sent:
    seen = Sent()
    send = StemConnection.send_packed_command

    async def recorded(self: Any, command: Any, check_health: bool = True) -> None:
        raw = bytes(command if isinstance(command, bytes) else b"".join(command))
        name = raw.split(b"\r\n")[2].upper()
        if name not in CONNECTION_SETUP:
            seen.names.append(name)
        await send(self, command, check_health)

    monkeypatch.setattr(StemConnection, "send_packed_command", recorded)
    return seen


@pytest.fixture
async def raw() -> AsyncIterator[Redis]:
    require_service("redis")
    client = Redis.from_url(REDIS_TEST_URL)
    yield client
    await client.aclose()


@pytest.fixture
async def made() -> AsyncIterator[list[Any]]:
    """Brokers and backends to close, then their namespaces to drop."""
    require_service("redis")
    opened: list[Any] = []
    yield opened
    for item in opened:
        await item.close()
    for namespace in {item.namespace for item in opened}:
        await delete_namespace(REDIS_TEST_URL, namespace)


async def open_pair(made: list[Any], url: str = REDIS_TEST_URL) -> tuple[Any, Any]:
    namespace = "t" + uuid.uuid4().hex[:12]
    broker = await connect_broker(url, namespace=namespace)
    backend = await connect_backend(url, namespace=namespace)
    made += (broker, backend)
    return broker, backend


async def libraries(raw: Redis) -> set[str]:
    out = set()
    for lib in await raw.function_list():
        info = dict(zip(lib[::2], lib[1::2])) if isinstance(lib, list) else lib
        name = info[b"library_name"]
        out.add(name.decode() if isinstance(name, bytes) else name)
    return out


async def settle_one(broker: Any, backend: Any, queue: str) -> Envelope:
    """Enqueue one task, claim it, store its result with the ack; the task's envelope."""
    envelope = Envelope(name="t", queue=queue)
    await broker.enqueue([envelope], backend)
    delivery = await receive_one(broker, [queue])
    await backend.set_status(envelope.id, TaskState.RUNNING, meta={"task": "t", "queue": queue})
    await broker.ack_with_status(delivery, backend, TaskState.SUCCEEDED, payload=7, meta={"task": "t", "queue": queue})
    status = await backend.get_status(envelope.id)
    assert status is not None and status.state == TaskState.SUCCEEDED and status.payload == 7
    return envelope


async def assert_settled(broker: Any, queue: str) -> None:
    """(``queue_stats`` scripts run in a pipeline: EVALSHA on every server.)"""
    stats = await stats_of(broker, queue)
    assert stats.pending == 0 and stats.inflight == 0 and stats.completed_total == 1


async def test_scripts_are_calls_of_one_function_library(made: list[Any], sent: Sent, raw: Redis) -> None:
    broker, backend = await open_pair(made)
    sent.clear()
    await settle_one(broker, backend, "fn")
    assert b"FCALL" in sent.names and b"EVALSHA" not in sent.names and b"EVAL" not in sent.names, sent.names
    await assert_settled(broker, "fn")
    prefix = function_library()[0]
    assert prefix in await libraries(raw)
    names = {f[b"name"] if isinstance(f, dict) else dict(zip(f[::2], f[1::2]))[b"name"]
             for lib in await raw.function_list(library=prefix)
             for f in (lib[b"functions"] if isinstance(lib, dict) else dict(zip(lib[::2], lib[1::2]))[b"functions"])}
    assert {f"{prefix}_{n}".encode() for n in ("claim", "enqueue_with", "ack_with", "results_set", "ack")} <= names


async def test_a_library_gone_from_the_server_is_loaded_again_and_the_call_repeated(made: list[Any], sent: Sent,
                                                                                     raw: Redis) -> None:
    broker, backend = await open_pair(made)
    await broker.enqueue([Envelope(name="t", queue="gone")], backend)
    prefix = function_library()[0]
    await raw.function_delete(prefix)  # what a restart without persistence or FUNCTION FLUSH leaves
    sent.clear()
    await broker.enqueue([Envelope(name="t", queue="gone")], backend)
    assert sent.names == [b"FCALL", b"FUNCTION", b"FCALL"], sent.names
    assert prefix in await libraries(raw)
    assert (await stats_of(broker, "gone")).pending == 2


async def test_processes_loading_the_library_at_once_all_succeed(made: list[Any], raw: Redis) -> None:
    pairs = [await open_pair(made) for _ in range(6)]
    if function_library()[0] in await libraries(raw):
        await raw.function_delete(function_library()[0])
    await asyncio.gather(*(broker.enqueue([Envelope(name="t", queue="race")], backend) for broker, backend in pairs))
    for broker, _ in pairs:
        assert (await stats_of(broker, "race")).pending == 1


async def test_a_new_version_loads_its_own_library_beside_the_old_one(made: list[Any], raw: Redis,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    old_broker, old_backend = await open_pair(made)
    await old_broker.enqueue([Envelope(name="t", queue="v")], old_backend)
    old = function_library()[0]
    text = redis_scripts.lua_text
    monkeypatch.setattr(redis_scripts, "lua_text",
                        lambda name: text(name) + ("\n-- changed" if name == "ack" else ""))
    function_library.cache_clear()
    try:
        new = function_library()[0]
        assert new != old
        broker, backend = await open_pair(made)
        await settle_one(broker, backend, "v")
        await assert_settled(broker, "v")
        assert {old, new} <= await libraries(raw)
        # The older process keeps calling its own functions.
        monkeypatch.undo()
        function_library.cache_clear()
        await settle_one(old_broker, old_backend, "v2")
        await assert_settled(old_broker, "v2")
    finally:
        monkeypatch.undo()
        function_library.cache_clear()
        if new in await libraries(raw):
            await raw.function_delete(new)


async def test_servers_before_7_get_evalsha(made: list[Any], sent: Sent, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_scripts, "FUNCTIONS_SINCE", (99, 0))
    broker, backend = await open_pair(made)
    sent.clear()
    await settle_one(broker, backend, "old")
    assert b"EVALSHA" in sent.names and b"FCALL" not in sent.names and b"FUNCTION" not in sent.names, sent.names
    await assert_settled(broker, "old")


async def test_a_server_refusing_function_load_gets_evalsha(made: list[Any], sent: Sent, raw: Redis,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    user = "stemtest" + uuid.uuid4().hex[:8]
    await raw.acl_setuser(user, enabled=True, nopass=True, keys=["*"], channels=["*"], commands=["+@all", "-function"])
    try:
        prefix = function_library()[0]
        if prefix in await libraries(raw):
            await raw.function_delete(prefix)
        url = REDIS_TEST_URL.replace("redis://", f"redis://{user}@")
        broker, backend = await open_pair(made, url)
        sent.clear()
        await broker.enqueue([Envelope(name="t", queue="acl")], backend)
        assert sent.names[:3] == [b"FCALL", b"FUNCTION", b"EVALSHA"], sent.names
        assert "refused FUNCTION LOAD" in caplog.text and "EVALSHA" in caplog.text
        await settle_one(broker, backend, "acl2")  # the backend's client finds out on its first call
        await assert_settled(broker, "acl2")
        sent.clear()
        await settle_one(broker, backend, "acl3")
        assert b"FCALL" not in sent.names and b"FUNCTION" not in sent.names, sent.names
        await assert_settled(broker, "acl3")
    finally:
        await raw.acl_deluser(user)
