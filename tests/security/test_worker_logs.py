"""The worker's own log (stderr, what journald keeps): a real ``stem worker`` whose broker
and backend URLs carry the sentinel secret (PostgreSQL: trust auth ignores the password,
``sslpassword`` rides along), with a hostile worker id, handling a task that fails and
one whose hostile name it does not know. Nothing it writes shows the secret or a raw
control character, and every record stays one line (issue 15: "sentinel secrets searched
for in every output, log, audit record")."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from stem_core import Envelope, Stem
from tests.security.corpus import RAW_CONTROL, SENTINEL
from tests.specs import require_service
from tests.specs.postgres import URL as POSTGRES_URL
from tests.worker.helpers import ROOT

SECRET_URL = POSTGRES_URL.replace("postgres@", f"postgres:{SENTINEL}@") + f"?sslpassword={SENTINEL}"
EVIL_TASK = "evil\x1b[31mRED\r\n2026-01-01 INFO forged\u202e"


@pytest.mark.timeout(180)
async def test_a_worker_log_never_shows_the_secret_or_raw_controls() -> None:
    require_service("postgres")
    namespace = "sec" + uuid.uuid4().hex[:10]
    app = Stem(broker=SECRET_URL, backend=SECRET_URL, namespace=namespace)
    await app.connect()
    try:
        await app.enqueue("t.poison")
        await app.broker.publish(Envelope(name=EVIL_TASK, args={"url": "kept as data"}))
        result = subprocess.run(
            [sys.executable, "-m", "stem_tui.cli.main", "worker", "--app", "tests.worker.apps.tasks:app",
             "--broker", SECRET_URL, "--backend", SECRET_URL, "--namespace", namespace,
             "--worker-id", "w\x1b[2Jid", "--burst", "--loglevel", "debug", "--heartbeat-interval", "1s"],
            cwd=ROOT, capture_output=True, text=True, timeout=150,
        )
        log = result.stdout + result.stderr
        assert result.returncode == 0, log[-2000:]
        # The worker did log its life (ready, the two tasks handled, stopped), its id escaped
        assert "'processed': 2" in log and "w\\x1b[2Jid ready" in log, log[-2000:]
        assert SENTINEL not in log
        assert not RAW_CONTROL.search(log.replace("\n", "")), "a raw control character reached the log"
        assert not any(line.startswith("2026-01-01 INFO forged") for line in log.splitlines())
    finally:
        await app.close()
