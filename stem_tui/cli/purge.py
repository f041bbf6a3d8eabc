"""``stem purge Q``: delete pending and delayed messages (in-flight ones are left alone),
``--dead`` the dead letters, ``--id`` chosen messages in any live state. Asks first."""

from __future__ import annotations

from typing import Annotated

import typer

from stem_core.limits import MAX_BATCH_LIMIT
from .common import preview_then_act
from .options import CommonOptions, DryRunOpt, ReasonOpt, YesOpt, common_options
from .output import EXIT_USAGE, fail
from .parsing import parse_time
from .requeue import IdsOpt, SinceOpt


@common_options()
def purge(
    queue: Annotated[str, typer.Argument(metavar="QUEUE", help="The queue.")],
    dead: Annotated[bool, typer.Option("--dead", help="Purge the dead letters instead.")] = False,
    ids: IdsOpt = None,
    since: SinceOpt = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, max=MAX_BATCH_LIMIT, help="With --dead: at most this many, oldest first.")] = None,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    reason: ReasonOpt = None,
    *,
    opts: CommonOptions,
) -> None:
    """Delete the pending and delayed messages of QUEUE (asks first; --yes off a terminal)."""
    fmt = opts.fmt()
    if ids and dead:
        fail("--id removes live messages; --dead purges dead letters: choose one", EXIT_USAGE)
    since_at = parse_time(since, option="--since") if since is not None else None
    settings = opts.settings()

    if ids:
        preview_then_act(lambda ops, dry, chosen: ops.remove(queue, chosen or [], dry_run=dry, reason=reason),
                         lambda p: f"remove {p.count} message(s) from {queue}", "remove", ids=ids, dry_run=dry_run,
                         yes=yes, fmt=fmt, settings=settings)
        return
    what = "dead letter(s)" if dead else "pending and delayed message(s)"
    preview_then_act(lambda ops, dry, _: ops.purge(queue, dead=dead, since=since_at, limit=limit, dry_run=dry, reason=reason),
                     lambda p: f"delete {p.count} {what} of {queue}", "purge", dry_run=dry_run, yes=yes, fmt=fmt,
                     settings=settings)


def register(app: typer.Typer) -> None:
    app.command("purge")(purge)


__all__ = ["purge", "register"]
