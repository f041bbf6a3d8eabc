"""Fixtures for worker tests: apps over every adapter with a result backend, worker processes."""

from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator, Callable, Iterator

import pytest

from stem_core import Stem
from tests.specs import BROKER_SPECS, AdapterSpec, backend_url_of, require_service
from tests.worker.helpers import WorkerProcess

# In-process worker tests run on every adapter that is also a result backend, and on
# broker-only adapters paired with the backend their spec names; tests with real worker
# processes only where the broker crosses processes.
WORKER_SPECS = [s for s in BROKER_SPECS if s.backend_spec() is not None]
PROCESS_SPECS = [s for s in WORKER_SPECS if s.cross_process]


def _require(spec: AdapterSpec) -> AdapterSpec:
    require_service(spec.service)
    if spec.paired_backend is not None:
        require_service(spec.paired_backend.service)
    return spec


@pytest.fixture(params=WORKER_SPECS, ids=lambda s: s.id)
def worker_spec(request: pytest.FixtureRequest) -> AdapterSpec:
    return _require(request.param)


@pytest.fixture(params=PROCESS_SPECS, ids=lambda s: s.id)
def process_spec(request: pytest.FixtureRequest) -> AdapterSpec:
    return _require(request.param)


async def _cleanup(spec: AdapterSpec, url: str, backend_url: str, namespace: str) -> None:
    if spec.cleanup is not None:  # the memory spec drops its store too
        await spec.cleanup(url, namespace)
    paired = spec.paired_backend
    if not spec.has_backend and paired is not None and paired.cleanup is not None:
        await paired.cleanup(backend_url, namespace)


@pytest.fixture
async def app_factory(worker_spec: AdapterSpec, tmp_path: Path, namespace: str) -> AsyncIterator[Callable[[], Stem]]:
    """``make()``: a new Stem on this test's store and namespace (each with its own connections)."""
    url = worker_spec.url(tmp_path)
    backend_url = backend_url_of(worker_spec, tmp_path)
    apps: list[Stem] = []

    def make() -> Stem:
        app = Stem(broker=url, backend=backend_url, namespace=namespace)
        apps.append(app)
        return app

    yield make
    for app in apps:
        await app.close()
    await _cleanup(worker_spec, url, backend_url, namespace)


@pytest.fixture
def process_url(process_spec: AdapterSpec, tmp_path: Path) -> str:
    return process_spec.url(tmp_path)


@pytest.fixture
def process_backend_url(process_spec: AdapterSpec, tmp_path: Path) -> str:
    return backend_url_of(process_spec, tmp_path)


@pytest.fixture
async def producer(process_spec: AdapterSpec, process_url: str, process_backend_url: str,
                   namespace: str) -> AsyncIterator[Stem]:
    """The test's own app on the process store, with the worker app's task definitions."""
    from tests.worker.apps.tasks import register

    app = register(Stem(broker=process_url, backend=process_backend_url, namespace=namespace))
    await app.connect()
    yield app
    await app.close()
    await _cleanup(process_spec, process_url, process_backend_url, namespace)


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    path = tmp_path / "executions"
    path.mkdir()
    return path


@pytest.fixture
def spawn(producer: Stem, process_url: str, process_backend_url: str, namespace: str,
          log_dir: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """``spawn(*extra_args)``: start a ``stem worker`` process; all are killed at teardown
    (before the producer's store is cleaned up)."""
    started: list[WorkerProcess] = []

    def start(*extra: str) -> WorkerProcess:
        proc = WorkerProcess(process_url, namespace, log_dir, *extra, backend_url=process_backend_url)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop_now()
