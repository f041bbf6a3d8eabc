"""The schedule store of the ResultBackend contract (``docs/schedules.md``) on every
backend: versioned documents, compare-and-set saves (exactly one of concurrent savers of a
version wins), conditional deletes, and namespaces kept apart."""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

import pytest

from stem_core import ResultBackend


async def test_create_get_list_and_delete(backend: ResultBackend) -> None:
    assert await backend.get_schedule("a") is None
    assert await backend.list_schedules() == []
    assert await backend.save_schedule("b", {"id": "b", "n": 1}, None) == 1
    assert await backend.save_schedule("a", {"id": "a", "n": 1}, None) == 1
    assert await backend.get_schedule("a") == (1, {"id": "a", "n": 1})
    assert await backend.list_schedules() == [(1, {"id": "a", "n": 1}), (1, {"id": "b", "n": 1})]
    assert await backend.delete_schedule("a") is True
    assert await backend.delete_schedule("a") is False
    assert await backend.list_schedules() == [(1, {"id": "b", "n": 1})]


async def test_save_is_a_compare_and_set_on_the_version(backend: ResultBackend) -> None:
    assert await backend.save_schedule("s", {"n": 1}, None) == 1
    assert await backend.save_schedule("s", {"n": 2}, None) is None  # exists already
    assert await backend.save_schedule("s", {"n": 2}, 1) == 2
    assert await backend.save_schedule("s", {"n": 3}, 1) is None  # stale version
    assert await backend.save_schedule("s", {"nested": {"x": [1, "two"]}}, 2) == 3
    assert await backend.get_schedule("s") == (3, {"nested": {"x": [1, "two"]}})
    assert await backend.save_schedule("missing", {"n": 1}, 4) is None
    assert await backend.get_schedule("missing") is None


async def test_delete_at_a_version(backend: ResultBackend) -> None:
    await backend.save_schedule("s", {"n": 1}, None)
    await backend.save_schedule("s", {"n": 2}, 1)
    assert await backend.delete_schedule("s", 1) is False
    assert await backend.get_schedule("s") == (2, {"n": 2})
    assert await backend.delete_schedule("s", 2) is True
    # Created again, it starts over at version 1.
    assert await backend.save_schedule("s", {"n": 9}, None) == 1


async def test_concurrent_savers_of_one_version_exactly_one_wins(
    backend: ResultBackend, backend_factory: Callable[..., Awaitable[ResultBackend]]
) -> None:
    others = [await backend_factory() for _ in range(2)]
    contenders = [backend, *others]
    await backend.save_schedule("race", {"n": 0}, None)
    for round_ in range(1, 6):
        results = await asyncio.gather(
            *(b.save_schedule("race", {"n": round_, "by": i}, round_) for i, b in enumerate(contenders))
        )
        winners = [r for r in results if r is not None]
        assert winners == [round_ + 1]
    created = await asyncio.gather(*(b.save_schedule("fresh", {"by": i}, None) for i, b in enumerate(contenders)))
    assert sorted(created, key=lambda r: r is None) [0] == 1 and created.count(None) == 2


async def test_bad_arguments_are_value_errors(backend: ResultBackend) -> None:
    with pytest.raises(ValueError):
        await backend.save_schedule("", {"n": 1}, None)
    with pytest.raises(ValueError):
        await backend.save_schedule("s", {"n": float("nan")}, None)
    with pytest.raises(ValueError):
        await backend.save_schedule("s", {"n": 1}, 0)
    with pytest.raises(ValueError):
        await backend.save_schedule("s", ["not", "a", "dict"], None)  # type: ignore[arg-type]


async def test_namespaces_are_kept_apart(backend: ResultBackend, backend_spec, backend_url: str) -> None:  # type: ignore[no-untyped-def]
    from stem_core import connect_backend

    other_ns = backend.namespace + "x"
    other = await connect_backend(backend_url, namespace=other_ns, **backend_spec.backend_options)
    try:
        await backend.save_schedule("s", {"ns": "one"}, None)
        assert await other.get_schedule("s") is None
        assert await other.list_schedules() == []
        assert await other.save_schedule("s", {"ns": "two"}, None) == 1
        assert await backend.get_schedule("s") == (1, {"ns": "one"})
    finally:
        await other.close()
        if backend_spec.cleanup is not None:
            await backend_spec.cleanup(backend_url, other_ns)
