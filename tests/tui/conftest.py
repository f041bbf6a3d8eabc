"""TUI fixtures: a fresh memory store and namespace per test, stem_core's clock frozen."""

from __future__ import annotations

import uuid
from typing import Iterator

import pytest

from tests.tui.seed import FrozenClock, freeze


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FrozenClock:
    frozen = FrozenClock()
    freeze(monkeypatch, frozen)
    return frozen


@pytest.fixture
def store() -> Iterator[tuple[str, str]]:
    """``(memory url, namespace)``; the store is dropped afterwards."""
    name = f"tui-{uuid.uuid4().hex[:12]}"
    yield f"memory://{name}", "t" + uuid.uuid4().hex[:10]
    from stem_core.adapters.memory.registry import drop_stores  # test cleanup only

    drop_stores(name)
