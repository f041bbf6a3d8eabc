"""``stem broadcast``: control commands to every worker (or ``--worker`` ones), and raw
broadcasts with ``--channel C TASK --args JSON``.

Exits 1 when a targeted worker did not answer or answered with an error, or when nobody
answered at all; ``shutdown`` and ``revoke`` ask first.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from stem_core.control import CONTROL_COMMANDS, SHUTDOWN_MODES
from stem_core.ops import ActionResult
from stem_core.ops.policy import asks_first

from . import views
from .common import open_ops, run, show
from .options import CommonOptions, DryRunOpt, ReasonOpt, YesOpt, common_options
from .output import EXIT_FAILED, EXIT_USAGE, confirm, emit, fail
from .parsing import is_duration, parse_duration, parse_json_object


def _commands() -> list[str]:
    return list(CONTROL_COMMANDS)


def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]


def _arguments(command: str, args_json: str | None, queues: list[str], reason: str | None, until: str | None,
               task_ids: list[str], terminate: bool, mode: str | None) -> dict[str, Any]:
    args = parse_json_object(args_json, option="--args") if args_json is not None else {}
    if command in ("pause", "resume"):
        if not queues and "queues" not in args:
            fail(f"{command} needs --queue Q", EXIT_USAGE)
        if queues:
            args["queues"] = queues
        if command == "pause":
            if reason is not None:
                args["reason"] = reason
            if until is not None:
                args["until"] = parse_duration(until, option="--until") if is_duration(until) else until
    elif command == "revoke":
        if task_ids:
            args["task_ids"] = task_ids
        if terminate:
            args["terminate"] = True
        if reason is not None:
            args["reason"] = reason
    elif command == "shutdown" and mode is not None:
        args["mode"] = mode
    return args


@common_options()
def broadcast(
    command: Annotated[str, typer.Argument(metavar="COMMAND", autocompletion=_commands,
                                           help=f"One of {', '.join(CONTROL_COMMANDS)}; with --channel, a task name.")],
    workers: Annotated[list[str] | None, typer.Option("--worker", help="Only this worker id (repeat for more).")] = None,
    timeout: Annotated[str, typer.Option("--timeout", help="Wait this long for replies.")] = "5s",
    queue: Annotated[list[str] | None, typer.Option("--queue", "-q", help="pause/resume: the queue(s).")] = None,
    until: Annotated[str | None, typer.Option("--until", help="pause: until this ISO time or for this long (30m).")] = None,
    task_id: Annotated[list[str] | None, typer.Option("--task-id", help="revoke: a task id (repeat for more).")] = None,
    terminate: Annotated[bool, typer.Option("--terminate", help="revoke: also cancel it if it is running.")] = False,
    mode: Annotated[str | None, typer.Option("--mode", help=f"shutdown: {', '.join(SHUTDOWN_MODES)} (default warm).")] = None,
    args_json: Annotated[str | None, typer.Option("--args", help="Arguments as a JSON object.")] = None,
    channel: Annotated[str | None, typer.Option("--channel", help="Raw broadcast of task COMMAND on this channel.")] = None,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    reason: ReasonOpt = None,
    *,
    opts: CommonOptions,
) -> None:
    """Send a control command to the workers and show their replies."""
    fmt = opts.fmt()
    wait = parse_duration(timeout, option="--timeout")
    if wait <= 0:
        fail("--timeout must be positive", EXIT_USAGE)
    if channel is None and command not in CONTROL_COMMANDS:
        fail(f"unknown control command {command!r}; use one of {', '.join(CONTROL_COMMANDS)} "
             "(or --channel C TASK for a raw broadcast)", EXIT_USAGE)
    if mode is not None and mode not in SHUTDOWN_MODES:
        fail(f"--mode must be one of {', '.join(SHUTDOWN_MODES)}, got {mode!r}", EXIT_USAGE)
    if channel is not None:
        raw_args = parse_json_object(args_json, option="--args") if args_json is not None else {}
    else:
        arguments = _arguments(command, args_json, _split(queue), reason, until, _split(task_id), terminate, mode)
    targets = _split(workers) or None
    settings = opts.settings()

    async def main() -> ActionResult:
        async with open_ops(settings) as ops:
            if channel is not None:
                return await ops.broadcast_raw(channel, command, raw_args, dry_run=dry_run, reason=reason)
            if asks_first(command) and not dry_run:
                preview = await ops.broadcast(command, arguments, targets=targets, timeout=wait, dry_run=True)
                confirm(f"send {command} to {preview.count} worker(s)", yes=yes)
            return await ops.broadcast(command, arguments, targets=targets, timeout=wait, dry_run=dry_run, reason=reason)

    result = run(main)
    if channel is not None or command in ("pause", "resume") or result.dry_run:
        show(result, "broadcast" if channel is not None else command, fmt)
    else:
        replies = result.detail.replies or {}
        no_reply = result.detail.missing or []
        rows = [{"worker": w, "reply": r} for w, r in replies.items()]
        rows += [{"worker": w, "reply": "NO REPLY"} for w in no_reply]

        def render() -> object:
            from rich.console import Group

            table = views.records(rows, [("WORKER", "worker"), ("REPLY", "reply")], "no worker answered")
            return Group(table, views.t(f"{len(replies)} replied, {len(no_reply)} missing", "dim"))

        emit(result.to_dict(), fmt, render, lambda: rows)
    if result.dry_run or channel is not None:
        return
    missing = result.detail.missing or []
    if command in ("pause", "resume"):
        if not result.ok:
            fail(f"{command} is persisted, but live worker(s) did not confirm within {timeout}: {', '.join(missing)}",
                 EXIT_FAILED)
        return
    if result.count == 0:
        fail(f"no worker answered {command} within {timeout}", EXIT_FAILED)
    if missing:
        fail(f"{len(missing)} worker(s) did not answer within {timeout}: {', '.join(missing)}", EXIT_FAILED)
    if not result.ok:
        failed = {w: r["error"] for w, r in (result.detail.replies or {}).items()
                  if isinstance(r, dict) and isinstance(r.get("error"), str)}
        named = "; ".join(f"{w}: {e}" for w, e in sorted(failed.items())) or "no worker said why"
        fail(f"{command} failed on {len(failed)} of {result.count} worker(s) that answered: {named}", EXIT_FAILED)


def register(app: typer.Typer) -> None:
    app.command("broadcast")(broadcast)


__all__ = ["broadcast", "register"]
