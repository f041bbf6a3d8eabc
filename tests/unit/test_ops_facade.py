"""``Ops`` as a facade: opening from settings (and owning what it opened), the injected
clock, the typed action detail, and the health probe, on the memory adapter."""

from __future__ import annotations

import uuid
from typing import Any, AsyncIterator

import pytest

from stem_core import Envelope, connect_backend, connect_broker
from stem_core.control import ControlResult
from stem_core.errors import BackendUnavailable, BrokerUnavailable, StemError
from stem_core.ops import ActionDetail, Ops
from stem_core.ops.dispatch import control_detail
from stem_core.ops.health import HealthChecks, health
from stem_core.settings import load_settings
from tests.cli.helpers import heartbeat, memory_url

@pytest.fixture
async def adapters(namespace: str) -> AsyncIterator[tuple[Any, Any]]:
    url = memory_url()
    broker = await connect_broker(url, namespace=namespace)
    backend = await connect_backend(url, namespace=namespace)
    yield broker, backend
    await broker.close()
    await backend.close()


async def test_ops_open_owns_and_closes_what_it_opened(namespace: str) -> None:
    # Given settings naming a broker (the backend defaults to the same URL)
    settings = load_settings(broker=memory_url(), namespace=namespace, env={})
    # When Ops opens them and the block ends
    async with await Ops.open(settings, actor="tester") as ops:
        done = await ops.enqueue("t.work", queue="q")
        broker, backend = ops.broker, ops.backend
        assert done.count == 1 and ops.namespace == namespace and ops.actor == "tester"
    # Then both adapters are closed
    with pytest.raises(BrokerUnavailable):
        await broker.publish_many([Envelope(name="t.work", queue="q")])
    with pytest.raises(BackendUnavailable):
        await backend.list_heartbeats()


async def test_ops_over_given_adapters_leaves_them_to_their_owner(adapters: tuple[Any, Any]) -> None:
    broker, backend = adapters
    async with Ops(broker, backend, actor="tester") as ops:
        await ops.enqueue("t.work", queue="q")
    # The adapters still work after the block: the caller closes them
    assert (await broker.queue_stats(["q"]))[0].pending == 1
    assert await backend.list_heartbeats() == []


async def test_an_injected_clock_is_now_for_every_age_and_verdict(adapters: tuple[Any, Any]) -> None:
    broker, backend = adapters
    # Given a worker whose heartbeat is 100 s old by the system clock
    await backend.set_heartbeat(heartbeat("w1", ["q"], age=100))
    system = Ops(broker, backend, actor="tester", stale_after=30, persist_rates=False)
    # And an Ops whose clock stands 100 s earlier, at the heartbeat itself
    beat = (await system.workers())[0].heartbeat_at
    frozen = Ops(broker, backend, actor="tester", stale_after=30, persist_rates=False, clock=lambda: beat)
    # Then each judges the worker by its own clock
    assert (await system.workers())[0].stale
    [worker] = await frozen.workers()
    assert not worker.stale and worker.heartbeat_age == 0.0
    assert (await frozen.overview()).at == beat and (await frozen.overview()).live_workers == 1


async def test_action_detail_shows_only_what_the_action_set(adapters: tuple[Any, Any]) -> None:
    broker, backend = adapters
    ops = Ops(broker, backend, actor="tester")
    dry = await ops.enqueue("t.work", queue="q", dry_run=True)
    done = await ops.enqueue("t.work", queue="q")
    purged = await ops.purge("q", dry_run=True)
    assert dry.to_dict()["detail"] == {} and done.to_dict()["detail"] == {"ids": done.detail.ids}
    assert purged.to_dict()["detail"] == {"inflight_kept": 0}
    # Read as the mapping it used to be, for scripts written against that
    assert done.detail["ids"] == done.detail.ids and "missing" not in done.detail
    assert dict(purged.detail) == {"inflight_kept": 0}
    with pytest.raises(KeyError):
        done.detail["missing"]


async def test_a_refused_audit_record_is_reported_in_the_detail(adapters: tuple[Any, Any],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    broker, backend = adapters
    ops = Ops(broker, backend, actor="tester")

    async def refuse(record: dict[str, Any]) -> None:
        raise StemError("audit table is read-only")

    monkeypatch.setattr(backend, "append_audit", refuse)
    # When an action runs but its record cannot be written
    done = await ops.enqueue("t.work", queue="q")
    # Then the action stands, and its detail says the record is missing (after the ids)
    assert done.count == 1 and done.audit_id is None and (await broker.queue_stats(["q"]))[0].pending == 1
    assert done.detail.audit_error == "audit record not written: audit table is read-only"
    assert list(done.to_dict()["detail"]) == ["ids", "audit_error"]


def test_a_control_outcome_keeps_the_keys_and_order_it_always_had() -> None:
    # The detail of a control command is the ControlResult's dict plus who replied, as before it was typed
    result = ControlResult(command="ping", targeted=["w1", "w2"], replies={"w1": {"ok": True}}, missing=["w2"])
    detail = control_detail(result)
    assert detail.to_dict() == {**result.to_dict(), "replies_from": ["w1"]} and detail.ok is False
    assert list(detail.to_dict()) == ["command", "targeted", "replies", "missing", "ok", "replies_from"]
    assert list(ActionDetail(workers=["w1"], note="n", audit_error="e").to_dict()) == ["workers", "note", "audit_error"]


async def test_health_reports_each_server_and_runs_checks_only_when_both_answer(namespace: str) -> None:
    url = memory_url()
    settings = load_settings(broker=url, namespace=namespace, env={})
    report = await health(settings, HealthChecks(require_workers=True, max_age=60.0, max_age_text="1m"))
    assert [s["role"] for s in report.servers] == ["broker", "result backend"] and not report.unreachable
    assert [(c["check"], c["ok"]) for c in report.checks] == [("max-age", True), ("workers", False)]
    assert report.checks[0]["detail"] == "all within 1m" and not report.ok
    # A backend that refuses the connection: reported, and no check runs
    refused = load_settings(broker=url, backend="redis://127.0.0.1:1/0", namespace=f"h{uuid.uuid4().hex[:8]}", env={})
    down = await health(refused, HealthChecks(require_workers=True))
    assert [s["role"] for s in down.unreachable] == ["result backend"] and down.checks == [] and not down.ok
    assert down.to_dict()["servers"][1]["error"]
