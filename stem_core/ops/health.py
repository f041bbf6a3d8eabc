"""``health``: reach each configured server (connect time, round trip, the broker's
capability flags) and run the optional checks that turn it into a probe: a queue's oldest
message too old, no live worker, a stuck lease.

The report is plain JSON-ready data; a front end decides what a failure means (``stem
health`` exits 3 when a server is unreachable, 1 when a check fails). ``warnings`` say
what is unsafe but not broken (no signing keys: the control plane is open); they never
change the exit code.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from ..errors import BrokerUnavailable, StemError
from ..settings import Settings, redact_url
from .api import Ops
from .connect import CONNECT_TIMEOUT_S, open_backend, open_broker

CONTROL_PLANE_OPEN = (
    "no signing keys (STEM_SIGNING_*): the control plane is open: anyone who can write to the broker can "
    "pause, revoke or shut down every worker and enqueue any task; see docs/security.md"
)

# Pings per server; the median is reported.
PING_ROUNDS = 3
MS_PER_S = 1000


@dataclass(frozen=True, slots=True)
class HealthChecks:
    """The optional checks. ``max_age_text`` is how the limit is named in the report (the
    operator's own words, e.g. ``5m``)."""

    max_age: float | None = None
    max_age_text: str | None = None
    require_workers: bool = False
    no_stuck: bool = False

    @property
    def any(self) -> bool:
        return self.max_age is not None or self.require_workers or self.no_stuck


@dataclass(frozen=True, slots=True)
class HealthReport:
    """``servers``: one row per role; ``checks``: one row per check run; ``ok`` when every
    server answered and every check passed."""

    ok: bool
    namespace: str
    servers: list[dict[str, Any]]
    checks: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)

    @property
    def unreachable(self) -> list[dict[str, Any]]:
        return [s for s in self.servers if not s["reachable"]]

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "namespace": self.namespace, "servers": self.servers, "checks": self.checks,
                "warnings": self.warnings}


def shown_scheme(url: str) -> str:
    """The scheme of ``url`` as ``redact_url`` shows it ("?" when none is shown)."""
    shown, sep, _ = redact_url(url).partition("://")
    return shown.lower() if sep else "?"


async def probe(role: str, url: str, connect: Callable[[], Awaitable[Any]]) -> tuple[dict[str, Any], Any]:
    """Connect and ping ``PING_ROUNDS`` times: the row, and the connected adapter (None when
    it could not be reached; a malformed URL raises ``ValueError``)."""
    row: dict[str, Any] = {"role": role, "url": redact_url(url), "scheme": shown_scheme(url),
                           "reachable": False, "connect_ms": None, "rtt_ms": None, "error": None, "capabilities": None}
    start = time.perf_counter()
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            adapter = await connect()
            row["connect_ms"] = (time.perf_counter() - start) * MS_PER_S
            times = []
            for _ in range(PING_ROUNDS):
                t0 = time.perf_counter()
                await adapter.ping()
                times.append((time.perf_counter() - t0) * MS_PER_S)
    except TimeoutError:
        row["error"] = f"no answer within {CONNECT_TIMEOUT_S:.0f} s"
        return row, None
    except BrokerUnavailable as exc:
        row["error"] = str(exc)
        return row, None
    except ValueError:
        raise  # a malformed URL is a usage error, not an unreachable server
    except StemError as exc:
        row["error"] = str(exc)
        return row, None
    row["reachable"] = True
    row["rtt_ms"] = round(sorted(times)[len(times) // 2], 3)
    row["connect_ms"] = round(row["connect_ms"], 3)
    caps = getattr(adapter, "capabilities", None)
    row["capabilities"] = caps.to_dict() if caps is not None else None
    return row, adapter


async def run_checks(ops: Ops, checks: HealthChecks) -> list[dict[str, Any]]:
    """One ``{check, ok, detail}`` row per check asked for."""
    out: list[dict[str, Any]] = []
    overview = await ops.overview()
    if checks.max_age is not None:
        limit, named = checks.max_age, checks.max_age_text
        old = [q.queue for q in overview.queues if (q.oldest_pending_age or 0) > limit]
        out.append({"check": "max-age", "ok": not old,
                    "detail": f"older than {named}: {', '.join(old)}" if old else f"all within {named}"})
    if checks.require_workers:
        out.append({"check": "workers", "ok": overview.live_workers > 0,
                    "detail": f"{overview.live_workers} live worker(s)"})
    if checks.no_stuck:
        stuck = [lease for lease in await ops.leases() if lease.stuck]
        out.append({"check": "stuck-leases", "ok": not stuck, "detail": f"{len(stuck)} stuck lease(s)"})
    return out


async def health(settings: Settings, checks: HealthChecks = HealthChecks(), *,
                 stale_after: float | None = None) -> HealthReport:
    """Probe the broker and the backend of ``settings``; run ``checks`` when both answered."""
    b_row, broker = await probe("broker", settings.broker_url, lambda: open_broker(settings, timeout=None))
    r_row, backend = await probe("result backend", settings.backend_url, lambda: open_backend(settings, timeout=None))
    results: list[dict[str, Any]] = []
    try:
        if broker is not None and backend is not None and checks.any:
            results = await run_checks(Ops(broker, backend, stale_after=stale_after), checks)
    finally:
        for adapter in (broker, backend):
            if adapter is not None:
                await adapter.close()
    reachable = broker is not None and backend is not None
    return HealthReport(ok=reachable and all(c["ok"] for c in results), namespace=settings.namespace,
                        servers=[b_row, r_row], checks=results, warnings=security_warnings(settings))


def security_warnings(settings: Settings) -> list[dict[str, Any]]:
    """``{warning, detail}`` rows for what ``settings`` leaves open (nothing when signing is on)."""
    signing = settings.signing
    if not signing.enabled:
        return [{"warning": "control-plane-open", "detail": CONTROL_PLANE_OPEN}]
    if not signing.can_sign:
        return [{"warning": "signing-verify-only",
                 "detail": f"signing is {signing.describe()}: this host cannot enqueue or send control commands"}]
    return []


__all__ = ["CONTROL_PLANE_OPEN", "HealthChecks", "HealthReport", "PING_ROUNDS", "health", "probe", "run_checks",
           "security_warnings"]
