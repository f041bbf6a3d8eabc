"""The checker: total-queue semantics over a directory of histories (docs/reliability.md).

``python -m tests.chaos.checker DIR`` prints one summary JSON and exits 0, 1 on any
violation, 2 when DIR is not a directory.
"""

from __future__ import annotations

import json
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from tests.chaos.history import CorruptHistory, read_dir

# A fault recorded this much before the start it explains still counts: the runner records
# a fault right before sending the signal, and the victim may record a start in between.
FAULT_SLACK_S = 0.5
# A broker crash may lose the acks of its last moments: PostgreSQL settles with
# synchronous_commit=off (up to 3 x wal_writer_delay, 0.6 s by default), Redis with AOF
# everysec up to a second. An ack this close before a broker fault can be undone by it.
BROKER_ACK_LOSS_S = 1.0
# On a broker whose ack has no reply (the runner's "run" event says so), an ack that
# returned this long before its worker was killed may still have been in the socket.
UNCONFIRMED_ACK_S = 0.5
# A holder's ack that returned later than this after its lease deadline was fenced; the
# clocks are one machine's, so only the time between two reads of it separates them.
LEASE_CLOCK_SLACK_S = 0.01
# How many ids of each class the summary lists.
SAMPLE = 10
FAULTS = ("kill", "pause", "cut")


