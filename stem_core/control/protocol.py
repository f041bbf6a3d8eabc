"""The control protocol: command and reply envelopes, names and argument rules.

A command is an ``Envelope`` named ``stem.control.<command>`` broadcast on the channel
``<namespace>.control``; its ``args`` are the command's arguments plus the reserved keys
``request_id``, ``reply_to``, ``targets``, ``sent_at`` and ``deadline``. A worker answers
with an envelope named ``stem.control.reply`` published to the ``reply_to`` queue
(``stem.reply.<hex>``) with ``args = {request_id, worker_id, command, ok, result, error}``.

A worker ignores a command whose ``reply_to`` is not a reply queue, whose ``sent_at`` is
more than ``CONTROL_CLOCK_SKEW_SECONDS`` in the future or older than
``CONTROL_MAX_AGE_SECONDS``, or whose request id it has seen; with signing keys it also
ignores (and audits) an unsigned or forged one (``worker/listener.py``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Mapping

from ..clock import parse_iso, to_iso, utcnow
from ..envelope import Envelope, validate_name
from ..settings import REPLY_QUEUE_PREFIX

CONTROL_COMMANDS = ("ping", "stats", "inspect", "revoke", "shutdown", "pause", "resume")
SHUTDOWN_MODES = ("warm", "soft", "hard")
COMMAND_PREFIX = "stem.control."
REPLY_NAME = "stem.control.reply"
# A worker broadcasts this to itself at start: seeing it proves its control subscription
# is open, so it announces itself (first heartbeat) only once it can hear commands.
HELLO_NAME = "stem.control.hello"
RESERVED_ARGS = ("request_id", "reply_to", "targets", "sent_at", "deadline")


def control_channel(namespace: str) -> str:
    """The broadcast channel every worker of ``namespace`` listens on."""
    return validate_name(f"{namespace}.control", kind="channel")


def new_request_id() -> str:
    return uuid.uuid4().hex


def reply_queue_name(request_id: str) -> str:
    return validate_name(REPLY_QUEUE_PREFIX + request_id)


@dataclass(frozen=True, slots=True)
class Command:
    """One control request as it travels."""

    command: str
    arguments: dict[str, Any]
    request_id: str
    reply_to: str
    targets: list[str] | None
    sent_at: datetime
    deadline: datetime | None = None

    def to_envelope(self) -> Envelope:
        args = dict(self.arguments)
        args.update(
            request_id=self.request_id,
            reply_to=self.reply_to,
            targets=self.targets,
            sent_at=to_iso(self.sent_at),
            deadline=to_iso(self.deadline) if self.deadline else None,
        )
        return Envelope(name=COMMAND_PREFIX + self.command, args=args, id=self.request_id)

    @classmethod
    def from_envelope(cls, envelope: Envelope) -> "Command":
        """Decode a broadcast; ``ValueError`` for anything that is not a valid command."""
        if not envelope.name.startswith(COMMAND_PREFIX):
            raise ValueError(f"not a control command: {envelope.name!r}")
        command = envelope.name[len(COMMAND_PREFIX):]
        if command not in CONTROL_COMMANDS:
            raise ValueError(f"unknown control command {command!r}")
        args = dict(envelope.args)
        request_id = args.pop("request_id", None)
        reply_to = args.pop("reply_to", None)
        targets = args.pop("targets", None)
        sent_at = args.pop("sent_at", None)
        deadline = args.pop("deadline", None)
        if not isinstance(request_id, str) or not request_id or len(request_id) > 200:
            raise ValueError("control command without a request_id")
        if not isinstance(reply_to, str) or not reply_to.startswith(REPLY_QUEUE_PREFIX):
            # Else a command could make every worker publish its reply into a task queue.
            raise ValueError(f"control reply_to must be a reply queue ({REPLY_QUEUE_PREFIX}*)")
        validate_name(reply_to)
        if targets is not None and (not isinstance(targets, list) or not all(isinstance(t, str) for t in targets)):
            raise ValueError("control targets must be a list of worker ids")
        return cls(
            command=command,
            arguments=args,
            request_id=request_id,
            reply_to=reply_to,
            targets=targets,
            sent_at=parse_iso(sent_at) if isinstance(sent_at, str) else envelope.enqueued_at,
            deadline=parse_iso(deadline) if isinstance(deadline, str) else None,
        )

    def is_for(self, worker_id: str) -> bool:
        return not self.targets or worker_id in self.targets

    def age(self, now: datetime | None = None) -> float:
        return ((now or utcnow()) - self.sent_at).total_seconds()


@dataclass(frozen=True, slots=True)
class Reply:
    """One worker's answer."""

    request_id: str
    worker_id: str
    command: str
    ok: bool
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_envelope(self) -> Envelope:
        args = {
            "request_id": self.request_id,
            "worker_id": self.worker_id,
            "command": self.command,
            "ok": self.ok,
            "result": self.result,
            "error": self.error,
        }
        return Envelope(name=REPLY_NAME, args=args)

    @classmethod
    def from_envelope(cls, envelope: Envelope) -> "Reply":
        args = envelope.args
        if envelope.name != REPLY_NAME or not isinstance(args.get("worker_id"), str):
            raise ValueError("not a control reply")
        result = args.get("result")
        return cls(
            request_id=str(args.get("request_id") or ""),
            worker_id=args["worker_id"],
            command=str(args.get("command") or ""),
            ok=bool(args.get("ok")),
            result=result if isinstance(result, dict) else {},
            error=args.get("error") if isinstance(args.get("error"), str) else None,
        )

    def payload(self) -> dict[str, Any]:
        """What ``ControlResult.replies`` holds for this worker: the result, or ``{"error": ...}``."""
        return dict(self.result) if self.ok else {"error": self.error or "unknown error"}


