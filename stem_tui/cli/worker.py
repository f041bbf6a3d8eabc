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
import socket
import sys
from typing import Annotated

import typer

from stem_core.limits import MAX_CONCURRENCY, MAX_PREFETCH, MAX_PROCESSES
from stem_core.app import Stem
from stem_core.envelope import validate_name
from stem_core.errors import ConfigurationError, InvalidName
from stem_core.logs import ENV_LOG_FORMAT, LOG_FORMATS, JsonFormatter
from stem_core.safetext import SafeFormatter
from stem_core.schedules import Beat
from stem_core.worker import Worker
from stem_core.worker.supervisor import Supervisor, child_argv
from stem_core.exposition import DEFAULT_METRICS_ADDR, ENV_METRICS_ADDR, ENV_METRICS_PORT, MetricsServer
from stem_core.worker.metrics import WorkerMetrics

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


def configure_logging(level: str, log_format: str = "text") -> None:
    if level.lower() not in LOG_LEVELS:
        fail(f"--loglevel must be one of {', '.join(LOG_LEVELS)}, got {level!r}", EXIT_USAGE)
    if log_format not in LOG_FORMATS:
        fail(f"--log-format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}", EXIT_USAGE)
    # One visible line per record: task names and worker ids come from messages.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else SafeFormatter(LOG_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])


def start_metrics(port: int, addr: str, metrics: WorkerMetrics) -> MetricsServer:
    """The metrics server, or one line and exit 2 (port in use, bad address)."""
    try:
        server = MetricsServer(metrics.registry, port, addr)
    except OSError as exc:
        fail(f"cannot serve metrics on {addr}:{port}: {exc.strerror or exc}", EXIT_USAGE)
    logging.getLogger("stem.worker").info("serving metrics on http://%s:%d/metrics", addr, server.port,
                                          extra={"worker_id": metrics.worker_id})
    return server


def worker_metrics(app: Stem, worker_id: str | None) -> WorkerMetrics:
    try:
        return WorkerMetrics(worker_id=worker_id or f"{socket.gethostname()}-{os.getpid()}",
                             registered=lambda name: app.registry.get(name) is not None)
    except (ConfigurationError, ValueError) as exc:
        fail(str(exc), EXIT_USAGE)


@common_options(output=False)
def worker(
    app_path: Annotated[str, typer.Option("--app", "-A", envvar="STEM_APP", help="The app: pkg.module:attribute.", show_envvar=True)],
    queues: Annotated[str | None, typer.Option("--queues", "-q", help="Comma-separated queues (default: the queues of the app's tasks).")] = None,
    concurrency: Annotated[int | None, typer.Option("--concurrency", "-c", min=1, max=MAX_CONCURRENCY, help="Tasks run at once (default: CPU count).")] = None,
    prefetch: Annotated[int | None, typer.Option("--prefetch", min=1, max=MAX_PREFETCH, help="Deliveries held at once (default: concurrency x 2).")] = None,
    burst: Annotated[bool, typer.Option("--burst", help="Exit once the queues are drained.")] = False,
    worker_id: Annotated[str | None, typer.Option("--worker-id", help="Worker id (default: <hostname>-<pid>; with --processes, each child gets <id>-<n>).")] = None,
    heartbeat_interval: Annotated[str, typer.Option("--heartbeat-interval", help="Heartbeat period, e.g. 10s.")] = "10s",
    shutdown_grace: Annotated[str, typer.Option("--shutdown-grace", help="Soft shutdown grace period, e.g. 30s.")] = "30s",
    loglevel: Annotated[str, typer.Option("--loglevel", "-l", envvar="STEM_LOGLEVEL", help="debug, info, warning, error.")] = "info",
    loop: Annotated[str, typer.Option("--loop", envvar="STEM_LOOP", help="Event loop: auto (uvloop when installed), asyncio, uvloop.", show_envvar=True)] = "auto",
    max_deliveries: Annotated[int | None, typer.Option("--max-deliveries", envvar="STEM_MAX_DELIVERIES", min=0, max=1_000_000, help="Dead-letter a task delivered this many times without being settled (its worker died each time); 0: no limit (default 10).", show_envvar=True)] = None,
    processes: Annotated[int, typer.Option("--processes", min=1, max=MAX_PROCESSES, help="Worker processes under one supervisor, each with its own --concurrency (default 1: no supervisor).")] = 1,
    log_format: Annotated[str, typer.Option("--log-format", envvar=ENV_LOG_FORMAT, help="Log lines: text, or json (one object per line).", show_envvar=True)] = "text",
    metrics_port: Annotated[int | None, typer.Option("--metrics-port", envvar=ENV_METRICS_PORT, min=0, max=65535, help="Serve Prometheus metrics on this port (docs/metrics.md).", show_envvar=True)] = None,
    metrics_addr: Annotated[str, typer.Option("--metrics-addr", envvar=ENV_METRICS_ADDR, help="Address the metrics server listens on.", show_envvar=True)] = DEFAULT_METRICS_ADDR,
    with_beat: Annotated[bool, typer.Option("--beat", help="Also run a beat (the stored schedules; docs/schedules.md).")] = False,
    *,
    opts: CommonOptions,
) -> None:
    """Run a worker for the tasks of an app."""
    configure_logging(loglevel, log_format.strip().lower())
    stem_app = load_app(app_path)
    queue_names = parse_queues(queues)
    heartbeat = parse_duration(heartbeat_interval, option="--heartbeat-interval")
    grace = parse_duration(shutdown_grace, option="--shutdown-grace")
    event_loop = loop_factory(loop)
    if processes > 1:
        raise typer.Exit(supervise(processes, worker_id=worker_id, burst=burst, metrics_port=metrics_port,
                                    with_beat=with_beat))
    metrics = worker_metrics(stem_app, worker_id) if metrics_port is not None else None
    server = start_metrics(metrics_port, metrics_addr, metrics) if metrics is not None and metrics_port is not None else None

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
            metrics=metrics,
            max_deliveries=max_deliveries,
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

    try:
        code = run(main, loop=event_loop)
    finally:
        if server is not None:
            server.close()
    raise typer.Exit(code)


def supervise(processes: int, *, worker_id: str | None, burst: bool, metrics_port: int | None,
              with_beat: bool = False) -> int:
    """Run ``processes`` copies of this very command line (without ``--processes``) under a
    ``Supervisor``; each child gets ``--worker-id <id>-<n>`` when an id was given, else
    its own default ``<hostname>-<pid>``, and with ``--metrics-port P`` (flag or variable)
    child n (from 0) serves on P + n (0: each picks a free port and logs it). ``--beat``
    goes to the first child only: one beat per supervisor is enough (beats are safe to
    run in any number, but N of them would only wait on each other's claims)."""
    own = ("--processes", "--worker-id", "--metrics-port")
    base = [sys.executable, "-m", "stem_tui.cli.main", *child_argv(sys.argv[1:], drop=own, flags=("--beat",))]

    def command(index: int) -> list[str]:
        argv = base + (["--worker-id", f"{worker_id}-{index + 1}"] if worker_id else [])
        if with_beat and index == 0:
            argv.append("--beat")
        if metrics_port is not None:
            argv += ["--metrics-port", str(metrics_port + index if metrics_port else 0)]
        return argv

    async def main() -> int:
        supervisor = Supervisor(command, processes, burst=burst)
        supervisor.install_signal_handlers()
        return await supervisor.run()

    return run(main)


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)


__all__ = ["load_app", "register"]
