"""The hostile-input corpus runs on every broker of ``tests/specs`` and both front ends.

``target`` is one broker (with its result backend: itself, or the spec's paired one) in a
fresh namespace: ``target.cli(...)`` runs ``stem`` in-process (Typer's CliRunner, so the
``memory://`` store is shared with the test), ``await target.ops()`` opens an ``Ops`` on
the same store. Cases marked ``light`` run on every broker; the others skip RabbitMQ and
SQS (each command there costs a connection, a moto round trip or a queue declaration),
which keeps the whole package well under three minutes.

Every check of a front end's output goes through ``clean``: no traceback, no raw control
or bidi character from the input, no sentinel secret.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Iterator, Sequence

import pytest
from typer.testing import CliRunner, Result

from stem_core import Envelope, connect_backend, connect_broker
from stem_core.ops import Ops
from tests.security.corpus import RAW_CONTROL, SENTINEL
from tests.specs import SPECS, AdapterSpec, backend_url_of, require_service
from tests.specs.postgres import URL as POSTGRES_URL
from tests.specs.redis import REDIS_TEST_URL

SLOW = ("rabbitmq", "sqs")
CANARY_QUEUE = "canary"
CANARY_ID = "canary-0001"
CANARY_ARGS = {"keep": "me", "n": 1}


def matrix(cases: Iterable[Any], *, key: Callable[[Any], str] = lambda c: c.id,
           light: Callable[[Any], bool] = lambda c: getattr(c, "light", False)) -> list[Any]:
    """``(spec, case)`` parameters: every case on the fast brokers, the light ones on all."""
    out = []
    for spec in SPECS:
        for case in cases:
            if spec.id in SLOW and not light(case):
                continue
            out.append(pytest.param(spec, case, id=f"{spec.id}-{key(case)}"))
    return out


def spec_params(specs: Sequence[AdapterSpec] = SPECS) -> list[Any]:
    return [pytest.param(spec, id=spec.id) for spec in specs]


def clean(*texts: str, where: str = "") -> None:
    """No traceback, no raw control/bidi character and no sentinel in any of ``texts``.

    Stem's own line breaks are allowed (newline; a tab only inside its own tables is
    never needed, so it is not allowed either)."""
    for text in texts:
        assert "Traceback" not in text, f"{where}: a traceback reached the output:\n{text[-2000:]}"
        assert SENTINEL not in text, f"{where}: the sentinel secret was shown:\n{_around(text, SENTINEL)}"
        found = RAW_CONTROL.findall(text.replace("\n", ""))
        assert not found, f"{where}: raw control characters reached the output: {sorted(set(found))!r}"


def _around(text: str, needle: str) -> str:
    at = text.find(needle)
    return text[max(0, at - 200): at + 200]


def one_line_error(result: Result, where: str) -> None:
    """SPEC §7: an error is one clear line on stderr, never an "unexpected" crash."""
    err = result.stderr
    assert err.startswith("error: "), f"{where}: stderr does not start with 'error: ': {err[-500:]!r}"
    assert err.count("\n") == 1, f"{where}: the error is not one line: {err[-1500:]!r}"
    assert "unexpected" not in err, f"{where}: an unexpected error instead of a clear one: {err!r}"


@dataclass
class Target:
    spec: AdapterSpec
    url: str
    backend_url: str
    namespace: str
    runner: CliRunner = field(default_factory=CliRunner)
    opened: list[Ops] = field(default_factory=list)

    @property
    def light(self) -> bool:
        return self.spec.id in SLOW

    @property
    def peeks(self) -> bool:
        return self.spec.id not in SLOW  # RabbitMQ and SQS cannot peek

    @property
    def env(self) -> dict[str, str | None]:
        return {"STEM_BROKER_URL": self.url, "STEM_RESULT_BACKEND_URL": self.backend_url,
                "STEM_NAMESPACE": self.namespace, "STEM_ACTOR": "tester@security", "STEM_DEBUG": None,
                "STEM_STALE_AFTER": None, "NO_COLOR": "1", "COLUMNS": "200"}

    def cli(self, *args: str, input: str | None = None, env: dict[str, str | None] | None = None) -> Result:
        """Run ``stem ARGS``; an exception escaping the command is a traceback the user would see."""
        from stem_tui.cli.main import _register, app

        _register()
        result = self.runner.invoke(app, list(args), input=input, env={**self.env, **(env or {})}, catch_exceptions=True)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError(f"stem {_short(args)} raised {type(result.exception).__name__}: "
                                 f"{str(result.exception)[:300]} (a traceback for the user)") from result.exception
        return result

    async def acli(self, *args: str, **options: Any) -> Result:
        """``cli`` from async code (the CLI runs its own event loop, so in a thread)."""
        return await asyncio.to_thread(self.cli, *args, **options)

    async def ops(self) -> Ops:
        broker = await connect_broker(self.url, namespace=self.namespace)
        backend = await connect_backend(self.backend_url, namespace=self.namespace)
        ops = Ops(broker, backend, actor="checker", persist_rates=False)
        self.opened.append(ops)
        return ops

    async def close(self) -> None:
        for ops in self.opened:
            await ops.broker.close()
            await ops.backend.close()
        self.opened.clear()

    def run(self, work: Callable[[Ops], Awaitable[Any]]) -> Any:
        """Run ``work(ops)`` on a fresh event loop (for sync tests)."""

        async def go() -> Any:
            ops = await self.ops()
            try:
                return await work(ops)
            finally:
                await self.close()

        return asyncio.run(go())

    # -- the canary: a queue the test never names, which must come out untouched ---------

    async def plant_canary(self, ops: Ops) -> None:
        """One dead letter (where the broker has them) and one pending message in ``canary``."""
        if ops.broker.capabilities.dead_letters:
            await ops.broker.publish(Envelope(id=CANARY_ID + "-dead", name="canary.dead", queue=CANARY_QUEUE))
            delivery = await _take_one(ops)
            assert delivery.envelope.id == CANARY_ID + "-dead"
            await ops.broker.dead_letter(delivery, reason="canary")
        await ops.broker.publish(Envelope(id=CANARY_ID, name="canary.task", args=CANARY_ARGS, queue=CANARY_QUEUE))

    async def canary(self, ops: Ops) -> tuple[int, int, list[Any]]:
        """(pending, dead, what is pending) of the canary queue."""
        [stats] = await ops.broker.queue_stats([CANARY_QUEUE])
        shown: list[Any] = []
        if ops.broker.capabilities.peek:
            shown = [(m.envelope.id, m.envelope.name, m.envelope.args, m.envelope.attempt)
                     for m in await ops.broker.peek(CANARY_QUEUE)]
        return (stats.pending or 0) + (stats.delayed or 0) + (stats.inflight or 0), stats.dead or 0, shown

    def live(self, queue: str) -> int:
        """Pending + delayed + in-flight messages of ``queue`` (from ``queue_stats``, which
        every broker answers)."""

        async def count(ops: Ops) -> int:
            [stats] = await ops.broker.queue_stats([queue])
            return (stats.pending or 0) + (stats.delayed or 0) + (stats.inflight or 0)

        return int(self.run(count))

    async def assert_canary(self, ops: Ops) -> None:
        pending, dead, shown = await self.canary(ops)
        want_dead = 1 if ops.broker.capabilities.dead_letters else 0
        assert (pending, dead) == (1, want_dead), f"the canary queue was touched: {pending} live, {dead} dead"
        if ops.broker.capabilities.peek:
            assert shown == [(CANARY_ID, "canary.task", CANARY_ARGS, 0)], f"the canary message changed: {shown!r}"


async def _take_one(ops: Ops) -> Any:
    """Lease the one message of the canary queue."""
    stream = ops.broker.consume([CANARY_QUEUE], prefetch=1, consumer="canary-setup")
    try:
        async with asyncio.timeout(60):
            async for delivery in stream:
                return delivery
    finally:
        await stream.aclose()  # type: ignore[attr-defined]


def _short(args: Sequence[str]) -> str:
    text = " ".join(args)
    return repr(text if len(text) < 120 else text[:117] + "...")


def secret_urls(spec: AdapterSpec, tmp_path: Path) -> tuple[str, str]:
    """URLs of ``spec``'s broker and a backend that work and carry the sentinel: in the
    broker URL where the server ignores it (Postgres trust auth, Redis's nopass default
    user, moto), else in the backend URL."""
    redis_secret = REDIS_TEST_URL.replace("redis://", f"redis://default:{SENTINEL}@")
    pg_secret = POSTGRES_URL.replace("postgres@", f"postgres:{SENTINEL}@") + f"?sslpassword={SENTINEL}"
    if spec.id == "redis":
        return redis_secret, redis_secret
    if spec.id == "postgres":
        return pg_secret, pg_secret
    if spec.id == "sqs":
        return spec.url(tmp_path).replace("testing:testing@", f"testing:{SENTINEL}@"), redis_secret
    if spec.id == "memory":
        return spec.url(tmp_path), pg_secret
    return spec.url(tmp_path), redis_secret  # sqlite, rabbitmq


def make_target(spec: AdapterSpec, tmp_path: Path) -> Target:
    require_service(spec.service)
    paired = spec.backend_spec()
    if paired is not None and paired is not spec:
        require_service(paired.service)
    return Target(spec=spec, url=spec.url(tmp_path), backend_url=backend_url_of(spec, tmp_path),
                  namespace="s" + uuid.uuid4().hex[:12])


async def cleanup(target: Target) -> None:
    await target.close()
    if target.spec.cleanup is not None:
        await target.spec.cleanup(target.url, target.namespace)
    paired = target.spec.paired_backend
    if paired is not None and paired.cleanup is not None and not target.spec.has_backend:
        await paired.cleanup(target.backend_url, target.namespace)


@pytest.fixture
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    """Indirect: ``request.param`` is the AdapterSpec."""
    made = make_target(request.param, tmp_path)
    yield made
    asyncio.run(cleanup(made))


@pytest.fixture
async def atarget(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """``target`` for async tests (cleaned up on the test's loop)."""
    made = make_target(request.param, tmp_path)
    yield made
    await cleanup(made)


class Cases:
    """Soft assertions over a corpus: each case runs, every failing case is reported.

        cases = Cases()
        for name in NAMES:
            with cases.case(name.id):
                ...asserts...
        cases.check()
    """

    def __init__(self) -> None:
        self.failed: dict[str, str] = {}
        self.ran: list[str] = []

    def case(self, case_id: str) -> "_Case":
        self.ran.append(case_id)
        return _Case(self, case_id)

    def check(self) -> None:
        assert self.ran, "no case ran"
        if self.failed:
            lines = [f"{len(self.failed)} of {len(self.ran)} case(s) failed:"]
            lines += [f"  [{k}] {v}" for k, v in self.failed.items()]
            raise AssertionError("\n".join(lines))


class _Case:
    def __init__(self, cases: Cases, case_id: str) -> None:
        self.cases = cases
        self.case_id = case_id

    def __enter__(self) -> "_Case":
        return self

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        if isinstance(exc, AssertionError):
            text = str(exc).strip().splitlines()
            self.cases.failed[self.case_id] = " / ".join(text[:3])[:400]
            return True
        return False
