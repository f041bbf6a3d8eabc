"""``stem health``: connect to each configured server, report round-trip time and the
broker's capability flags; optional checks turn it into a probe (exit 1 when one fails,
3 when a server cannot be reached); security warnings (an open control plane) are shown
but never fail it. The probing and the checks are
``stem_core.ops.health``; this module reads the options and prints the report."""

from __future__ import annotations

from typing import Annotated

import typer

from stem_core.ops.health import HealthChecks, HealthReport, health as check_health

from . import views
from .common import run
from .options import CommonOptions, common_options
from .output import EXIT_FAILED, EXIT_UNAVAILABLE, emit, error
from .parsing import parse_duration

SERVER_COLUMNS = [("ROLE", "role"), ("URL", "url"), ("REACHABLE", "reachable"), ("CONNECT MS", "connect_ms"),
                  ("RTT MS", "rtt_ms"), ("CAPABILITIES", "caps"), ("ERROR", "error")]


@common_options(stale_after=True)
def health(
    max_age: Annotated[str | None, typer.Option("--max-age", help="Check: fail when a queue's oldest pending message is older.")] = None,
    require_workers: Annotated[bool, typer.Option("--require-workers", help="Check: fail when no worker is alive.")] = False,
    no_stuck: Annotated[bool, typer.Option("--no-stuck", help="Check: fail when a lease is stuck.")] = False,
    *,
    opts: CommonOptions,
) -> None:
    """Reach each server: round trip, capability flags; optional checks for probes."""
    fmt = opts.fmt()
    checks = HealthChecks(max_age=parse_duration(max_age, option="--max-age") if max_age is not None else None,
                          max_age_text=max_age, require_workers=require_workers, no_stuck=no_stuck)
    stale = opts.stale_seconds()
    settings = opts.settings()
    report = run(lambda: check_health(settings, checks, stale_after=stale))
    emit(report.to_dict(), fmt, lambda: _render(report), lambda: report.servers + report.checks)
    down = report.unreachable
    if down:
        for s in down:
            error(f"cannot reach the {s['role']} at {s['url']}: {s['error']}")
        raise typer.Exit(EXIT_UNAVAILABLE)
    if not report.ok:
        raise typer.Exit(EXIT_FAILED)


def _render(report: HealthReport) -> object:
    from rich.console import Group

    rows = [{**s, "caps": ",".join(k for k, v in (s["capabilities"] or {}).items() if v) or "-"} for s in report.servers]
    parts = [views.records(rows, SERVER_COLUMNS, "")]
    parts += [views.t(f"{'ok  ' if c['ok'] else 'FAIL'} {c['check']}: {c['detail']}", "" if c["ok"] else "bold red")
              for c in report.checks]
    parts += [views.t(f"WARN {w['warning']}: {w['detail']}", "yellow") for w in report.warnings]
    return Group(*parts)


def register(app: typer.Typer) -> None:
    app.command("health")(health)


__all__ = ["health", "register"]
