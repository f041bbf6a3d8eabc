"""Which adapters the parametrised suites run over.

Each module in this package defines ``SPEC = AdapterSpec(...)`` for one backend; adding a
broker to every contract test is adding one module here. A spec that needs a server is
skipped with a visible reason when the server is down, and fails instead under
``STEM_REQUIRE_SERVICES=1`` (set by ``.ci/run``).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest

REQUIRE_SERVICES = os.environ.get("STEM_REQUIRE_SERVICES") == "1"

SERVICES: dict[str, tuple[str, int]] = {
    "redis": ("127.0.0.1", 6379),
    "postgres": ("127.0.0.1", 5432),
    "rabbitmq": ("127.0.0.1", 5672),
    # The management plugin's HTTP API (tests clean up RabbitMQ namespaces through it).
    "rabbitmq-management": ("127.0.0.1", 15672),
}


@dataclass(frozen=True)
class AdapterSpec:
    """How to reach one adapter in tests.

    ``url(tmp_path)`` gives the URL (a fresh file or store per test where that matters);
    each test also gets its own random namespace. ``cleanup(url, namespace)`` removes
    what the test left on a shared server.

    A broker-only adapter (``has_backend=False``) names in ``paired_backend`` the adapter
    whose URL (and cleanup, and server) serves as its result backend in the app, worker
    and ops tests (``backend_url_of``). ``oldest_first`` is False for a broker that orders
    by priority but not strictly by age among equals (SQS: queues of equal priority take
    turns). ``requeue_keeps_age`` is False when a nacked or requeued message goes to the
    back of its queue (RabbitMQ, SQS: neither can reinsert a message by age), so the model
    test ranks it by the time it went back. ``knows_age`` is False when ``queue_stats``
    cannot tell a queue's ``oldest_pending_age`` (always None: SQS, RabbitMQ).
    ``purges_delayed`` is False when ``purge`` leaves delayed messages (SQS hides them
    until due; RabbitMQ, without peek too, purges its delay queues). ``load``
    scales the task counts of the heavy multi-process tests (moto, the local SQS, answers
    a few hundred requests a second at best).
    """

    id: str
    url: Callable[[Path], str]
    service: str | None = None
    has_backend: bool = True
    cross_process: bool = True
    paired_backend: "AdapterSpec | None" = None
    oldest_first: bool = True
    requeue_keeps_age: bool = True
    knows_age: bool = True
    purges_delayed: bool = True
    load: float = 1.0
    broker_options: dict[str, Any] = field(default_factory=dict)
    backend_options: dict[str, Any] = field(default_factory=dict)
    cleanup: Callable[[str, str], Awaitable[None]] | None = None

    def backend_spec(self) -> "AdapterSpec | None":
        """The adapter that stores results next to this broker (itself where it can)."""
        return self if self.has_backend else self.paired_backend


# Servers the tests start themselves (moto for SQS): name -> start(), which returns once
# the server answers (and skips, or fails under STEM_REQUIRE_SERVICES=1, when it cannot).
STARTERS: dict[str, Callable[[], None]] = {}


def backend_url_of(spec: AdapterSpec, tmp_path: Path) -> str:
    """The result backend a worker or ops test uses with ``spec``'s broker (``spec`` must
    have one: ``spec.backend_spec()`` is not None)."""
    paired = spec.backend_spec()
    assert paired is not None, f"{spec.id} is a broker only and names no paired_backend"
    return paired.url(tmp_path)


def service_up(name: str) -> bool:
    host, port = SERVICES[name]
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require_service(name: str | None) -> None:
    """Skip (or, under STEM_REQUIRE_SERVICES=1, fail) when ``name``'s server is down."""
    if name in STARTERS:
        STARTERS[name]()
        return
    if name is None or service_up(name):
        return
    host, port = SERVICES[name]
    message = f"{name} is not reachable on {host}:{port}"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} and STEM_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(message)


def require_tool(name: str) -> str:
    """The path of the executable ``name``; skip (or, under STEM_REQUIRE_SERVICES=1, fail)
    when it is not on PATH."""
    path = shutil.which(name)
    if path is not None:
        return path
    message = f"{name} is not installed (not on PATH)"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} and STEM_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(message)


def _load() -> list[AdapterSpec]:
    specs = []
    for info in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        spec = getattr(module, "SPEC", None)
        if spec is not None:
            specs.append(spec)
    order = {"memory": 0, "sqlite": 1, "redis": 2, "postgres": 3, "rabbitmq": 4, "sqs": 5}
    return sorted(specs, key=lambda s: order.get(s.id, 99))


SPECS: list[AdapterSpec] = _load()
BROKER_SPECS = SPECS
BACKEND_SPECS = [s for s in SPECS if s.has_backend]
