"""The ``stem`` command line equivalent to an action, so every TUI action can show (and
copy) the CLI command that does the same thing, and the audit log can say it too.

Built from the action's recorded arguments; values are shell-quoted. Enqueue-many has no
single-line equivalent (it is ``stem enqueue --file``), so it gets none.
"""

from __future__ import annotations

import json
import shlex
from typing import Any, Callable


def shell_quote(value: object) -> str:
    """``value`` as one shell word: safe to paste whatever it holds (a task id such as
    ``x; touch /tmp/PWNED #`` stays one inert argument)."""
    return shlex.quote(str(value))


def stem_command(*words: object) -> str:
    """``stem`` followed by ``words``, each shell-quoted: THE way every suggested or
    equivalent command is built (explain's fixes, ``stem dlq show``, the TUI's panels)."""
    return " ".join(["stem", *(shell_quote(w) for w in words)])


_q = shell_quote


def _flags(pairs: list[tuple[str, Any]]) -> list[str]:
    out: list[str] = []
    for flag, value in pairs:
        if value is None or value is False:
            continue
        out.append(flag if value is True else f"{flag} {_q(value)}")
    return out


def _ids(ids: list[str] | None, flag: str = "--id") -> list[str]:
    return [f"{flag} {_q(i)}" for i in ids or []]


def _seconds(value: Any) -> str | None:
    return None if value is None else f"{float(value):g}s"


def _requeue(a: dict[str, Any]) -> list[str]:
    head = ["stem", "requeue", _q(a["queue"])]
    if "stuck_leases" not in a:  # requeue --dead goes through replay's arguments
        return head + ["--dead"] + _ids(a.get("ids")) + _flags([("--task", a.get("task")), ("--since", a.get("since")),
                                                               ("--limit", a.get("limit")), ("--delay", _seconds(a.get("delay")))])
    return head + _ids(a.get("ids")) + _flags([("--expired-leases", a.get("stuck_leases")), ("--limit", a.get("limit"))])


def _replay(a: dict[str, Any]) -> list[str]:
    return ["stem", "dlq", "replay", _q(a["queue"])] + _ids(a.get("ids")) + _flags(
        [("--task", a.get("task")), ("--since", a.get("since")), ("--limit", a.get("limit")), ("--delay", _seconds(a.get("delay")))])


def _purge(a: dict[str, Any]) -> list[str]:
    if a.get("dead"):
        return ["stem", "dlq", "purge", _q(a["queue"])] + _flags([("--since", a.get("since")), ("--limit", a.get("limit"))])
    return ["stem", "purge", _q(a["queue"])]


def _pause(a: dict[str, Any]) -> list[str]:
    return ["stem", "broadcast", "pause"] + _ids(a["queues"], "--queue") + _flags(
        [("--reason", a.get("reason")), ("--until", a.get("until"))])


def _broadcast(a: dict[str, Any]) -> list[str]:
    args = {k: v for k, v in (a.get("arguments") or {}).items() if v is not None and k != "by"}
    line = ["stem", "broadcast", _q(a["command"])] + _ids(a.get("targets"), "--worker")
    line += _flags([("--timeout", _seconds(a.get("timeout")))])
    return line + (["--args", _q(json.dumps(args, separators=(",", ":")))] if args else [])


def _enqueue(a: dict[str, Any]) -> list[str]:
    line = ["stem", "enqueue", _q(a["task"])]
    if a.get("args"):
        line += ["--args", _q(json.dumps(a["args"], separators=(",", ":")))]
    return line + _flags([("--queue", a.get("queue")), ("--priority", a.get("priority")),
                          ("--delay", _seconds(a.get("delay"))), ("--eta", a.get("eta")),
                          ("--max-retries", a.get("max_retries")), ("--id", a.get("task_id"))])


_BUILDERS: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "requeue": _requeue,
    "replay": _replay,
    "purge": _purge,
    "purge-dead": _purge,
    "remove": lambda a: ["stem", "purge", _q(a["queue"])] + _ids(a.get("ids")),
    "pause": _pause,
    "resume": lambda a: ["stem", "broadcast", "resume"] + _ids(a["queues"], "--queue"),
    "broadcast": _broadcast,
    "broadcast-raw": lambda a: ["stem", "broadcast", "--channel", _q(a["channel"]), _q(a["task"]), "--args",
                                _q(json.dumps(a.get("args") or {}, separators=(",", ":")))],
    "enqueue": lambda a: _enqueue(a) if "task" in a else [],
    "schedule-add": lambda a: ["stem", "schedule", "add", _q(a["id"]), _q(a["task"]), _q(a["spec"])]
    + (["--args", _q(json.dumps(a["args"], separators=(",", ":")))] if a.get("args") else [])
    + _flags([("--queue", a.get("queue")), ("--tz", a.get("tz") if a.get("tz") != "UTC" else None),
              ("--catch-up", a.get("catch_up") if a.get("catch_up") != "one" else None), ("--paused", a.get("paused"))]),
    "schedule-remove": lambda a: ["stem", "schedule", "remove", _q(a["id"])],
    "schedule-pause": lambda a: ["stem", "schedule", "pause", _q(a["id"])],
    "schedule-resume": lambda a: ["stem", "schedule", "resume", _q(a["id"])],
    "schedule-run-now": lambda a: ["stem", "schedule", "run-now", _q(a["id"])],
}


def equivalent_command(action: str, arguments: dict[str, Any]) -> str | None:
    """The ``stem ...`` line that does ``action`` with ``arguments``, or None."""
    builder = _BUILDERS.get(action)
    if builder is None:
        return None
    try:
        words = builder(arguments)
    except (KeyError, TypeError, ValueError):
        return None
    return " ".join(words) if words else None


__all__ = ["equivalent_command", "shell_quote", "stem_command"]
