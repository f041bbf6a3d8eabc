"""The checker on hand-made histories: one per violation, and the explained cases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.chaos.checker import check, main
from tests.chaos.history import CorruptHistory, History, HistoryTail, read_dir

P, W1, W2, R = 100, 201, 202, 1  # producer, two workers, the runner


def ev(t: float, type_: str, pid: int, **fields: Any) -> dict[str, Any]:
    return {"t": t, "type": type_, "pid": pid, "proc": "x", **fields}


def enqueued(task_id: str, t: float = 0.0, **fields: Any) -> list[dict[str, Any]]:
    return [ev(t, "invoke", P, id=task_id, **fields), ev(t + 0.01, "ok", P, id=task_id)]


def ran(task_id: str, pid: int, t: float, *, ack: bool = True) -> list[dict[str, Any]]:
    events = [ev(t, "start", pid, id=task_id, attempt=0), ev(t + 0.1, "finish", pid, id=task_id)]
    return events + ([ev(t + 0.2, "ack", pid, id=task_id)] if ack else [])


def drained(t: float = 100.0, **counts: int) -> list[dict[str, Any]]:
    return [ev(t, "drain", R, **{"pending": 0, "delayed": 0, "inflight": 0, "dead": 0, "expected_dead": 0, **counts})]


def run(*parts: list[dict[str, Any]]) -> dict[str, Any]:
    events = sorted((e for part in parts for e in part), key=lambda e: e["t"])
    return check(events)


def test_a_clean_history_is_valid() -> None:
    summary = run(enqueued("a"), enqueued("b"), ran("a", W1, 1.0), ran("b", W2, 1.0), drained())
    assert summary["valid"], summary["violations"]
    assert (summary["confirmed"], summary["completed"], summary["lost"], summary["duplicated"]) == (2, 2, 0, 0)


def test_a_confirmed_task_never_acked_is_lost() -> None:
    summary = run(enqueued("a"), enqueued("b"), ran("a", W1, 1.0), ran("b", W1, 2.0, ack=False), drained())
    assert not summary["valid"]
    assert summary["lost"] == 1 and summary["samples"]["lost"] == ["b"]


def test_an_indeterminate_enqueue_that_never_ran_is_not_lost_and_one_that_ran_is_recovered() -> None:
    summary = run([ev(0, "invoke", P, id="a"), ev(0.1, "info", P, id="a", error="timeout")],
                  [ev(0, "invoke", P, id="b"), ev(0.1, "info", P, id="b", error="timeout")], ran("b", W1, 1.0), drained())
    assert summary["valid"], summary["violations"]
    assert (summary["lost"], summary["recovered"], summary["indeterminate"]) == (0, 1, 2)


def test_a_task_nobody_enqueued_is_unexpected() -> None:
    summary = run(enqueued("a"), ran("a", W1, 1.0), ran("ghost", W1, 2.0), drained())
    assert not summary["valid"] and summary["unexpected"] == 1 and summary["samples"]["unexpected"] == ["ghost"]


def test_a_definitely_failed_enqueue_that_ran_is_a_violation() -> None:
    summary = run([ev(0, "invoke", P, id="a"), ev(0.1, "fail", P, id="a", error="too big")], ran("a", W1, 1.0), drained())
    assert not summary["valid"] and any("failed enqueue that ran" in v for v in summary["violations"])


def test_a_duplicate_without_a_cause_is_unexplained() -> None:
    summary = run(enqueued("a"), ran("a", W1, 1.0, ack=False), ran("a", W2, 5.0), drained())
    assert not summary["valid"]
    assert summary["duplicated"] == 1 and summary["unexplained_duplicates"] == 1


def test_a_duplicate_after_an_ack_is_unexplained_even_if_the_holder_died_later() -> None:
    summary = run(enqueued("a"), ran("a", W1, 1.0), [ev(2.0, "kill", R, target=W1)], ran("a", W2, 5.0), drained())
    assert summary["unexplained_duplicates"] == 1 and not summary["valid"]


def test_an_ack_just_before_a_broker_crash_may_be_lost_with_it() -> None:
    # PostgreSQL settles with synchronous_commit=off: a crash 0.3 s after an ack may undo it
    crash = [ev(1.5, "cut", R, target=W1, fault="broker"), ev(3.0, "heal", R, target=W1, fault="broker")]
    summary = run(enqueued("a"), ran("a", W1, 1.0), crash, ran("a", W2, 4.0), drained())
    assert summary["valid"], summary["violations"]
    assert summary["duplicate_causes"] == {"ack-lost-in-broker-crash": 1}
    # but an ack long before the crash, or a cut that is no broker crash, explains nothing
    early = [ev(5.0, "cut", R, target=W1, fault="broker")]
    assert run(enqueued("b"), ran("b", W1, 1.0), early, ran("b", W2, 6.0), drained())["unexplained_duplicates"] == 1
    cut = [ev(1.5, "cut", R, target=W1, fault="partition")]
    assert run(enqueued("c"), ran("c", W1, 1.0), cut, ran("c", W2, 4.0), drained())["unexplained_duplicates"] == 1
    # an ack that returned after the crash was recorded (the restart command had not yet
    # taken the server down) and before it came back may be lost too
    during = [ev(1.15, "cut", R, target=W1, fault="broker"), ev(5.0, "heal", R, target=W1, fault="broker")]
    summary = run(enqueued("d"), ran("d", W1, 1.0), during, ran("d", W2, 6.0), drained())
    assert summary["duplicate_causes"] == {"ack-lost-in-broker-crash": 1}
    # but not one made after the broker was back
    back = [ev(0.2, "cut", R, target=W1, fault="broker"), ev(0.8, "heal", R, target=W1, fault="broker")]
    assert run(enqueued("e"), ran("e", W1, 1.0), back, ran("e", W2, 6.0), drained())["unexplained_duplicates"] == 1


def test_on_a_broker_without_ack_replies_an_ack_just_before_its_workers_kill_may_be_lost() -> None:
    # RabbitMQ's basic.ack has no reply: W1 recorded its ack, was killed 10 ms later, and
    # the ack never reached the server
    amqp = [ev(0.0, "run", R, broker="rabbitmq", unconfirmed_acks=True)]
    kill = [ev(1.21, "kill", R, target=W1)]
    summary = run(amqp, enqueued("a"), ran("a", W1, 1.0), kill, ran("a", W2, 1.5), drained())
    assert summary["valid"], summary["violations"]
    assert summary["duplicate_causes"] == {"ack-lost-in-worker-kill": 1}
    # also when the kill was recorded just before the ack (the runner records it, then sends
    # SIGKILL; a CI run had the ack recorded 33 us after the kill record)
    first = [ev(1.1999, "kill", R, target=W1)]
    early = run(amqp, enqueued("d"), ran("d", W1, 1.0), first, ran("d", W2, 1.5), drained())
    assert early["valid"] and early["duplicate_causes"] == {"ack-lost-in-worker-kill": 1}, early["violations"]
    # not on a broker whose ack returns after the server has it, nor long after the ack
    assert run(enqueued("b"), ran("b", W1, 1.0), kill, ran("b", W2, 1.5), drained())["unexplained_duplicates"] == 1
    late = [ev(3.0, "kill", R, target=W1)]
    assert run(amqp, enqueued("c"), ran("c", W1, 1.0), late, ran("c", W2, 4.0), drained())["unexplained_duplicates"] == 1


def test_a_second_copy_left_by_a_copier_killed_mid_recycle_is_explained() -> None:
    # SQS: W3 received the expired original and sent a copy (W1 ran and acked it), then was
    # killed before its delete: the original came back and was copied again (W2 ran it).
    W3 = 203
    copier = [ev(0.5, "recycle", W3, id="a"), ev(0.9, "kill", R, target=W3)]
    summary = run(enqueued("a"), copier, ran("a", W1, 1.0), ran("a", W2, 31.0), drained())
    assert summary["valid"], summary["violations"]
    assert summary["duplicate_causes"] == {"copier-killed": 1}
    # a copy that completed (recycled) or a copier that was never killed explains nothing
    done = [ev(0.5, "recycle", W3, id="b"), ev(0.6, "recycled", W3, id="b"), ev(0.9, "kill", R, target=W3)]
    assert run(enqueued("b"), done, ran("b", W1, 1.0), ran("b", W2, 31.0), drained())["unexplained_duplicates"] == 1
    alive = [ev(0.5, "recycle", W3, id="c")]
    assert run(enqueued("c"), alive, ran("c", W1, 1.0), ran("c", W2, 31.0), drained())["unexplained_duplicates"] == 1
    # nor a copier killed after the second run started
    late = [ev(0.5, "recycle", W3, id="d"), ev(40.0, "kill", R, target=W3)]
    assert run(enqueued("d"), late, ran("d", W1, 1.0), ran("d", W2, 31.0), drained())["unexplained_duplicates"] == 1


def test_duplicates_after_a_kill_a_pause_a_cut_or_a_retry_are_explained() -> None:
    summary = run(
        enqueued("k"), ran("k", W1, 1.0, ack=False), [ev(1.5, "kill", R, target=W1)], ran("k", W2, 4.0),
        enqueued("p"), ran("p", 301, 1.0, ack=False), [ev(1.2, "pause", R, target=301)], ran("p", W2, 4.5),
        [ev(9.0, "resume", R, target=301), ev(9.1, "ack", 301, id="p")],  # the late ack of the paused holder
        enqueued("c"), ran("c", 302, 1.0, ack=False), [ev(1.3, "cut", R, target=302, fault="partition")], ran("c", W2, 5.0),
        enqueued("r"), ran("r", W1, 0.5, ack=False), [ev(0.8, "nack", W1, id="r", requeue=True)], ran("r", W1, 2.0),
        drained(),
    )
    assert summary["valid"], summary["violations"]
    assert summary["duplicated"] == 4 and summary["unexplained_duplicates"] == 0
    assert summary["duplicate_causes"] == {"cut": 1, "kill": 1, "nack": 1, "pause": 1}


def test_a_start_during_a_cut_is_explained_by_it() -> None:
    # A prefetched delivery starts while its worker is cut off from the broker: its lease
    # cannot be renewed, so another worker runs it too.
    summary = run(enqueued("a"), [ev(0.5, "cut", R, target=W1, fault="stall")], ran("a", W1, 1.0, ack=False),
                  ran("a", W2, 4.0), [ev(6.0, "heal", R, target=W1, fault="stall")], drained())
    assert summary["valid"], summary["violations"]
    assert summary["duplicate_causes"] == {"cut": 1}


def test_a_fault_of_another_process_explains_nothing() -> None:
    summary = run(enqueued("a"), ran("a", W1, 1.0, ack=False), [ev(1.5, "kill", R, target=W2)], ran("a", W2, 4.0), drained())
    assert summary["unexplained_duplicates"] == 1


def test_a_fault_long_before_the_first_start_explains_nothing() -> None:
    summary = run(enqueued("a"), [ev(0.1, "pause", R, target=W1), ev(0.2, "resume", R, target=W1)],
                  ran("a", W1, 3.0, ack=False), ran("a", W2, 6.0), drained())
    assert summary["unexplained_duplicates"] == 1


def test_a_queue_left_non_empty_or_with_unexpected_dead_letters_is_a_violation() -> None:
    leftover = run(enqueued("a"), ran("a", W1, 1.0), drained(inflight=1))
    assert not leftover["valid"] and "queue not empty" in leftover["violations"][0]
    extra_dead = run(enqueued("a"), ran("a", W1, 1.0), drained(dead=1))
    assert not extra_dead["valid"] and "dead letters after the drain" in extra_dead["violations"][0]
    no_drain = run(enqueued("a"), ran("a", W1, 1.0))
    assert not no_drain["valid"] and "no drain" in no_drain["violations"][0]


def test_poison_must_be_dead_lettered_with_its_reason_and_good_tasks_must_not() -> None:
    good = run(enqueued("bad", expect="dead", reason="invalid-envelope"),
               [ev(1.0, "dead", W1, id="bad", reason="invalid-envelope")], drained(dead=1, expected_dead=1))
    assert good["valid"], good["violations"]
    wrong_reason = run(enqueued("bad", expect="dead", reason="invalid-envelope"),
                       [ev(1.0, "dead", W1, id="bad", reason="unregistered-task")], drained(dead=1, expected_dead=1))
    ran_anyway = run(enqueued("bad", expect="dead"), ran("bad", W1, 1.0), drained(expected_dead=1))
    good_dead = run(enqueued("a"), [ev(1.0, "dead", W1, id="a", reason="max-retries-exhausted")], drained(dead=1))
    for summary in (wrong_reason, ran_anyway, good_dead):
        assert not summary["valid"] and summary["wrong_outcome"] == 1


def test_a_late_status_write_that_changed_the_final_status_is_a_violation() -> None:
    events = [enqueued("a"), ran("a", W1, 1.0), [ev(50, "status", R, id="a", state="running")], drained()]
    summary = run(*events)
    assert not summary["valid"] and summary["wrong_status"] == 1


def test_history_survives_sigkill_of_the_writer_and_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    # Given a child that records 200 events and is SIGKILLed right after the last write()
    code = ("import os, signal\nfrom tests.chaos.history import History\nh = History(os.environ['D'], 'worker')\n"
            "for i in range(200):\n    h.record('start', id=str(i))\nos.kill(os.getpid(), signal.SIGKILL)\n")
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, env={**os.environ, "D": str(tmp_path), "PYTHONPATH": str(root)})
    assert proc.returncode == -9
    # Then every line is there; and a torn last line (killed inside write()) is skipped
    [path] = tmp_path.glob("worker-*.jsonl")
    with open(path, "ab") as handle:
        handle.write(b'{"t": 1, "ty')
    assert [e["id"] for e in read_dir(tmp_path)] == [str(i) for i in range(200)]


def test_a_torn_line_in_the_middle_is_corrupt(tmp_path: Path) -> None:
    (tmp_path / "w.jsonl").write_text('{"t": 1, "type": "start", "id": "a", "pid": 1}\n{"t": 2, "ty\n{"t": 3, "type": "ack", "id": "a", "pid": 1}\n')
    try:
        read_dir(tmp_path)
    except CorruptHistory as exc:
        assert "w.jsonl:2" in str(exc)
    else:
        raise AssertionError("a torn middle line must be corrupt")


def test_the_runner_reads_only_what_the_histories_gained_and_waits_for_a_line_being_written(tmp_path: Path) -> None:
    tail = HistoryTail(tmp_path)
    (tmp_path / "w.jsonl").write_bytes(b'{"t": 2, "type": "start", "id": "a", "pid": 1}\n{"t": 3, "ty')
    (tmp_path / "p.jsonl").write_bytes(b'{"t": 1, "type": "ok", "id": "a", "pid": 2}\n')
    assert [e["t"] for e in tail.events()] == [1, 2]  # ordered by time; the half line waits
    with open(tmp_path / "w.jsonl", "ab") as handle:
        handle.write(b'pe": "ack", "id": "a", "pid": 1}\n')
    assert [(e["t"], e["type"]) for e in tail.events()] == [(1, "ok"), (2, "start"), (3, "ack")]
    assert tail.events() == read_dir(tmp_path)  # nothing read twice


def test_cli_prints_one_summary_and_exits_1_on_a_violation(tmp_path: Path, capsys: Any) -> None:
    with History(tmp_path, "producer") as producer, History(tmp_path, "runner", name="runner") as runner:
        producer.record("invoke", id="a")
        producer.record("ok", id="a")
        runner.record("drain", pending=0, delayed=0, inflight=0, dead=0, expected_dead=0)
    assert main([str(tmp_path)]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert summary["lost"] == 1 and summary["valid"] is False
    assert main([str(tmp_path / "missing")]) == 2
    assert "usage" in capsys.readouterr().err


def test_a_rerun_after_the_holders_ack_came_back_past_its_lease_is_explained() -> None:
    # SQLite under load: W1 finished at 1.1 s, its ack (lease until 3.0 s) returned only at
    # 3.4 s, fenced: W2 had taken the expired lease and ran the task at 3.5 s
    def slow(task_id: str, until: float, ack_at: float) -> list[dict[str, Any]]:
        return [ev(1.0, "start", W1, id=task_id, attempt=0), ev(1.1, "finish", W1, id=task_id),
                ev(ack_at, "ack", W1, id=task_id, lease_until=until)]
    summary = run(enqueued("a"), slow("a", 3.0, 3.4), ran("a", W2, 3.5), drained())
    assert summary["valid"], summary["violations"]
    assert summary["duplicate_causes"] == {"lease-expired": 1}
    # an ack that came back inside its lease held: a rerun after it is a violation
    assert run(enqueued("b"), slow("b", 3.0, 2.9), ran("b", W2, 3.5), drained())["unexplained_duplicates"] == 1
    # and a rerun before the holder's lease ran out is one whatever the ack did
    assert run(enqueued("c"), slow("c", 3.6, 3.7), ran("c", W2, 3.5), drained())["unexplained_duplicates"] == 1
    # an ack that came back after the rerun explains it when the lease it knew had run out
    # before (a holder slowed past its lease), not when the lease still held then
    late = run(enqueued("e"), slow("e", 3.0, 3.8), ran("e", W2, 3.5), drained())
    assert late["valid"] and late["duplicate_causes"] == {"lease-expired": 1}, late["violations"]
    # an ack with no deadline recorded explains nothing
    bare = [ev(1.0, "start", W1, id="d", attempt=0), ev(3.4, "ack", W1, id="d")]
    assert run(enqueued("d"), bare, ran("d", W2, 3.5), drained())["unexplained_duplicates"] == 1


def test_a_copy_made_within_a_lease_of_the_enqueue_is_the_broker_delivering_twice() -> None:
    # SQS (moto under load): one message received by W1 and, 50 ms later, by W3 with a
    # receive count of 2; W3 copied it to fence W1's receipt, and the copy ran again
    W3 = 203
    sqs = [ev(0.0, "run", R, broker="sqs", lease=6.0)]
    copy = [ev(0.06, "recycle", W3, id="a"), ev(0.09, "recycled", W3, id="a")]
    summary = run(sqs, enqueued("a"), copy, ran("a", W1, 0.07), ran("a", W1, 0.2), drained())
    assert summary["valid"], summary["violations"]
    assert summary["duplicate_causes"] == {"delivered-twice": 1}
    # a copy made a lease or more after the enqueue (a holder's lease could have run out)
    late = [ev(7.0, "recycle", W3, id="b"), ev(7.1, "recycled", W3, id="b")]
    assert run(sqs, enqueued("b"), late, ran("b", W1, 6.5), ran("b", W2, 7.5), drained())["unexplained_duplicates"] == 1
    # or after the rerun explains nothing, nor does a copy in a run that recorded no lease
    after = [ev(0.5, "recycle", W3, id="c"), ev(0.6, "recycled", W3, id="c")]
    assert run(sqs, enqueued("c"), after, ran("c", W1, 0.1), ran("c", W2, 0.3), drained())["unexplained_duplicates"] == 1
    assert run(enqueued("d"), copy_of("d"), ran("d", W1, 0.07), ran("d", W1, 0.2), drained())["unexplained_duplicates"] == 1


def copy_of(task_id: str) -> list[dict[str, Any]]:
    return [ev(0.06, "recycle", 203, id=task_id), ev(0.09, "recycled", 203, id=task_id)]
