"""URL dispatch: clear errors for unknown schemes, missing extras and bad options."""

from __future__ import annotations

import pytest

from stem_core import connect_backend, connect_broker
from stem_core.adapters import backend_class, broker_class
from stem_core.errors import ConfigurationError


async def test_unknown_scheme_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="unknown URL scheme"):
        await connect_broker("kafka://localhost:9092")


async def test_broker_only_scheme_cannot_be_a_backend() -> None:
    with pytest.raises(ConfigurationError, match="not a result backend"):
        backend_class("amqp://guest:guest@localhost/")


def test_scheme_aliases_resolve_to_one_adapter() -> None:
    assert broker_class("postgres://x/y") is broker_class("postgresql://x/y")
    assert broker_class("rediss://x") is broker_class("redis://x")


async def test_memory_adapters_connect_and_close() -> None:
    async with await connect_broker("memory://unit-connect") as broker:
        assert broker.capabilities.cross_process is False
    backend = await connect_backend("memory://unit-connect")
    await backend.close()


async def test_unknown_option_is_rejected() -> None:
    with pytest.raises(ConfigurationError):
        await connect_broker("memory://x", no_such_option=1)
