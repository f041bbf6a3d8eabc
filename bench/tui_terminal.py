"""What `stem tui` costs a terminal: bytes written per second (idle, and with 100 tasks/s
flowing) and the time from a keypress to the screen change. Not a test: run on demand.

    python bench/tui_terminal.py [--seconds 30] [--size 120x40] [--low-colour]

The TUI runs under a pseudo-terminal of the given size on a fresh SQLite file; every
byte it writes is counted. "flowing" starts ``stem demo --no-tui --rate 100`` (workers and
a producer) on the same file first. Prints one JSON line per figure.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

SETTLE_S = 8.0
READ_CHUNK = 65536
KEY_ROUNDS = 20
KEY_TIMEOUT_S = 5.0


class Pty:
    """A child process on a pseudo-terminal whose output is counted."""

    def __init__(self, argv: list[str], env: dict[str, str], columns: int, rows: int) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        self.process = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True)
        os.close(slave)
        self.total = 0

    def drain(self, seconds: float, until: bytes | None = None) -> tuple[int, bytes]:
        """Read for ``seconds`` (or until ``until`` appears); returns (bytes, data)."""
        deadline = time.monotonic() + seconds
        got = bytearray()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([self.master], [], [], left)
            if not ready:
                continue
            try:
                chunk = os.read(self.master, READ_CHUNK)
            except OSError:
                break
            got += chunk
            self.total += len(chunk)
            if until is not None and until in got:
                break
        return len(got), bytes(got)

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        os.close(self.master)


def stem(*args: str) -> list[str]:
    return [sys.executable, "-m", "stem_tui.cli.main", *args]


def run(seconds: float, columns: int, rows: int, low_colour: bool) -> None:
    work = Path(tempfile.mkdtemp(prefix="stem-tui-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEM_") and k not in ("COLUMNS", "LINES")}
    env.update({"STEM_BROKER_URL": "sqlite://" + str(work / "bench.db"), "STEM_NAMESPACE": "demo",
                "TERM": "xterm-256color", "STEM_DEMO_LONG_TASK_S": "600"})
    size = f"{columns}x{rows}"
    extra = ["--low-colour"] if low_colour else []
    # A handful of queues so the idle screen is a realistic one.
    for queue in ("emails", "reports", "billing", "exports"):
        subprocess.run(stem("enqueue", "bench.noop", "--queue", queue), env=env, check=True, capture_output=True)
    try:
        tui = Pty(stem("tui", "--refresh", "2s", *extra), env, columns, rows)
        first, _ = tui.drain(SETTLE_S)
        idle, _ = tui.drain(seconds)
        emit("idle", size, low_colour, first_paint_bytes=first, bytes=idle, seconds=seconds)
        # A view switch repaints the screen; the pause key changes one footer cell.
        for what, pairs in (("keypress-view-switch", ((b"3", b"Workers"), (b"1", b"Queues"))),
                            ("keypress-footer", ((b"p", b"PAUSED"), (b"p", b"resumed")))):
            latencies = []
            for _ in range(KEY_ROUNDS):
                for key, marker in pairs:
                    started = time.perf_counter()
                    tui.send(key)
                    _, data = tui.drain(KEY_TIMEOUT_S, until=marker)
                    if marker in data:
                        latencies.append(time.perf_counter() - started)
                    tui.drain(0.3)
            latencies.sort()
            emit(what, size, low_colour, rounds=len(latencies),
                 p50_ms=round(latencies[len(latencies) // 2] * 1000, 1),
                 p95_ms=round(latencies[max(0, int(len(latencies) * 0.95) - 1)] * 1000, 1))
        tui.close()
        load = subprocess.Popen(stem("demo", "--no-tui", "--duration", f"{seconds + 2 * SETTLE_S + 10:g}s",
                                     "--rate", "100", "--keep"), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            time.sleep(SETTLE_S)
            tui = Pty(stem("tui", "--refresh", "2s", *extra), env, columns, rows)
            tui.drain(SETTLE_S)
            flowing, _ = tui.drain(seconds)
            emit("flowing-100-per-s", size, low_colour, bytes=flowing, seconds=seconds)
            tui.close()
        finally:
            load.send_signal(signal.SIGTERM)
            load.wait(60)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def emit(mode: str, size: str, low_colour: bool, **figures: float) -> None:
    line = {"system": "stem-tui", "mode": mode, "size": size, "low_colour": low_colour, **figures}
    if "bytes" in figures and "seconds" in figures:
        line["bytes_per_s"] = round(figures["bytes"] / figures["seconds"], 1)
    print(json.dumps(line), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--size", default="120x40")
    parser.add_argument("--low-colour", action="store_true")
    options = parser.parse_args()
    columns, rows = (int(v) for v in options.size.split("x"))
    run(options.seconds, columns, rows, options.low_colour)


if __name__ == "__main__":
    main()
