"""Rich renderables for the ops models. Built here, printed only by ``output.py``.

Every piece of data goes into a ``Text`` after ``neutralise``: markup in a task name is
shown literally and control characters become visible escapes.
"""

from __future__ import annotations

import json
import shlex
from typing import Any, Iterable

from rich.console import Group
from rich.table import Table
from rich.text import Text

from stem_core.ops import ActionResult, Explanation, LeaseInfo, Overview, QueueDetail, WorkerInfo
from stem_core.ops import text as words

from ..text import INFLIGHT_NA_NOTE, VERDICT_STYLES, approx, neutralise

# Args and reasons are cut to this many characters in table cells; queue names to fewer.
CELL_MAX_CHARS = 60
QUEUE_MAX_CHARS = 32


def t(value: object, style: str = "") -> Text:
    """A neutralised ``Text`` cell ("-" for None)."""
    return Text("-" if value is None else neutralise(value), style=style)


def short(value: object, limit: int = CELL_MAX_CHARS) -> Text:
    raw = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    clean = neutralise(raw)
    return Text(clean if len(clean) <= limit else clean[: limit - 1] + "…")


# Long free-text columns wrap when the terminal is narrow; the rest keep one line so ids
# and numbers are never cut. A wrapping column needs at least this many cells.
WRAPPING_COLUMNS = frozenset({"VERDICT", "STUCK", "ARGS", "REASON", "REPLY", "ERROR", "ARGUMENTS", "RESULT", "VALUE",
                              "QUEUES", "CAPABILITIES", "URL"})
WRAP_MIN_CELLS = 16


class FitTable:
    """A table that drops its least important columns (``drop``, first dropped first) until
    it fits the terminal, so an 80-column SSH session still gets every row on one screen
    line with the columns that matter."""

    def __init__(self, columns: tuple[str, ...], right: Iterable[str], drop: Iterable[str]) -> None:
        self.columns = columns
        self.right = set(right)
        self.drop = list(drop)
        self.rows: list[tuple[Text, ...]] = []

    def add_row(self, *cells: Text) -> None:
        self.rows.append(cells)

    def _min_width(self, index: int) -> int:
        name = self.columns[index]
        if name in WRAPPING_COLUMNS:
            return max(len(name), WRAP_MIN_CELLS)
        return max([len(name)] + [row[index].cell_len for row in self.rows])

    def __rich_console__(self, console: Any, options: Any) -> Any:
        keep = list(range(len(self.columns)))
        for name in self.drop:
            if sum(self._min_width(i) for i in keep) + len(keep) - 1 <= options.max_width:
                break
            keep = [i for i in keep if self.columns[i] != name]
        table = Table(box=None, pad_edge=False, collapse_padding=True, header_style="bold")
        for i in keep:
            name = self.columns[i]
            wraps = name in WRAPPING_COLUMNS
            table.add_column(name, justify="right" if name in self.right else "left", no_wrap=not wraps,
                             overflow="fold" if wraps else "ellipsis", min_width=len(name))
        for row in self.rows:
            table.add_row(*(row[i] for i in keep))
        yield table


def _table(*columns: str, right: Iterable[str] = (), drop: Iterable[str] = ()) -> FitTable:
    return FitTable(columns, right, drop)


def overview(ov: Overview) -> Group:
    table = _table("QUEUE", "PENDING", "DELAYED", "IN FLIGHT", "DEAD", "OLDEST", "IN", "OUT", "WORKERS", "VERDICT",
                   right=("PENDING", "DELAYED", "IN FLIGHT", "DEAD", "OLDEST", "IN", "OUT", "WORKERS"),
                   drop=("IN", "OUT", "DELAYED", "DEAD"))
    for q in ov.queues:
        verdict = q.verdict_text + (f"  [{q.unaccounted_leases} lease(s) held by no live worker]"
                                    if q.unaccounted_leases and q.verdict != "idle" else "")
        a = q.approximate
        table.add_row(
            short(q.queue, QUEUE_MAX_CHARS), t(approx(q.pending, a)), t(approx(q.delayed, a)), t(approx(q.inflight, a)),
            t(approx(q.dead, a), "red" if q.dead else ""),
            t(words.duration(q.oldest_pending_age)), t(words.rate(q.in_rate)), t(words.rate(q.out_rate)),
            t(f"{len(q.workers)} ({q.active}/{q.worker_slots})" if q.workers else "0"),
            t(verdict, VERDICT_STYLES.get(q.verdict, "")),
        )
    window = next((q.rate_window for q in ov.queues if q.rate_window), None)
    footer = (f"{ov.live_workers} live worker(s) · broker {ov.broker} · namespace {ov.namespace} · "
              + (f"rates over {words.duration(window)}" if window else "rates: need a second sample (try --watch)")
              + (" · ~ approximate counts" if any(q.approximate for q in ov.queues) else "")
              + (f" · in flight {INFLIGHT_NA_NOTE}" if any(q.inflight is None for q in ov.queues) else ""))
    if not ov.queues:
        return Group(t("no queues yet"), t(footer, "dim"))
    return Group(table, t(footer, "dim"))


