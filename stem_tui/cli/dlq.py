"""``stem dlq``: dead letters: list, show one, replay (as ``requeue --dead``), purge."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Group
from rich.text import Text

from stem_core.limits import MAX_BATCH_LIMIT, MAX_PAGE_LIMIT, MAX_PAGE_OFFSET
from stem_core.contract import DeadLetterEntry, DeadLetterPage
from stem_core.ops import Ops, stem_command
from stem_core.settings import DEFAULT_PAGE_LIMIT

from . import views
from .common import preview_then_act, read_and_show
from .options import CommonOptions, DryRunOpt, ReasonOpt, YesOpt, common_options
from .output import EXIT_FAILED, fail
from .parsing import parse_duration, parse_time
from .requeue import DelayOpt, IdsOpt, SinceOpt, TaskOpt

dlq_app = typer.Typer(name="dlq", help="Dead letters: list, show, replay, purge.", no_args_is_help=True)
QueueArg = Annotated[str, typer.Argument(metavar="QUEUE", help="The queue.")]
DEAD_COLUMNS = [("TASK ID", "id"), ("NAME", "name"), ("DEAD AT", "dead_at"), ("REASON", "reason"), ("ATTEMPT", "attempt"),
                ("ARGS", "args")]


@dlq_app.command("list")
@common_options()
def list_(
    queue: QueueArg,
    limit: Annotated[int, typer.Option("--limit", min=0, max=MAX_PAGE_LIMIT, help="Rows per page.")] = DEFAULT_PAGE_LIMIT,
    offset: Annotated[int, typer.Option("--offset", min=0, max=MAX_PAGE_OFFSET, help="Rows to skip.")] = 0,
    *,
    opts: CommonOptions,
) -> None:
    """Dead letters of QUEUE, newest first."""

    async def fetch(ops: Ops) -> DeadLetterPage:
        await ops.require_queue(queue)
        return await ops.dead_letters(queue, limit, offset)

    def render(page: DeadLetterPage) -> object:
        rows = [{"id": e.envelope.id, "name": e.envelope.name, "dead_at": e.to_dict()["dead_at"], "reason": e.reason,
                 "attempt": e.envelope.attempt, "args": e.envelope.args} for e in page.entries]
        table = views.records(rows, DEAD_COLUMNS, f"no dead letters in {queue}")
        if page.next_offset is None:
            return table
        return Group(table, views.t(f"more: --offset {page.next_offset}", "dim"))

    read_and_show(fetch, lambda page: page.to_dict(), render, opts, rows=lambda page: [e.to_dict() for e in page.entries])


@dlq_app.command("show")
@common_options()
def show_one(
    queue: QueueArg,
    task_id: Annotated[str, typer.Argument(metavar="ID", help="The task id.")],
    *,
    opts: CommonOptions,
) -> None:
    """One dead letter in full: envelope, reason, meta, when. Exits 1 when there is none."""

    async def fetch(ops: Ops) -> DeadLetterEntry:
        await ops.require_queue(queue)
        entry = await ops.dead_letter(queue, task_id)
        if entry is None:
            fail(f"no dead letter {task_id!r} in {queue}", EXIT_FAILED)
        return entry

    def render(entry: DeadLetterEntry) -> object:
        data = entry.to_dict()
        env = data["envelope"]
        lines = [Text.assemble((f"{label:<9}", "bold"), views.short(value, 400)) for label, value in (
            ("task", env["id"]), ("name", env["name"]), ("queue", env["queue"]), ("dead at", data["dead_at"]),
            ("reason", data["reason"]), ("attempt", env["attempt"]), ("args", env["args"]), ("meta", data["meta"]),
            ("headers", env["headers"]))]
        lines.append(views.t("replay: " + stem_command("dlq", "replay", queue, "--id", env["id"]), "cyan"))
        return Group(*lines)

    read_and_show(fetch, lambda entry: entry.to_dict(), render, opts)


@dlq_app.command("replay")
@common_options()
def replay(
    queue: QueueArg,
    ids: IdsOpt = None,
    task: TaskOpt = None,
    since: SinceOpt = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=MAX_BATCH_LIMIT, help="At most this many, oldest first.")] = DEFAULT_PAGE_LIMIT,
    delay: DelayOpt = None,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    reason: ReasonOpt = None,
    *,
    opts: CommonOptions,
) -> None:
    """Put dead letters back on QUEUE (same id, a fresh retry budget); asks first."""
    fmt = opts.fmt()
    since_at = parse_time(since, option="--since") if since is not None else None
    delay_s = parse_duration(delay, option="--delay") if delay is not None else None
    settings = opts.settings()
    preview_then_act(
        lambda ops, dry, chosen: ops.replay(queue, ids=chosen, task=task, since=since_at, limit=limit, delay=delay_s,
                                            dry_run=dry, reason=reason),
        lambda p: f"replay {p.count} dead letter(s) onto {queue}", "replay", ids=ids, dry_run=dry_run, yes=yes, fmt=fmt,
        settings=settings)


@dlq_app.command("purge")
@common_options()
def purge(
    queue: QueueArg,
    since: SinceOpt = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, max=MAX_BATCH_LIMIT, help="At most this many, oldest first.")] = None,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    reason: ReasonOpt = None,
    *,
    opts: CommonOptions,
) -> None:
    """Delete dead letters of QUEUE (all, or dead since --since, up to --limit); asks first."""
    fmt = opts.fmt()
    since_at = parse_time(since, option="--since") if since is not None else None
    settings = opts.settings()
    preview_then_act(lambda ops, dry, _: ops.purge(queue, dead=True, since=since_at, limit=limit, dry_run=dry, reason=reason),
                     lambda p: f"delete {p.count} dead letter(s) of {queue}", "purge", dry_run=dry_run, yes=yes, fmt=fmt,
                     settings=settings)


def register(app: typer.Typer) -> None:
    app.add_typer(dlq_app, name="dlq")


__all__ = ["dlq_app", "register"]
