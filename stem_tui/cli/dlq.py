"""``stem dlq``: dead letters: list, show one, replay (as ``requeue --dead``), purge."""

from __future__ import annotations

from typing import Annotated

import typer

from stem_core.ops import ActionResult
from stem_core.settings import DEFAULT_PAGE_LIMIT

from . import views
from .common import (
    BackendOpt,
    BrokerOpt,
    DryRunOpt,
    JsonlOpt,
    JsonOpt,
    NamespaceOpt,
    ReasonOpt,
    YesOpt,
    open_ops,
    output_format,
    parse_duration,
    parse_time,
    run,
    settings_from,
)
from .output import EXIT_FAILED, emit, fail
from .requeue import DelayOpt, IdsOpt, SinceOpt, TaskOpt, preview_then_act, show

dlq_app = typer.Typer(name="dlq", help="Dead letters: list, show, replay, purge.", no_args_is_help=True)
QueueArg = Annotated[str, typer.Argument(metavar="QUEUE", help="The queue.")]
DEAD_COLUMNS = [("TASK ID", "id"), ("NAME", "name"), ("DEAD AT", "dead_at"), ("REASON", "reason"), ("ATTEMPT", "attempt"),
                ("ARGS", "args")]


@dlq_app.command("list")
def list_(
    queue: QueueArg,
    limit: Annotated[int, typer.Option("--limit", min=0, help="Rows per page.")] = DEFAULT_PAGE_LIMIT,
    offset: Annotated[int, typer.Option("--offset", min=0, help="Rows to skip.")] = 0,
    json_out: JsonOpt = False,
    jsonl_out: JsonlOpt = False,
    broker: BrokerOpt = None,
    backend: BackendOpt = None,
    namespace: NamespaceOpt = None,
) -> None:
    """Dead letters of QUEUE, newest first."""
    fmt = output_format(json_out, jsonl_out)
    settings = settings_from(broker, backend, namespace)

    async def main() -> None:
        async with open_ops(settings) as ops:
            await ops.require_queue(queue)
            page = await ops.dead_letters(queue, limit, offset)
        rows = [{"id": e.envelope.id, "name": e.envelope.name, "dead_at": e.to_dict()["dead_at"], "reason": e.reason,
                 "attempt": e.envelope.attempt, "args": e.envelope.args} for e in page.entries]

        def render() -> object:
            table = views.records(rows, DEAD_COLUMNS, f"no dead letters in {queue}")
            more = f"more: --offset {page.next_offset}" if page.next_offset is not None else None
            from rich.console import Group

            return Group(table, views.t(more, "dim")) if more else table

        emit(page.to_dict(), fmt, render, lambda: [e.to_dict() for e in page.entries])

    run(main)


@dlq_app.command("show")
def show_one(
    queue: QueueArg,
    task_id: Annotated[str, typer.Argument(metavar="ID", help="The task id.")],
    json_out: JsonOpt = False,
    jsonl_out: JsonlOpt = False,
    broker: BrokerOpt = None,
    backend: BackendOpt = None,
    namespace: NamespaceOpt = None,
) -> None:
    """One dead letter in full: envelope, reason, meta, when. Exits 1 when there is none."""
    fmt = output_format(json_out, jsonl_out)
    settings = settings_from(broker, backend, namespace)

    async def main() -> None:
        async with open_ops(settings) as ops:
            await ops.require_queue(queue)
            entry = await ops.dead_letter(queue, task_id)
        if entry is None:
            fail(f"no dead letter {task_id!r} in {queue}", EXIT_FAILED)
        data = entry.to_dict()

        def render() -> object:
            from rich.console import Group
            from rich.text import Text

            env = data["envelope"]
            lines = [Text.assemble((f"{label:<9}", "bold"), views.short(value, 400)) for label, value in (
                ("task", env["id"]), ("name", env["name"]), ("queue", env["queue"]), ("dead at", data["dead_at"]),
                ("reason", data["reason"]), ("attempt", env["attempt"]), ("args", env["args"]), ("meta", data["meta"]),
                ("headers", env["headers"]))]
            lines.append(views.t(f"replay: stem dlq replay {queue} --id {env['id']}", "cyan"))
            return Group(*lines)

        emit(data, fmt, render)

    run(main)


@dlq_app.command("replay")
def replay(
    queue: QueueArg,
    ids: IdsOpt = None,
    task: TaskOpt = None,
    since: SinceOpt = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many, oldest first.")] = DEFAULT_PAGE_LIMIT,
    delay: DelayOpt = None,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    reason: ReasonOpt = None,
    json_out: JsonOpt = False,
    jsonl_out: JsonlOpt = False,
    broker: BrokerOpt = None,
    backend: BackendOpt = None,
    namespace: NamespaceOpt = None,
) -> None:
    """Put dead letters back on QUEUE (same id, a fresh retry budget); asks first."""
    fmt = output_format(json_out, jsonl_out)
    since_at = parse_time(since, option="--since") if since is not None else None
    delay_s = parse_duration(delay, option="--delay") if delay is not None else None
    settings = settings_from(broker, backend, namespace)

    async def main() -> None:
        async with open_ops(settings) as ops:
            async def act(dry_run: bool, ids: list[str] | None = ids) -> ActionResult:
                return await ops.replay(queue, ids=ids, task=task, since=since_at, limit=limit, delay=delay_s,
                                        dry_run=dry_run, reason=reason)

            result = await preview_then_act(act, lambda p: f"replay {p.count} dead letter(s) onto {queue}",
                                            dry_run=dry_run, yes=yes)
        show(result, "replay", fmt)

    run(main)


@dlq_app.command("purge")
def purge(
    queue: QueueArg,
    since: SinceOpt = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="At most this many, oldest first.")] = None,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    reason: ReasonOpt = None,
    json_out: JsonOpt = False,
    jsonl_out: JsonlOpt = False,
    broker: BrokerOpt = None,
    backend: BackendOpt = None,
    namespace: NamespaceOpt = None,
) -> None:
    """Delete dead letters of QUEUE (all, or dead since --since, up to --limit); asks first."""
    fmt = output_format(json_out, jsonl_out)
    since_at = parse_time(since, option="--since") if since is not None else None
    settings = settings_from(broker, backend, namespace)

    async def main() -> None:
        async with open_ops(settings) as ops:
            async def act(dry_run: bool, ids: list[str] | None = None) -> ActionResult:
                return await ops.purge(queue, dead=True, since=since_at, limit=limit, dry_run=dry_run, reason=reason)

            result = await preview_then_act(act, lambda p: f"delete {p.count} dead letter(s) of {queue}",
                                            dry_run=dry_run, yes=yes, freeze=False)
        show(result, "purge", fmt)

    run(main)


def register(app: typer.Typer) -> None:
    app.add_typer(dlq_app, name="dlq")


__all__ = ["dlq_app", "register"]
