"""Model-based test (reliability.md R16): random operation sequences against a real broker,
checked step by step against a plain Python model.

Time is kept out of the picture so every run is deterministic: delays are 0 or an hour,
leases are the default 30 s (no lease expires during a run), and "expiry" is exercised by
the operator's ``requeue``, which fences the old holder exactly as a redelivery does.

Invariants checked after every step:
* conservation: every published id is in exactly one of pending / delayed / inflight /
  dead / done, and the broker's counts and ``peek`` id sets equal the model's;
* nothing is delivered before its ``not_before``;
* each delivery is the model's best ready candidate (higher priority, then oldest);
* stale receipts change nothing (``extend_lease`` raises ``LeaseLost``);
* the delivery counter grows by one on every claim.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Coroutine, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from stem_core import Broker, Delivery, connect_broker
from stem_core.clock import utcnow
from stem_core.envelope import Envelope
from stem_core.errors import LeaseLost
from tests.contract.helpers import counts
from tests.specs import AdapterSpec

QUEUES = ("ma", "mb")
FAR_S = 3600.0
EMPTY_WAIT_S = 0.02
DELIVERY_DEADLINE_S = 10.0
MAX_EXAMPLES = 15
STEPS = 30

T = TypeVar("T")


@dataclass
class Model:
    """What the broker should hold for one message."""

    envelope: Envelope
    state: str  # pending | delayed | inflight | dead | done
    ready_at: datetime
    deliveries: int = 0
    receipt: Delivery | None = None


def _ready_at(envelope: Envelope) -> datetime:
    if envelope.not_before is not None and envelope.not_before > envelope.enqueued_at:
        return envelope.not_before
    return envelope.enqueued_at


def build_machine(spec: AdapterSpec, root: Path) -> type[RuleBasedStateMachine]:
    class BrokerModel(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.loop = asyncio.new_event_loop()
            folder = root / uuid.uuid4().hex[:8]
            folder.mkdir()
            self.url = spec.url(folder)
            self.namespace = "m" + uuid.uuid4().hex[:12]
            self.broker: Broker = self.run(connect_broker(self.url, namespace=self.namespace, **spec.broker_options))
            self.messages: dict[str, Model] = {}
            self.stale: list[Delivery] = []

        def run(self, coro: Coroutine[Any, Any, T]) -> T:
            return self.loop.run_until_complete(coro)

        def teardown(self) -> None:
            try:
                self.run(self.broker.close())
                if spec.cleanup is not None:
                    self.run(spec.cleanup(self.url, self.namespace))
            finally:
                self.loop.close()

        # -- helpers ----------------------------------------------------------------

        def in_state(self, state: str, queue: str | None = None) -> list[Model]:
            return [m for m in self.messages.values() if m.state == state and (queue is None or m.envelope.queue == queue)]

        def pick(self, state: str, index: int) -> Model:
            items = sorted(self.in_state(state), key=lambda m: m.envelope.id)
            return items[index % len(items)]

        def fence(self, model: Model) -> None:
            if model.receipt is not None:
                self.stale.append(model.receipt)
                model.receipt = None

        async def _receive(self, queues: list[str], timeout: float) -> Delivery | None:
            deliveries = self.broker.consume(queues, prefetch=1, consumer="model")
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel
                async with asyncio.timeout(timeout):
                    return await deliveries.__anext__()
            except (TimeoutError, StopAsyncIteration):
                return None
            finally:
                await deliveries.aclose()  # type: ignore[attr-defined]

        # -- producing --------------------------------------------------------------

        @rule(priority=st.integers(0, 9), delayed=st.booleans(), queue=st.sampled_from(QUEUES), count=st.integers(1, 3))
        def publish(self, priority: int, delayed: bool, queue: str, count: int) -> None:
            batch = [
                Envelope(name="model.task", queue=queue, priority=priority,
                         not_before=utcnow() + timedelta(seconds=FAR_S) if delayed else None)
                for _ in range(count)
            ]
            if count == 1:
                self.run(self.broker.publish(batch[0]))
            else:
                self.run(self.broker.publish_many(batch))
            for env in batch:
                self.messages[env.id] = Model(env, "delayed" if delayed else "pending", _ready_at(env))

        # -- consuming --------------------------------------------------------------

        @rule(queues=st.sampled_from([["ma"], ["mb"], ["ma", "mb"]]))
        def receive(self, queues: list[str]) -> None:
            ready = [m for q in queues for m in self.in_state("pending", q)]
            delivery = self.run(self._receive(queues, DELIVERY_DEADLINE_S if ready else EMPTY_WAIT_S))
            if not ready:
                assert delivery is None, f"delivered {delivery.envelope.id} while the model has nothing ready"
                return
            assert delivery is not None, "a ready message was not delivered"
            model = self.messages.get(delivery.envelope.id)
            assert model is not None and model.state == "pending", f"unexpected delivery of {delivery.envelope.id}"
            # Nothing before its time
            nb = delivery.envelope.not_before
            assert nb is None or nb <= utcnow()
            # Priority, then oldest: no ready message ranks strictly higher (only priority on a
            # broker that takes equal priorities in turns: spec.oldest_first False)
            if spec.oldest_first:
                best = min((-m.envelope.priority, m.ready_at) for m in ready)
                assert (-model.envelope.priority, model.ready_at) == best, "delivery order broke the priority policy"
            else:
                top = max(m.envelope.priority for m in ready)
                assert model.envelope.priority == top, "delivery order broke the priority policy"
            model.deliveries += 1
            assert delivery.delivery_count == model.deliveries
            assert delivery.envelope.attempt == model.envelope.attempt
            model.state, model.receipt = "inflight", delivery

        @precondition(lambda self: self.in_state("inflight"))
        @rule(index=st.integers(0, 1000))
        def ack(self, index: int) -> None:
            model = self.pick("inflight", index)
            assert model.receipt is not None
            self.run(self.broker.ack(model.receipt))
            self.fence(model)
            model.state = "done"

        @precondition(lambda self: self.in_state("inflight"))
        @rule(index=st.integers(0, 1000), requeue=st.booleans(), far=st.booleans())
        def nack(self, index: int, requeue: bool, far: bool) -> None:
            model = self.pick("inflight", index)
            assert model.receipt is not None
            self.run(self.broker.nack(model.receipt, requeue=requeue, delay=FAR_S if far else None))
            self.fence(model)
            if not requeue:
                model.state = "done"
                return
            changes: dict[str, Any] = {"attempt": model.envelope.attempt + 1}
            if far:
                changes["not_before"] = utcnow() + timedelta(seconds=FAR_S)
            model.envelope = model.envelope.replace(**changes)
            model.state = "delayed" if far else "pending"
            # Where requeues go to the back of the queue, it ranks from now on.
            model.ready_at = _ready_at(model.envelope) if spec.requeue_keeps_age or far else utcnow()

        @precondition(lambda self: self.in_state("inflight"))
        @rule(index=st.integers(0, 1000))
        def extend(self, index: int) -> None:
            model = self.pick("inflight", index)
            assert model.receipt is not None
            deadline = self.run(self.broker.extend_lease(model.receipt, 60))
            assert deadline > utcnow()

        @precondition(lambda self: self.in_state("inflight"))
        @rule(index=st.integers(0, 1000))
        def dead_letter(self, index: int) -> None:
            model = self.pick("inflight", index)
            assert model.receipt is not None
            self.run(self.broker.dead_letter(model.receipt, reason="model"))
            self.fence(model)
            model.state = "dead"

        # -- repairing --------------------------------------------------------------

        def requeueable(self) -> list[Model]:
            """In-flight messages (held by this broker), and delayed ones where the broker
            can reach messages it does not hold (peek)."""
            reach = self.in_state("delayed") if self.broker.capabilities.peek else []
            return self.in_state("inflight") + reach

        @precondition(lambda self: self.requeueable())
        @rule(index=st.integers(0, 1000))
        def requeue(self, index: int) -> None:
            candidates = sorted(self.requeueable(), key=lambda m: m.envelope.id)
            model = candidates[index % len(candidates)]
            before = utcnow()
            assert self.run(self.broker.requeue(model.envelope.queue, [model.envelope.id])) == 1
            if model.state == "delayed":
                # Ready from now on: ranks among equals by the time it became ready
                model.ready_at = before
                model.envelope = model.envelope.replace(not_before=None)
            elif not spec.requeue_keeps_age:
                model.ready_at = utcnow()  # at the back of its queue, as a nack
            self.fence(model)
            model.state = "pending"

        @precondition(lambda self: self.in_state("dead"))
        @rule(queue=st.sampled_from(QUEUES))
        def replay(self, queue: str) -> None:
            result = self.run(self.broker.replay_dead_letters(queue, limit=1000))
            expected = {m.envelope.id for m in self.in_state("dead", queue)}
            assert {e.envelope.id for e in result.entries} == expected
            for entry in result.entries:
                model = self.messages[entry.envelope.id]
                # A replay publishes a fresh message: same id, attempt 0, a new delivery count
                model.envelope = model.envelope.replace(attempt=0)
                model.state, model.deliveries = "pending", 0

        @rule(queue=st.sampled_from(QUEUES))
        def purge(self, queue: str) -> None:
            # A broker whose purge cannot reach delayed messages purges the ready ones only
            # (spec.purges_delayed False: SQS hides a delayed message until it is due).
            reach = self.in_state("delayed", queue) if spec.purges_delayed else []
            doomed = self.in_state("pending", queue) + reach
            assert self.run(self.broker.purge(queue)) == len(doomed)
            for model in doomed:
                model.state = "done"

        @precondition(lambda self: self.stale)
        @rule(index=st.integers(0, 1000), how=st.sampled_from(["ack", "nack", "drop", "dead", "extend"]))
        def settle_stale(self, index: int, how: str) -> None:
            delivery = self.stale[index % len(self.stale)]
            if how == "extend":
                with pytest.raises(LeaseLost):
                    self.run(self.broker.extend_lease(delivery, 60))
            elif how == "ack":
                self.run(self.broker.ack(delivery))
            elif how == "nack":
                self.run(self.broker.nack(delivery))
            elif how == "drop":
                self.run(self.broker.nack(delivery, requeue=False))
            else:
                self.run(self.broker.dead_letter(delivery, reason="stale"))
            # The invariants below prove nothing changed

        # -- invariants -------------------------------------------------------------

        @invariant()
        def counts_and_ids_match(self) -> None:
            stats = {s.queue: s for s in self.run(self.broker.queue_stats(list(QUEUES)))}
            for queue in QUEUES:
                s = stats[queue]
                expected = tuple(len(self.in_state(state, queue)) for state in ("pending", "delayed", "inflight", "dead"))
                assert counts(s, "pending", "delayed", "inflight", "dead") == expected, f"{queue}: counts diverged from the model"
                if not self.broker.capabilities.peek:
                    continue
                for state in ("pending", "delayed", "inflight"):
                    seen = {i.envelope.id for i in self.run(self.broker.peek(queue, state=state, limit=1000))}
                    assert seen == {m.envelope.id for m in self.in_state(state, queue)}, f"{queue}/{state}: ids diverged"

    return BrokerModel


def test_broker_matches_the_model(broker_spec: AdapterSpec, tmp_path: Path) -> None:
    machine = build_machine(broker_spec, tmp_path)
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=MAX_EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )
