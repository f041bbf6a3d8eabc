"""``stem inspect``: queues, one queue, one task, workers, leases, the audit log.

Reads only; ``--watch [interval]`` refreshes in place (one JSON line per refresh with
``--jsonl``). ``inspect task`` exits 1 when nobody knows the id; the rest exit 0 even when
they show a problem (``stem health`` is the check with an exit code).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from stem_core.limits import MAX_PAGE_LIMIT, MAX_PAGE_OFFSET
from stem_core.ops import DETAIL_STATES, LeaseInfo, Ops
from stem_core.settings import DEFAULT_PAGE_LIMIT

from . import views
from .common import DEFAULT_WATCH_INTERVAL, read_and_show
from .options import CommonOptions, FramesOpt, IntervalOpt, WatchOpt, common_options
from .output import EXIT_FAILED
from .parsing import parse_duration

inspect_app = typer.Typer(name="inspect", help="Look at queues, tasks, workers and leases (read only).",
                          no_args_is_help=True)

SampleOpt = Annotated[
    str, typer.Option("--sample", help="With no recent rate history, read again after this long to get rates (0: don't).")
]
LimitOpt = Annotated[int, typer.Option("--limit", min=0, max=MAX_PAGE_LIMIT, help="Rows per page.")]
OffsetOpt = Annotated[int, typer.Option("--offset", min=0, max=MAX_PAGE_OFFSET, help="Rows to skip.")]
CursorOpt = Annotated[
    str | None,
    typer.Option("--cursor", help="Start after this cursor: the next_cursor of an earlier page (any depth; not with --offset)."),
]


def _states() -> list[str]:
    return list(DETAIL_STATES)


def _dicts(items: list[Any]) -> list[dict[str, Any]]:
    return [item.to_dict() for item in items]


@inspect_app.command("queues")
@common_options(stale_after=True)
def queues(
    watch: WatchOpt = False,
    interval: IntervalOpt = DEFAULT_WATCH_INTERVAL,
    frames: FramesOpt = None,
    sample: SampleOpt = "1s",
    *,
    opts: CommonOptions,
) -> None:
    """Every queue: pending, delayed, in flight, dead, oldest age, in/out rates, workers, verdict."""
    first_sample = parse_duration(sample, option="--sample")
    # --watch builds its own history; a one-shot call may wait once for a second reading.
    wait = 0.0 if watch else first_sample
    read_and_show(lambda ops: ops.overview(sample_interval=wait), lambda ov: ov.to_dict(), views.overview, opts,
                  rows=lambda ov: [q.to_dict() for q in ov.queues], watch=watch, interval=interval, frames=frames)


@inspect_app.command("queue")
@common_options(stale_after=True)
def queue(
    name: Annotated[str, typer.Argument(metavar="QUEUE", help="The queue.")],
    state: Annotated[str, typer.Option("--state", help="pending, delayed, inflight or dead.",
                                       autocompletion=_states)] = "pending",
    limit: LimitOpt = DEFAULT_PAGE_LIMIT,
    offset: OffsetOpt = 0,
    cursor: CursorOpt = None,
    watch: WatchOpt = False,
    interval: IntervalOpt = DEFAULT_WATCH_INTERVAL,
    frames: FramesOpt = None,
    *,
    opts: CommonOptions,
) -> None:
    """One queue: its numbers and one page of its pending, delayed, in-flight or dead messages.

    Page on with ``--cursor`` (the page's ``next_cursor``): it costs the same at any depth."""
    read_and_show(lambda ops: ops.queue_detail(name, state, limit, offset, cursor), lambda d: d.to_dict(), views.queue_detail,
                  opts, rows=lambda d: d.messages, watch=watch, interval=interval, frames=frames)


@inspect_app.command("task")
@common_options(stale_after=True)
def task(
    task_id: Annotated[str, typer.Argument(metavar="ID", help="The task id.")],
    watch: WatchOpt = False,
    interval: IntervalOpt = DEFAULT_WATCH_INTERVAL,
    frames: FramesOpt = None,
    *,
    opts: CommonOptions,
) -> None:
    """Where a task is now (queued at position N, delayed until, leased by, dead, done) and
    why it is not running. Exits 1 for an unknown id."""
    ex = read_and_show(lambda ops: ops.explain(task_id), lambda e: e.to_dict(), views.explanation, opts, watch=watch,
                       interval=interval, frames=frames)
    if not ex.found:
        raise typer.Exit(EXIT_FAILED)


@inspect_app.command("workers")
@common_options(stale_after=True)
def workers(
    watch: WatchOpt = False,
    interval: IntervalOpt = DEFAULT_WATCH_INTERVAL,
    frames: FramesOpt = None,
    *,
    opts: CommonOptions,
) -> None:
    """Workers from their heartbeats: queues, active/concurrency, counters, paused queues, heartbeat age."""
    read_and_show(lambda ops: ops.workers(), _dicts, views.workers, opts, rows=_dicts, watch=watch, interval=interval,
                  frames=frames)


@inspect_app.command("leases")
@common_options(stale_after=True)
def leases(
    name: Annotated[str | None, typer.Argument(metavar="[QUEUE]", help="Only this queue.")] = None,
    stuck_only: Annotated[bool, typer.Option("--stuck", help="Only the stuck ones.")] = False,
    watch: WatchOpt = False,
    interval: IntervalOpt = DEFAULT_WATCH_INTERVAL,
    frames: FramesOpt = None,
    *,
    opts: CommonOptions,
) -> None:
    """Every in-flight delivery: holder, held for, expires in, the holder's heartbeat age, and
    STUCK when the lease expired or the holder is dead."""

    async def fetch(ops: Ops) -> list[LeaseInfo]:
        rows = await ops.leases(name)
        return [r for r in rows if r.stuck] if stuck_only else rows

    read_and_show(fetch, _dicts, views.leases, opts, rows=_dicts, watch=watch, interval=interval, frames=frames)


AUDIT_COLUMNS = [("AT", "at"), ("ACTOR", "actor"), ("ACTION", "action"), ("OK", "ok"), ("ARGUMENTS", "arguments"),
                 ("RESULT", "result"), ("REASON", "reason")]


@inspect_app.command("audit")
@common_options()
def audit(
    limit: LimitOpt = DEFAULT_PAGE_LIMIT,
    offset: OffsetOpt = 0,
    *,
    opts: CommonOptions,
) -> None:
    """The audit log of operator actions, newest first: who, what, when, arguments, result."""
    read_and_show(lambda ops: ops.audit_log(limit, offset), lambda rs: rs,
                  lambda rs: views.records(rs, AUDIT_COLUMNS, "no audit records yet"), opts, rows=lambda rs: rs)


def register(app: typer.Typer) -> None:
    app.add_typer(inspect_app, name="inspect")


__all__ = ["inspect_app", "register"]