def normalize_arguments(command: str, arguments: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check a command's arguments (``ValueError`` with a clear message) and fill defaults."""
    if command not in CONTROL_COMMANDS:
        raise ValueError(f"unknown control command {command!r}; use one of {', '.join(CONTROL_COMMANDS)}")
    args = dict(arguments or {})
    clash = sorted(set(args) & set(RESERVED_ARGS))
    if clash:
        raise ValueError(f"{command}: argument name(s) {', '.join(clash)} are reserved")
    if command == "revoke":
        ids = args.get("task_ids")
        if isinstance(ids, str):
            ids = [ids]
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
            raise ValueError("revoke needs task_ids: a non-empty list of task ids")
        args["task_ids"] = list(dict.fromkeys(ids))
        args["terminate"] = _flag(args.get("terminate", False), "terminate")
        args["reason"] = _text(args.get("reason"), "reason")
        args["by"] = _text(args.get("by"), "by")
    elif command == "shutdown":
        mode = args.get("mode", "warm")
        if mode not in SHUTDOWN_MODES:
            raise ValueError(f"shutdown mode must be one of {', '.join(SHUTDOWN_MODES)}, got {mode!r}")
        args["mode"] = mode
    elif command in ("pause", "resume"):
        queues = args.get("queues")
        if isinstance(queues, str):
            queues = [queues]
        if not isinstance(queues, list) or not queues:
            raise ValueError(f"{command} needs queues: a non-empty list of queue names")
        args["queues"] = list(dict.fromkeys(validate_name(q) for q in queues))
        args["by"] = _text(args.get("by"), "by")
        if command == "pause":
            args["reason"] = _text(args.get("reason"), "reason")
            args["until"] = until_iso(args.get("until"))
    return args


def until_iso(value: object) -> str | None:
    """An optional pause expiry (aware datetime, ISO text, seconds or timedelta from now) as ISO."""
    if value is None:
        return None
    if isinstance(value, str):
        value = parse_iso(value)
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError(f"until must be in the future, got {value!r} seconds")
        value = utcnow() + timedelta(seconds=value)
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValueError(f"until must be an aware datetime, ISO-8601 text or seconds, got {value!r}")
    if value <= utcnow():
        raise ValueError(f"until must be in the future, got {to_iso(value)}")
    return to_iso(value)


def _flag(value: object, label: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{label} must be true or false, got {value!r}")
    return value


def _text(value: object, label: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{label} must be text, got {value!r}")
    return value


__all__ = [
    "COMMAND_PREFIX",
    "CONTROL_COMMANDS",
    "HELLO_NAME",
    "Command",
    "REPLY_NAME",
    "REPLY_QUEUE_PREFIX",
    "RESERVED_ARGS",
    "Reply",
    "SHUTDOWN_MODES",
    "control_channel",
    "new_request_id",
    "normalize_arguments",
    "reply_queue_name",
    "until_iso",
]
