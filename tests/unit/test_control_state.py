"""``ControlState``: the pauses, revocations and stop request a worker obeys, without a
running worker (the in-process and multi-process behaviour is in tests/worker)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest

from stem_core import Delivery, Envelope
from stem_core.clock import monotonic, to_iso, utcnow
from stem_core.control.pause import pause_record
from stem_core.control.revoke import (
    REVOKE_FULL_RELOAD_EVERY,
    REVOKE_KIND,
    REVOKE_SINCE_OVERLAP_SECONDS,
    REVOKE_TTL_SECONDS,
    revoke_record,
)
from stem_core.worker.control_state import ControlState
from stem_core.worker.held import ACTIVE, Held, HeldSet, lease_deadline

GRACE_S = 30.0


def _state(held: HeldSet | None = None) -> ControlState:
    return ControlState(worker_id="w1", queues=["a", "b"], held=held or HeldSet(), shutdown_grace=GRACE_S)


def _pause(queue: str, *, workers: list[str] | None = None) -> dict[str, dict[str, object]]:
    now = to_iso(utcnow())
    return {queue: pause_record(queue, reason="test", by="pytest", paused_at=now, until=None, workers=workers)}


def _revoke(task_id: str, *, terminate: bool) -> dict[str, dict[str, object]]:
    return {task_id: revoke_record(task_id, terminate=terminate, reason=None, by="pytest", revoked_at=to_iso(utcnow()))}


def _held(task_id: str, receipt: str, state: str) -> Held:
    delivery = Delivery(envelope=Envelope(name="t", id=task_id), receipt=receipt, queue="a")
    held = Held(delivery=delivery, lease_seconds=30.0, lease_expires_at=lease_deadline(delivery, 30.0))
    held.state = state
    return held


def test_a_pause_of_one_of_its_queues_changes_what_the_worker_fetches() -> None:
    # Given a worker on queues a and b
    state = _state()
    # When a pause for a, one for another worker and one for a queue it does not consume arrive
    state.merge_pauses({**_pause("a"), **_pause("b", workers=["w2"]), **_pause("other")})
    # Then only a is paused for it, and the fetch supervisor is told to resubscribe
    assert state.paused == {"a", "other"} and state.is_paused("a") and not state.is_paused("b")
    assert state.paused_queues() == ["a"] and state.active_queues() == ["b"]
    assert state.pauses_changed.is_set()


def test_a_change_outside_its_queues_does_not_reopen_the_subscription() -> None:
    state = _state()
    state.merge_pauses(_pause("other"))
    assert state.paused == {"other"} and not state.pauses_changed.is_set()


def test_resume_and_refresh_replace_the_known_pauses() -> None:
    # Given queue a paused by a command
    state = _state()
    state.merge_pauses(_pause("a"))
    state.pauses_changed.clear()
    # When the persisted records (only b paused) are read at the next heartbeat
    state.set_pauses(_pause("b"))
    # Then a is no longer paused and b is, and the change is signalled
    assert state.paused_queues() == ["b"] and state.pauses_changed.is_set()
    # And a resume of b leaves nothing paused
    state.remove_pauses(["b"])
    assert state.paused == frozenset() and state.active_queues() == ["a", "b"]


async def test_a_terminating_revocation_cancels_the_running_body_only() -> None:
    # Given one running and one reserved delivery of the same task, and another running task
    held = HeldSet()
    running, reserved, other = _held("t1", "r1", ACTIVE), _held("t1", "r2", "reserved"), _held("t2", "r3", ACTIVE)
    bodies = []
    for entry in (running, other):
        entry.body = asyncio.get_running_loop().create_future()
        bodies.append(entry.body)
        held.add(entry)
    held.add(reserved)
    state = _state(held)
    # When t1 is revoked with terminate
    terminated = state.apply_revocations(_revoke("t1", terminate=True))
    # Then its running body is cancelled with the reason, the reserved one is left to the executor
    assert terminated == ["t1"] and running.cancel_reason == "revoked" and bodies[0].cancelled()
    assert reserved.cancel_reason is None and other.cancel_reason is None and not bodies[1].cancelled()
    assert state.revocation("t1") is not None and state.revoked_ids() == ["t1"]


def test_a_revocation_without_terminate_is_only_remembered_and_refresh_replaces_the_set() -> None:
    state = _state()
    assert state.apply_revocations(_revoke("t1", terminate=False)) == []
    state.apply_revocations(_revoke("t2", terminate=False))
    assert sorted(state.revoked_ids()) == ["t1", "t2"]
    state.apply_revocations(_revoke("t3", terminate=False), replace=True)
    assert state.revoked_ids() == ["t3"] and state.revocation("t1") is None


class _RevocationStore:
    """A backend's records as a worker reads them: every list_records call is noted."""

    def __init__(self) -> None:
        self.revocations: dict[str, tuple[dict[str, object], datetime]] = {}
        self.reads: list[datetime | None] = []

    def revoke(self, task_id: str, *, revoked_at: datetime | None = None) -> None:
        at = revoked_at or utcnow()
        record = revoke_record(task_id, terminate=False, reason=None, by="pytest", revoked_at=to_iso(at))
        self.revocations[task_id] = (record, utcnow())

    async def list_records(self, kind: str, *, since: datetime | None = None) -> dict[str, dict[str, object]]:
        if kind != REVOKE_KIND:
            return {}
        self.reads.append(since)
        return {k: r for k, (r, written) in self.revocations.items() if since is None or written >= since}


