"""The options every command shares, as one ``CommonOptions`` object.

Each command declares only its own options and takes ``opts: CommonOptions``;
``@common_options(...)`` appends the shared ones to its signature, where Typer reads
them, always in the same order and with the same help and ``STEM_*`` twins:

    --json --jsonl (output=True)   --stale-after (stale_after=True)
    --broker --backend --namespace (always)

They stay options of each command (``stem inspect queues --broker URL``), not of the
root group, so every command line that worked before still does.
"""

from __future__ import annotations

import functools
import inspect
import os
from dataclasses import dataclass
from typing import Annotated, Any, Callable, TypeVar

import typer

from stem_core.settings import ENV_BACKEND_URL, ENV_BROKER_URL, ENV_NAMESPACE, Settings, load_settings

from .output import EXIT_USAGE, fail, register_secret_url
from .parsing import parse_duration

R = TypeVar("R")

BrokerOpt = Annotated[
    str | None,
    typer.Option("--broker", envvar="STEM_BROKER_URL", help="Broker URL (default: the embedded SQLite file).", show_envvar=True),
]
BackendOpt = Annotated[
    str | None,
    typer.Option("--backend", envvar="STEM_RESULT_BACKEND_URL", help="Result backend URL (default: the broker URL).", show_envvar=True),
]
NamespaceOpt = Annotated[
    str | None,
    typer.Option("--namespace", envvar="STEM_NAMESPACE", help="Namespace prefixing every key and row.", show_envvar=True),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
JsonlOpt = Annotated[bool, typer.Option("--jsonl", help="Print one JSON object per line (per row; per refresh with --watch).")]
StaleAfterOpt = Annotated[
    str | None,
    typer.Option("--stale-after", envvar="STEM_STALE_AFTER", show_envvar=True,
                 help="A worker whose heartbeat is older than this counts as dead (default: its heartbeat interval plus half of it, at least 1s; 30s for workers that do not say)."),
]
WatchOpt = Annotated[bool, typer.Option("--watch", help="Refresh in place; `--watch 5s` sets the interval (default 2s).")]
IntervalOpt = Annotated[str, typer.Option("--interval", help="Refresh interval for --watch, e.g. 500ms, 2s.", hidden=True)]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do it without asking (required off a terminal).")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Show the count and a sample; change nothing.")]
FramesOpt = Annotated[int | None, typer.Option("--frames", min=1, help="With --watch: stop after this many refreshes.")]
ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Why: kept in the audit log.")]


def output_format(json_out: bool, jsonl_out: bool) -> str:
    if json_out and jsonl_out:
        fail("choose --json or --jsonl, not both", EXIT_USAGE)
    return "json" if json_out else "jsonl" if jsonl_out else "table"


def settings_from(broker: str | None, backend: str | None, namespace: str | None) -> Settings:
    """Effective settings from the global options (exit 2 on a bad namespace)."""
    # Typer fills an option from its STEM_* twin; hand such values back as "unset" so the
    # settings name the variable, not a flag, as their source.
    env = os.environ
    broker = None if broker is not None and broker == env.get(ENV_BROKER_URL) else broker
    backend = None if backend is not None and backend == env.get(ENV_BACKEND_URL) else backend
    namespace = None if namespace is not None and namespace == env.get(ENV_NAMESPACE) else namespace
    try:
        settings = load_settings(broker=broker, backend=backend, namespace=namespace)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)
    register_secret_url(settings.broker_url)
    register_secret_url(settings.backend_url)
    return settings


@dataclass(frozen=True, slots=True)
class CommonOptions:
    """The shared options as given (a flag, or its ``STEM_*`` twin filled in by Typer)."""

    broker: str | None = None
    backend: str | None = None
    namespace: str | None = None
    json_out: bool = False
    jsonl_out: bool = False
    stale_after: str | None = None

    def fmt(self) -> str:
        """``table``, ``json`` or ``jsonl`` (exit 2 for both JSON flags)."""
        return output_format(self.json_out, self.jsonl_out)

    def settings(self) -> Settings:
        """The effective settings (exit 2 on a bad namespace; passwords registered for scrubbing)."""
        return settings_from(self.broker, self.backend, self.namespace)

    def stale_seconds(self) -> float | None:
        """``--stale-after`` in seconds, or None when not given (exit 2 when malformed)."""
        return parse_duration(self.stale_after, option="--stale-after") if self.stale_after else None


def _parameter(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=annotation)


def common_options(*, output: bool = True, stale_after: bool = False) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """Give a command the shared options as ``opts: CommonOptions``: ``--json``/``--jsonl``
    with ``output``, ``--stale-after`` with ``stale_after``, and always ``--broker``,
    ``--backend``, ``--namespace`` (appended in that order after the command's own)."""
    shared = []
    if output:
        shared += [_parameter("json_out", JsonOpt, False), _parameter("jsonl_out", JsonlOpt, False)]
    if stale_after:
        shared.append(_parameter("stale_after", StaleAfterOpt, None))
    shared += [_parameter("broker", BrokerOpt, None), _parameter("backend", BackendOpt, None),
               _parameter("namespace", NamespaceOpt, None)]
    names = [p.name for p in shared]

    def decorate(command: Callable[..., R]) -> Callable[..., R]:
        own = [p for name, p in inspect.signature(command, eval_str=True).parameters.items() if name != "opts"]

        @functools.wraps(command)
        def with_options(**kwargs: Any) -> R:
            opts = CommonOptions(**{name: kwargs.pop(name) for name in names})
            return command(**kwargs, opts=opts)

        # Typer reads the parameters from the signature (and their types from the annotations).
        with_options.__signature__ = inspect.Signature(own + shared)  # type: ignore[attr-defined]
        with_options.__annotations__ = {p.name: p.annotation for p in own + shared}
        return with_options

    return decorate


__all__ = [
    "BackendOpt",
    "BrokerOpt",
    "CommonOptions",
    "DryRunOpt",
    "FramesOpt",
    "IntervalOpt",
    "JsonOpt",
    "JsonlOpt",
    "NamespaceOpt",
    "ReasonOpt",
    "StaleAfterOpt",
    "WatchOpt",
    "YesOpt",
    "common_options",
    "output_format",
    "settings_from",
]
