"""The thread bridge: sync tasks really run side by side, and threads call back into the loop."""

from __future__ import annotations

import asyncio
import threading

from stem_core.worker.threads import ThreadBridge


async def test_jobs_submitted_together_run_in_parallel_threads() -> None:
    # Given a bridge and two jobs that can only finish if both run at once
    bridge = ThreadBridge(asyncio.get_running_loop(), max_threads=4)
    barrier = threading.Barrier(2, timeout=30)

    def meet() -> str:
        barrier.wait()
        return threading.current_thread().name

    try:
        # When both are submitted back to back
        names = await asyncio.wait_for(asyncio.gather(bridge.run(meet), bridge.run(meet)), 60)
    finally:
        bridge.close()
    # Then both finished, on two different daemon threads
    assert len(set(names)) == 2


async def test_threads_call_back_into_the_loop_and_errors_come_back() -> None:
    bridge = ThreadBridge(asyncio.get_running_loop(), max_threads=2)

    async def on_loop(x: int) -> int:
        return x * 2

    def job() -> int:
        return bridge.call(on_loop(21))

    def fails() -> None:
        raise KeyError("missing")

    try:
        assert await asyncio.wait_for(bridge.run(job), 60) == 42
        try:
            await asyncio.wait_for(bridge.run(fails), 60)
        except KeyError as exc:
            assert "missing" in str(exc)
        else:
            raise AssertionError("the job's exception did not come back")
    finally:
        bridge.close()


async def test_an_abandoned_job_does_not_block_new_ones() -> None:
    bridge = ThreadBridge(asyncio.get_running_loop(), max_threads=3)
    release = threading.Event()
    try:
        stuck = bridge.run(release.wait, 30)
        stuck.cancel()  # abandoned, like a sync task past its time limit
        assert await asyncio.wait_for(bridge.run(lambda: "fresh"), 60) == "fresh"
        assert bridge.busy >= 1
    finally:
        release.set()
        bridge.close()