async def test_heartbeats_read_only_new_revocations_with_a_full_reload_every_n() -> None:
    # Given a worker that read every revocation at start (issue 15: it re-read them all at
    # every heartbeat)
    store, state = _RevocationStore(), _state()
    store.revoke("t1")
    backend: Any = store
    before = utcnow()
    await state.refresh(backend)
    assert store.reads == [None] and state.revoked_ids() == ["t1"]
    # When a revocation is written and the next heartbeat refreshes
    store.revoke("t2")
    await state.refresh(backend)
    # Then it asked only for those written since its last read (less the skew overlap), and merged them
    since = store.reads[-1]
    assert since is not None and since >= before - timedelta(seconds=REVOKE_SINCE_OVERLAP_SECONDS)
    assert since <= utcnow() - timedelta(seconds=REVOKE_SINCE_OVERLAP_SECONDS)
    assert sorted(state.revoked_ids()) == ["t1", "t2"]
    # And every REVOKE_FULL_RELOAD_EVERY-th refresh reads them all again, which drops one
    # deleted from the store
    del store.revocations["t1"]
    while len(store.reads) < REVOKE_FULL_RELOAD_EVERY:
        await state.refresh(backend)
        assert store.reads[-1] is not None and "t1" in state.revoked_ids()
    await state.refresh(backend)
    assert store.reads[-1] is None and len(store.reads) == REVOKE_FULL_RELOAD_EVERY + 1
    assert state.revoked_ids() == ["t2"]


async def test_an_incremental_refresh_drops_revocations_past_their_expiry() -> None:
    store, state = _RevocationStore(), _state()
    backend: Any = store
    store.revoke("old", revoked_at=utcnow() - timedelta(seconds=REVOKE_TTL_SECONDS + 1))
    store.revoke("new")
    await state.refresh(backend)  # a full read (the store here does not expire anything)
    await state.refresh(backend)
    assert store.reads[-1] is not None and state.revoked_ids() == ["new"]


def test_the_stop_request_only_escalates() -> None:
    # Given a running worker's state
    state = _state()
    assert not state.stopping and state.stop_mode is None and state.soft_deadline is None
    # When soft is requested, then warm
    state.request_stop("soft")
    deadline = state.soft_deadline
    state.stop_changed.clear()
    state.request_stop("warm")
    # Then it stays soft (no wake-up), with the grace period counted from the soft request
    assert state.stop_mode == "soft" and not state.stop_changed.is_set()
    assert deadline is not None and deadline <= monotonic() + GRACE_S
    # And hard still escalates
    state.request_stop("hard")
    assert state.stop_mode == "hard" and state.stop_changed.is_set()


def test_an_unknown_stop_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="stop mode"):
        _state().request_stop("gentle")
