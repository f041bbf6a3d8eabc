"""``stem inspect``: queues, one queue, one task, workers, leases, the audit log.

Reads only; ``--watch [interval]`` refreshes in place (one JSON line per refresh with
``--jsonl``). ``inspect task`` exits 1 when nobody knows the id; the rest exit 0 even when
they show a problem (``stem health`` is the check with an exit code).
"""

from __future__ import annotations

from typing import Annotated

import typer

from stem_core.ops import DETAIL_STATES
from stem_core.settings import DEFAULT_PAGE_LIMIT

from . import views
from .common import (
    DEFAULT_WATCH_INTERVAL,
    BackendOpt,
    BrokerOpt,
    FramesOpt,
    IntervalOpt,
    JsonlOpt,
    JsonOpt,
    NamespaceOpt,
    StaleAfterOpt,
    WatchOpt,
    open_ops,
    output_format,
    parse_duration,
    present,
    run,
    settings_from,
    watch_interval,
)
from .output import EXIT_FAILED

inspect_app = typer.Typer(name="inspect", help="Look at queues, tasks, workers and leases (read only).",
                          no_args_is_help=True)

SampleOpt = Annotated[
    str, typer.Option("--sample", help="With no recent rate history, read again after this long to get rates (0: don't).")
]
LimitOpt = Annotated[int, typer.Option("--limit", min=0, help="Rows per page.")]
OffsetOpt = Annotated[int, typer.Option("--offset", min=0, help="Rows to skip.")]


def _states() -> list[str]:
    return list(DETAIL_STATES)


@inspect_app.command("queues")
def queues(
    watch: WatchOpt = False,
    interval: IntervalOpt = DEFAULT_WATCH_INTERVAL,
    frames: FramesOpt = None,
    sample: SampleOpt = "1s",
    json_out: JsonOpt = False,
    jsonl_out: JsonlOpt = False,
    stale_after: StaleAfterOpt = None,
    broker: BrokerOpt = None,
    backend: BackendOpt = None,
    namespace: NamespaceOpt = None,
) -> None:
    """Every queue: pending, delayed, in flight, dead, oldest age, in/out rates, workers, verdict."""
    fmt = output_format(json_out, jsonl_out)
    every = watch_interval(watch, interval, fmt)
    first_sample = parse_duration(sample, option="--sample")
    settings = settings_from(broker, backend, namespace)

    async def main() -> None:
        async with open_ops(settings, stale_after=stale_after) as ops:
            # --watch builds its own history; a one-shot call may wait once for a second reading.
            wait = 0.0 if every is not None else first_sample
            await present(lambda: ops.overview(sample_interval=wait), lambda ov: ov.to_dict(), views.overview, fmt, every,
                          rows=lambda ov: [q.to_dict() for q in ov.queues], frames=frames)

    run(main, interrupt_ok=every is not None)


@inspect_app.command("queue")
def queue(
    name: Annotated[str, typer.Argument(metavar="QUEUE", help="The queue.")],
    state: Annotated[str, typer.Option("--state", help="pending, delayed, inflight or dead.",
                                       autocompletion=_states)] = "pending",
    limit: LimitOpt = DEFAULT_PAGE_LIMIT,
    offset: OffsetOpt = 0,
    watch: WatchOpt = False,
    interval: IntervalOpt = DEFAULT_WATCH_INTERVAL,
    frames: FramesOpt = None,
    json_out: JsonOpt = False,
    jsonl_out: JsonlOpt = False,
    stale_after: StaleAfterOpt = None,
    broker: BrokerOpt = None,
    backend: BackendOpt = None,
    namespace: NamespaceOpt = None,
) -> None:
    """One queue: its numbers and one page of its pending, delayed, in-flight or dead messages."""
    fmt = output_format(json_out, jsonl_out)
    every = watch_interval(watch, interval, fmt)
    settings = settings_from(broker, backend, namespace)

    async def main() -> None:
        async with open_ops(settings, stale_after=stale_after) as ops:
            await present(lambda: ops.queue_detail(name, state, limit, offset), lambda d: d.to_dict(), views.queue_detail,
                          fmt, every, rows=lambda d: d.messages, frames=frames)

    run(main, interrupt_ok=every is not None)


