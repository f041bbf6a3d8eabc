"""``stem health``: connect to each configured server, report round-trip time and the
broker's capability flags; optional checks turn it into a probe (exit 1 when one fails,
3 when a server cannot be reached)."""

from __future__ import annotations

import time
from typing import Annotated, Any, Awaitable, Callable

import typer

from stem_core.adapters import connect_backend, connect_broker
from stem_core.errors import BrokerUnavailable, StemError
from stem_core.ops import Ops
from stem_core.settings import redact_url

from . import views
from .common import (
    CONNECT_TIMEOUT_S,
    BackendOpt,
    BrokerOpt,
    JsonlOpt,
    JsonOpt,
    NamespaceOpt,
    StaleAfterOpt,
    output_format,
    parse_duration,
    run,
    settings_from,
)
from .output import EXIT_FAILED, EXIT_UNAVAILABLE, emit, error

PING_ROUNDS = 3


async def _probe(role: str, url: str, connect: Callable[[], Awaitable[Any]]) -> tuple[dict[str, Any], Any]:
    import asyncio

    row: dict[str, Any] = {"role": role, "url": redact_url(url), "scheme": url.split(":", 1)[0].lower(),
                           "reachable": False, "connect_ms": None, "rtt_ms": None, "error": None, "capabilities": None}
    start = time.perf_counter()
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            adapter = await connect()
            row["connect_ms"] = (time.perf_counter() - start) * 1000
            times = []
            for _ in range(PING_ROUNDS):
                t0 = time.perf_counter()
                await adapter.ping()
                times.append((time.perf_counter() - t0) * 1000)
    except TimeoutError:
        row["error"] = f"no answer within {CONNECT_TIMEOUT_S:.0f} s"
        return row, None
    except BrokerUnavailable as exc:
        row["error"] = str(exc)
        return row, None
    except ValueError:
        raise  # a malformed URL is a usage error (exit 2), not an unreachable server
    except StemError as exc:
        row["error"] = str(exc)
        return row, None
    row["reachable"] = True
    row["rtt_ms"] = round(sorted(times)[len(times) // 2], 3)
    row["connect_ms"] = round(row["connect_ms"], 3)
    caps = getattr(adapter, "capabilities", None)
    row["capabilities"] = caps.to_dict() if caps is not None else None
    return row, adapter


def health(
    max_age: Annotated[str | None, typer.Option("--max-age", help="Check: fail when a queue's oldest pending message is older.")] = None,
    require_workers: Annotated[bool, typer.Option("--require-workers", help="Check: fail when no worker is alive.")] = False,
    no_stuck: Annotated[bool, typer.Option("--no-stuck", help="Check: fail when a lease is stuck.")] = False,
    json_out: JsonOpt = False,
    jsonl_out: JsonlOpt = False,
    stale_after: StaleAfterOpt = None,
    broker: BrokerOpt = None,
    backend: BackendOpt = None,
    namespace: NamespaceOpt = None,
) -> None:
    """Reach each server: round trip, capability flags; optional checks for probes."""
    fmt = output_format(json_out, jsonl_out)
    age_limit = parse_duration(max_age, option="--max-age") if max_age is not None else None
    stale = parse_duration(stale_after, option="--stale-after") if stale_after else None
    settings = settings_from(broker, backend, namespace)

    async def main() -> dict[str, Any]:
        b_row, b = await _probe("broker", settings.broker_url,
                                lambda: connect_broker(settings.broker_url, namespace=settings.namespace))
        r_row, r = await _probe("result backend", settings.backend_url,
                                lambda: connect_backend(settings.backend_url, namespace=settings.namespace))
        checks: list[dict[str, Any]] = []
        try:
            if b is not None and r is not None and (age_limit is not None or require_workers or no_stuck):
                ops = Ops(b, r, stale_after=stale) if stale else Ops(b, r)
                overview = await ops.overview()
                if age_limit is not None:
                    old = [q.queue for q in overview.queues if (q.oldest_pending_age or 0) > age_limit]
                    checks.append({"check": "max-age", "ok": not old,
                                   "detail": f"older than {max_age}: {', '.join(old)}" if old else f"all within {max_age}"})
                if require_workers:
                    checks.append({"check": "workers", "ok": overview.live_workers > 0,
                                   "detail": f"{overview.live_workers} live worker(s)"})
                if no_stuck:
                    stuck = [lease for lease in await ops.leases() if lease.stuck]
                    checks.append({"check": "stuck-leases", "ok": not stuck, "detail": f"{len(stuck)} stuck lease(s)"})
        finally:
            for adapter in (b, r):
                if adapter is not None:
                    await adapter.close()
        reachable = b is not None and r is not None
        return {"ok": reachable and all(c["ok"] for c in checks), "namespace": settings.namespace,
                "servers": [b_row, r_row], "checks": checks}

    report = run(main)
    columns = [("ROLE", "role"), ("URL", "url"), ("REACHABLE", "reachable"), ("CONNECT MS", "connect_ms"),
               ("RTT MS", "rtt_ms"), ("CAPABILITIES", "caps"), ("ERROR", "error")]

    def render() -> object:
        from rich.console import Group

        rows = [{**s, "caps": ",".join(k for k, v in (s["capabilities"] or {}).items() if v) or "-"} for s in report["servers"]]
        parts = [views.records(rows, columns, "")]
        parts += [views.t(f"{'ok  ' if c['ok'] else 'FAIL'} {c['check']}: {c['detail']}", "" if c["ok"] else "bold red")
                  for c in report["checks"]]
        return Group(*parts)

    emit(report, fmt, render, lambda: report["servers"] + report["checks"])
    down = [s for s in report["servers"] if not s["reachable"]]
    if down:
        for s in down:
            error(f"cannot reach the {s['role']} at {s['url']}: {s['error']}")
        raise typer.Exit(EXIT_UNAVAILABLE)
    if not report["ok"]:
        raise typer.Exit(EXIT_FAILED)


def register(app: typer.Typer) -> None:
    app.command("health")(health)


__all__ = ["health", "register"]
