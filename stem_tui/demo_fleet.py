"""The processes ``stem demo`` starts, and the guarantee that it stops every one of them.

Workers are ``stem worker --app stem_tui.demo_app:app`` processes and the producer is
``python -m stem_tui.demo_producer``, all with the demo's broker, backend and namespace.
They run in their own sessions (a Ctrl-C meant for the demo does not hit them twice),
write to log files (never to the terminal the TUI draws on), and on Linux die with the
demo even if it is killed (``PR_SET_PDEATHSIG``).

``stop()`` sends SIGINT to the workers (soft shutdown: running tasks are cancelled after
``WORKER_GRACE`` and handed back) and SIGTERM to the producer, sends them again every
``RESEND_S`` to a child still running (a signal that lands while a child is still
importing, inside a finalizer, is dropped by Python: that child would run on until the
kill), then kills whatever is left after ``STOP_TIMEOUT_S``. A worker takes a second
signal as a hard stop, which is what the demo wants by then.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

from stem_core.settings import ENV_BACKEND_URL, ENV_BROKER_URL, ENV_NAMESPACE, Settings

# (queues, concurrency) of each demo worker: two general ones, one alone on exports.
WORKERS = (("emails,default,billing", 4), ("emails,reports,billing", 2), ("exports", 1))
WORKER_GRACE = "1s"
WORKER_HEARTBEAT = "2s"
# stop() waits this long for a clean exit before SIGKILL.
STOP_TIMEOUT_S = 15.0
# A child still running this long after its stop signal gets it again.
RESEND_S = 2.0
POLL_S = 0.05
_PR_SET_PDEATHSIG = 1


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    stop_signal: int
    log: IO[bytes]


def _die_with_parent_hook() -> object | None:
    """A ``preexec_fn`` asking Linux to SIGINT the child when the demo dies (None elsewhere).
    libc is loaded here, before any fork, so the child only makes one system call."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    prctl = libc.prctl

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGINT))

    return hook


def child_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env[ENV_BROKER_URL] = settings.broker_url
    env[ENV_BACKEND_URL] = settings.backend_url
    env[ENV_NAMESPACE] = settings.namespace
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class Fleet:
    """The demo's child processes."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.children: list[Child] = []
        self._hook = _die_with_parent_hook()

    def _spawn(self, name: str, argv: list[str], stop_signal: int) -> Child:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   env=child_env(self.settings), start_new_session=True,
                                   preexec_fn=self._hook)  # type: ignore[arg-type]
        child = Child(name, process, stop_signal, log)
        self.children.append(child)
        return child

    def start(self, *, workers: int, rate: float) -> None:
        stem = [sys.executable, "-m", "stem_tui.cli.main"]
        for index in range(workers):
            queues, concurrency = WORKERS[index % len(WORKERS)]
            self._spawn(f"worker-{index + 1}", [*stem, "worker", "--app", "stem_tui.demo_app:app", "--queues", queues,
                                               "--concurrency", str(concurrency), "--heartbeat-interval", WORKER_HEARTBEAT,
                                               "--shutdown-grace", WORKER_GRACE, "--loglevel", "warning"],
                        signal.SIGINT)
        self._spawn("producer", [sys.executable, "-m", "stem_tui.demo_producer", "--rate", f"{rate:g}"], signal.SIGTERM)

    @property
    def pids(self) -> list[int]:
        return [c.process.pid for c in self.children]

    def dead(self) -> list[str]:
        """Children that exited on their own (a crash: see their log)."""
        return [f"{c.name} (exit {c.process.returncode})" for c in self.children if c.process.poll() is not None]

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> dict[str, int | None]:
        """Stop every child (signal, wait, kill); returns their exit codes."""
        deadline = time.monotonic() + timeout
        resend = 0.0
        while time.monotonic() < deadline and any(c.process.poll() is None for c in self.children):
            if time.monotonic() >= resend:
                self._signal_running()
                resend = time.monotonic() + RESEND_S
            time.sleep(POLL_S)
        for child in self.children:
            if child.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.process.kill()
                child.process.wait()
            child.log.close()
        return {c.name: c.process.returncode for c in self.children}

    def _signal_running(self) -> None:
        for child in self.children:
            if child.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(child.stop_signal)


@contextlib.contextmanager
def running(settings: Settings, log_dir: Path, *, workers: int, rate: float) -> Iterator[Fleet]:
    """Start the fleet; stop all of it on the way out, whatever the way out is (the caller
    decides what SIGINT and SIGTERM do meanwhile: ``stem demo``'s ``Stop.handling``)."""
    fleet = Fleet(settings, log_dir)
    try:
        fleet.start(workers=workers, rate=rate)
        yield fleet
    finally:
        fleet.stop()


__all__ = ["Fleet", "WORKERS", "child_env", "running"]
