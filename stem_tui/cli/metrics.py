"""``stem metrics``: a Prometheus exporter of the queue figures (depth per state, oldest
pending age, dead letters, live workers), read through ``stem_core.ops`` on each scrape
with a cache and a timeout (``stem_core.ops.metrics``; docs/metrics.md). Runs until
SIGTERM or Ctrl-C (exit 0). A port already in use: one line, exit 2."""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import typer

from stem_core.errors import ConfigurationError
from stem_core.exposition import DEFAULT_METRICS_ADDR, ENV_METRICS_ADDR, ENV_METRICS_PORT, MetricsServer, require_prometheus
from stem_core.ops import Ops
from stem_core.ops.metrics import DEFAULT_MAX_QUEUES, QueueCollector, max_queue_labels

from .common import run
from .options import CommonOptions, common_options
from .output import EXIT_USAGE, fail, info
from .parsing import parse_duration
from .worker import parse_queues

DEFAULT_EXPORTER_PORT = 9809


@common_options(output=False, stale_after=True)
def metrics(
    port: Annotated[int, typer.Option("--port", "-p", envvar=ENV_METRICS_PORT, min=0, max=65535, help="Port to serve /metrics on.", show_envvar=True)] = DEFAULT_EXPORTER_PORT,
    addr: Annotated[str, typer.Option("--addr", envvar=ENV_METRICS_ADDR, help="Address to listen on.", show_envvar=True)] = DEFAULT_METRICS_ADDR,
    queues: Annotated[str | None, typer.Option("--queues", "-q", help="Comma-separated queues (default: every known queue).")] = None,
    cache: Annotated[str, typer.Option("--cache", help="Reuse figures read less than this long ago, e.g. 2s.")] = "2s",
    scrape_timeout: Annotated[str, typer.Option("--scrape-timeout", help="Answer with the last figures when a read takes longer, e.g. 10s.")] = "10s",
    *,
    opts: CommonOptions,
) -> None:
    """Serve the queue figures as Prometheus metrics (docs/metrics.md)."""
    queue_names = parse_queues(queues)
    cache_s = parse_duration(cache, option="--cache")
    timeout_s = parse_duration(scrape_timeout, option="--scrape-timeout")
    if timeout_s <= 0:
        fail("--scrape-timeout must be more than 0", EXIT_USAGE)
    stale = opts.stale_seconds()
    settings = opts.settings()
    try:
        require_prometheus()
        max_queues = max_queue_labels()
    except (ConfigurationError, ValueError) as exc:
        fail(str(exc), EXIT_USAGE)
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    try:
        server = MetricsServer(registry, port, addr)
    except OSError as exc:
        fail(f"cannot serve metrics on {addr}:{port}: {exc.strerror or exc}", EXIT_USAGE)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            async with await Ops.open(settings, stale_after=stale, persist_rates=False) as ops:
                collector = QueueCollector(ops, loop, queues=queue_names, cache=cache_s, timeout=timeout_s,
                                           max_queues=max_queues)
                registry.register(collector)
                info(f"serving queue metrics of namespace {ops.namespace} on http://{addr}:{server.port}/metrics")
                try:
                    await stop.wait()
                finally:
                    registry.unregister(collector)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    try:
        run(main, interrupt_ok=True)
    finally:
        server.close()


def register(app: typer.Typer) -> None:
    app.command("metrics")(metrics)


__all__ = ["DEFAULT_EXPORTER_PORT", "DEFAULT_MAX_QUEUES", "register"]
