"""Shared fixtures: a fresh namespace per test and brokers/backends over every adapter."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable

import pytest

from stem_core import Broker, ResultBackend, connect_backend, connect_broker
from tests.specs import BACKEND_SPECS, BROKER_SPECS, AdapterSpec, require_service


@pytest.fixture
def namespace() -> str:
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture(params=BROKER_SPECS, ids=lambda s: s.id)
def broker_spec(request: pytest.FixtureRequest) -> AdapterSpec:
    spec: AdapterSpec = request.param
    require_service(spec.service)
    return spec


@pytest.fixture(params=BACKEND_SPECS, ids=lambda s: s.id)
def backend_spec(request: pytest.FixtureRequest) -> AdapterSpec:
    spec: AdapterSpec = request.param
    require_service(spec.service)
    return spec


@pytest.fixture
def broker_url(broker_spec: AdapterSpec, tmp_path: Path) -> str:
    return broker_spec.url(tmp_path)


@pytest.fixture
def backend_url(backend_spec: AdapterSpec, tmp_path: Path) -> str:
    return backend_spec.url(tmp_path)


@pytest.fixture
async def broker_factory(
    broker_spec: AdapterSpec, broker_url: str, namespace: str
) -> AsyncIterator[Callable[..., Awaitable[Broker]]]:
    """``await broker_factory(**options)``: another connected broker on the same store and namespace."""
    opened: list[Broker] = []

    async def make(**options: object) -> Broker:
        merged = {**broker_spec.broker_options, **options}
        broker = await connect_broker(broker_url, namespace=namespace, **merged)
        opened.append(broker)
        return broker

    yield make
    for broker in opened:
        await broker.close()
    if broker_spec.cleanup is not None:
        await broker_spec.cleanup(broker_url, namespace)


@pytest.fixture
async def broker(broker_factory: Callable[..., Awaitable[Broker]]) -> Broker:
    return await broker_factory()


@pytest.fixture
async def backend_factory(
    backend_spec: AdapterSpec, backend_url: str, namespace: str
) -> AsyncIterator[Callable[..., Awaitable[ResultBackend]]]:
    opened: list[ResultBackend] = []

    async def make(**options: object) -> ResultBackend:
        merged = {**backend_spec.backend_options, **options}
        backend = await connect_backend(backend_url, namespace=namespace, **merged)
        opened.append(backend)
        return backend

    yield make
    for backend in opened:
        await backend.close()
    if backend_spec.cleanup is not None:
        await backend_spec.cleanup(backend_url, namespace)


@pytest.fixture
async def backend(backend_factory: Callable[..., Awaitable[ResultBackend]]) -> ResultBackend:
    return await backend_factory()
