"""What an action will do, before it does it: a ``Plan`` of ``Step``s on the ops API.

Every TUI action is a plan. The app runs each step as a dry run first (the preview: a
count and a sample, read at one instant), shows the preview and the equivalent ``stem``
command, and on confirmation runs the steps for real with the ids the preview froze, so
a refresh in between can shrink the target set but never widen it. Each real step is
one audited ``Ops`` call, exactly what the CLI command runs.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Sequence

from stem_core.ops import ActionResult, Ops
from stem_core.ops.policy import asks_first
from stem_core.settings import DEFAULT_PAGE_LIMIT

RunFn = Callable[[Ops, bool, "list[str] | None", "str | None"], Awaitable[ActionResult]]


@dataclass(frozen=True, slots=True)
class Step:
    """One ``Ops`` call: ``run(ops, dry_run, frozen_ids, reason)``. ``freeze``: the real
    run gets the ids the preview found (``detail.ids``). The equivalent ``stem``
    command comes with each result (``ActionResult.command``)."""

    run: RunFn
    freeze: bool = False


@dataclass(frozen=True, slots=True)
class Plan:
    title: str
    verb: str
    noun: str
    steps: tuple[Step, ...]
    destructive: bool = True
    note: str = ""

    def frozen_ids(self, previews: Sequence[ActionResult]) -> list[list[str] | None]:
        return [(list(p.detail.ids or []) if s.freeze else None) for s, p in zip(self.steps, previews)]


@dataclass(frozen=True, slots=True)
class Preview:
    """The dry-run results of a plan's steps, summed."""

    plan: Plan
    results: tuple[ActionResult, ...]

    @property
    def count(self) -> int:
        return sum(r.count for r in self.results)

    @property
    def sample(self) -> list[dict[str, Any]]:
        return [item for r in self.results for item in r.sample]


def command_line(results: Sequence[ActionResult], context: Sequence[str] = ()) -> str:
    """The ``stem`` commands of ``results`` (plus the --broker/--namespace the TUI runs
    with) as one shell line."""
    extra = (" " + shlex.join(context)) if context else ""
    lines = [r.command + extra for r in results if r.command]
    return " && ".join(lines) if lines else "(no single stem command does this)"


def _by_queue(items: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for queue, task_id in items:
        grouped.setdefault(queue, []).append(task_id)
    return grouped


# -- the plans, one per action ------------------------------------------------------------


def requeue_ids(items: Sequence[tuple[str, str]]) -> Plan:
    """Leased or delayed messages ``(queue, id)`` made ready now."""
    steps = []
    for queue, ids in _by_queue(items).items():
        steps.append(Step(
            run=lambda ops, dry, frozen, why, q=queue, i=tuple(ids): ops.requeue(q, ids=frozen or list(i), dry_run=dry, reason=why),
            freeze=True,
        ))
    return Plan(f"Requeue {len(items)} message(s)", "requeue", "message(s)", tuple(steps))


def requeue_stuck(*queues: str) -> Plan:
    """The leases flagged stuck now in ``queues`` (one audited requeue per queue)."""
    steps = tuple(
        Step(run=lambda ops, dry, frozen, why, q=queue: ops.requeue(q, stuck_leases=True, ids=frozen, dry_run=dry, reason=why),
             freeze=True)
        for queue in queues
    )
    return Plan(
        f"Requeue the stuck leases of {', '.join(queues)}", "requeue", "stuck lease(s)", steps,
        note="Only the leases stuck when counted are taken back; any that recovered since are left alone.",
    )


def replay(queue: str, ids: Sequence[str] | None = None, limit: int | None = None) -> Plan:
    """Dead letters back on their queue (``ids``, else the oldest ``limit``)."""
    fixed = list(ids) if ids else None

    async def run(ops: Ops, dry: bool, frozen: list[str] | None, why: str | None) -> ActionResult:
        chosen = frozen if frozen is not None else fixed
        count = max(1, len(chosen)) if chosen else (limit or DEFAULT_PAGE_LIMIT)
        return await ops.replay(queue, ids=chosen, limit=count, dry_run=dry, reason=why)

    what = f"{len(fixed)} dead letter(s)" if fixed else "the dead letters"
    return Plan(f"Replay {what} of {queue}", "replay", "dead letter(s)", (Step(run, freeze=True),))


def purge(queue: str) -> Plan:
    return Plan(
        f"Purge {queue}", "purge", "pending and delayed message(s)",
        (Step(lambda ops, dry, frozen, why: ops.purge(queue, dry_run=dry, reason=why)),),
        note="Purge deletes what is pending or delayed when you confirm (in-flight messages are kept).",
    )


def purge_dead(queue: str) -> Plan:
    return Plan(
        f"Purge the dead letters of {queue}", "purge", "dead letter(s)",
        (Step(lambda ops, dry, frozen, why: ops.purge(queue, dead=True, dry_run=dry, reason=why)),),
        note="Deletes every dead letter of the queue when you confirm; there is no undo.",
    )


def remove(items: Sequence[tuple[str, str]]) -> Plan:
    steps = []
    for queue, ids in _by_queue(items).items():
        steps.append(Step(
            run=lambda ops, dry, frozen, why, q=queue, i=tuple(ids): ops.remove(q, frozen or list(i), dry_run=dry, reason=why),
            freeze=True,
        ))
    return Plan(f"Remove {len(items)} message(s)", "remove", "message(s)", tuple(steps))


def pause(queues: Sequence[str], reason: str | None, until: float | None) -> Plan:
    names = list(queues)
    return Plan(f"Pause {', '.join(names)}", "pause", "queue(s)",
                (Step(lambda ops, dry, frozen, why: ops.pause(names, reason=reason or why, until=until, dry_run=dry)),),
                destructive=False)


def resume(queues: Sequence[str]) -> Plan:
    names = list(queues)
    return Plan(f"Resume {', '.join(names)}", "resume", "queue(s)",
                (Step(lambda ops, dry, frozen, why: ops.resume(names, dry_run=dry, reason=why)),),
                destructive=False)


def broadcast(command: str, arguments: dict[str, Any], targets: Sequence[str] | None, timeout: float) -> Plan:
    chosen = list(targets) if targets else None
    who = ", ".join(chosen) if chosen else "every live worker"
    return Plan(f"Broadcast {command} to {who}", "broadcast", "worker(s)",
                (Step(lambda ops, dry, frozen, why: ops.broadcast(command, arguments, targets=chosen, timeout=timeout,
                                                                  dry_run=dry, reason=why)),),
                destructive=asks_first(command))  # as `stem broadcast` does


def enqueue(name: str, args: dict[str, Any], queue: str | None, priority: int | None, delay: float | None) -> Plan:
    return Plan(f"Enqueue {name}", "enqueue", "task(s)",
                (Step(lambda ops, dry, frozen, why: ops.enqueue(name, args, queue=queue, priority=priority, delay=delay,
                                                                dry_run=dry, reason=why)),),
                destructive=False)


__all__ = [
    "Plan",
    "Preview",
    "Step",
    "broadcast",
    "command_line",
    "enqueue",
    "pause",
    "purge",
    "purge_dead",
    "remove",
    "replay",
    "requeue_ids",
    "requeue_stuck",
    "resume",
]