def workers(rows: list[WorkerInfo]) -> Any:
    if not rows:
        return t("no worker heartbeats (no worker running in this namespace)")
    table = _table("WORKER", "HOST", "PID", "QUEUES", "ACTIVE", "RESERVED", "PROCESSED", "FAILED", "PAUSED", "HEARTBEAT",
                   right=("PID", "ACTIVE", "RESERVED", "PROCESSED", "FAILED", "HEARTBEAT"),
                   drop=("HOST", "PID", "FAILED", "RESERVED", "PAUSED"))
    for w in rows:
        beat = f"{words.duration(w.heartbeat_age)} ago" + (" STALE" if w.stale else "")
        table.add_row(t(w.worker_id), t(w.host), t(w.pid), t(",".join(w.queues)), t(f"{w.active}/{w.concurrency}"),
                      t(w.reserved), t(w.processed), t(w.failed), t(",".join(w.paused_queues) or "-"),
                      t(beat, "bold red" if w.stale else ""))
    return table


def leases(rows: list[LeaseInfo]) -> Any:
    if not rows:
        return t("no messages in flight")
    table = _table("QUEUE", "TASK ID", "NAME", "HOLDER", "HELD FOR", "EXPIRES IN", "HEARTBEAT", "DELIVERIES", "STUCK",
                   right=("HELD FOR", "EXPIRES IN", "HEARTBEAT", "DELIVERIES"),
                   drop=("DELIVERIES", "NAME", "QUEUE", "HELD FOR"))
    for lease in rows:
        beat = f"{words.duration(lease.heartbeat_age)} ago" if lease.heartbeat_age is not None else "none"
        table.add_row(t(lease.queue), t(lease.id), short(lease.name, 40), t(lease.holder), t(words.duration(lease.held_for)),
                      t(words.duration(lease.expires_in)), t(beat), t(lease.delivery_count),
                      t(f"STUCK: {lease.stuck_reason}" if lease.stuck else "no", "bold red" if lease.stuck else "dim"))
    stuck = sum(1 for lease in rows if lease.stuck)
    note = (f"{stuck} stuck: `stem requeue <queue> --expired-leases --dry-run` shows what a requeue would take back"
            if stuck else "no stuck leases")
    return Group(table, t(note, "bold red" if stuck else "dim"))


def queue_detail(detail: QueueDetail) -> Group:
    parts: list[Any] = []
    if detail.overview is not None:
        q = detail.overview
        a = q.approximate
        flying = INFLIGHT_NA_NOTE if q.inflight is None else approx(q.inflight, a)
        parts.append(t(f"{q.queue}: {approx(q.pending, a)} pending, {approx(q.delayed, a)} delayed, "
                       f"{flying} in flight, {approx(q.dead, a)} dead; "
                       f"oldest {words.duration(q.oldest_pending_age)}; {q.verdict_text}",
                       VERDICT_STYLES.get(q.verdict, "")))
    if not detail.messages:
        where = f" at offset {detail.offset}" if detail.offset else (" after this cursor" if detail.cursor else "")
        parts.append(t(f"no {detail.state} messages{where}"))
        return Group(*parts)
    if detail.state == "dead":
        table = _table("TASK ID", "NAME", "DEAD AT", "REASON", "ARGS", drop=("ARGS", "DEAD AT"))
        for m in detail.messages:
            env = m["envelope"]
            table.add_row(t(env["id"]), short(env["name"], 40), t(m["dead_at"]), short(m["reason"], 40), short(env["args"]))
    else:
        table = _table("TASK ID", "NAME", "PRIO", "ATTEMPT", "ENQUEUED", "DUE" if detail.state == "delayed" else "HOLDER",
                       "ARGS", right=("PRIO", "ATTEMPT"), drop=("ARGS", "ENQUEUED", "PRIO", "ATTEMPT"))
        for m in detail.messages:
            env = m["envelope"]
            extra = env.get("notBefore") if detail.state == "delayed" else m.get("lease_holder")
            table.add_row(t(env["id"]), short(env["name"], 40), t(env["priority"]), t(env["attempt"]), t(env["enqueuedAt"]),
                          t(extra), short(env["args"]))
    parts.append(table)
    if detail.next_cursor is not None:
        parts.append(t(f"more: --cursor {shlex.quote(detail.next_cursor)}", "dim"))
    elif detail.next_offset is not None:
        parts.append(t(f"more: --offset {detail.next_offset}", "dim"))
    return Group(*parts)