def check(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary of one run's events (ordered by time); ``valid`` is False on a violation."""
    invoked: dict[str, dict[str, Any]] = {}
    confirmed: set[str] = set()
    failed: set[str] = set()
    indeterminate: set[str] = set()
    starts: dict[str, list[dict[str, Any]]] = defaultdict(list)
    acks: dict[str, list[dict[str, Any]]] = defaultdict(list)
    gave_back: dict[str, list[dict[str, Any]]] = defaultdict(list)
    dead: dict[str, list[dict[str, Any]]] = defaultdict(list)
    faults = _intervals(events)
    broker_faults = _broker_outages(events)
    statuses: dict[str, str] = {}
    drains: list[dict[str, Any]] = []
    # SQS copies a message to fence it (send the copy, then delete the original): a copier
    # killed in between leaves the original to be copied again, a second runnable copy.
    copying: dict[str, dict[int, float]] = defaultdict(dict)
    unconfirmed_acks = any(e["type"] == "run" and e.get("unconfirmed_acks") for e in events)
    lease = next((float(e["lease"]) for e in events if e["type"] == "run" and e.get("lease")), None)
    # When each id's enqueue was confirmed and when any worker began copying it (SQS).
    confirmed_at: dict[str, float] = {}
    recycles: dict[str, list[float]] = defaultdict(list)
    counts: dict[str, int] = defaultdict(int)
    for event in events:
        kind = event["type"]
        counts[kind] += 1
        task_id = event.get("id")
        if kind == "invoke":
            invoked[task_id] = event
        elif kind == "ok":
            confirmed.add(task_id)
            confirmed_at[task_id] = float(event["t"])
        elif kind == "fail":
            failed.add(task_id)
        elif kind == "info":
            indeterminate.add(task_id)
        elif kind == "start":
            starts[task_id].append(event)
        elif kind == "ack":
            if not event.get("error"):
                acks[task_id].append(event)
        elif kind in ("nack", "requeue"):
            gave_back[task_id].append(event)
        elif kind == "dead":
            dead[task_id].append(event)
        elif kind == "status":
            statuses[task_id] = event.get("state")
        elif kind == "drain":
            drains.append(event)
        elif kind == "recycle":
            copying[task_id][int(event["pid"])] = float(event["t"])
            recycles[task_id].append(float(event["t"]))
        elif kind == "recycled":
            copying[task_id].pop(int(event["pid"]), None)

    # A worker killed between its ack and the ack's record leaves no ack line: a final
    # status of succeeded (written before the ack) after an empty drain counts too.
    completed = set(acks) | {i for i, state in statuses.items() if state == "succeeded"}
    dead_ids = set(dead) | {i for i, state in statuses.items() if state == "failed"}
    seen = set(starts) | completed | dead_ids
    lost = confirmed - completed - dead_ids
    unexpected = seen - set(invoked)
    recovered = indeterminate & (completed | dead_ids)
    not_enqueued_but_seen = failed & seen  # a definite failure that ran anyway

    duplicated: dict[str, int] = {}
    unexplained: dict[str, str] = {}
    causes: dict[str, int] = defaultdict(int)
    for task_id, runs in starts.items():
        if len(runs) < 2:
            continue
        duplicated[task_id] = len(runs)
        for earlier, later in zip(runs, runs[1:]):
            cause = _explain(task_id, earlier, later, faults, acks, gave_back, broker_faults, copying.get(task_id, {}),
                             unconfirmed_acks)
            if cause is None and lease is not None and _copied_within_a_lease(
                    confirmed_at.get(task_id), recycles.get(task_id, ()), float(later["t"]), lease):
                cause = "delivered-twice"
            if cause is None:
                unexplained[task_id] = (f"start by pid {later['pid']} at {later['t']:.3f} follows the start by pid "
                                        f"{earlier['pid']} at {earlier['t']:.3f}, which was not killed, paused, "
                                        "cut off, and did not give it back")
                break
            causes[cause] += 1

    wrong_outcome: dict[str, str] = {}
    for task_id, inv in invoked.items():
        expect = inv.get("expect", "ok")
        if expect == "ok" and task_id in dead_ids and task_id not in completed:
            reason = dead[task_id][0].get("reason") if dead.get(task_id) else "status failed"
            wrong_outcome[task_id] = f"dead-lettered ({reason}), expected to complete"
        elif expect == "dead":
            if task_id in completed:
                wrong_outcome[task_id] = "completed, expected a dead letter"
            elif dead.get(task_id) and inv.get("reason") and dead[task_id][0].get("reason") != inv["reason"]:
                wrong_outcome[task_id] = f"dead-lettered as {dead[task_id][0].get('reason')}, expected {inv['reason']}"

    wrong_status: dict[str, str] = {}
    if statuses:
        for task_id in completed:
            state = statuses.get(task_id)
            if state != "succeeded" and invoked.get(task_id, {}).get("expect", "ok") == "ok":
                wrong_status[task_id] = f"final status {state}, expected succeeded"
        for task_id in dead_ids - completed:
            state = statuses.get(task_id)
            if state is not None and state != "failed":
                wrong_status[task_id] = f"final status {state}, expected failed"

    violations: list[str] = []
    drain: dict[str, Any] | None = drains[-1] if drains else None
    if drain is None:
        violations.append("no drain event: the run did not finish its drain")
    for each in drains:  # a run of several phases (scenario 3's variants) drains after each
        leftover = {k: each.get(k) for k in ("pending", "delayed", "inflight") if each.get(k)}
        if leftover:
            violations.append(f"queue not empty after the drain: {leftover}")
        expected_dead = each.get("expected_dead", 0)
        if each.get("dead") is not None and each.get("dead") != expected_dead:
            violations.append(f"{each.get('dead')} dead letters after the drain, expected {expected_dead}")
    for label, ids in (("lost", lost), ("unexpected", unexpected), ("unexplained duplicate", set(unexplained)),
                       ("wrong outcome", set(wrong_outcome)), ("wrong final status", set(wrong_status)),
                       ("failed enqueue that ran", not_enqueued_but_seen)):
        if ids:
            violations.append(f"{len(ids)} {label}: {_sample(ids)}")

    return {
        "valid": not violations,
        "attempted": len(invoked),
        "confirmed": len(confirmed),
        "failed": len(failed),
        "indeterminate": len(indeterminate),
        "completed": len(completed),
        "dead": len(dead_ids),
        "executions": sum(len(r) for r in starts.values()),
        "lost": len(lost),
        "unexpected": len(unexpected),
        "recovered": len(recovered),
        "duplicated": len(duplicated),
        "duplicate_causes": dict(sorted(causes.items())),
        "unexplained_duplicates": len(unexplained),
        "wrong_outcome": len(wrong_outcome),
        "wrong_status": len(wrong_status),
        "faults": {kind: counts[kind] for kind in FAULTS if counts[kind]},
        "drain": {k: v for k, v in (drain or {}).items() if k in ("pending", "delayed", "inflight", "dead", "expected_dead")},
        "samples": {name: _sample(ids) for name, ids in (("lost", lost), ("unexpected", unexpected),
                                                          ("unexplained", set(unexplained)))
                    if ids},
        "explanations": {k: unexplained[k] for k in sorted(unexplained)[:SAMPLE]} | {k: wrong_outcome[k] for k in sorted(wrong_outcome)[:SAMPLE]}
        | {k: wrong_status[k] for k in sorted(wrong_status)[:SAMPLE]},
        "violations": violations,
    }


def _explain(task_id: str, earlier: dict[str, Any], later: dict[str, Any], faults: dict[int, list[tuple[str, float, float]]],
             acks: dict[str, list[dict[str, Any]]], gave_back: dict[str, list[dict[str, Any]]],
             broker_faults: list[tuple[float, float]], copying: dict[int, float],
             unconfirmed_acks: bool = False) -> str | None:
    """Why ``later`` ran although ``earlier`` did: the earlier holder's fault or give-back,
    or a second copy left by a copier killed between its send and its delete."""
    holder, t0, t1 = int(earlier["pid"]), float(earlier["t"]), float(later["t"])
    for copier, began in copying.items():
        if began <= t1 and any(kind == "kill" and began <= at <= t1 for kind, at, _ in faults.get(copier, ())):
            return "copier-killed"
    acked = [float(a["t"]) for a in acks.get(task_id, ()) if int(a["pid"]) == holder and float(a["t"]) < t1]
    if acked:
        # Acknowledged before it ran again: the ack did not hold, which only a broker crash
        # right after it may explain (the crash lost the ack, not the task).
        # The runner records the crash just before it runs the restart command, so an ack
        # can still return (the server not yet down) after that record, until the heal.
        if any(crash - BROKER_ACK_LOSS_S <= ack <= back and crash <= t1 for ack in acked for crash, back in broker_faults):
            return "ack-lost-in-broker-crash"
        # (The kill may be recorded a hair before the ack: the runner records it before it
        # sends the signal, FAULT_SLACK_S.)
        if unconfirmed_acks and any(kind == "kill" and ack - FAULT_SLACK_S <= at <= ack + UNCONFIRMED_ACK_S and at <= t1
                                    for ack in acked for kind, at, _ in faults.get(holder, ())):
            return "ack-lost-in-worker-kill"
        # The holder's ack came back after its lease had run out (a slow settle), and the
        # task ran again after that: the receipt was fenced and the late ack changed nothing.
        if any(a.get("lease_until") is not None and int(a["pid"]) == holder
               and float(a["lease_until"]) + LEASE_CLOCK_SLACK_S < float(a["t"]) < t1
               and float(a["lease_until"]) <= t1 for a in acks.get(task_id, ())):
            return "lease-expired"
        return None
    for event in gave_back.get(task_id, ()):
        if int(event["pid"]) == holder and t0 <= float(event["t"]) <= t1:
            return str(event["type"])
    for kind, began, ended in faults.get(holder, ()):
        if began <= t1 and ended >= t0 - FAULT_SLACK_S:  # the fault overlaps the holder's run
            return kind
    # The holder acked only after the later start, and the last lease deadline it knew (read
    # after its ack) had passed before that start: a holder slowed past its lease (a loaded
    # host, no recorded pause), whose task the broker may then give to another consumer.
    late = [a for a in acks.get(task_id, ()) if int(a["pid"]) == holder and float(a["t"]) >= t1]
    if late and late[0].get("lease_until") is not None and float(late[0]["lease_until"]) + LEASE_CLOCK_SLACK_S < t1:
        return "lease-expired"
    return None


def _copied_within_a_lease(confirmed: float | None, recycles: Any, t1: float, lease: float) -> bool:
    """Whether a worker began copying the task (SQS: it received the message with a
    receive count above one) within one lease of the enqueue's confirmation and before
    the later start: no holder's lease can have run out yet, so the broker handed one
    message to two receivers inside its visibility timeout (SQS standard queues may,
    moto under load does), and the copy that fences the other receipt runs again."""
    return confirmed is not None and any(confirmed <= r <= min(t1, confirmed + lease) for r in recycles)


def _broker_outages(events: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """Each broker crash as (recorded, healed): the runner cuts every worker at once with
    ``fault: broker`` and heals them together (healed = inf when it never did)."""
    cuts = sorted({float(e["t"]) for e in events if e["type"] == "cut" and e.get("fault") == "broker"})
    heals = sorted({float(e["t"]) for e in events if e["type"] == "heal" and e.get("fault") == "broker"})
    return [(cut, next((h for h in heals if h >= cut), math.inf)) for cut in cuts]


def _intervals(events: list[dict[str, Any]]) -> dict[int, list[tuple[str, float, float]]]:
    """Each process's faults as (kind, began, ended): a kill lasts for ever, a pause until
    its resume, a cut until its heal (for ever when never ended)."""
    ends = {"pause": "resume", "cut": "heal"}
    out: dict[int, list[tuple[str, float, float]]] = defaultdict(list)
    open_: dict[tuple[int, str], float] = {}
    for event in events:
        kind = event["type"]
        if kind not in (*FAULTS, *ends.values()):
            continue
        target = int(event["target"])
        t = float(event["t"])
        if kind == "kill":
            out[target].append(("kill", t, math.inf))
        elif kind in ends:
            open_[(target, kind)] = t
        else:
            start_kind = "pause" if kind == "resume" else "cut"
            began = open_.pop((target, start_kind), None)
            if began is not None:
                out[target].append((start_kind, began, t))
    for (target, kind), began in open_.items():
        out[target].append((kind, began, math.inf))
    return out


def _sample(ids: set[str]) -> list[str]:
    return sorted(ids)[:SAMPLE]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not Path(args[0]).is_dir():
        print("usage: python -m tests.chaos.checker DIR (a directory of *.jsonl histories)", file=sys.stderr)
        return 2
    try:
        events = read_dir(args[0])
    except CorruptHistory as exc:
        print(json.dumps({"valid": False, "violations": [f"corrupt history: {exc}"]}))
        return 1
    summary = check(events)
    print(json.dumps(summary, sort_keys=False))
    return 0 if summary["valid"] else 1


if __name__ == "__main__":
    sys.exit(main())
