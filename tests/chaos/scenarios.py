"""The scenarios of issue 18 (docs/reliability.md, "Scenarios"): each drives one ``Run``."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

from tests.chaos.proxy import ChaosProxy
from tests.chaos.runner import Run, rng_for

# The redelivery of a frozen worker's task may come this much earlier than a full lease
# after its start (the claim precedes the start a little).
LEASE_SLACK_S = 0.25
READY_TIMEOUT_S = 60.0
RABBITMQ_HEARTBEAT_S = 2


def _of(events: list[dict[str, Any]], type_: str, pid: int | None = None, prefix: str = "") -> set[str]:
    return {e["id"] for e in events if e["type"] == type_ and (pid is None or e["pid"] == pid)
            and not e.get("error") and str(e.get("id", "")).startswith(prefix)}


async def _ready(run: Run, *pids: int) -> None:
    wanted = set(pids)
    await run.until(lambda ev: wanted <= {e["pid"] for e in ev if e["type"] == "ready"}, READY_TIMEOUT_S,
                    f"workers {sorted(wanted)} ready")


async def worker_kills(run: Run, spec: Any) -> None:
    """1. A random worker of four SIGKILLed every 2 s while the producer runs."""
    p = run.profile
    total = max(100, int(p.kill_tasks * spec.load))
    workers = [run.worker("-c", "4") for _ in range(p.kill_workers)]
    await _ready(run, *(w.pid for w in workers))
    producer = run.producer(total, seconds=p.kill_seconds * 0.8)
    rng = rng_for(run)
    kills = 0
    end = time.monotonic() + p.kill_seconds
    while time.monotonic() + p.kill_every <= end:
        await asyncio.sleep(p.kill_every)
        victim = workers.pop(rng.randrange(len(workers)))
        run.kill(victim)
        kills += 1
        workers.append(run.worker("-c", "4"))
    await run.drained(p.drain_timeout)
    await _ready(run, *(w.pid for w in workers))  # a just-spawned worker handles SIGTERM once up
    await run.stop([producer, *workers])
    await run.record_final_state()
    run.extra.update(tasks=total, kills=kills)
    if kills < int(p.kill_seconds / p.kill_every) - 1:
        run.problems.append(f"only {kills} kills")


async def worker_pause(run: Run, spec: Any) -> None:
    """2. A worker SIGSTOPped for 2 x the lease with tasks in their bodies, then SIGCONTed:
    each task is redelivered after its lease, and the frozen worker's late acks and status
    writes change nothing (the checker's final-status check, no third start)."""
    p = run.profile
    gaps: list[float] = []
    late_acks = 0
    url = None
    if run.broker == "rabbitmq":
        # RabbitMQ holds a delivery until its channel closes, whatever Stem's lease says: a
        # frozen process is dropped after about two AMQP heartbeats (docs/rabbitmq.md), so
        # the workers use a 2 s heartbeat instead of the default 15 s.
        sep = "&" if "?" in run.broker_url else "?"
        url = f"{run.broker_url}{sep}heartbeat={RABBITMQ_HEARTBEAT_S}"
        run.extra["rabbitmq_heartbeat_s"] = RABBITMQ_HEARTBEAT_S
    for round_ in range(p.pause_rounds):
        prefix = f"r{round_}-"
        frozen = run.worker("-c", str(max(4, p.pause_tasks)), broker_url=url)
        await _ready(run, frozen.pid)
        run.producer(p.pause_tasks, sleep=1.5, prefix=prefix[:-1], batch=p.pause_tasks)
        await run.until(lambda ev: len(_of(ev, "start", frozen.pid, prefix)) == p.pause_tasks, 60,
                        "the first worker running every task")
        run.pause(frozen)
        paused_at = time.monotonic()
        other = run.worker("-c", str(max(4, p.pause_tasks)), broker_url=url)
        await run.until(lambda ev: len(_of(ev, "ack", other.pid, prefix)) == p.pause_tasks, 90,
                        "the second worker completing every redelivered task")
        await asyncio.sleep(max(0.0, paused_at + 2 * run.lease - time.monotonic()))
        run.resume(frozen)
        # The frozen bodies finish and settle late, against fenced receipts.
        await run.until(lambda ev: len({e["id"] for e in ev if e["type"] == "ack" and e["pid"] == frozen.pid
                                        and e["id"].startswith(prefix)}) == p.pause_tasks, 30,
                        "the frozen worker's late acks")
        await asyncio.sleep(run.lease + 1.0)  # time for a (wrong) third delivery to show
        await run.stop([frozen, other])
        events = run.events()
        late_acks += len({e["id"] for e in events if e["type"] == "ack" and e["pid"] == frozen.pid
                          and e["id"].startswith(prefix)})
        starts: dict[str, list[dict[str, Any]]] = {}
        for e in events:
            if e["type"] == "start" and e["id"].startswith(prefix):
                starts.setdefault(e["id"], []).append(e)
        for task_id, runs in sorted(starts.items()):
            if len(runs) != 2:
                run.problems.append(f"{task_id} started {len(runs)} times, expected 2 (frozen, then redelivered)")
                continue
            gap = runs[1]["t"] - runs[0]["t"]
            gaps.append(gap)
            if gap < run.lease - LEASE_SLACK_S:
                run.problems.append(f"{task_id} was redelivered {gap:.2f} s after its start, before its lease")
    await run.record_final_state()
    run.extra.update(rounds=p.pause_rounds, late_acks=late_acks,
                     redelivery_gap_s=[round(min(gaps), 2), round(max(gaps), 2)] if gaps else None)


SCENARIOS: dict[int, Callable[[Run, Any], Awaitable[None]]] = {1: worker_kills, 2: worker_pause}


def _via(url: str, port: int) -> str:
    """``url`` with its host:port replaced by the proxy's 127.0.0.1:``port``."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


async def network_faults(run: Run, spec: Any) -> None:
    """4. Each worker reaches the broker through its own chaos proxy. One is stalled both
    ways for 2 x the lease, one has its connections dropped, one is partitioned one way
    (worker -> broker) for 2 x the lease: leases move to the others, nothing is lost,
    every duplicate is explained by the cut."""
    p = run.profile
    target = urlsplit(run.broker_url)
    if target.hostname is None or target.port is None:
        raise RuntimeError(f"scenario 4 needs a TCP broker URL with host and port, not {run.broker}")
    proxies = [await ChaosProxy(target.hostname, target.port).start() for _ in range(3)]
    try:
        workers = []
        for proxy in proxies:
            url = _via(run.broker_url, proxy.port)
            backend = url if run.backend_url == run.broker_url else run.backend_url
            workers.append(run.worker("-c", "4", broker_url=url, backend_url=backend))
        await _ready(run, *(w.pid for w in workers))
        fault_s = 2 * run.lease
        total = max(100, int(p.net_tasks * spec.load))
        # Bodies of 0.25 s: each worker is busy (4 running, 4 reserved) when its cut comes.
        producer = run.producer(total, seconds=2 * fault_s + 4, sleep=0.25)
        rng = rng_for(run)
        order = [0, 1, 2]
        rng.shuffle(order)
        stalled, dropped, partitioned = (workers[i] for i in order)
        # Cut the first one while it is busy: its running bodies' acks and renewals stall.
        await run.until(lambda ev: len(_of(ev, "start", stalled.pid)) >= 4, 60, "the stalled worker busy")

        run.history.record("cut", target=stalled.pid, fault="stall")
        proxies[order[0]].stall("both")
        await asyncio.sleep(fault_s)
        proxies[order[0]].heal()
        run.history.record("heal", target=stalled.pid, fault="stall")

        run.history.record("cut", target=dropped.pid, fault="drop")
        proxies[order[1]].drop()
        await asyncio.sleep(run.lease)  # the reconnects and a lease's worth of settling
        run.history.record("heal", target=dropped.pid, fault="drop")

        run.history.record("cut", target=partitioned.pid, fault="partition")
        proxies[order[2]].stall("up")
        await asyncio.sleep(fault_s)
        proxies[order[2]].heal()
        run.history.record("heal", target=partitioned.pid, fault="partition")

        await run.drained(p.drain_timeout)
        await run.stop([producer, *workers])
        await run.record_final_state()
        run.extra.update(tasks=total, proxy_connections=[proxy.connections for proxy in proxies])
        events = run.events()
        first: dict[str, int] = {}
        for e in events:
            if e["type"] == "start":
                first.setdefault(e["id"], e["pid"])
        moved = {task_id for task_id, pid in first.items() if pid == stalled.pid
                 and any(e["type"] == "start" and e["id"] == task_id and e["pid"] != pid for e in events)}
        run.extra["leases_moved_from_stalled"] = len(moved)
        if not moved:
            run.problems.append("no lease moved away from the stalled worker (it held nothing?)")
    finally:
        for proxy in proxies:
            await proxy.close()


SCENARIOS[4] = network_faults
