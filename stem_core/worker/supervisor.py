"""``stem worker --processes N``: one supervisor process, N worker processes.

The convention of celery's prefork pool, dramatiq ``--processes`` and taskiq
``--workers``, with Stem's asyncio workers as the children: each child is a whole
``stem worker`` (its own connections, concurrency, prefetch, heartbeat and worker id), so
nothing about a worker changes when it runs under a supervisor.

The supervisor
* starts the N children (``command(index)`` gives each one's argv), each in a process
  group of its own (a terminal's Ctrl-C reaches the supervisor only, so each child gets
  each signal exactly once) and, on Linux, with a parent-death signal (SIGTERM), so a
  SIGKILLed supervisor does not leave orphans working on;
* forwards SIGTERM (warm), SIGINT (soft) and SIGQUIT (hard) to every child, once per
  signal it receives, so a second signal escalates to hard in the children as it does for
  one worker;
* restarts a child that exits while no stop was asked for, after a backoff (1 s,
  doubling to 30 s while children keep dying within 10 s of their start); a child that
  exits with the usage code (2: the app does not import, a bad option) is not restarted:
  every child would fail the same way, so the supervisor stops the others and exits 2;
* with ``burst``, lets each child exit when it drained its queues and exits when all
  did;
* exits with 0 when every child stopped cleanly, else the highest child exit code.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import signal
import sys
import time
from dataclasses import dataclass
from typing import Callable, Sequence

log = logging.getLogger("stem.supervisor")

EXIT_USAGE = 2
RESTART_BACKOFF_S = 1.0
RESTART_BACKOFF_MAX_S = 30.0
# A child that ran at least this long before dying restarts after the first backoff again.
STABLE_AFTER_S = 10.0
_PR_SET_PDEATHSIG = 1
_FORWARDED = {"SIGTERM": "warm", "SIGINT": "soft", "SIGQUIT": "hard"}


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGTERM when the supervisor dies (even by SIGKILL)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


@dataclass
class Child:
    """One worker process slot: its current process, restarts and backoff."""

    index: int
    process: asyncio.subprocess.Process | None = None
    started: float = 0.0
    restarts: int = 0
    backoff: float = RESTART_BACKOFF_S
    exit_code: int | None = None


class Supervisor:
    """Runs ``processes`` children made by ``command(index)`` until they all stopped."""

    def __init__(self, command: Callable[[int], Sequence[str]], processes: int, *, burst: bool = False,
                 env: Callable[[int], dict[str, str]] | None = None) -> None:
        if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
            raise ValueError(f"processes must be an integer >= 1, got {processes!r}")
        self.command = command
        self.burst = burst
        self.env = env
        self.children = [Child(index) for index in range(processes)]
        self.stop_mode: str | None = None
        self.usage_failure = False
        self._changed = asyncio.Event()
        self._installed: list[int] = []

    # -- signals ----------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for name in _FORWARDED:
            sig = getattr(signal, name, None)
            if sig is None:
                continue
            loop.add_signal_handler(sig, self._on_signal, sig)
            self._installed.append(sig)

    def _on_signal(self, sig: int) -> None:
        mode = _FORWARDED[signal.Signals(sig).name]
        first = self.stop_mode is None
        self.stop_mode = mode if first else "hard"
        log.info("supervisor: %s received; %s the %d worker process(es)",
                 signal.Signals(sig).name, "stopping" if first else "forwarding it again to", len(self.children))
        self.forward(sig)
        self._changed.set()

    def forward(self, sig: int) -> None:
        """Send ``sig`` to every live child (each child escalates a second signal itself)."""
        for child in self.children:
            proc = child.process
            if proc is not None and proc.returncode is None:
                try:
                    proc.send_signal(sig)
                except ProcessLookupError:
                    pass

    # -- running ----------------------------------------------------------------------

    async def _start(self, child: Child) -> None:
        argv = list(self.command(child.index))
        env = self.env(child.index) if self.env is not None else None
        kwargs: dict[str, object] = {"process_group": 0}
        if sys.platform.startswith("linux"):
            kwargs["preexec_fn"] = _die_with_parent
        child.process = await asyncio.create_subprocess_exec(*argv, env=env, **kwargs)  # type: ignore[arg-type]
        child.started = time.monotonic()
        child.exit_code = None
        log.info("supervisor: worker process %d started (pid %d)", child.index, child.process.pid)

    async def _watch(self, child: Child) -> None:
        """Keep ``child``'s slot filled until a stop, a burst exit or a usage failure."""
        while True:
            await self._start(child)
            assert child.process is not None
            code = await child.process.wait()
            child.exit_code = code
            ran = time.monotonic() - child.started
            if self.stop_mode is not None or self.usage_failure:
                return
            if code == EXIT_USAGE:
                log.error("supervisor: worker process %d exited with code 2 (bad usage); stopping the others",
                          child.index)
                self.usage_failure = True
                self.forward(signal.SIGTERM)
                self._changed.set()
                return
            if self.burst and code == 0:
                return
            child.backoff = RESTART_BACKOFF_S if ran >= STABLE_AFTER_S else child.backoff
            delay = child.backoff
            child.backoff = min(child.backoff * 2, RESTART_BACKOFF_MAX_S)
            child.restarts += 1
            log.warning("supervisor: worker process %d (pid %d) exited with code %d after %.1fs; restarting in %.0fs",
                        child.index, child.process.pid, code, ran, delay)
            try:
                await asyncio.wait_for(self._stopped(), timeout=delay)
                child.exit_code = None  # a stop came during the backoff: the crash was handled
                return
            except TimeoutError:
                pass

    async def _stopped(self) -> None:
        while self.stop_mode is None and not self.usage_failure:
            self._changed.clear()
            await self._changed.wait()

    async def run(self) -> int:
        """Start the children, keep them running, return the exit code."""
        watchers = [asyncio.ensure_future(self._watch(child)) for child in self.children]
        try:
            await asyncio.gather(*watchers)
        except asyncio.CancelledError:
            self.stop_mode = self.stop_mode or "hard"
            self.forward(signal.SIGTERM)
            for child in self.children:
                if child.process is not None:
                    await child.process.wait()
            raise
        finally:
            loop = asyncio.get_running_loop()
            for sig in self._installed:
                loop.remove_signal_handler(sig)
            self._installed.clear()
        return self.exit_code()

    def exit_code(self) -> int:
        if self.usage_failure:
            return EXIT_USAGE
        codes = [c.exit_code for c in self.children if c.exit_code is not None]
        return max((self._code(code) for code in codes), default=0)

    def _code(self, code: int) -> int:
        """A child's exit code as the supervisor reports it. One that died of the SIGTERM or
        SIGINT the supervisor forwarded (it was still starting, before its handlers) stopped
        as asked: 0; any other signal death counts as 1."""
        if code >= 0:
            return code
        if self.stop_mode in ("warm", "soft") and -code in (signal.SIGTERM, signal.SIGINT):
            return 0
        return 1


def child_argv(argv: Sequence[str], drop: Sequence[str], flags: Sequence[str] = ()) -> list[str]:
    """``argv`` without the options named in ``drop`` (each with its value, in either the
    ``--opt value`` or the ``--opt=value`` form) and the value-less ``flags``: the
    supervisor's own command line made into its children's."""
    out: list[str] = []
    skip = False
    for token in argv:
        if skip:
            skip = False
            continue
        if token in flags:
            continue
        name, eq, _ = token.partition("=")
        if name in drop:
            skip = not eq
            continue
        out.append(token)
    return out


__all__ = ["Supervisor", "child_argv"]
