"""The ops API on every adapter (through the contracts only): the same scene, the same
answers. Real servers, per-test namespaces, cleaned up by the shared fixtures."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from stem_core import Envelope, connect_backend
from stem_core.clock import utcnow
from stem_core.ops import Ops
from tests.cli.helpers import claim, heartbeat, inflight_entry
from tests.specs import AdapterSpec, backend_url_of, require_service


@pytest.fixture
async def ops(broker_spec: AdapterSpec, tmp_path: Path, namespace: str, broker: Any) -> AsyncIterator[Ops]:
    paired = broker_spec.backend_spec()
    if paired is None:
        pytest.skip(f"{broker_spec.id} is a broker only")
    # A broker-only adapter (SQS, RabbitMQ) pairs with the result backend its spec names.
    require_service(paired.service)
    backend_url = backend_url_of(broker_spec, tmp_path)
    backend = await connect_backend(backend_url, namespace=namespace, **paired.backend_options)
    try:
        yield Ops(broker, backend, actor="tester", stale_after=5.0)
    finally:
        await backend.close()
        if paired is not broker_spec and paired.cleanup is not None:
            await paired.cleanup(backend_url, namespace)


async def test_overview_leases_explain_and_repair_on_every_adapter(ops: Ops) -> None:
    broker, backend = ops.broker, ops.backend
    if not broker.capabilities.peek:
        pytest.skip("listing leases and requeueing another worker's lease need peek")
    # Given 4 ready messages, 1 delayed, one leased by a dead worker, one by a live one, one dead letter
    ids = (await ops.enqueue_many([("t.work", {"i": i}, {"queue": "q"}) for i in range(5)])).detail.ids
    later = (await ops.enqueue("t.later", queue="q", delay=3600)).detail.ids[0]
    (dead_held,) = await claim(broker, ["q"], "w-dead", 1)
    (live_held,) = await claim(broker, ["q"], "w-live", 1)
    (doomed,) = await claim(broker, ["q"], "w-live", 1)
    await broker.dead_letter(doomed, reason="boom")
    await backend.set_heartbeat(heartbeat("w-dead", ["q"], age=60, inflight=[inflight_entry(dead_held)]))
    await backend.set_heartbeat(heartbeat("w-live", ["q"], inflight=[inflight_entry(live_held)]))

    # Then the overview reads the counters
    row = (await ops.overview(["q"])).queues[0]
    assert (row.pending, row.delayed, row.inflight, row.dead) == (2, 1, 2, 1)
    assert row.workers == ["w-live"] and row.unaccounted_leases == 1
    # and the leases name the stuck one
    leases = {lease.holder: lease for lease in await ops.leases("q")}
    assert leases["w-dead"].stuck and not leases["w-live"].stuck
    # and explain knows every place a task can be
    states = {
        dead_held.envelope.id: "leased", live_held.envelope.id: "running", doomed.envelope.id: "dead", later: "delayed",
    }
    for task_id, state in states.items():
        assert (await ops.explain(task_id)).state == state, task_id
    queued = [i for i in ids if i not in states]
    assert {(await ops.explain(i)).state for i in queued} == {"queued"}

    # When the stuck lease is requeued (previewed first)
    assert (await ops.requeue("q", stuck_leases=True, dry_run=True)).count == 1
    assert (await ops.requeue("q", stuck_leases=True)).count == 1
    # Then it is ready again and the live lease is untouched
    after = (await broker.queue_stats(["q"]))[0]
    assert (after.pending, after.inflight) == (3, 1)
    # And a replay and a purge do what their previews said
    assert (await ops.replay("q", dry_run=True)).count == 1
    assert (await ops.replay("q")).count == 1
    preview = await ops.purge("q", dry_run=True)
    assert preview.count == 5 and (await ops.purge("q")).count == 5
    actions = [record["action"] for record in await backend.list_audit()]
    assert actions[:3] == ["purge", "replay", "requeue"]


async def test_pause_is_visible_to_the_overview_on_every_adapter(ops: Ops) -> None:
    await ops.broker.publish(Envelope(name="t", queue="p"))
    await ops.pause(["p"], reason="maintenance", until=utcnow() + timedelta(minutes=5))
    row = (await ops.overview(["p"])).queues[0]
    assert row.paused and row.paused_reason == "maintenance" and row.verdict == "paused"
    assert (await ops.resume(["p"])).count == 1
    assert not (await ops.overview(["p"])).queues[0].paused
