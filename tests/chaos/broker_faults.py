"""Scenario 3's broker faults: restarts and crashes of the broker itself.

From the command line only with ``STEM_CHAOS_BROKER_FAULTS=1`` (pytest sets it: the suite
runs one test at a time, as for the integration restart tests). Redis runs on a private ``redis-server`` the
scenario starts in its run directory (AOF ``everysec`` restarted cleanly with ``SHUTDOWN``,
AOF ``always`` crashed with ``SIGKILL``); SQLite's writers (the workers) are SIGKILLed
mid-transaction and the file passes ``PRAGMA integrity_check``. PostgreSQL
(``pg_ctlcluster ... restart -m immediate``) and RabbitMQ (``rabbitmqctl stop_app`` /
``start_app``) act on the machine's servers: never run them while anything else uses them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

from tests.specs.postgres import cluster_command
from tests.specs.rabbitmq import rabbitmqctl
from tests.support import free_port, port_open

ENABLE_ENV = "STEM_CHAOS_BROKER_FAULTS"
START_TIMEOUT_S = 30.0


def enabled() -> bool:
    return os.environ.get(ENABLE_ENV) == "1"




async def _until_port(port: int, up: bool) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while port_open(port) != up:
        if time.monotonic() > deadline:
            raise RuntimeError(f"port {port} did not {'open' if up else 'close'} within {START_TIMEOUT_S:g} s")
        await asyncio.sleep(0.1)


class PrivateRedis:
    """A ``redis-server`` of this run only, with AOF on (``fsync``: everysec or always)."""

    def __init__(self, directory: Path, fsync: str) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed")
        self.dir = directory / "redis"
        self.dir.mkdir(exist_ok=True)
        self.port = free_port()
        self.fsync = fsync
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.dir), "--save", "",
             "--appendonly", "yes", "--appendfsync", self.fsync, "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await _until_port(self.port, True)

    async def restart(self) -> str:
        """everysec: a clean ``SHUTDOWN`` (the AOF is flushed); always: ``SIGKILL``."""
        assert self.proc is not None
        if self.fsync == "always":
            self.proc.send_signal(signal.SIGKILL)
            how = "SIGKILL"
        else:
            subprocess.run(["redis-cli", "-p", str(self.port), "shutdown"], capture_output=True, timeout=30)
            how = "SHUTDOWN"
        self.proc.wait(timeout=30)
        await _until_port(self.port, False)
        await self.start()
        return how

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


async def restart_postgres() -> str:
    """The machine's cluster, ``restart -m immediate`` (a crash), as the restart test does."""
    await asyncio.to_thread(subprocess.run, cluster_command("restart", "-m", "immediate"),
                            check=True, capture_output=True, timeout=120)
    await _until_port(5432, True)
    return "restart -m immediate"


async def restart_rabbitmq() -> str:
    for action in ("stop_app", "start_app"):
        await asyncio.to_thread(rabbitmqctl, action)
    await _until_port(5672, True)
    return "stop_app/start_app"


def sqlite_integrity(url: str) -> str:
    conn = sqlite3.connect(url.removeprefix("sqlite://"), timeout=30)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()
