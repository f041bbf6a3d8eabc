"""The hostile-input corpus, as data: what an attacker with write access to the broker, or
an operator feeding odd input, can hand Stem. The tests in this package run every case
through both front ends (the ``stem`` CLI and the TUI) on every broker.

Each case says what SPEC requires of it, never what the code does today: ``valid_task``
and ``valid_queue`` are the rules of SPEC §3/§9 (task names 1-200 characters; queue names
1-200 characters of letters, digits and ``._-:``), exit codes are SPEC §7 (0 ok, 1 ran but
failed or not found, 2 bad input, 3 unreachable).

One sentinel secret is planted wherever Stem holds a secret (URL user info, ``password``,
``sslpassword`` and ``ssl_password`` query parameters, unparseable URLs, signing keys) and
searched for in every output, log, audit record and TUI screen. Task payloads are the
user's data, shown to the operator as they are: the sentinel is never put there.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

SENTINEL = "S3NT1NEL-7f3a9c-do-not-show"

# What must never reach a terminal raw: C0 controls (tab and newline are allowed only where
# Stem itself writes them, so the checks below strip Stem's own line structure first), DEL,
# C1 controls and the bidi overrides/isolates that reorder what the operator reads.
RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")

NAME_MAX = 200
_QUEUE_RE = re.compile(r"[A-Za-z0-9._:\-]{1,%d}" % NAME_MAX)


def valid_queue(name: str) -> bool:
    """SPEC §3: 1-200 characters of ASCII letters, digits and ``._-:``."""
    return _QUEUE_RE.fullmatch(name) is not None


def valid_task(name: str) -> bool:
    """SPEC §3/§9: a task name is required, non-empty (not blank) and 1-200 characters;
    a NUL character is refused on every broker (PostgreSQL cannot store one)."""
    return 1 <= len(name) <= NAME_MAX and bool(name.strip()) and "\x00" not in name


@dataclass(frozen=True)
class Name:
    """A hostile name, used as a task name, a queue name, a task id and a worker id."""

    id: str
    text: str
    # Cheap enough, and telling enough, to run on the slow brokers (RabbitMQ, SQS) too.
    light: bool = False

    @property
    def task_ok(self) -> bool:
        return valid_task(self.text)

    @property
    def queue_ok(self) -> bool:
        return valid_queue(self.text)

    @property
    def id_ok(self) -> bool:
        return 1 <= len(self.text) <= NAME_MAX


NAMES: list[Name] = [
    Name("empty", ""),
    Name("blank", "   "),
    Name("max-200", "n" * 200, light=True),
    Name("over-201", "n" * 201, light=True),
    Name("huge-9k", "h" * 9 * 1024, light=True),
    Name("ansi-red", "red\x1b[31mALERT\x1b[0m", light=True),
    Name("osc-title", "t\x1b]0;owned\x07x"),
    Name("clear-screen", "\x1b[2J\x1b[H"),
    Name("crlf", "line\r\nfake: log line"),
    Name("cr-overwrite", "ok\rFAILED"),
    Name("nul", "a\x00b"),
    Name("c1-csi", "c1\x9b31m"),
    Name("rtl-override", "invoice\u202egnp.exe", light=True),
    Name("bidi-isolate", "a\u2066b\u2069c"),
    Name("shell-semicolon", "x; touch PWNED #", light=True),
    Name("shell-subst", "$(touch PWNED)"),
    Name("shell-backtick", "`touch PWNED`"),
    Name("shell-pipe", "x | touch PWNED && touch PWNED"),
    Name("confusable", "\u0435mails"),  # Cyrillic "е": looks like "emails"
    Name("zero-width", "emai\u200bls"),
    Name("path-traversal", "../../etc/passwd", light=True),
    Name("sql-quote", "'; DROP TABLE stem_jobs; --"),
    Name("lua-key", "q}:{other"),
    Name("glob-star", "*"),
    Name("rich-markup", "[bold red]x[/][@click=app.quit]q"),
    Name("unicode-emoji", "\U0001f4a3" * 10),
]

# Names that are legal queue names but look like the keys, tables or SQS/AMQP names of the
# canary queue: purging, requeueing or replaying them must not touch the canary.
NEIGHBOURS = ["canary.dead", "canary-dead", "canary:dead", "canary_", "canar_", "canary.", "canary:", "canary.dlq",
              "canary.delay", "CANARY", "canary.p9", "canary-p9"]

# The operator's shell pastes "fix:" commands; an id that breaks out of its word runs this.
TOUCHED_FILE = "PWNED"
SHELL_IDS = [n for n in NAMES if n.id.startswith("shell-")]


@dataclass(frozen=True)
class Payload:
    """``--args`` text for ``stem enqueue`` and the exit code SPEC wants for it."""

    id: str
    text: str
    code: int
    light: bool = False

    def code_on(self, broker: str) -> int:
        """The exit code on ``broker``: PostgreSQL's jsonb cannot hold a NUL character
        (``\u0000``), so there a payload carrying one is refused for good — bad input,
        exit 2, nothing stored — where the other brokers take it (docs/security.md)."""
        return 2 if broker == "postgres" and "\\u0000" in self.text else self.code


def _nested(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


BIG_INT = "1" + "0" * 30
PAYLOADS: list[Payload] = [
    Payload("not-json", "{not json", 2, light=True),
    Payload("not-object", "[1, 2, 3]", 2),
    Payload("null", "null", 2),
    Payload("nan", '{"x": NaN}', 2, light=True),
    Payload("infinity", '{"x": Infinity}', 2),
    Payload("minus-infinity", '{"x": -Infinity}', 2),
    Payload("deep-array-100k", "[" * 100_000, 2, light=True),
    Payload("deep-object-100k", '{"a":' * 100_000, 2),
    Payload("deep-object-closed-5k", _nested(5000), 2),
    Payload("nested-100", _nested(100), 0),
    Payload("big-int-30-digits", '{"n": %s}' % BIG_INT, 0),
    Payload("int-5000-digits", '{"n": 1%s}' % ("0" * 5000), 2),
    # Over the 1 MiB default STEM_MAX_ENVELOPE_BYTES (words, so no regex backtracks on it).
    Payload("over-1mib", json.dumps({"blob": "word " * 230_000}), 2, light=True),
    Payload("escapes-in-keys", json.dumps({"k\x1b[2J": "v\x1b]0;t\x07", "n\x00": "\u202e"}), 0, light=True),
]

# Under the 1 MiB cap but one long run of letters: a quadratic regex over it never ends.
LETTERS_UNDER_CAP = json.dumps({"blob": "x" * 600_000})

# Out-of-range numbers and durations (SPEC §7: at most 10 years; out of range is exit 2).
HUGE = "99999999999999999999"
NUMBER_FLAGS: list[tuple[str, list[str]]] = [
    ("priority-huge", ["enqueue", "t", "-q", "work", "--priority", HUGE]),
    ("priority-10", ["enqueue", "t", "-q", "work", "--priority", "10"]),
    ("priority-negative", ["enqueue", "t", "-q", "work", "--priority", "-1"]),
    ("max-retries-huge", ["enqueue", "t", "-q", "work", "--max-retries", HUGE]),
    ("max-retries-negative", ["enqueue", "t", "-q", "work", "--max-retries", "-1"]),
    ("delay-99999999d", ["enqueue", "t", "-q", "work", "--delay", "99999999d"]),
    ("delay-11-years", ["enqueue", "t", "-q", "work", "--delay", f"{11 * 366}d"]),
    ("delay-nan", ["enqueue", "t", "-q", "work", "--delay", "nan"]),
    ("delay-inf", ["enqueue", "t", "-q", "work", "--delay", "inf"]),
    ("delay-negative", ["enqueue", "t", "-q", "work", "--delay", "-5s"]),
    ("delay-huge-digits", ["enqueue", "t", "-q", "work", "--delay", "9" * 400]),
    ("limit-huge-queue", ["inspect", "queue", "work", "--limit", HUGE]),
    ("offset-huge-queue", ["inspect", "queue", "work", "--offset", HUGE]),
    ("limit-negative-queue", ["inspect", "queue", "work", "--limit", "-1"]),
    ("limit-huge-dlq", ["dlq", "list", "work", "--limit", HUGE]),
    ("offset-huge-dlq", ["dlq", "list", "work", "--offset", HUGE]),
    ("requeue-since-99999999d", ["requeue", "work", "--dead", "--since", "99999999d", "--dry-run"]),
    ("requeue-limit-huge", ["requeue", "work", "--dead", "--limit", HUGE, "--dry-run"]),
    ("requeue-delay-99999999d", ["requeue", "work", "--dead", "--delay", "99999999d", "--dry-run"]),
    ("pause-until-99999999d", ["broadcast", "pause", "-q", "work", "--until", "99999999d", "--yes"]),
]

# A wait this long hangs the command today, so it runs alone under a short hang bound.
HUGE_WAITS: list[tuple[str, list[str]]] = [
    ("broadcast-timeout-99999999d", ["broadcast", "ping", "--timeout", "99999999d"]),
    ("sample-huge", ["inspect", "queues", "--sample", HUGE]),
    ("sample-99999999d", ["inspect", "queues", "--sample", "99999999d"]),
]
LIGHT_FLAGS = {"priority-huge", "max-retries-huge", "delay-99999999d", "limit-huge-dlq", "requeue-since-99999999d",
               "pause-until-99999999d"}

# An offset far past the end is not an error, just an empty page (or a capped one: exit 2).
FAR_OFFSETS: list[tuple[str, list[str]]] = [
    ("queue-offset-10m", ["inspect", "queue", "work", "--offset", "10000000"]),
    ("dlq-offset-10m", ["dlq", "list", "work", "--offset", "10000000"]),
]


@dataclass(frozen=True)
class BadUrl:
    """A URL carrying the sentinel that cannot work: the error line names no secret."""

    id: str
    url: str
    # Exit codes SPEC allows for a command using it: 2 when the URL is bad input, 3 when
    # it is well formed but nothing answers.
    codes: frozenset[int]


BAD_URLS: list[BadUrl] = [
    BadUrl("redis-userinfo-down", f"redis://admin:{SENTINEL}@127.0.0.1:1/0", frozenset({3})),
    BadUrl("redis-password-param", f"redis://127.0.0.1:1/0?password={SENTINEL}", frozenset({2, 3})),
    BadUrl("redis-ssl-password", f"redis://127.0.0.1:1/0?ssl_password={SENTINEL}", frozenset({2, 3})),
    BadUrl("rediss-ssl-password", f"rediss://127.0.0.1:1/0?ssl_password={SENTINEL}", frozenset({2, 3})),
    BadUrl("pg-userinfo-down", f"postgresql://postgres:{SENTINEL}@127.0.0.1:1/test", frozenset({3})),
    BadUrl("pg-password-param", f"postgresql://postgres@127.0.0.1:1/test?password={SENTINEL}", frozenset({3})),
    BadUrl("pg-sslpassword-param", f"postgres://127.0.0.1:1/test?sslmode=require&sslpassword={SENTINEL}",
           frozenset({3})),
    BadUrl("amqp-userinfo-down", f"amqp://guest:{SENTINEL}@127.0.0.1:1/", frozenset({3})),
    BadUrl("amqps-ssl-password", f"amqps://guest:guest@127.0.0.1:1/?ssl_password={SENTINEL}", frozenset({2, 3})),
    BadUrl("sqs-secret-down", f"sqs://AKIAEXAMPLE:{SENTINEL}@?region=us-east-1&endpoint=http://127.0.0.1:1",
           frozenset({3})),
    BadUrl("sqlite-password-param", f"sqlite:///nonexistent-dir/x.db?password={SENTINEL}", frozenset({2})),
    BadUrl("memory-userinfo", f"memory://u:{SENTINEL}@store", frozenset({2})),
    BadUrl("unparseable-ipv6", f"redis://u:{SENTINEL}@[::1/0", frozenset({2})),
    BadUrl("unparseable-port", f"redis://u:{SENTINEL}@host:port/0", frozenset({2})),
    BadUrl("unparseable-bare", f"{SENTINEL}", frozenset({2})),
    BadUrl("unparseable-one-slash", f"redis:/u:{SENTINEL}@127.0.0.1", frozenset({2})),
    BadUrl("unknown-scheme", f"nosuch://u:{SENTINEL}@host/", frozenset({2})),
    BadUrl("encoded-password", f"redis://u:{SENTINEL}%2Fx%40y@127.0.0.1:1/0", frozenset({3})),
    BadUrl("spaces-and-newline", f"redis://u:{SENTINEL} \n@127.0.0.1:1/0", frozenset({2, 3})),
]

# Commands that show, use or report a URL; each runs with --broker and --backend set to it.
URL_COMMANDS: list[list[str]] = [
    ["config"],
    ["config", "--json"],
    ["health"],
    ["health", "--json"],
    ["inspect", "queues"],
    ["inspect", "queues", "--json"],
    ["enqueue", "t", "-q", "work"],
    ["purge", "work", "--yes"],
]

# Envelope headers a producer (or an attacker writing to the broker) may set.
HEADERS: dict[str, str] = {
    "trace\x1b[31m": "span\x1b]0;owned\x07",
    "callback": "https://hooks.example/x?token=\x1b[31m",
    "bidi": "\u202egnp.exe",
    "stem-signature": "not-base64-!!!\x1b[2J",
    "stem-signature-key": "../../etc/keys\r\nkey",
}


@dataclass(frozen=True)
class ControlCase:
    """A hand-made control message broadcast on ``<ns>.control`` by someone holding no key.

    ``args`` is completed at run time: ``{now}`` and ``{future}`` become ISO times,
    ``{reply}`` a fresh reply queue, ``{task_queue}`` the name of a queue holding work.
    Whatever it is, the worker keeps running, and nothing lands in a task queue.
    """

    id: str
    command: str
    args: dict[str, Any] = field(default_factory=dict)
    light: bool = False


CONTROL_CASES: list[ControlCase] = [
    ControlCase("future-sent-at-hard-shutdown", "shutdown",
                {"mode": "hard", "request_id": "{rid}", "reply_to": "{reply}", "sent_at": "{future}"}, light=True),
    ControlCase("future-sent-at-terminate-all", "revoke",
                {"task_ids": ["{victim}"], "terminate": True, "request_id": "{rid}", "reply_to": "{reply}",
                 "sent_at": "{future}"}),
    ControlCase("reply-to-task-queue", "ping",
                {"request_id": "{rid}", "reply_to": "{task_queue}", "sent_at": "{now}"}, light=True),
    ControlCase("reply-to-canary-queue", "stats",
                {"request_id": "{rid}", "reply_to": "canary", "sent_at": "{now}"}),
    ControlCase("garbage-fields-shutdown", "shutdown",
                {"mode": "nuclear", "request_id": 5, "reply_to": "../../etc", "targets": "everyone",
                 "sent_at": "yesterday", "deadline": {"$gt": 0}}),
    ControlCase("garbage-sent-at-hard", "shutdown",
                {"mode": "hard", "request_id": "{rid}", "reply_to": "{reply}", "sent_at": "\x1b[31m9999-99-99"}),
    ControlCase("escape-laden-reply-to", "ping",
                {"request_id": "{rid}", "reply_to": "stem.reply.\x1b[2J", "sent_at": "{now}"}),
    ControlCase("huge-targets", "shutdown",
                {"mode": "hard", "request_id": "{rid}", "reply_to": "{reply}", "sent_at": "{future}",
                 "targets": ["w" * 200] * 1000 + ["{worker}"]}),
]

# Control messages the CLI must refuse as bad input before anything is sent.
CONTROL_GARBAGE_ARGS = ["{not json", "[1]", "\x1b[31m{", '{"mode": NaN}', "[" * 100_000]
