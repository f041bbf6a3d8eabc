"""``stem enqueue``: one task from flags, or many from JSON lines (``--file F`` or ``-``).

Each line of ``--file`` is a JSON object with any of ``task`` (or ``name``), ``args``,
``queue``, ``priority``, ``delay`` (seconds or ``10s``), ``eta`` (ISO-8601), ``id``,
``max_retries``; the command-line options are the defaults. Every line is checked before
anything is sent, so a bad line 9,000 enqueues nothing. Prints the task ids.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from stem_core.limits import MAX_RETRIES
from stem_core.clock import parse_iso

from . import views
from .common import open_ops, run
from .options import CommonOptions, DryRunOpt, ReasonOpt, common_options
from .output import EXIT_USAGE, emit, fail, lines, progress
from .parsing import parse_duration, parse_json_object, parse_pairs

LINE_KEYS = frozenset({"task", "name", "args", "queue", "priority", "delay", "eta", "id", "max_retries"})


def _eta(text: str | None, where: str) -> Any:
    if text is None:
        return None
    try:
        return parse_iso(text)
    except ValueError:
        fail(f"invalid {where} {text!r}: use an ISO-8601 time such as 2026-01-02T03:04:05Z", EXIT_USAGE)


def _line_item(number: int, raw: str, defaults: dict[str, Any], task: str | None) -> tuple[str, dict[str, Any], dict[str, Any]]:
    where = f"line {number}"
    try:
        obj = json.loads(raw)
    except ValueError as exc:
        fail(f"{where}: invalid JSON: {exc}", EXIT_USAGE)
    except RecursionError:
        fail(f"{where}: invalid JSON: nested too deeply", EXIT_USAGE)
    if not isinstance(obj, dict):
        fail(f"{where}: expected a JSON object, got {type(obj).__name__}", EXIT_USAGE)
    unknown = sorted(set(obj) - LINE_KEYS)
    if unknown:
        fail(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(LINE_KEYS))}", EXIT_USAGE)
    name = obj.get("task", obj.get("name", task))
    if not isinstance(name, str) or not name:
        fail(f"{where}: no task name (give TASK on the command line or \"task\" in the line)", EXIT_USAGE)
    args = obj.get("args", {})
    if not isinstance(args, dict):
        fail(f"{where}: args must be a JSON object", EXIT_USAGE)
    options = dict(defaults)
    for key, option in (("queue", "queue"), ("priority", "priority"), ("id", "task_id"), ("max_retries", "max_retries")):
        if key in obj:
            options[option] = obj[key]
    if "delay" in obj:
        delay = obj["delay"]
        options["delay"] = parse_duration(delay, option=f"{where} delay") if isinstance(delay, str) else delay
        options.pop("eta", None)
    if "eta" in obj:
        options["eta"] = _eta(obj["eta"], f"{where} eta") if isinstance(obj["eta"], str) else obj["eta"]
        options.pop("delay", None)
    return name, args, {k: v for k, v in options.items() if v is not None}


def _read_lines(path: str) -> list[tuple[int, str]]:
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
    except OSError as exc:
        fail(f"cannot read --file {path}: {exc.strerror or exc}", EXIT_USAGE)
    except UnicodeDecodeError as exc:
        fail(f"--file {path} is not UTF-8 text: {exc.reason}", EXIT_USAGE)
    return [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


@common_options()
def enqueue(
    task: Annotated[str | None, typer.Argument(metavar="TASK", help="The task name (optional with --file).")] = None,
    args_json: Annotated[str | None, typer.Option("--args", help="Arguments as a JSON object.")] = None,
    arg: Annotated[list[str] | None, typer.Option("--arg", help="One argument as key=value (value parsed as JSON when it can be).")] = None,
    queue: Annotated[str | None, typer.Option("--queue", "-q", help="Queue (default: the task's, else 'default').")] = None,
    priority: Annotated[int | None, typer.Option("--priority", help="0..9, higher first.")] = None,
    delay: Annotated[str | None, typer.Option("--delay", help="Run after this long, e.g. 10s, 5m.")] = None,
    eta: Annotated[str | None, typer.Option("--eta", help="Run at this ISO-8601 time.")] = None,
    max_retries: Annotated[int | None, typer.Option("--max-retries", min=0, max=MAX_RETRIES, help="Retries after a failure.")] = None,
    task_id: Annotated[str | None, typer.Option("--id", help="Task id (default: a new UUID v7).")] = None,
    file: Annotated[str | None, typer.Option("--file", "-f", help="JSON lines to enqueue in bulk ('-' = stdin).")] = None,
    dry_run: DryRunOpt = False,
    reason: ReasonOpt = None,
    *,
    opts: CommonOptions,
) -> None:
    """Enqueue a task (or many from --file); prints the task ids."""
    fmt = opts.fmt()
    if delay is not None and eta is not None:
        fail("give --delay or --eta, not both", EXIT_USAGE)
    defaults: dict[str, Any] = {
        "queue": queue, "priority": priority, "max_retries": max_retries,
        "delay": parse_duration(delay, option="--delay") if delay is not None else None,
        "eta": _eta(eta, "--eta"),
    }
    if file is not None:
        if args_json is not None or arg or task_id is not None:
            fail("--args, --arg and --id describe one task: put them in the --file lines instead", EXIT_USAGE)
        items = [_line_item(n, line, defaults, task) for n, line in _read_lines(file)]
        if not items:
            fail(f"--file {file} holds no JSON lines", EXIT_USAGE)
    else:
        if task is None:
            fail("name the TASK to enqueue (or give --file)", EXIT_USAGE)
        args = parse_json_object(args_json, option="--args") if args_json is not None else {}
        args.update(parse_pairs(arg))
        items = [(task, args, {k: v for k, v in {**defaults, "task_id": task_id}.items() if v is not None})]
    settings = opts.settings()

    async def main() -> None:
        async with open_ops(settings) as ops:
            if len(items) == 1 and file is None:
                name, args, options = items[0]
                result = await ops.enqueue(name, args, dry_run=dry_run, reason=reason, **options)
            else:
                with progress(len(items), "enqueue") as tick:
                    result = await ops.enqueue_many(items, on_progress=tick, dry_run=dry_run, reason=reason)
        ids = result.detail.ids or []
        if dry_run or fmt != "table":
            emit(result.to_dict(), fmt, lambda: views.action(result, "enqueue"),
                 lambda: [{"id": i} for i in ids] if not dry_run else result.sample)
        elif ids:
            lines(ids)

    run(main)


def register(app: typer.Typer) -> None:
    app.command("enqueue")(enqueue)


__all__ = ["enqueue", "register"]
