"""Serving Prometheus metrics: ``MetricsServer`` (prometheus_client's HTTP server for one
registry, on a thread of its own) and the settings the worker and ``stem metrics`` share
(docs/metrics.md). prometheus-client comes with the ``metrics`` extra and is imported
only when metrics are asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

ENV_METRICS_PORT = "STEM_METRICS_PORT"
ENV_METRICS_ADDR = "STEM_METRICS_ADDR"
DEFAULT_METRICS_ADDR = "0.0.0.0"


def require_prometheus() -> None:
    """``ConfigurationError`` naming the extra when prometheus-client is not installed."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise ConfigurationError("metrics need prometheus-client: pip install 'stem-queue[metrics]'") from None


class MetricsServer:
    """prometheus_client's HTTP server for one registry, on a thread; ``close()`` stops it."""

    def __init__(self, registry: "CollectorRegistry", port: int, addr: str = DEFAULT_METRICS_ADDR) -> None:
        from prometheus_client import start_http_server

        # OSError (EADDRINUSE, a bad address) goes to the caller, which says it in one line.
        self._server, self._thread = start_http_server(port, addr=addr, registry=registry)
        self.port = int(self._server.server_address[1])
        self.addr = addr

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "MetricsServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


__all__ = ["DEFAULT_METRICS_ADDR", "ENV_METRICS_ADDR", "ENV_METRICS_PORT", "MetricsServer", "require_prometheus"]
