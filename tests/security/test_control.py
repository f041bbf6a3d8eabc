"""Hand-made control messages on ``<ns>.control`` against a running worker, every broker.

The attacker holds write access to the broker and no signing key: the messages are raw
broadcasts (what ``stem broadcast --channel <ns>.control stem.control.<cmd> --args ...``
sends). Whatever arrives, the worker keeps running and still answers a real ping, no
reply lands in a task queue, and the canary queue is untouched (issue 15, SPEC §9).
With signing keys configured (``STEM_SIGNING_KEYS``), an unsigned or forged shutdown is
ignored too.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from datetime import timedelta
from typing import Any

import pytest

from stem_core import Stem, Worker
from stem_core.clock import to_iso, utcnow
from stem_core.control import ControlClient, control_channel
from stem_core.ops import Ops
from tests.security.conftest import CANARY_QUEUE, Cases, Target, clean, one_line_error, spec_params
from tests.security.corpus import CONTROL_CASES, CONTROL_GARBAGE_ARGS, SENTINEL, ControlCase
from tests.specs import SPECS
from tests.worker.helpers import start

WORK = "work"
WORKER_ID = "w-security"
# The future a forged command claims to come from (far beyond any clock skew).
FUTURE = timedelta(days=1)


def _fill(value: Any, slots: dict[str, str]) -> Any:
    if isinstance(value, str) and value.startswith("{") and value.endswith("}") and value[1:-1] in slots:
        return slots[value[1:-1]]
    if isinstance(value, list):
        return [_fill(v, slots) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, slots) for k, v in value.items()}
    return value


async def _forge(ops: Ops, case: ControlCase, victim: str) -> None:
    rid = uuid.uuid4().hex
    slots = {"rid": rid, "reply": f"stem.reply.{rid}", "now": to_iso(utcnow()), "future": to_iso(utcnow() + FUTURE),
             "task_queue": WORK, "victim": victim, "worker": WORKER_ID}
    await ops.broadcast_raw(control_channel(ops.broker.namespace), f"stem.control.{case.command}",
                            _fill(case.args, slots))


class Running:
    """One in-process worker; a case that stops it gets it restarted, so cases stay apart."""

    def __init__(self, target: Target) -> None:
        self.app = Stem(broker=target.url, backend=target.backend_url, namespace=target.namespace)
        self.worker: Worker | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.worker = Worker(self.app, queues=["jobs"], worker_id=WORKER_ID, concurrency=1, heartbeat_interval=1.0)
        self.task = await start(self.worker)

    async def alive(self) -> None:
        """Two ping round trips after the forged message (the second is sent once the
        first is answered, so the forged one has been handled), then the worker must not
        be stopping. A stopped worker is restarted for the next case."""
        assert self.worker is not None and self.task is not None
        client = ControlClient(self.app.broker, self.app.backend, by="security")
        try:
            for _ in range(2):
                if self.task.done() or self.worker.stopping:
                    break
                result = await client.send("ping", targets=[WORKER_ID], timeout=15)
                assert WORKER_ID in result.replies, f"the worker no longer answers a ping: {result.to_dict()}"
            assert not self.worker.stopping and not self.task.done(), \
                f"the worker obeyed: it is stopping ({self.worker.stop_mode})"
        except AssertionError:
            await self.stop()
            await self.start()
            raise

    async def stop(self) -> None:
        if self.worker is not None and self.task is not None:
            if not self.task.done():
                self.worker.request_stop("hard")
            await asyncio.wait_for(asyncio.shield(self.task), 60)

    async def close(self) -> None:
        await self.stop()
        await self.app.close()


@pytest.mark.parametrize("atarget", spec_params(), indirect=True)
async def test_forged_control_messages_change_nothing(atarget: Target) -> None:
    target = atarget
    ops = await target.ops()
    await target.plant_canary(ops)
    victim = (await ops.enqueue("victim.task", {}, queue=WORK)).detail.ids[0]  # type: ignore[index]
    running = Running(target)
    await running.start()
    cases = Cases()
    try:
        for case in CONTROL_CASES:
            if target.light and not case.light:
                continue
            with cases.case(case.id):
                before = await _queue_state(ops)
                await _forge(ops, case, victim)
                await running.alive()
                after = await _queue_state(ops)
                assert after == before, f"a task queue changed: {before} -> {after} (a reply landed there?)"
        with cases.case("canary"):
            await target.assert_canary(ops)
        with cases.case("audit-and-heartbeats-hold-no-secret"):
            records = await ops.audit_log(100)
            beats = [hb.to_dict() for hb in await ops.backend.list_heartbeats()]
            clean(json.dumps(records, ensure_ascii=False), json.dumps(beats, ensure_ascii=False), where="audit")
    finally:
        await running.close()
    cases.check()


async def _queue_state(ops: Ops) -> dict[str, Any]:
    """What the task queue and the canary queue hold (ids where the broker can peek)."""
    out: dict[str, Any] = {}
    for queue in (WORK, CANARY_QUEUE):
        [stats] = await ops.broker.queue_stats([queue])
        out[queue] = (stats.pending or 0) + (stats.delayed or 0) + (stats.inflight or 0)
        if ops.broker.capabilities.peek:
            out[queue + "-ids"] = sorted(m.envelope.id for m in await ops.broker.peek(queue))
    return out


@pytest.mark.parametrize("target", spec_params([s for s in SPECS if s.id in ("memory", "sqlite")]), indirect=True)
def test_garbage_control_arguments_are_bad_input(target: Target) -> None:
    cases = Cases()
    channel = f"{target.namespace}.control"
    for number, garbage in enumerate(CONTROL_GARBAGE_ARGS):
        with cases.case(f"garbage-{number}"):
            result = target.cli("broadcast", "--channel", channel, "stem.control.shutdown", "--args", garbage)
            clean(result.stdout, result.stderr, where="broadcast --channel")
            assert result.exit_code == 2, (result.exit_code, result.stderr[:300])
            one_line_error(result, "broadcast --channel")
    cases.check()


def _keys(secret: bytes) -> str:
    return "k1:" + base64.b64encode(secret).decode()


@pytest.mark.parametrize("atarget", spec_params([s for s in SPECS if s.id in ("memory", "redis")]), indirect=True)
async def test_with_signing_keys_an_unsigned_or_forged_shutdown_is_ignored(atarget: Target,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """SPEC §9: with ``STEM_SIGNING_KEYS`` set, a worker ignores (and audits) control
    commands that are unsigned or signed with a key it does not hold."""
    target = atarget
    monkeypatch.setenv("STEM_SIGNING_KEYS", _keys(b"the-real-key-" + SENTINEL.encode()))
    monkeypatch.setenv("STEM_SIGNING_ACTIVE_KEY", "k1")
    running = Running(target)
    await running.start()
    cases = Cases()
    try:
        # The attacker: no key at all, then a key of the same id with other bytes.
        for case_id, keys in (("unsigned", None), ("forged", _keys(b"attacker-guess"))):
            with cases.case(case_id):
                if keys is None:
                    monkeypatch.delenv("STEM_SIGNING_KEYS")
                    monkeypatch.delenv("STEM_SIGNING_ACTIVE_KEY")
                else:
                    monkeypatch.setenv("STEM_SIGNING_KEYS", keys)
                    monkeypatch.setenv("STEM_SIGNING_ACTIVE_KEY", "k1")
                attacker = await target.ops()
                rid = uuid.uuid4().hex
                await attacker.broadcast_raw(control_channel(target.namespace), "stem.control.shutdown",
                                             {"mode": "hard", "request_id": rid, "reply_to": f"stem.reply.{rid}",
                                              "sent_at": to_iso(utcnow())})
                monkeypatch.setenv("STEM_SIGNING_KEYS", _keys(b"the-real-key-" + SENTINEL.encode()))
                monkeypatch.setenv("STEM_SIGNING_ACTIVE_KEY", "k1")
                await running.alive()
        with cases.case("no-key-shown"):
            ops = await target.ops()
            clean(json.dumps(await ops.audit_log(100), ensure_ascii=False), where="audit")
    finally:
        await running.close()
    cases.check()
