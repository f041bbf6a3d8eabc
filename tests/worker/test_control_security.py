"""Control plane hardening (issue 15, the "high" row): with signing keys a worker ignores and
audits unsigned, forged and replayed commands; with or without keys it refuses a future
``sent_at`` and a ``reply_to`` that is not a reply queue. Every adapter with broadcast."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import pytest

from stem_core import Envelope, Stem, Worker
from stem_core.clock import to_iso, utcnow
from stem_core.control import ControlClient, control_channel
from stem_core.control.protocol import Command, reply_queue_name
from stem_core.settings import SIGNING_ENV, load_signing_settings
from stem_core.signing import Signer
from stem_core.worker.listener import CONTROL_AUDIT_ACTION
from tests.specs import AdapterSpec, backend_url_of
from tests.support import eventually
from tests.worker.helpers import ROOT, running

KEYS = {"STEM_SIGNING_KEYS": "ops:" + base64.b64encode(b"control-plane-secret-0123456789").decode(),
        "STEM_SIGNING_ACTIVE_KEY": "ops"}
CLI_TIMEOUT_S = 120


def use_keys(monkeypatch: pytest.MonkeyPatch, env: dict[str, str] | None) -> None:
    for name in SIGNING_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)


@pytest.fixture(autouse=True)
def _signing_off_afterwards(monkeypatch: pytest.MonkeyPatch) -> None:
    use_keys(monkeypatch, None)


def command(name: str, arguments: dict[str, Any] | None = None, *, sent_at_offset: float = 0.0,
            reply_to: str | None = None) -> Envelope:
    request_id = uuid.uuid4().hex
    return Command(command=name, arguments=dict(arguments or {}), request_id=request_id,
                   reply_to=reply_to or reply_queue_name(request_id), targets=None,
                   sent_at=utcnow() + timedelta(seconds=sent_at_offset)).to_envelope()


async def rejections(app: Stem) -> dict[str, str]:
    """request id -> kind, from the audit log."""
    records = await app.backend.list_audit(200)
    return {r["arguments"]["request_id"]: r["arguments"]["kind"] for r in records if r["action"] == CONTROL_AUDIT_ACTION}


async def still_answers(app: Stem, worker: Worker, keys: dict[str, str] | None, monkeypatch: pytest.MonkeyPatch) -> None:
    use_keys(monkeypatch, keys)
    result = await ControlClient(app.broker, app.backend).send("ping", targets=[worker.worker_id], timeout=30)
    assert result.replies[worker.worker_id]["pong"] is True
    assert not worker.stopping


def _needs_broadcast(app: Stem) -> None:
    if not app.broker.capabilities.broadcast:
        pytest.skip(f"the {app.broker.scheme} broker has no broadcast: no control plane to attack")


async def test_hard_shutdown_from_stem_broadcast_channel_does_not_stop_a_keyed_worker(
        worker_spec: AdapterSpec, app_factory: Callable[[], Stem], tmp_path: Path, namespace: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    if not worker_spec.cross_process:
        pytest.skip("the attacker is another process: needs a broker shared across processes")
    use_keys(monkeypatch, KEYS)
    app = app_factory()
    await app.connect()
    _needs_broadcast(app)
    worker = Worker(app, worker_id="w-keyed")
    async with running(worker):
        # The attacker: write access to the broker, no key.
        env = {k: v for k, v in os.environ.items() if k not in SIGNING_ENV}
        env.update(STEM_BROKER_URL=worker_spec.url(tmp_path), STEM_RESULT_BACKEND_URL=backend_url_of(worker_spec, tmp_path),
                   STEM_NAMESPACE=namespace, PYTHONPATH=str(ROOT))
        forged = {"mode": "hard", "request_id": "attack-1", "reply_to": "stem.reply.attack-1", "sent_at": to_iso(utcnow())}
        done = subprocess.run(
            [sys.executable, "-m", "stem_tui.cli.main", "broadcast", "--channel", control_channel(namespace),
             "stem.control.shutdown", "--args", json.dumps(forged)],
            env=env, cwd=ROOT, capture_output=True, timeout=CLI_TIMEOUT_S)
        assert done.returncode == 0, done.stderr.decode()
        assert await eventually(lambda: rejections(app), message="the unsigned shutdown audited") == {"attack-1": "unsigned"}
        await still_answers(app, worker, KEYS, monkeypatch)
    assert worker.stop_mode == "hard"  # only our own request_stop on leaving ``running``


async def test_forged_and_replayed_commands_are_ignored_and_audited(
        app_factory: Callable[[], Stem], monkeypatch: pytest.MonkeyPatch) -> None:
    use_keys(monkeypatch, KEYS)
    app = app_factory()
    await app.connect()
    _needs_broadcast(app)
    channel = control_channel(app.namespace)
    worker = Worker(app, worker_id="w-replay")
    async with running(worker):
        genuine = Signer(load_signing_settings(KEYS)).sign(command("pause", {"queues": ["default"]}))
        attacker = Signer(load_signing_settings({"STEM_SIGNING_KEYS": "ops:" + base64.b64encode(b"guess").decode(),
                                                 "STEM_SIGNING_ACTIVE_KEY": "ops"}))
        forged = attacker.sign(command("shutdown", {"mode": "hard"}))
        use_keys(monkeypatch, None)  # published as they are, not re-signed by this process
        await app.broker.broadcast(channel, genuine)
        await eventually(lambda: "default" in worker.paused, message="the genuine pause applied")
        await app.broker.broadcast(channel, forged)
        # The genuine command, captured and sent again after a resume: a replay.
        use_keys(monkeypatch, KEYS)
        await ControlClient(app.broker, app.backend).send("resume", {"queues": ["default"]}, timeout=30)
        use_keys(monkeypatch, None)
        await app.broker.broadcast(channel, genuine)
        expected = {forged.id: "forged", genuine.id: "replayed"}
        if app.broker.scheme == "sqs":
            # SQS channel subscribers drop a copy whose envelope id they have seen: the
            # replay never reaches the worker (and changing the id breaks the signature).
            del expected[genuine.id]
        assert await eventually(lambda: rejections(app), equals=expected)
        await still_answers(app, worker, KEYS, monkeypatch)
        assert "default" not in worker.paused


async def test_future_sent_at_and_a_task_queue_reply_to_are_refused_without_keys(
        app_factory: Callable[[], Stem], monkeypatch: pytest.MonkeyPatch) -> None:
    app = app_factory()
    await app.connect()
    _needs_broadcast(app)
    channel = control_channel(app.namespace)
    worker = Worker(app, worker_id="w-open")
    async with running(worker):
        future = command("shutdown", {"mode": "hard"}, sent_at_offset=3600)
        into_tasks = command("ping", reply_to="default")
        await app.broker.broadcast(channel, future)
        await app.broker.broadcast(channel, into_tasks)
        expected = {future.id: "future-dated", into_tasks.id: "invalid"}
        assert await eventually(lambda: rejections(app), equals=expected)
        await still_answers(app, worker, None, monkeypatch)
    # No reply landed in the task queue as a task.
    [stats] = await app.broker.queue_stats(["default"])
    assert (stats.pending, stats.delayed, stats.inflight or 0) == (0, 0, 0)
