"""Fixtures for the sync API tests: URLs over every adapter with a result backend.

The tests themselves are synchronous (they are the sync callers); cleanup of a shared
server's namespace runs on a private event loop at teardown.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest

from stem_core import Stem
from tests.specs import BROKER_SPECS, AdapterSpec, backend_url_of, require_service

SYNC_SPECS = [s for s in BROKER_SPECS if s.backend_spec() is not None]


@dataclass(frozen=True)
class Store:
    spec: AdapterSpec
    broker_url: str
    backend_url: str
    namespace: str

    def app(self) -> Stem:
        return Stem(broker=self.broker_url, backend=self.backend_url, namespace=self.namespace)


@pytest.fixture(params=SYNC_SPECS, ids=lambda s: s.id)
def sync_spec(request: pytest.FixtureRequest) -> AdapterSpec:
    spec: AdapterSpec = request.param
    require_service(spec.service)
    if spec.paired_backend is not None:
        require_service(spec.paired_backend.service)
    return spec


@pytest.fixture
def store(sync_spec: AdapterSpec, tmp_path: Path, namespace: str) -> Iterator[Store]:
    yield Store(sync_spec, sync_spec.url(tmp_path), backend_url_of(sync_spec, tmp_path), namespace)


@pytest.fixture
def app_factory(store: Store) -> Iterator[Callable[[], Stem]]:
    """``make()``: a new Stem on this test's store and namespace; every one is closed (sync
    thread included) and the namespace cleaned up at teardown."""
    apps: list[Stem] = []

    def make() -> Stem:
        app = store.app()
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close_sync()
    asyncio.run(_cleanup(store))


async def _cleanup(store: Store) -> None:
    spec = store.spec
    if spec.cleanup is not None:
        await spec.cleanup(store.broker_url, store.namespace)
    paired = spec.paired_backend
    if not spec.has_backend and paired is not None and paired.cleanup is not None:
        await paired.cleanup(store.backend_url, store.namespace)
