"""CLI fixtures: ``cli`` invokes ``stem`` in-process (Typer's CliRunner) against a fresh
``memory://`` store and namespace, given through the ``STEM_*`` environment twins;
``seed`` runs a coroutine on an ``Ops`` over the same store to set the scene."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterator

import pytest
from typer.testing import CliRunner, Result

from stem_core import connect_backend, connect_broker
from stem_core.ops import Ops
from stem_tui.cli.main import _register, app


@dataclass
class Cli:
    url: str
    namespace: str
    runner: CliRunner

    @property
    def env(self) -> dict[str, str]:
        return {"STEM_BROKER_URL": self.url, "STEM_RESULT_BACKEND_URL": self.url, "STEM_NAMESPACE": self.namespace,
                "STEM_ACTOR": "tester@cli", "STEM_STALE_AFTER": "5s", "STEM_DEBUG": ""}

    def __call__(self, *args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
        return self.runner.invoke(app, list(args), input=input, env={**self.env, **(env or {})}, catch_exceptions=False)

    def seed(self, work: Callable[[Ops], Awaitable[Any]]) -> Any:
        async def go() -> Any:
            broker = await connect_broker(self.url, namespace=self.namespace)
            backend = await connect_backend(self.url, namespace=self.namespace)
            try:
                return await work(Ops(broker, backend, actor="seed"))
            finally:
                await broker.close()
                await backend.close()

        return asyncio.run(go())


@pytest.fixture
def cli() -> Iterator[Cli]:
    _register()
    name = uuid.uuid4().hex
    yield Cli(url=f"memory://{name}", namespace="t" + name[:10], runner=CliRunner())
    from stem_core.adapters.memory.registry import drop_stores  # test cleanup only; the CLI never imports it

    drop_stores(name)
