"""Signed envelopes through a real worker on every adapter (SPEC §9): producers sign,
retries/replays/requeues re-sign, the worker dead-letters what fails its check without
running it, a verify-only worker says so and dead-letters its retries, and a key
rotation done in the documented order rejects nothing."""

from __future__ import annotations

import base64
import logging
from typing import Callable

import pytest

from stem_core import Envelope, Stem, TaskState, Worker
from stem_core.contract.broker import REPLAY_COUNT_META
from stem_core.errors import ConfigurationError
from stem_core.settings import SIGNING_ENV, load_signing_settings
from stem_core.signing import SIGNATURE_HEADER, SIGNATURE_INVALID, SIGNATURE_KEY_HEADER, Signer
from stem_core.worker import TaskContext
from stem_core.worker.execution import RETRY_NOT_SIGNED
from tests.support import eventually
from tests.worker.helpers import running

K1 = base64.b64encode(b"rotation-secret-one-0123456789ab").decode()
K2 = base64.b64encode(b"rotation-secret-two-0123456789ab").decode()
# Ed25519 keys from fixed seeds (raw 32 bytes, as the Dart package holds them).
ED_SEED = bytes(range(1, 33))


def use_keys(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    """This process's STEM_SIGNING_* become exactly ``env`` (nothing set = signing off)."""
    for name in SIGNING_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def hmac_keys(keys: str, active: str) -> dict[str, str]:
    return {"STEM_SIGNING_KEYS": keys, "STEM_SIGNING_ACTIVE_KEY": active}


def ed25519_keys(*, private: bool) -> dict[str, str]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    public = Ed25519PrivateKey.from_private_bytes(ED_SEED).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    env = {"STEM_SIGNING_PUBLIC_KEYS": "ed1:" + base64.b64encode(public).decode()}
    if private:
        env.update(STEM_SIGNING_PRIVATE_KEYS="ed1:" + base64.b64encode(ED_SEED).decode(), STEM_SIGNING_ACTIVE_KEY="ed1")
    return env


@pytest.fixture(autouse=True)
def _signing_off_afterwards(monkeypatch: pytest.MonkeyPatch) -> None:
    use_keys(monkeypatch)


async def dead_reasons(app: Stem, queue: str = "default") -> dict[str, tuple[str, dict]]:
    page = await app.broker.list_dead_letters(queue, limit=50)
    return {e.envelope.id: (e.reason, e.meta) for e in page.entries}


async def state_of(app: Stem, task_id: str) -> TaskState | None:
    status = await app.backend.get_status(task_id)
    return status.state if status is not None else None


async def test_signed_tasks_run_and_retries_replays_and_requeues_are_re_signed(
        app_factory: Callable[[], Stem], monkeypatch: pytest.MonkeyPatch) -> None:
    use_keys(monkeypatch, **hmac_keys(f"k1:{K1}", "k1"))
    app = app_factory()
    runs: dict[str, int] = {}

    @app.task(name="flaky", max_retries=2, retry_backoff=0.01)
    async def flaky(ctx: TaskContext) -> int:
        runs[ctx.task_id] = runs.get(ctx.task_id, 0) + 1
        if runs[ctx.task_id] == 1:
            raise RuntimeError("first attempt fails")
        return runs[ctx.task_id]

    @app.task(name="once", max_retries=0)
    async def once(ctx: TaskContext) -> int:
        runs[ctx.task_id] = runs.get(ctx.task_id, 0) + 1
        if runs[ctx.task_id] == 1:
            raise RuntimeError("dead-lettered, then replayed")
        return runs[ctx.task_id]

    retried = await app.enqueue("flaky")
    replayed = await app.enqueue("once")
    delayed = await app.enqueue("flaky", delay=3600)
    can_requeue = app.broker.capabilities.peek  # SQS reaches messages by id only while it holds them
    if can_requeue:
        # What the broker stores is signed by this process's active key.
        [stored] = await app.broker.peek("default", state="delayed")
        assert stored.envelope.headers[SIGNATURE_KEY_HEADER] == "k1"
    async with running(Worker(app, worker_id="w-signed", concurrency=2)):
        # A retry (attempt + 1, new notBefore) was re-signed, so its second run verified.
        assert (await app.wait(retried, timeout=60)).state is TaskState.SUCCEEDED
        await eventually(lambda: dead_reasons(app), message="the failed task dead-lettered")
        assert (await dead_reasons(app))[replayed][0] == "max-retries-exhausted"
        # A replay (attempt 0, replay meta) is re-signed by the replaying process.
        await app.broker.replay_dead_letters("default", ids=[replayed])
        await eventually(lambda: state_of(app, replayed), equals=TaskState.SUCCEEDED)
        # A requeue of a delayed message rewrites notBefore: re-signed too.
        if can_requeue:
            assert await app.broker.requeue("default", [delayed]) == 1
            assert (await app.wait(delayed, timeout=60)).state is TaskState.SUCCEEDED
    assert runs[retried] == 2 and runs[replayed] == 2
    assert SIGNATURE_INVALID not in {reason for reason, _ in (await dead_reasons(app)).values()}


async def test_unsigned_forged_unknown_and_malformed_are_dead_lettered_without_running(
        app_factory: Callable[[], Stem], monkeypatch: pytest.MonkeyPatch) -> None:
    app = app_factory()
    ran: list[str] = []

    @app.task(name="victim")
    async def victim(ctx: TaskContext) -> None:
        ran.append(ctx.task_id)

    await app.connect()
    # An attacker with write access to the broker but no key (this process: signing off).
    attacker = Signer(load_signing_settings(hmac_keys("k1:" + base64.b64encode(b"guessed-wrong-secret").decode(), "k1")))
    bad = {
        "unsigned": (Envelope(name="victim"), "missing stem-signature header", None),
        "forged": (attacker.sign(Envelope(name="victim")), "signature does not match", "k1"),
        "unknown": (Envelope(name="victim", headers={SIGNATURE_HEADER: "AAAA", SIGNATURE_KEY_HEADER: "k9"}),
                    "unknown signing key", "k9"),
        "malformed": (Envelope(name="victim", headers={SIGNATURE_HEADER: "#!?", SIGNATURE_KEY_HEADER: "k1"}),
                      "not valid base64", "k1"),
    }
    for envelope, _, _ in bad.values():
        await app.broker.publish(envelope)
    good_env = hmac_keys(f"k1:{K1}", "k1")
    use_keys(monkeypatch, **good_env)
    good = await app.enqueue("victim")
    async with running(Worker(app, worker_id="w-verify")):
        assert (await app.wait(good, timeout=60)).state is TaskState.SUCCEEDED
        dead = await eventually(lambda: _all_dead(app, [e.id for e, _, _ in bad.values()]),
                                message="every bad envelope dead-lettered")
        # A replay from this host, which signs, must not vouch for them: a copy is re-signed
        # only when the message it came from verifies, so they come back dead, unrun.
        replay = await app.broker.replay_dead_letters("default", limit=100)
        assert {e.envelope.id for e in replay.entries} == {e.id for e, _, _ in bad.values()}
        await eventually(lambda: _all_dead(app, [e.id for e, _, _ in bad.values()], replayed=True),
                         message="every replayed bad envelope dead-lettered again")
    assert ran == [good]
    for envelope, error, key_id in bad.values():
        reason, meta = dead[envelope.id]
        assert reason == SIGNATURE_INVALID and error in meta["error"] and meta["keyId"] == key_id
        # No status was written for an unverified message (its id could be a real task's).
        assert await app.backend.get_status(envelope.id) is None


async def _all_dead(app: Stem, ids: list[str], replayed: bool = False) -> dict[str, tuple[str, dict]] | None:
    page = await app.broker.list_dead_letters("default", limit=50)
    entries = {e.envelope.id: e for e in page.entries
               if not replayed or e.envelope.meta.get(REPLAY_COUNT_META) == 1}
    if not all(i in entries for i in ids):
        return None
    return {i: (e.reason, e.meta) for i, e in entries.items()}


async def test_a_verify_only_worker_warns_and_dead_letters_its_retries(
        app_factory: Callable[[], Stem], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    app = app_factory()

    @app.task(name="fails", max_retries=3)
    async def fails(ctx: TaskContext) -> None:
        raise RuntimeError("boom")

    @app.task(name="works")
    async def works(ctx: TaskContext) -> str:
        return "ok"

    use_keys(monkeypatch, **ed25519_keys(private=True))  # the producer holds the private key
    failing = await app.enqueue("fails")
    fine = await app.enqueue("works")
    use_keys(monkeypatch, **ed25519_keys(private=False))  # the worker verifies only
    # A producer without the private key fails the enqueue instead of publishing unsigned.
    with pytest.raises(ConfigurationError, match="cannot sign the enqueue"):
        await app.enqueue("works")
    with caplog.at_level(logging.WARNING, logger="stem.worker"):
        async with running(Worker(app, worker_id="w-verify-only")):
            assert (await app.wait(fine, timeout=60)).state is TaskState.SUCCEEDED
            status = await app.wait(failing, timeout=60)
    assert "verifies signatures but cannot sign" in caplog.text
    assert status.state is TaskState.FAILED and status.attempt == 0
    reason, meta = (await dead_reasons(app))[failing]
    assert reason == RETRY_NOT_SIGNED and "cannot be signed" in meta["error"]["retry_problem"]


async def test_key_rotation_in_the_documented_order_rejects_nothing(
        app_factory: Callable[[], Stem], monkeypatch: pytest.MonkeyPatch) -> None:
    app = app_factory()
    runs: dict[str, int] = {}

    @app.task(name="job", max_retries=1, retry_backoff=0.01)
    async def job(ctx: TaskContext, fail_first: bool) -> None:
        runs[ctx.task_id] = runs.get(ctx.task_id, 0) + 1
        if fail_first and runs[ctx.task_id] == 1:
            raise RuntimeError("retried by whichever worker holds it")

    ids: list[str] = []

    async def produce() -> None:
        ids.append(await app.enqueue("job", {"fail_first": False}))
        ids.append(await app.enqueue("job", {"fail_first": True}))

    both = f"k1:{K1},k2:{K2}"
    # 0. Everyone on k1; messages signed with k1 wait in the queue.
    use_keys(monkeypatch, **hmac_keys(f"k1:{K1}", "k1"))
    await produce()
    # 1. Add k2 everywhere (still signing with k1), roll the workers.
    use_keys(monkeypatch, **hmac_keys(both, "k1"))
    old_worker = Worker(app, worker_id="w-rot-1")
    async with running(old_worker):
        await produce()
        # 2. Switch the producers' active key to k2 while the rolled workers still sign with k1.
        use_keys(monkeypatch, **hmac_keys(both, "k2"))
        await produce()
        for task_id in ids:
            assert (await app.wait(task_id, timeout=60)).state is TaskState.SUCCEEDED
    # 3. Roll the workers onto k2 as active; 4. once nothing signed with k1 is left, remove k1.
    await produce()
    async with running(Worker(app, worker_id="w-rot-2")):
        for task_id in ids:
            assert (await app.wait(task_id, timeout=60)).state is TaskState.SUCCEEDED
    use_keys(monkeypatch, **hmac_keys(f"k2:{K2}", "k2"))
    await produce()
    async with running(Worker(app, worker_id="w-rot-3")):
        for task_id in ids:
            assert (await app.wait(task_id, timeout=60)).state is TaskState.SUCCEEDED
    assert await dead_reasons(app) == {}
    # The order matters: a worker that never got k2 rejects what k2 signed.
    stale = await app.enqueue("job", {"fail_first": False})
    use_keys(monkeypatch, **hmac_keys(f"k1:{K1}", "k1"))
    async with running(Worker(app, worker_id="w-rot-stale")):
        dead = await eventually(lambda: _all_dead(app, [stale]), message="the k2 message rejected by a k1-only worker")
    assert dead[stale][0] == SIGNATURE_INVALID and dead[stale][1]["keyId"] == "k2"
