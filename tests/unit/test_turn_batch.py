"""``TurnBatch``: calls of one event-loop turn are sent together, each caller gets its own outcome."""

from __future__ import annotations

import asyncio

from stem_core._aio import TurnBatch
from stem_core.errors import StemError


class Recorder:
    def __init__(self) -> None:
        self.sends: list[list[int]] = []
        self.gate: asyncio.Event | None = None

    async def send(self, items: list[int]) -> list[object]:
        self.sends.append(list(items))
        if self.gate is not None:
            await self.gate.wait()
        return [StemError(f"bad {i}") if i < 0 else i * 10 for i in items]


async def test_calls_of_one_turn_go_out_in_one_send_in_call_order() -> None:
    rec = Recorder()
    batch: TurnBatch[int] = TurnBatch(rec.send)
    results = await asyncio.gather(*(batch.add(i) for i in (1, 2, 3)))
    assert results == [10, 20, 30] and rec.sends == [[1, 2, 3]]


async def test_a_lone_call_goes_out_alone_and_a_later_turn_gets_its_own_send() -> None:
    rec = Recorder()
    batch: TurnBatch[int] = TurnBatch(rec.send)
    assert await batch.add(4) == 40
    assert await batch.add(5) == 50
    assert rec.sends == [[4], [5]]


async def test_an_exception_outcome_reaches_only_its_caller() -> None:
    rec = Recorder()
    batch: TurnBatch[int] = TurnBatch(rec.send)
    results = await asyncio.gather(batch.add(1), batch.add(-1), batch.add(2), return_exceptions=True)
    assert results[0] == 10 and results[2] == 20
    assert isinstance(results[1], StemError) and str(results[1]) == "bad -1"


async def test_a_send_that_raises_fails_every_caller_of_its_batch() -> None:
    async def broken(items: list[int]) -> list[object]:
        raise StemError("server gone")

    batch: TurnBatch[int] = TurnBatch(broken)
    results = await asyncio.gather(batch.add(1), batch.add(2), return_exceptions=True)
    assert [str(r) for r in results] == ["server gone", "server gone"]


async def test_drain_waits_for_batches_in_flight_and_starts_this_turns() -> None:
    rec = Recorder()
    rec.gate = asyncio.Event()
    batch: TurnBatch[int] = TurnBatch(rec.send)
    first = asyncio.ensure_future(batch.add(1))
    await asyncio.sleep(0)  # the caller queues its item; the batch is sent at the end of the turn
    drained = asyncio.ensure_future(batch.drain())
    await asyncio.sleep(0.01)
    assert rec.sends == [[1]] and not drained.done()  # in flight: drain waits
    rec.gate.set()
    await drained
    assert first.done() and first.result() == 10


async def test_a_sender_returning_too_few_outcomes_fails_every_caller_instead_of_hanging() -> None:
    async def short(items: list[int]) -> list[object]:
        return [1]

    batch: TurnBatch[int] = TurnBatch(short)
    results = await asyncio.wait_for(asyncio.gather(batch.add(1), batch.add(2), return_exceptions=True), 10)
    assert all(isinstance(r, RuntimeError) and "got 1 outcomes" in str(r) for r in results)
