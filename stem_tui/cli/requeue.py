"""``stem requeue Q``: take work back and make it ready now.

``--id ID`` (leased or delayed messages), ``--expired-leases`` (every lease ``stem inspect
leases`` flags stuck: expired, or held by a worker with no live heartbeat), ``--dead``
(dead letters, filtered by ``--task``/``--since``, like ``stem dlq replay``). A real run
first previews (count and sample), asks, then acts on exactly the previewed ids that still
qualify: a refresh in between can shrink the set, never widen it.
"""

from __future__ import annotations

from typing import Annotated, Any, Awaitable, Callable

import typer

from stem_core.ops import ActionResult, Ops

from . import views
from .common import (
    BackendOpt,
    BrokerOpt,
    DryRunOpt,
    JsonlOpt,
    JsonOpt,
    NamespaceOpt,
    ReasonOpt,
    StaleAfterOpt,
    YesOpt,
    open_ops,
    output_format,
    parse_duration,
    parse_time,
    run,
    settings_from,
)
from .output import EXIT_USAGE, confirm, emit, fail

IdsOpt = Annotated[list[str] | None, typer.Option("--id", help="A task id (repeat for more).")]
TaskOpt = Annotated[str | None, typer.Option("--task", help="Only dead letters of this task name.")]
SinceOpt = Annotated[str | None, typer.Option("--since", help="Only dead since this ISO time or this long ago (1h).")]
DelayOpt = Annotated[str | None, typer.Option("--delay", help="Replayed dead letters run after this long (10s, 5m).")]


async def preview_then_act(
    act: Callable[..., Awaitable[ActionResult]], question: Callable[[ActionResult], str], *, dry_run: bool, yes: bool,
    freeze: bool = True,
) -> ActionResult:
    """Dry run; stop there with ``dry_run`` or nothing to do; else confirm and act on the
    previewed ids (``freeze``) so the confirmed count is an upper bound."""
    preview = await act(dry_run=True)
    if dry_run or preview.count == 0:
        return preview
    confirm(question(preview), yes=yes)
    if freeze and "ids" in preview.detail:
        return await act(dry_run=False, ids=preview.detail["ids"])
    return await act(dry_run=False)


def show(result: ActionResult, verb: str, fmt: str) -> None:
    emit(result.to_dict(), fmt, lambda: views.action(result, verb), lambda: result.sample)


def requeue(
    queue: Annotated[str, typer.Argument(metavar="QUEUE", help="The queue.")],
    ids: IdsOpt = None,
    expired_leases: Annotated[bool, typer.Option(
        "--expired-leases", "--stuck-leases",
        help="Leases flagged stuck: expired, or held by a worker with no live heartbeat.")] = False,
    dead: Annotated[bool, typer.Option("--dead", help="Dead letters (oldest first).")] = False,
    task: TaskOpt = None,
    since: SinceOpt = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="At most this many (dead letters: default 50).")] = None,
    delay: DelayOpt = None,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    reason: ReasonOpt = None,
    json_out: JsonOpt = False,
    jsonl_out: JsonlOpt = False,
    stale_after: StaleAfterOpt = None,
    broker: BrokerOpt = None,
    backend: BackendOpt = None,
    namespace: NamespaceOpt = None,
) -> None:
    """Make leased, delayed or dead messages of QUEUE ready now (asks first; --yes off a terminal)."""
    fmt = output_format(json_out, jsonl_out)
    if not (ids or expired_leases or dead):
        fail("say what to requeue: --id ID, --expired-leases or --dead", EXIT_USAGE)
    since_at = parse_time(since, option="--since") if since is not None else None
    delay_s = parse_duration(delay, option="--delay") if delay is not None else None
    settings = settings_from(broker, backend, namespace)

    async def main() -> None:
        async with open_ops(settings, stale_after=stale_after) as ops:
            async def act(dry_run: bool, ids: list[str] | None = ids) -> ActionResult:
                return await _requeue(ops, queue, ids, expired_leases, dead, task, since_at, limit, delay_s, dry_run, reason)

            what = "dead letter(s)" if dead else "stuck lease(s)" if expired_leases else "message(s)"
            result = await preview_then_act(act, lambda p: f"requeue {p.count} {what} of {queue}", dry_run=dry_run, yes=yes)
        show(result, "requeue", fmt)

    run(main)


async def _requeue(ops: Ops, queue: str, ids: list[str] | None, stuck: bool, dead: bool, task: str | None, since: Any,
                   limit: int | None, delay: float | None, dry_run: bool, reason: str | None) -> ActionResult:
    return await ops.requeue(queue, ids=ids, stuck_leases=stuck, dead=dead, task=task, since=since, limit=limit,
                             delay=delay, dry_run=dry_run, reason=reason)


def register(app: typer.Typer) -> None:
    app.command("requeue")(requeue)


__all__ = ["DelayOpt", "IdsOpt", "SinceOpt", "TaskOpt", "preview_then_act", "register", "requeue", "show"]