def explanation(ex: Explanation) -> Group:
    style = {"running": "green", "done": "green", "unknown": "bold red", "dead": "red"}.get(ex.state, "yellow")
    lines: list[Any] = [
        Text.assemble(("task   ", "bold"), t(ex.task_id)),
        Text.assemble(("state  ", "bold"), t(ex.state, style)),
        Text.assemble(("queue  ", "bold"), t(ex.queue)),
        Text.assemble(("where  ", "bold"), t(ex.summary)),
    ]
    if ex.lease is not None:
        lease = ex.lease
        beat = f"{words.duration(lease.heartbeat_age)} ago" if lease.heartbeat_age is not None else "none"
        lines.append(Text.assemble(("lease  ", "bold"), t(f"holder {lease.holder}, expires in "
                                                          f"{words.duration(lease.expires_in)}, holder heartbeat {beat}, "
                                                          f"delivery {lease.delivery_count}")))
    header = "why it is not running:" if ex.state not in ("running", "done") else "what it is doing:"
    lines.append(Text(header, style="bold"))
    for blocker in ex.blockers:
        lines.append(Text.assemble("  - ", (f"[{blocker.code}] ", "bold"), t(blocker.message)))
        if blocker.fix:
            lines.append(Text.assemble("      fix: ", t(blocker.fix, "cyan")))
    if ex.envelope is not None:
        env = ex.envelope
        lines.append(Text.assemble(("name   ", "bold"), t(env["name"])))
        lines.append(Text.assemble(("args   ", "bold"), short(env["args"], 200)))
        lines.append(Text.assemble(("tries  ", "bold"), t(f"attempt {env['attempt']} of max {env['maxRetries']} retries, "
                                                          f"priority {env['priority']}")))
    if ex.status is not None:
        st = ex.status
        lines.append(Text.assemble(("status ", "bold"), t(f"{st['state']} (updated {st['updated_at']})")))
        if ex.status_note:
            lines.append(Text.assemble(("       ", "bold"), t(ex.status_note, "yellow")))
        if st.get("error"):
            lines.append(Text.assemble(("error  ", "bold"), short(f"{st['error'].get('type')}: {st['error'].get('message')}", 200)))
    return Group(*lines)


def action(result: ActionResult, verb: str) -> Group:
    if result.count == 0 and not result.sample:
        head = f"nothing to {verb}"
    elif result.dry_run:
        head = f"dry run: would {verb} {result.count}"
    else:
        head = f"{verb}: {result.count}"
    lines: list[Any] = [t(head, "bold")]
    for item in result.sample:
        lines.append(Text.assemble("  ", short(" ".join(f"{k}={v}" for k, v in item.items() if v is not None), 160)))
    if result.count > len(result.sample) and result.sample:
        lines.append(t(f"  ... and {result.count - len(result.sample)} more", "dim"))
    missing = result.detail.missing
    if missing:
        lines.append(t(f"no reply from: {', '.join(missing)}", "bold red"))
    note = result.detail.note
    if note:
        lines.append(t(note, "dim"))
    if result.audit_id:
        lines.append(t(f"audit record {result.audit_id}", "dim"))
    return Group(*lines)


def records(rows: list[dict[str, Any]], columns: list[tuple[str, str]], empty: str) -> Any:
    """A generic table of dicts: ``columns`` are (header, key)."""
    if not rows:
        return t(empty)
    table = _table(*(header for header, _ in columns))
    for row in rows:
        table.add_row(*(short(row.get(key), 80) if not isinstance(row.get(key), (str, int, float, type(None)))
                        else t(row.get(key)) for _, key in columns))
    return table


__all__ = ["action", "explanation", "leases", "overview", "queue_detail", "records", "short", "t", "workers"]
