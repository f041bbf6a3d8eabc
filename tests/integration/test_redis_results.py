"""Redis result backend: indexes that follow a status from queue to queue, pruning that
keeps memory on the result TTL, watches across processes and across a lost pub/sub
connection. Real server, database 9, one namespace per test.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable

import pytest
from redis.asyncio import Redis

from stem_core import TaskState, TaskStatus
from stem_core.adapters.redis import RedisBackend
from stem_core.adapters.redis import backend as redis_backend
from stem_core.adapters.redis.keys import results_prefix
from tests.specs import AdapterSpec, require_service
from tests.specs.redis import REDIS_TEST_URL, SPEC
from tests.support import eventually

BackendFactory = Callable[..., Awaitable[RedisBackend]]
ROOT = Path(__file__).resolve().parents[2]
# Upper bounds for waiting on an event; tests never assert on timings.
DEADLINE_S = 10.0
PROCESS_DEADLINE_S = 60.0


@pytest.fixture
def backend_spec() -> AdapterSpec:
    """Redis only: ``backend_factory`` (tests/conftest.py) opens backends on the test's
    namespace, closes them and removes the namespace afterwards."""
    require_service("redis")
    return SPEC


@pytest.fixture
async def raw() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_TEST_URL, decode_responses=True)
    yield client
    await client.aclose()


async def collect(watch: AsyncIterator[TaskStatus], into: list[str]) -> None:
    async for status in watch:
        into.append(status.state.value)
        if status.state.is_terminal:
            return


async def test_a_status_moving_between_queues_leaves_its_old_index(backend_factory: BackendFactory) -> None:
    backend = await backend_factory()
    await backend.set_status("t1", "queued", meta={"queue": "a", "task": "x"})
    await backend.set_status("t2", "queued", meta={"queue": "a", "task": "x"})
    # When t1 is re-queued elsewhere under another task name
    await backend.set_status("t1", "running", meta={"queue": "b", "task": "y"})
    # Then each index lists exactly what it should
    assert [s.id for s in await backend.list_statuses(queue="a")] == ["t2"]
    assert [s.id for s in await backend.list_statuses(queue="b")] == ["t1"]
    assert [s.id for s in await backend.list_statuses(task="x")] == ["t2"]
    assert [s.id for s in await backend.list_statuses(state="running")] == ["t1"]
    assert [s.id for s in await backend.list_statuses(state="queued")] == ["t2"]
    assert [s.id for s in await backend.list_statuses()] == ["t1", "t2"]


async def test_expired_statuses_are_pruned_from_every_index(backend_factory: BackendFactory, raw: Redis,
                                                            namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_backend, "PRUNE_INTERVAL_S", 0.0)
    backend = await backend_factory()
    for i in range(5):
        await backend.set_status(f"old{i}", "succeeded", meta={"queue": "q", "task": "t"}, ttl=0.05)
    await asyncio.sleep(0.2)
    # The next write prunes what expired
    await backend.set_status("new", "queued", meta={"queue": "q", "task": "t"})
    p = results_prefix(namespace)
    for index in ("all", "x:succeeded", "q:q", "t:t"):
        members = await raw.zrange(p + index, 0, -1)
        assert all(not m.startswith("old") for m in members), index
    assert await raw.hkeys(p + "ix") == ["new"] and await raw.zrange(p + "exp", 0, -1) == ["new"]
    assert [s.id for s in await backend.list_statuses(queue="q")] == ["new"]


async def test_a_backlog_of_expired_statuses_is_pruned_at_the_next_writes_not_one_batch_a_second(
        backend_factory: BackendFactory, raw: Redis, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given more expired statuses than one prune takes (a worker writing faster than
    # PRUNE_BATCH statuses a second: a 10-minute drain at 600 tasks/s grew Redis by
    # ~330 bytes a task, its indexes holding every expired id)
    monkeypatch.setattr(redis_backend, "PRUNE_BATCH", 4)
    monkeypatch.setattr(redis_backend, "PRUNE_INTERVAL_S", 3600.0)
    backend = await backend_factory()
    await backend.set_statuses([(f"old{i}", "succeeded", {"queue": "q", "task": "t"}) for i in range(10)])
    await raw.zadd(results_prefix(namespace) + "exp", {f"old{i}": 0 for i in range(10)})  # all due now
    for i in range(10):
        await raw.delete(results_prefix(namespace) + f"s:old{i}")
    backend._prune_schedule.make_due()  # noqa: SLF001 - the once-a-second throttle is due
    # When three more writes follow, well inside the interval
    for i in range(3):
        await backend.set_status(f"new{i}", "queued", meta={"queue": "q", "task": "t"})
    # Then a full prune is followed by another at the next write, until none are left
    p = results_prefix(namespace)
    assert sorted(await raw.hkeys(p + "ix")) == ["new0", "new1", "new2"]
    assert all(not m.startswith("old") for m in await raw.zrange(p + "all", 0, -1))
    # and once a prune comes back short, the interval holds again
    await raw.zadd(p + "exp", {"new0": 0})
    await raw.delete(p + "s:new0")
    await backend.set_status("new3", "queued", meta={"queue": "q", "task": "t"})
    assert "new0" in await raw.hkeys(p + "ix")


async def test_watch_sees_every_update_written_by_another_process(backend_factory: BackendFactory, namespace: str) -> None:
    backend = await backend_factory()
    await backend.set_status("job", "queued")
    seen: list[str] = []
    watcher = asyncio.create_task(collect(backend.watch("job"), seen))
    await eventually(lambda: seen == ["queued"], timeout=DEADLINE_S)
    script = (
        "import asyncio\n"
        "from stem_core import connect_backend\n"
        "async def main():\n"
        f"    b = await connect_backend({REDIS_TEST_URL!r}, namespace={namespace!r})\n"
        "    for state in ('running', 'retried', 'running', 'succeeded'):\n"
        "        await b.set_status('job', state)\n"
        "    await b.close()\n"
        "asyncio.run(main())\n"
    )
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, cwd=ROOT)
    assert await asyncio.wait_for(proc.wait(), PROCESS_DEADLINE_S) == 0
    await asyncio.wait_for(watcher, DEADLINE_S)
    assert seen == ["queued", "running", "retried", "running", "succeeded"]


async def test_watch_recovers_when_its_pubsub_connection_is_killed(backend_factory: BackendFactory, raw: Redis) -> None:
    backend = await backend_factory()
    writer = await backend_factory()
    await backend.set_status("job", "queued")
    seen: list[str] = []
    watcher = asyncio.create_task(collect(backend.watch("job"), seen))
    await eventually(lambda: seen == ["queued"], timeout=DEADLINE_S)
    # When the server drops every pub/sub client
    killed = await raw.client_kill_filter(_type="pubsub")
    assert killed >= 1
    # Then later updates still arrive (the hub reconnects and re-reads the status)
    await writer.set_status("job", "running")
    await eventually(lambda: seen[-1:] == ["running"], timeout=DEADLINE_S)
    await writer.set_status("job", "succeeded")
    await asyncio.wait_for(watcher, DEADLINE_S)
    assert seen[0] == "queued" and seen[-1] == "succeeded"


async def test_closing_the_backend_ends_open_watches(backend_factory: BackendFactory) -> None:
    backend = await backend_factory()
    await backend.set_status("open", "queued")
    seen: list[str] = []
    watcher = asyncio.create_task(collect(backend.watch("open"), seen))
    await eventually(lambda: seen == ["queued"], timeout=DEADLINE_S)  # subscribed: the current status came
    await backend.close()
    with pytest.raises(Exception) as caught:
        await asyncio.wait_for(watcher, DEADLINE_S)
    assert type(caught.value).__name__ == "BackendUnavailable"


async def test_statuses_expire_on_the_server(backend_factory: BackendFactory, raw: Redis, namespace: str) -> None:
    backend = await backend_factory(result_ttl=3600)
    await backend.set_status("kept", TaskState.SUCCEEDED)
    ttl_ms = await raw.pttl(results_prefix(namespace) + "s:kept")
    assert 3_500_000 < ttl_ms <= 3_600_000
    await backend.expire("kept", 30)
    assert 0 < await raw.pttl(results_prefix(namespace) + "s:kept") <= 30_000


def test_subprocess_helper_runs_in_the_project(tmp_path: Path) -> None:
    # The cross-process test relies on the child importing this checkout's stem_core.
    out = subprocess.run([sys.executable, "-c", "import stem_core, sys; print(stem_core.__file__)"], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    assert str(ROOT) in out.stdout


async def test_a_batch_writes_its_indexes_together_and_an_id_repeated_in_it_in_order(
        backend_factory: BackendFactory, raw: Redis, namespace: str) -> None:
    # Given a batch larger than one variadic index call takes (results_lib.lua sends the
    # index entries of a batch of distinct ids together, INDEX_FLUSH_ARGS at a time)
    backend = await backend_factory()
    ids = [f"v{k:04d}" for k in range(800)]
    await backend.set_statuses([(i, "queued", {"queue": "a", "task": "x"}) for i in ids])
    # When half of them move on in one batch, and one id runs and succeeds within a batch
    await backend.set_statuses([(i, "running", {"queue": "a", "task": "x"}) for i in ids[::2]])
    await backend.set_statuses([("v0001", "running", {"queue": "a", "task": "x"}),
                                ("v0001", "succeeded", {"queue": "a", "task": "x"}),
                                ("w", "queued", {"queue": "a", "task": "x"})])
    # Then every index holds each id exactly where its last status puts it
    p = results_prefix(namespace)

    async def held(key: str) -> set[str]:
        return set(await raw.zrange(p + key, 0, -1))

    assert await held("x:running") == set(ids[::2])
    assert await held("x:queued") == set(ids[1::2]) - {"v0001"} | {"w"}
    assert await held("x:succeeded") == {"v0001"}
    assert await held("all") == await held("q:a") == await held("t:x") == await held("exp") == set(ids) | {"w"}
    assert len(await raw.hkeys(p + "ix")) == len(ids) + 1
    assert [s.id for s in await backend.list_statuses(limit=1)] == ["w"]  # newest first
