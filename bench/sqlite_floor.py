"""Raw stdlib-sqlite3 floors for the SQLite broker: what the library can do with no queue
logic, on the same kind of table (WAL, synchronous=NORMAL, a partial claim index).

* ``enqueue``: one ``INSERT`` transaction per job;
* ``bulk``: 100 rows per transaction;
* ``claim+ack``: ``BEGIN IMMEDIATE; UPDATE ... RETURNING`` (batch 1 or 10), then one
  ``DELETE`` transaction per job - inline on one thread, and through ``asyncio.to_thread``
  with one hop per transaction (how the adapter runs them).

Prints one JSON line per figure. Usage: ``python bench/sqlite_floor.py [--n 20000] [--runs 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

from stem_core.envelope import Envelope

BATCH_SIZE = 100
SCHEMA = """
CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL, priority INTEGER NOT NULL DEFAULT 0,
                   state TEXT NOT NULL DEFAULT 'ready', locked_until REAL, envelope TEXT NOT NULL);
CREATE INDEX jobs_ready ON jobs (queue, priority DESC, id) WHERE state = 'ready';
"""
CLAIM = (
    "UPDATE jobs SET state = 'leased', locked_until = julianday('now') + 0.0003 WHERE id IN "
    "(SELECT id FROM jobs WHERE queue = 'default' AND state = 'ready' ORDER BY priority DESC, id LIMIT ?) RETURNING id, envelope"
)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def _fresh(folder: Path, n: int, filled: bool) -> sqlite3.Connection:
    path = folder / f"floor-{time.monotonic_ns()}.db"
    conn = _connect(path)
    conn.executescript(SCHEMA)
    if filled:
        rows = [("default", Envelope(name="bench.noop", args={"i": i}).to_json()) for i in range(n)]
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO jobs (queue, envelope) VALUES (?, ?)", rows)
        conn.execute("COMMIT")
    return conn


def enqueue(conn: sqlite3.Connection, n: int) -> float:
    rows = [Envelope(name="bench.noop", args={"i": i}).to_json() for i in range(n)]
    start = time.perf_counter()
    for row in rows:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO jobs (queue, envelope) VALUES ('default', ?)", (row,))
        conn.execute("COMMIT")
    return time.perf_counter() - start


def bulk(conn: sqlite3.Connection, n: int) -> float:
    rows = [("default", Envelope(name="bench.noop", args={"i": i}).to_json()) for i in range(n)]
    start = time.perf_counter()
    for i in range(0, n, BATCH_SIZE):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO jobs (queue, envelope) VALUES (?, ?)", rows[i : i + BATCH_SIZE])
        conn.execute("COMMIT")
    return time.perf_counter() - start


def _claim(conn: sqlite3.Connection, batch: int) -> list[tuple[int, str]]:
    conn.execute("BEGIN IMMEDIATE")
    rows = conn.execute(CLAIM, (batch,)).fetchall()
    conn.execute("COMMIT")
    return rows


def _ack(conn: sqlite3.Connection, row_id: int) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("DELETE FROM jobs WHERE id = ?", (row_id,))
    conn.execute("COMMIT")


def drain_inline(conn: sqlite3.Connection, batch: int) -> float:
    start = time.perf_counter()
    while rows := _claim(conn, batch):
        for row_id, _ in rows:
            _ack(conn, row_id)
    return time.perf_counter() - start


def drain_hops(conn: sqlite3.Connection, batch: int) -> float:
    async def run() -> float:
        start = time.perf_counter()
        while rows := await asyncio.to_thread(_claim, conn, batch):
            for row_id, _ in rows:
                await asyncio.to_thread(_ack, conn, row_id)
        return time.perf_counter() - start

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="stem-sqlite-floor-"))
    figures: list[tuple[str, bool, Callable[[sqlite3.Connection], float]]] = [
        ("enqueue", False, lambda c: enqueue(c, args.n)),
        ("bulk", False, lambda c: bulk(c, args.n)),
        ("claim+ack batch 1 inline", True, lambda c: drain_inline(c, 1)),
        ("claim+ack batch 10 inline", True, lambda c: drain_inline(c, 10)),
        ("claim+ack batch 1 to_thread", True, lambda c: drain_hops(c, 1)),
        ("claim+ack batch 10 to_thread", True, lambda c: drain_hops(c, 10)),
    ]
    try:
        for mode, filled, run in figures:
            times = []
            for _ in range(args.runs):
                conn = _fresh(folder, args.n, filled)
                times.append(run(conn))
                conn.close()
            seconds = statistics.median(times)
            print(json.dumps({"system": "sqlite-raw", "mode": mode, "n": args.n, "seconds": round(seconds, 4),
                              "rate": round(args.n / seconds, 1)}), flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