@inspect_app.command("task")
def task(
    task_id: Annotated[str, typer.Argument(metavar="ID", help="The task id.")],
    watch: WatchOpt = False,
    interval: IntervalOpt = DEFAULT_WATCH_INTERVAL,
    frames: FramesOpt = None,
    json_out: JsonOpt = False,
    jsonl_out: JsonlOpt = False,
    stale_after: StaleAfterOpt = None,
    broker: BrokerOpt = None,
    backend: BackendOpt = None,
    namespace: NamespaceOpt = None,
) -> None:
    """Where a task is now (queued at position N, delayed until, leased by, dead, done) and
    why it is not running. Exits 1 for an unknown id."""
    fmt = output_format(json_out, jsonl_out)
    every = watch_interval(watch, interval, fmt)
    settings = settings_from(broker, backend, namespace)

    async def main() -> bool:
        async with open_ops(settings, stale_after=stale_after) as ops:
            ex = await present(lambda: ops.explain(task_id), lambda e: e.to_dict(), views.explanation, fmt, every,
                               frames=frames)
            return ex.found

    found = run(main, interrupt_ok=every is not None)
    if not found:
        raise typer.Exit(EXIT_FAILED)


@inspect_app.command("workers")
def workers(
    watch: WatchOpt = False,
    interval: IntervalOpt = DEFAULT_WATCH_INTERVAL,
    frames: FramesOpt = None,
    json_out: JsonOpt = False,
    jsonl_out: JsonlOpt = False,
    stale_after: StaleAfterOpt = None,
    broker: BrokerOpt = None,
    backend: BackendOpt = None,
    namespace: NamespaceOpt = None,
) -> None:
    """Workers from their heartbeats: queues, active/concurrency, counters, paused queues, heartbeat age."""
    fmt = output_format(json_out, jsonl_out)
    every = watch_interval(watch, interval, fmt)
    settings = settings_from(broker, backend, namespace)

    async def main() -> None:
        async with open_ops(settings, stale_after=stale_after) as ops:
            await present(ops.workers, lambda ws: [w.to_dict() for w in ws], views.workers, fmt, every,
                          rows=lambda ws: [w.to_dict() for w in ws], frames=frames)

    run(main, interrupt_ok=every is not None)


@inspect_app.command("leases")
def leases(
    name: Annotated[str | None, typer.Argument(metavar="[QUEUE]", help="Only this queue.")] = None,
    stuck_only: Annotated[bool, typer.Option("--stuck", help="Only the stuck ones.")] = False,
    watch: WatchOpt = False,
    interval: IntervalOpt = DEFAULT_WATCH_INTERVAL,
    frames: FramesOpt = None,
    json_out: JsonOpt = False,
    jsonl_out: JsonlOpt = False,
    stale_after: StaleAfterOpt = None,
    broker: BrokerOpt = None,
    backend: BackendOpt = None,
    namespace: NamespaceOpt = None,
) -> None:
    """Every in-flight delivery: holder, held for, expires in, the holder's heartbeat age, and
    STUCK when the lease expired or the holder is dead."""
    fmt = output_format(json_out, jsonl_out)
    every = watch_interval(watch, interval, fmt)
    settings = settings_from(broker, backend, namespace)

    async def main() -> None:
        async with open_ops(settings, stale_after=stale_after) as ops:
            async def fetch() -> list:
                rows = await ops.leases(name)
                return [r for r in rows if r.stuck] if stuck_only else rows

            await present(fetch, lambda ls: [lease.to_dict() for lease in ls], views.leases, fmt, every,
                          rows=lambda ls: [lease.to_dict() for lease in ls], frames=frames)

    run(main, interrupt_ok=every is not None)


@inspect_app.command("audit")
def audit(
    limit: LimitOpt = DEFAULT_PAGE_LIMIT,
    offset: OffsetOpt = 0,
    json_out: JsonOpt = False,
    jsonl_out: JsonlOpt = False,
    broker: BrokerOpt = None,
    backend: BackendOpt = None,
    namespace: NamespaceOpt = None,
) -> None:
    """The audit log of operator actions, newest first: who, what, when, arguments, result."""
    fmt = output_format(json_out, jsonl_out)
    settings = settings_from(broker, backend, namespace)
    columns = [("AT", "at"), ("ACTOR", "actor"), ("ACTION", "action"), ("OK", "ok"), ("ARGUMENTS", "arguments"),
               ("RESULT", "result"), ("REASON", "reason")]

    async def main() -> None:
        async with open_ops(settings) as ops:
            await present(lambda: ops.audit_log(limit, offset), lambda rs: rs,
                          lambda rs: views.records(rs, columns, "no audit records yet"), fmt, None, rows=lambda rs: rs)

    run(main)


def register(app: typer.Typer) -> None:
    app.add_typer(inspect_app, name="inspect")


__all__ = ["inspect_app", "register"]
