"""``stem worker``: run the tasks of an app until a signal, a ``shutdown`` command, or
(with ``--burst``) until its queues are drained.

Signals: SIGTERM warm (finish running tasks), SIGINT soft (interrupt them after
``--shutdown-grace`` and requeue), SIGQUIT or a second signal hard (requeue everything
held, exit 1). A warm or soft shutdown that completes exits 0.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import sys
from typing import Annotated

import typer

from stem_core.limits import MAX_CONCURRENCY, MAX_PREFETCH
from stem_core.app import Stem
from stem_core.envelope import validate_name
from stem_core.errors import InvalidName
from stem_core.safetext import SafeFormatter
from stem_core.schedules import Beat
from stem_core.worker import Worker

from .common import loop_factory, run
from .options import CommonOptions, common_options
from .output import EXIT_USAGE, fail
from .parsing import parse_duration

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def load_app(path: str) -> Stem:
    """Import ``pkg.module:attribute`` (``pkg.module`` alone means ``:app``); exit 2 when it
    does not import, lacks the attribute, or is not a ``Stem``."""
    module_name, _, attribute = path.partition(":")
    attribute = attribute or "app"
    if not module_name or not all(part.isidentifier() for part in attribute.split(".")):
        fail(f"--app must look like pkg.module:app, got {path!r}", EXIT_USAGE)
    # Like `python -m`, let the current directory hold the app's package.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        fail(f"cannot import app module {module_name!r}: {exc}", EXIT_USAGE)
    except Exception as exc:  # noqa: BLE001 - the user's module failed while importing
        fail(f"importing app module {module_name!r} failed: {type(exc).__name__}: {exc}", EXIT_USAGE)
    target: object = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            fail(f"app module {module_name!r} has no attribute {attribute!r}", EXIT_USAGE)
        target = getattr(target, part)
    if not isinstance(target, Stem):
        fail(f"{module_name}:{attribute} is a {type(target).__name__}, not a stem_core.Stem app", EXIT_USAGE)
    return target


def parse_queues(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [q.strip() for q in text.split(",") if q.strip()]
    if not names:
        fail("--queues needs at least one queue name", EXIT_USAGE)
    try:
        return [validate_name(q) for q in names]
    except InvalidName as exc:
        fail(str(exc), EXIT_USAGE)


def configure_logging(level: str) -> None:
    if level.lower() not in LOG_LEVELS:
        fail(f"--loglevel must be one of {', '.join(LOG_LEVELS)}, got {level!r}", EXIT_USAGE)
    # One visible line per record: task names and worker ids come from messages.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(SafeFormatter(LOG_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])


@common_options(output=False)
def worker(
    app_path: Annotated[str, typer.Option("--app", "-A", envvar="STEM_APP", help="The app: pkg.module:attribute.", show_envvar=True)],
    queues: Annotated[str | None, typer.Option("--queues", "-q", help="Comma-separated queues (default: the queues of the app's tasks).")] = None,
    concurrency: Annotated[int | None, typer.Option("--concurrency", "-c", min=1, max=MAX_CONCURRENCY, help="Tasks run at once (default: CPU count).")] = None,
    prefetch: Annotated[int | None, typer.Option("--prefetch", min=1, max=MAX_PREFETCH, help="Deliveries held at once (default: concurrency x 2).")] = None,
    burst: Annotated[bool, typer.Option("--burst", help="Exit once the queues are drained.")] = False,
    worker_id: Annotated[str | None, typer.Option("--worker-id", help="Worker id (default: <hostname>-<pid>).")] = None,
    heartbeat_interval: Annotated[str, typer.Option("--heartbeat-interval", help="Heartbeat period, e.g. 10s.")] = "10s",
    shutdown_grace: Annotated[str, typer.Option("--shutdown-grace", help="Soft shutdown grace period, e.g. 30s.")] = "30s",
    loglevel: Annotated[str, typer.Option("--loglevel", "-l", envvar="STEM_LOGLEVEL", help="debug, info, warning, error.")] = "info",
    loop: Annotated[str, typer.Option("--loop", envvar="STEM_LOOP", help="Event loop: auto (uvloop when installed), asyncio, uvloop.", show_envvar=True)] = "auto",
    with_beat: Annotated[bool, typer.Option("--beat", help="Also run a beat (the stored schedules; docs/schedules.md).")] = False,
    *,
    opts: CommonOptions,
) -> None:
    """Run a worker for the tasks of an app."""
    configure_logging(loglevel)
    stem_app = load_app(app_path)
    queue_names = parse_queues(queues)
    heartbeat = parse_duration(heartbeat_interval, option="--heartbeat-interval")
    grace = parse_duration(shutdown_grace, option="--shutdown-grace")
    event_loop = loop_factory(loop)

    async def main() -> int:
        stem_app.configure(broker=opts.broker, backend=opts.backend, namespace=opts.namespace)
        runner = Worker(
            stem_app,
            queues=queue_names,
            concurrency=concurrency,
            prefetch=prefetch,
            worker_id=worker_id,
            burst=burst,
            heartbeat_interval=heartbeat,
            shutdown_grace=grace,
        )
        runner.install_signal_handlers()
        stop = asyncio.Event()
        beat_task = asyncio.create_task(Beat(stem_app).run(stop)) if with_beat else None
        try:
            await runner.run()
        finally:
            stop.set()
            if beat_task is not None:
                await beat_task
            await stem_app.close()
        return runner.exit_code

    raise typer.Exit(run(main, loop=event_loop))


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)


__all__ = ["load_app", "register"]
