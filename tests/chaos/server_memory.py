"""Memory figures of the chaos scenarios: a process's RSS (``rss_mb``) and the memory a
broker's server uses (``server_memory_mb``, as scenario 7 samples it).

Redis: ``INFO memory`` ``used_memory``; RabbitMQ: the management API's ``mem_used``;
PostgreSQL: the private memory (USS) of every ``postgres`` process — not their RSS or
PSS, which grow as backends touch more of the fixed shared buffers (a 20-minute soak's
PSS grew 174 MiB that way: cache warming, no leak); SQS: the RSS of the moto server the
tests started. SQLite has no server: ``None``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import redis

MIB = 1024 * 1024


def _postgres_private_bytes() -> int:
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
            for line in (entry / "smaps_rollup").read_text().splitlines():
                if line.startswith(("Private_Clean:", "Private_Dirty:")):
                    total += int(line.split()[1]) * 1024
        except OSError:  # the process left, or is not ours to read
            continue
    return total


def rss_mb(pid: int) -> float | None:
    """A process's resident memory in MiB (None once it is gone): workers and moto."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def server_memory_mb(broker: str, broker_url: str) -> float | None:
    """The server's memory in MiB now, or None (no server, or it cannot be read)."""
    try:
        if broker == "redis":
            client = redis.Redis.from_url(broker_url)
            try:
                value: int | None = int(client.info("memory")["used_memory"])
            finally:
                client.close()
        elif broker == "rabbitmq":
            from tests.specs.rabbitmq import node_memory_bytes

            value = node_memory_bytes()
        elif broker == "postgres":
            value = _postgres_private_bytes() or None
        elif broker == "sqs":
            from tests.specs.sqs import moto_pid

            pid = moto_pid()
            rss = None if pid is None else rss_mb(pid)
            return None if rss is None else round(rss, 1)
        else:
            value = None
    except (OSError, redis.RedisError, ValueError, KeyError, IndexError) as exc:  # a sample lost, not a verdict
        print(f"server memory of {broker}: {exc}", file=sys.stderr)
        return None
    return None if value is None else round(value / MIB, 1)

