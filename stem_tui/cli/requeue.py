"""``stem requeue Q``: take work back and make it ready now.

``--id ID`` (leased or delayed messages), ``--expired-leases`` (every lease ``stem inspect
leases`` flags stuck: expired, or held by a worker with no live heartbeat), ``--dead``
(dead letters, filtered by ``--task``/``--since``, like ``stem dlq replay``). A real run
first previews (count and sample), asks, then acts on exactly the previewed ids that still
qualify: a refresh in between can shrink the set, never widen it.
"""

from __future__ import annotations

from typing import Annotated

import typer

from stem_core.limits import MAX_BATCH_LIMIT
from .common import preview_then_act
from .options import CommonOptions, DryRunOpt, ReasonOpt, YesOpt, common_options
from .output import EXIT_USAGE, fail
from .parsing import parse_duration, parse_time

IdsOpt = Annotated[list[str] | None, typer.Option("--id", help="A task id (repeat for more).")]
TaskOpt = Annotated[str | None, typer.Option("--task", help="Only dead letters of this task name.")]
SinceOpt = Annotated[str | None, typer.Option("--since", help="Only dead since this ISO time or this long ago (1h).")]
DelayOpt = Annotated[str | None, typer.Option("--delay", help="Replayed dead letters run after this long (10s, 5m).")]


@common_options(stale_after=True)
def requeue(
    queue: Annotated[str, typer.Argument(metavar="QUEUE", help="The queue.")],
    ids: IdsOpt = None,
    expired_leases: Annotated[bool, typer.Option(
        "--expired-leases", "--stuck-leases",
        help="Leases flagged stuck: expired, or held by a worker with no live heartbeat.")] = False,
    dead: Annotated[bool, typer.Option("--dead", help="Dead letters (oldest first).")] = False,
    task: TaskOpt = None,
    since: SinceOpt = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, max=MAX_BATCH_LIMIT, help="At most this many (dead letters: default 50).")] = None,
    delay: DelayOpt = None,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    reason: ReasonOpt = None,
    *,
    opts: CommonOptions,
) -> None:
    """Make leased, delayed or dead messages of QUEUE ready now (asks first; --yes off a terminal)."""
    fmt = opts.fmt()
    if not (ids or expired_leases or dead):
        fail("say what to requeue: --id ID, --expired-leases or --dead", EXIT_USAGE)
    since_at = parse_time(since, option="--since") if since is not None else None
    delay_s = parse_duration(delay, option="--delay") if delay is not None else None
    settings = opts.settings()
    what = "dead letter(s)" if dead else "stuck lease(s)" if expired_leases else "message(s)"
    preview_then_act(
        lambda ops, dry, chosen: ops.requeue(queue, ids=chosen, stuck_leases=expired_leases, dead=dead, task=task,
                                             since=since_at, limit=limit, delay=delay_s, dry_run=dry, reason=reason),
        lambda p: f"requeue {p.count} {what} of {queue}", "requeue", ids=ids, dry_run=dry_run, yes=yes, fmt=fmt,
        settings=settings, stale_after=opts.stale_after)


def register(app: typer.Typer) -> None:
    app.command("requeue")(requeue)


__all__ = ["DelayOpt", "IdsOpt", "SinceOpt", "TaskOpt", "register", "requeue"]
