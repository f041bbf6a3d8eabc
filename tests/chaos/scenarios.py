"""The scenarios of issue 18 (docs/reliability.md, "Scenarios"): each drives one ``Run``."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

from tests.chaos.proxy import ChaosProxy
from tests.chaos.runner import Run, rng_for
from tests.chaos.server_memory import rss_mb, server_memory_mb

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
    kills, late = 0, 0.0
    # Kills on a fixed schedule (start + k x kill_every), so the time a kill and its
    # replacement take on a loaded machine does not push the later ones out of the window.
    start = time.monotonic()
    for k in range(1, int(p.kill_seconds / p.kill_every) + 1):
        await asyncio.sleep(max(0.0, start + k * p.kill_every - time.monotonic()))
        late = max(late, time.monotonic() - (start + k * p.kill_every))
        victim = workers.pop(rng.randrange(len(workers)))
        run.kill(victim)
        kills += 1
        workers.append(run.worker("-c", "4"))
    await run.drained(p.drain_timeout)
    await _ready(run, *(w.pid for w in workers))  # a just-spawned worker handles SIGTERM once up
    await run.stop([producer, *workers])
    await run.record_final_state()
    run.extra.update(tasks=total, kills=kills, kills_late_s=round(late, 2))
    if late > p.kill_every:
        run.problems.append(f"the kills fell {late:.1f} s behind their schedule (more than one interval)")


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
        finished = _of(run.events(), "finish", frozen.pid, prefix)
        if finished:
            # The bodies sleep 1.5 s: a runner starved of CPU noticed the starts too late,
            # and a pause of a worker holding nothing proves nothing. Say so, not "lost".
            run.problems.append(f"round {round_}: the pause came after {len(finished)} of {p.pause_tasks} bodies had "
                                "finished (the runner reacted too late: an overloaded machine); round skipped")
            run.resume(frozen)
            await run.stop([frozen])
            continue
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


# Scenario 5's bad envelopes per kind (ci; full x10 is the same mix). API kinds go through
# ``enqueue`` (the worker dead-letters them); the others are written straight into storage.
POISON_MIX = {"malformed": 56, "mistyped": 56, "oversized": 8, "unregistered": 20, "bad-args": 20}
API_REASONS = {"unregistered": "unregistered-task", "bad-args": "invalid-envelope"}
# Worker memory may end this much above its baseline (MiB) after the drain.
RSS_SLACK_MB = 64.0


async def poison(run: Run, spec: Any) -> None:
    """5. 160 bad envelopes among 1,000 good ones: no worker restart, each bad one
    dead-lettered with a specific reason, every good one completes, worker memory back
    near its baseline."""
    from stem_core import Stem
    from tests.chaos.poison import KEY_RE, inject, payload

    p = run.profile
    scale = int(p.scale)
    good = max(100, int(1000 * scale * spec.load))
    workers = [run.worker("-c", "4") for _ in range(2)]
    await _ready(run, *(w.pid for w in workers))
    await asyncio.sleep(1.0)  # let the worker settle before its baseline is read
    baseline = {w.pid: rss_mb(w.pid) for w in workers}
    producer = run.producer(good, seconds=4.0, sleep=0.002)
    app = Stem(broker=run.broker_url, backend=run.backend_url, namespace=run.namespace)  # no tasks registered
    number = 0
    expected_dead = 0
    try:
        await app.connect()
        for kind, count in POISON_MIX.items():
            keys = [f"poison-x{number + n:04d}" for n in range(count * scale)]
            number += len(keys)
            expected_dead += len(keys)
            for key in keys:
                run.history.record("invoke", id=key, expect="dead", kind=kind, reason=API_REASONS.get(kind))
            if kind in API_REASONS:
                name, args = ("chaos.nobody", {}) if kind == "unregistered" else ("chaos.work", {"i": "one", "bogus": 2})
                await app.enqueue_many([(name, args, {"task_id": key}) for key in keys])
            else:
                await inject(run.broker, run.broker_url, run.namespace, [(k, payload(kind, k, run.broker)) for k in keys])
            for key in keys:
                run.history.record("ok", id=key)
            await asyncio.sleep(0.3)

        await run.drained(p.drain_timeout)  # every good one acked, every API-bad one dead-lettered

        async def dead_count() -> int:
            return (await app.broker.queue_stats(["default"]))[0].dead or 0

        deadline = time.monotonic() + p.drain_timeout
        while await dead_count() < expected_dead and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        alive = [w.pid for w in workers if w.alive()]
        if len(alive) != len(workers):
            run.problems.append(f"a worker died: alive {alive} of {[w.pid for w in workers]}")
        await asyncio.sleep(1.0)
        after = {w.pid: rss_mb(w.pid) for w in workers}
        # Every dead letter, matched to its key by the key in its text.
        offset: int | None = 0
        reasons: dict[str, int] = {}
        while offset is not None:
            page = await app.broker.list_dead_letters("default", limit=100, offset=offset)
            for entry in page.entries:
                text = json.dumps(entry.envelope.to_dict(), default=str)
                match = KEY_RE.search(entry.envelope.id) or KEY_RE.search(text)
                reasons[entry.reason.split(":")[0]] = reasons.get(entry.reason.split(":")[0], 0) + 1
                if match is None:
                    run.problems.append(f"a dead letter without a key: {entry.envelope.id} {entry.reason}")
                    continue
                run.history.record("dead", id=match.group(0), reason=entry.reason, listed=True)
                if not entry.reason or entry.reason in ("error", "unknown"):
                    run.problems.append(f"{match.group(0)} dead-lettered without a specific reason: {entry.reason!r}")
            offset = page.next_offset
    finally:
        await app.close()
    await run.stop([producer, *workers])
    await run.record_final_state(expected_dead=expected_dead)
    growth = {pid: round(after[pid] - baseline[pid], 1) for pid in baseline
              if after.get(pid) is not None and baseline.get(pid) is not None}
    for pid, grown in growth.items():
        if grown > RSS_SLACK_MB:
            run.problems.append(f"worker {pid} ended {grown} MiB above its baseline (bound {RSS_SLACK_MB:g})")
    run.extra.update(good=good, bad=expected_dead, dead_reasons=reasons,
                     rss_mb={"baseline": [round(v or 0, 1) for v in baseline.values()],
                             "after": [round(v or 0, 1) for v in after.values()]})


SCENARIOS[5] = poison


# Scenario 6: a start may precede its not_before by this much (clock read rounding).
EARLY_SLACK_S = 0.01
# Worker memory may grow this much (MiB) while the tasks due at once are drained.
DUE_RSS_BOUND_MB = 100.0
# The drain of the tasks due at once may take as long as this rate (one worker, -c 8)
# needs: a full-profile PostgreSQL run drained 200,000 at ~160/s on a loaded machine.
DUE_DRAIN_FLOOR_PER_S = 100.0


async def time_due(run: Run, spec: Any) -> None:
    """6. Nothing starts before its not_before (200 tasks due 1-4 s after their enqueue),
    and N tasks falling due at the same instant do not grow the worker's memory by more
    than DUE_RSS_BOUND_MB."""
    p = run.profile
    many = max(200, int(p.due_tasks * spec.load))
    worker = run.worker("-c", "8")
    await _ready(run, worker.pid)
    await asyncio.sleep(1.0)
    baseline = rss_mb(worker.pid) or 0.0
    spread = run.producer(200, prefix="a", batch=50, extra=("--due-in", "1", "4"))
    due_at = time.time() + max(8.0, many / 1000)  # 20,000 are enqueued in 2-6 s here
    burst = run.producer(many, prefix="b", sleep=0.0, batch=500, extra=("--due-at", f"{due_at:.3f}"))
    peak = baseline

    async def sample() -> None:
        nonlocal peak
        while worker.alive():
            peak = max(peak, rss_mb(worker.pid) or 0.0)
            await asyncio.sleep(0.25)

    sampler = asyncio.ensure_future(sample())
    try:
        await run.drained(max(p.drain_timeout, many / DUE_DRAIN_FLOOR_PER_S))
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
    await run.stop([spread, burst, worker])
    await run.record_final_state()
    events = run.events()
    not_before = {e["id"]: e["not_before"] for e in events if e["type"] == "invoke" and "not_before" in e}
    early = sorted(e["id"] for e in events if e["type"] == "start" and e["t"] < not_before.get(e["id"], 0) - EARLY_SLACK_S)
    late = [e["t"] - not_before[e["id"]] for e in events if e["type"] == "start" and e["id"] in not_before]
    if early:
        run.problems.append(f"{len(early)} tasks started before their not_before: {early[:10]}")
    if peak - baseline > DUE_RSS_BOUND_MB:
        run.problems.append(f"worker memory grew {peak - baseline:.1f} MiB (bound {DUE_RSS_BOUND_MB:g})")
    run.extra.update(due_at_once=many, early_starts=len(early), rss_mb={"baseline": round(baseline, 1), "peak": round(peak, 1)},
                     start_delay_s={"max": round(max(late), 2) if late else None})


SCENARIOS[6] = time_due


async def broker_faults(run: Run, spec: Any) -> None:
    """3. The broker restarts (or crashes) while producer and workers run: nothing confirmed
    is lost. Workers that exit meanwhile are replaced; every worker counts as cut off from
    the start of the fault until a lease after the broker is back (its renewals and acks
    could not reach it), which is what explains the duplicates."""
    from tests.chaos import broker_faults as bf

    if not bf.enabled():
        raise RuntimeError(f"scenario 3 restarts brokers: set {bf.ENABLE_ENV}=1 (never against shared servers in use)")
    p = run.profile
    private: "bf.PrivateRedis | None" = None
    variants = ["everysec", "always"] if run.broker == "redis" else [run.broker]
    total = max(100, int(p.kill_tasks * spec.load))
    hows: list[str] = []
    try:
        for index, variant in enumerate(variants):
            if run.broker == "redis":
                private = bf.PrivateRedis(run.dir, variant)
                await private.start()
                run.broker_url = run.backend_url = private.url
            workers = [run.worker("-c", "4") for _ in range(3)]
            await _ready(run, *(w.pid for w in workers))
            producer = run.producer(total, seconds=8.0, prefix=f"v{index}")
            await asyncio.sleep(3.0)
            for w in workers:
                run.history.record("cut", target=w.pid, fault="broker")
            if run.broker == "redis":
                assert private is not None
                hows.append(await private.restart())
            elif run.broker == "postgres":
                hows.append(await bf.restart_postgres())
            elif run.broker == "rabbitmq":
                hows.append(await bf.restart_rabbitmq())
            elif run.broker == "sqlite":
                # The writers die mid-transaction: every worker is SIGKILLed at once.
                for w in list(workers):
                    run.kill(w)
                    workers.remove(w)
                    workers.append(run.worker("-c", "4"))
                hows.append("all writers SIGKILLed")
            else:
                raise RuntimeError(f"scenario 3 has no broker fault for {run.broker}")
            await asyncio.sleep(run.lease)
            for w in workers:
                run.history.record("heal", target=w.pid, fault="broker")
            # Replace workers that gave up while the broker was away.
            for w in list(workers):
                if not w.alive():
                    workers.remove(w)
                    workers.append(run.worker("-c", "4"))
            await run.drained(p.drain_timeout)
            await run.stop([producer, *workers])
            await run.record_final_state(prefix=f"v{index}")
            if private is not None:
                private.stop()
        if run.broker == "sqlite":
            run.extra["integrity_check"] = result = bf.sqlite_integrity(run.broker_url)
            if result != "ok":
                run.problems.append(f"PRAGMA integrity_check: {result}")
        run.extra.update(broker_faults=hows, tasks_per_variant=total)
    finally:
        if private is not None:
            private.stop()


SCENARIOS[3] = broker_faults


# Scenario 7: the producer's rate (tasks/s, before spec.load), how often a figure is taken,
# and the bounds: each window's completions at least this share of the median window,
# the backlog at most this many seconds of production, a worker's RSS growth in MiB.
SOAK_RATE = 50.0
SOAK_WINDOW_S = 5.0
SOAK_MIN_SHARE = 0.3
SOAK_BACKLOG_S = 15.0
SOAK_RSS_GROWTH_MB = 50.0
# The broker server's memory may grow this much (MiB) from the first sample after the
# warm-up to the last, plus SOAK_SERVER_BYTES_PER_RESULT for each task completed in
# between: every result is stored for the default day (Redis: ~1.3 KiB each with its
# indexes; RabbitMQ's soak stores its results on the same Redis when they run side by side).
SOAK_SERVER_GROWTH_MB = 64.0
SOAK_SERVER_BYTES_PER_RESULT = 4096


async def soak(run: Run, spec: Any) -> None:
    """7. Soak: a steady producer for 2 minutes (20 in full) while a random worker of four is
    SIGKILLed every 10 s: completions per 5 s window steady, backlog bounded, the memory
    of each worker flat over its life and the broker server's flat after the warm-up."""
    p = run.profile
    seconds = p.soak_seconds
    rate = SOAK_RATE * spec.load
    workers = [run.worker("-c", "4") for _ in range(4)]
    await _ready(run, *(w.pid for w in workers))
    producer = run.producer(int(rate * seconds), seconds=seconds, batch=max(1, int(rate / 5)), sleep=0.01)
    rng = rng_for(run)
    rss: dict[int, list[float]] = {w.pid: [] for w in workers}
    windows: list[int] = []
    backlog: list[int] = []
    server: list[float | None] = []
    acked_before = 0
    began = time.monotonic()
    next_kill = began + 10.0
    while time.monotonic() - began < seconds:
        await asyncio.sleep(SOAK_WINDOW_S)
        events = run.events()
        confirmed = {e["id"] for e in events if e["type"] == "ok"}
        acked = {e["id"] for e in events if e["type"] == "ack" and not e.get("error")}
        windows.append(len(acked) - acked_before)
        acked_before = len(acked)
        backlog.append(len(confirmed - acked))
        server.append(await asyncio.to_thread(server_memory_mb, run.broker, run.broker_url))
        for w in workers:
            value = rss_mb(w.pid)
            if value is not None:
                rss.setdefault(w.pid, []).append(value)
        if time.monotonic() >= next_kill:
            next_kill += 10.0
            victim = workers.pop(rng.randrange(len(workers)))
            run.kill(victim)
            workers.append(run.worker("-c", "4"))
    await run.drained(p.drain_timeout)
    await _ready(run, *(w.pid for w in workers))
    await run.stop([producer, *workers])
    await run.record_final_state()
    steady = windows[2:-1]  # after the warm-up, before the producer's end
    median = sorted(steady)[len(steady) // 2] if steady else 0
    if steady and min(steady) < SOAK_MIN_SHARE * median:
        run.problems.append(f"throughput dipped to {min(steady)} per {SOAK_WINDOW_S:g} s (median {median})")
    if backlog and max(backlog) > SOAK_BACKLOG_S * rate:
        run.problems.append(f"backlog reached {max(backlog)} (bound {SOAK_BACKLOG_S * rate:.0f})")
    growth = {pid: round(values[-1] - values[0], 1) for pid, values in rss.items() if len(values) >= 2}
    for pid, grown in growth.items():
        if grown > SOAK_RSS_GROWTH_MB:
            run.problems.append(f"worker {pid} grew {grown} MiB over its life (bound {SOAK_RSS_GROWTH_MB:g})")
    sampled = [m for m in server[2:] if m is not None]  # after the warm-up
    server_growth = round(sampled[-1] - sampled[0], 1) if len(sampled) >= 2 else None
    server_bound = SOAK_SERVER_GROWTH_MB + sum(windows[2:]) * SOAK_SERVER_BYTES_PER_RESULT / 2**20
    if server_growth is not None and server_growth > server_bound:
        run.problems.append(f"the {run.broker} server grew {server_growth} MiB during the soak (bound {server_bound:.0f}: "
                            f"{SOAK_SERVER_GROWTH_MB:g} + {SOAK_SERVER_BYTES_PER_RESULT} bytes per result stored)")
    run.extra.update(soak_seconds=seconds, rate=rate, completions_per_window=windows, backlog_max=max(backlog, default=0),
                     rss_growth_mb_max=max(growth.values(), default=0.0),
                     server_mb={"first": sampled[0] if sampled else None, "last": sampled[-1] if sampled else None,
                                "max": max(sampled, default=None)})


SCENARIOS[7] = soak
