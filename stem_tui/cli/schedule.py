"""``stem schedule``: list, show, add, remove, pause, resume and run-now the stored
schedules (through ``Ops``, actions audited); ``stem beat``: run them
(``docs/schedules.md``)."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Annotated, Any

import typer

from stem_core.clock import utcnow
from stem_core.schedules import CATCH_UP, DEFAULT_LEASE_S, Beat, Schedule

from . import views
from .common import loop_factory, open_ops, read_and_show, run, show
from .options import CommonOptions, ReasonOpt, common_options
from .output import EXIT_USAGE, fail
from .parsing import parse_duration, parse_json_object

schedule_app = typer.Typer(name="schedule", help="Periodic schedules: list, show, add, remove, pause, resume, run-now.",
                           no_args_is_help=True)
IdArg = Annotated[str, typer.Argument(metavar="ID", help="The schedule id.")]
COLUMNS = [("ID", "id"), ("TASK", "task"), ("SPEC", "spec"), ("NEXT RUN", "next_run"), ("LAST RUN", "last_run"),
           ("LAST TASK", "last_task_id"), ("PAUSED", "paused")]


def _row(s: Schedule) -> dict[str, Any]:
    d = s.to_dict()
    spec = s.spec + (f" ({s.tz})" if s.tz != "UTC" else "")
    return {**d, "spec": spec, "paused": "yes" if s.paused else "no"}


@schedule_app.command("list")
@common_options()
def list_(*, opts: CommonOptions) -> None:
    """Every stored schedule: next run, last run and task, paused."""
    read_and_show(lambda ops: ops.schedules(), lambda rows: [s.to_dict() for s in rows],
                  lambda rows: views.records([_row(s) for s in rows], COLUMNS, "no schedules"), opts,
                  rows=lambda rows: [s.to_dict() for s in rows])


@schedule_app.command("show")
@common_options()
def show_(schedule_id: IdArg, *, opts: CommonOptions) -> None:
    """One schedule, every field."""

    def render(s: Schedule) -> object:
        items = [{"field": k, "value": v} for k, v in s.to_dict().items()]
        return views.records(items, [("FIELD", "field"), ("VALUE", "value")], "")

    read_and_show(lambda ops: ops.schedule(schedule_id), lambda s: s.to_dict(), render, opts)


def _act(action: Any, verb: str, opts: CommonOptions) -> None:
    fmt = opts.fmt()
    settings = opts.settings()

    async def main() -> None:
        async with open_ops(settings) as ops:
            result = await action(ops)
        show(result, verb, fmt)

    run(main)


@schedule_app.command("add")
@common_options()
def add(
    schedule_id: IdArg,
    task: Annotated[str, typer.Argument(metavar="TASK", help="The task name to enqueue.")],
    spec: Annotated[str | None, typer.Argument(metavar="[SPEC]", help="'every 30s', 'cron */5 * * * *' or 'at 2027-01-01T00:00Z' (or one of --every, --cron, --at).")] = None,
    every: Annotated[str | None, typer.Option("--every", help="Interval, e.g. 30s: the same as SPEC 'every 30s'.")] = None,
    cron: Annotated[str | None, typer.Option("--cron", help="Cron fields, e.g. '*/5 * * * *': the same as SPEC 'cron ...'.")] = None,
    at: Annotated[str | None, typer.Option("--at", help="One-off ISO time: the same as SPEC 'at ...'.")] = None,
    args: Annotated[str | None, typer.Option("--args", help="Task args as a JSON object.")] = None,
    queue: Annotated[str | None, typer.Option("--queue", help="Queue (default: the task's).")] = None,
    tz: Annotated[str, typer.Option("--tz", help="IANA time zone of a cron spec.")] = "UTC",
    catch_up: Annotated[str, typer.Option("--catch-up", help="Missed runs after downtime: none, one, all.")] = "one",
    paused: Annotated[bool, typer.Option("--paused", help="Store it paused.")] = False,
    reason: ReasonOpt = None,
    *,
    opts: CommonOptions,
) -> None:
    """Store a new schedule (bad specs: exit 2)."""
    given = [f"{kind} {value}" for kind, value in (("every", every), ("cron", cron), ("at", at)) if value is not None]
    if spec is not None:
        given.insert(0, spec)
    if len(given) != 1:
        fail("give the schedule once: SPEC ('every 30s', 'cron */5 * * * *', 'at 2027-01-01T00:00Z') "
             "or one of --every, --cron, --at", EXIT_USAGE)
    spec = given[0]
    task_args = parse_json_object(args, option="--args") if args is not None else {}
    if catch_up not in CATCH_UP:
        fail(f"--catch-up must be one of {', '.join(CATCH_UP)}, got {catch_up!r}", EXIT_USAGE)
    try:  # checked before connecting: a bad spec is exit 2 whatever the servers do
        Schedule.new(schedule_id, task, spec, now=utcnow(), args=task_args, queue=queue, tz=tz, catch_up=catch_up)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)
    _act(lambda ops: ops.add_schedule(schedule_id, task, spec, args=task_args, queue=queue, tz=tz, catch_up=catch_up,
                                      paused=paused, reason=reason), "added", opts)


def _simple(name: str, method: str, verb: str, doc: str) -> None:
    @common_options()
    def command(schedule_id: IdArg, reason: ReasonOpt = None, *, opts: CommonOptions) -> None:
        _act(lambda ops: getattr(ops, method)(schedule_id, reason=reason), verb, opts)

    command.__doc__ = doc
    schedule_app.command(name)(command)


_simple("remove", "remove_schedule", "removed", "Delete a schedule.")
_simple("pause", "pause_schedule", "paused", "Stop running a schedule until resumed.")
_simple("resume", "resume_schedule", "resumed", "Run a paused schedule again (from its next due time after now).")
_simple("run-now", "run_schedule_now", "enqueued", "Enqueue the schedule's task now (its next run is unchanged).")


# -- stem beat ---------------------------------------------------------------------------


@common_options(output=False)
def beat(
    app_path: Annotated[str | None, typer.Option("--app", "-A", envvar="STEM_APP", help="The app whose code-declared schedules are synced (pkg.module:attribute).", show_envvar=True)] = None,
    lease: Annotated[str, typer.Option("--lease", help="How long a claimed due time is held, e.g. 30s.")] = f"{DEFAULT_LEASE_S:g}s",
    beat_id: Annotated[str | None, typer.Option("--beat-id", help="This beat's id (default: beat-<host>-<pid>).")] = None,
    loglevel: Annotated[str, typer.Option("--loglevel", "-l", envvar="STEM_LOGLEVEL", help="debug, info, warning, error.")] = "info",
    loop: Annotated[str, typer.Option("--loop", envvar="STEM_LOOP", help="Event loop: auto, asyncio, uvloop.", show_envvar=True)] = "auto",
    *,
    opts: CommonOptions,
) -> None:
    """Run the stored schedules (any number of beats may run at once: one enqueue per due time)."""
    from stem_core.app import Stem

    from .worker import configure_logging, load_app

    configure_logging(loglevel)
    stem_app = load_app(app_path) if app_path else Stem()
    lease_s = parse_duration(lease, option="--lease")
    if lease_s < 1:
        fail("--lease must be at least 1s", EXIT_USAGE)
    event_loop = loop_factory(loop)

    async def main() -> int:
        stem_app.configure(broker=opts.broker, backend=opts.backend, namespace=opts.namespace)
        stop = asyncio.Event()
        running = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            running.add_signal_handler(sig, stop.set)
        try:
            await Beat(stem_app, owner=beat_id, lease=lease_s).run(stop)
        finally:
            await stem_app.close()
        logging.getLogger("stem.beat").info("beat stopped")
        return 0

    raise typer.Exit(run(main, loop=event_loop))


def register(app: typer.Typer) -> None:
    app.add_typer(schedule_app, name="schedule")
    app.command("beat")(beat)


__all__ = ["beat", "register", "schedule_app"]
