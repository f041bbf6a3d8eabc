"""``Stem``: the task registry, the producer API (enqueue, enqueue_many) and ``wait``.

::

    app = Stem()                                   # URLs from STEM_* env, else embedded SQLite
    @app.task(name="email.send", queue="emails", max_retries=3, time_limit=30)
    async def send_email(ctx, to: str, subject: str) -> dict: ...
    task_id = await app.enqueue("email.send", {"to": "a@b.c", "subject": "hi"}, delay=10)
    status = await app.wait(task_id, timeout=30)
    task_id = app.enqueue_sync("email.send", {...})   # from sync code (a view): docs/sync.md

Enqueuing a name this app does not know is allowed (a remote worker may know it); its
queue, priority and retries then come from the call or the defaults.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from . import _sync
from ._sync import DEFAULT_CALL_TIMEOUT_S, SyncRunner
from .adapters import connect_backend, connect_broker
from .clock import UTC
from .contract import Broker, ResultBackend, TaskStatus
from .envelope import DEFAULT_QUEUE, IGNORE_RESULT_HEADER, Envelope, delay_to_not_before, validate_name
from .errors import ConfigurationError, InvalidEnvelope, StemError, WaitTimeout
from .limits import ID_MAX_LENGTH, MAX_DURATION_SECONDS, MAX_RETRIES, check_int, check_seconds, check_task_name
from .schedules.model import DEFAULT_CATCH_UP, Schedule
from .signing import require_signer
from .settings import (
    DEFAULT_MAX_RETRIES,
    ENV_BACKEND_URL,
    RETRY_BASE_SECONDS,
    RETRY_MAX_SECONDS,
    load_settings,
    validate_namespace,
)

ENQUEUE_OPTIONS = frozenset({"queue", "priority", "delay", "eta", "task_id", "max_retries"})


@dataclass(frozen=True, eq=False)
class Task:
    """A registered task: the function and its defaults. Calling it calls the function."""

    app: "Stem" = field(repr=False)
    name: str
    func: Callable[..., Any] = field(repr=False)
    queue: str = DEFAULT_QUEUE
    max_retries: int = DEFAULT_MAX_RETRIES
    time_limit: float | None = None
    visibility_timeout: float | None = None
    priority: int = 0
    retry_backoff: float = RETRY_BASE_SECONDS
    retry_backoff_max: float = RETRY_MAX_SECONDS
    is_async: bool = False
    # None: the app's ``ignore_result``.
    ignore_result: bool | None = None
    # Keyword parameters after ctx: (required, accepted, takes **kwargs), checked per run.
    params: tuple[frozenset[str], frozenset[str], bool] = field(default=(frozenset(), frozenset(), False), repr=False)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)

    async def enqueue(self, args: Mapping[str, Any] | None = None, **options: Any) -> str:
        """``app.enqueue(self.name, args, **options)``."""
        return await self.app.enqueue(self.name, args, **options)

    def enqueue_sync(self, args: Mapping[str, Any] | None = None, **options: Any) -> str:
        """``app.enqueue_sync(self.name, args, **options)`` (docs/sync.md)."""
        return self.app.enqueue_sync(self.name, args, **options)

    def args_problem(self, args: Mapping[str, Any]) -> str | None:
        """Why ``args`` cannot be passed to the function as keywords, or None."""
        required, accepted, var_kw = self.params
        missing = sorted(required - args.keys())
        if missing:
            return f"task {self.name} is missing argument(s) {', '.join(missing)}"
        if not var_kw:
            unknown = sorted(args.keys() - accepted)
            if unknown:
                return f"task {self.name} got unexpected argument(s) {', '.join(unknown)}"
        return None


class Stem:
    """The app: registry, producer and connection holder.

    ``broker``/``backend`` are URLs or connected adapters; None falls back to
    ``load_settings()`` (flags, then ``STEM_*`` variables, then the embedded SQLite file).
    Connections open on first use (or ``await app.connect()``); ``await app.close()``
    closes the adapters this app opened itself.

    The ``*_sync`` methods are the same API for synchronous callers (any thread): they run
    on the app's own event-loop thread with its own connections (docs/sync.md).
    """

    def __init__(
        self,
        broker: str | Broker | None = None,
        backend: str | ResultBackend | None = None,
        namespace: str | None = None,
        *,
        ignore_result: bool = False,
    ) -> None:
        if broker is not None and not isinstance(broker, (str, Broker)):
            raise ConfigurationError(f"broker must be a URL or a Broker, got {type(broker).__name__}")
        if backend is not None and not isinstance(backend, (str, ResultBackend)):
            raise ConfigurationError(f"backend must be a URL or a ResultBackend, got {type(backend).__name__}")
        self._broker_arg = broker
        self._backend_arg = backend
        self._namespace_arg = validate_namespace(namespace) if namespace is not None else None
        if not isinstance(ignore_result, bool):
            raise ConfigurationError(f"ignore_result must be True or False, got {ignore_result!r}")
        # Celery's switch: tasks store no queued/running/succeeded status (failures still do).
        self.ignore_result = ignore_result
        self.registry: dict[str, Task] = {}
        # Code-declared schedules (``periodic``/``schedule``), synced into the store by a beat.
        self.schedules: dict[str, Schedule] = {}
        self._broker: Broker | None = None
        self._backend: ResultBackend | None = None
        self._owned: list[Broker | ResultBackend] = []
        self._connect_lock: asyncio.Lock | None = None
        self._sync: SyncRunner | None = None

    # -- configuration and connections ----------------------------------------------

    @property
    def tasks(self) -> dict[str, Task]:
        return self.registry

    @property
    def namespace(self) -> str:
        if self._namespace_arg is not None:
            return self._namespace_arg
        if isinstance(self._broker_arg, Broker):
            return self._broker_arg.namespace
        return load_settings().namespace

    @property
    def connected(self) -> bool:
        return self._broker is not None and self._backend is not None

    def configure(self, *, broker: str | None = None, backend: str | None = None, namespace: str | None = None) -> None:
        """Override URLs or namespace before the first connection (used by ``stem worker``)."""
        if self._broker is not None or self._backend is not None or (self._sync is not None and self._sync.started):
            raise StemError("configure() must be called before the app connects")
        if broker:
            self._broker_arg = broker
        if backend:
            self._backend_arg = backend
        if namespace:
            self._namespace_arg = validate_namespace(namespace)

    async def connect(self) -> "Stem":
        """Connect broker and backend (idempotent)."""
        if self.connected:
            return self
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            if not self.connected:
                await self._open()
        return self

    async def _open(self) -> None:
        broker_arg, backend_arg = self._broker_arg, self._backend_arg
        namespace = self._namespace_arg
        for given in (broker_arg, backend_arg):
            if not isinstance(given, str) and given is not None:
                if namespace is None:
                    namespace = given.namespace
                elif given.namespace != namespace:
                    raise ConfigurationError(
                        f"namespace {namespace!r} does not match the given adapter's namespace {given.namespace!r}"
                    )
        if isinstance(broker_arg, Broker) and backend_arg is None and not os.environ.get(ENV_BACKEND_URL):
            # The backend would otherwise default to an unrelated URL (env or embedded file).
            raise ConfigurationError("a Broker instance needs backend= too (a URL or a ResultBackend), or STEM_RESULT_BACKEND_URL")
        settings = load_settings(
            broker=broker_arg if isinstance(broker_arg, str) else None,
            backend=backend_arg if isinstance(backend_arg, str) else None,
            namespace=namespace,
        )
        try:
            if self._broker is None:
                if isinstance(broker_arg, Broker):
                    self._broker = broker_arg
                else:
                    self._broker = await connect_broker(settings.broker_url, namespace=settings.namespace)
                    self._owned.append(self._broker)
            if self._backend is None:
                if isinstance(backend_arg, ResultBackend):
                    self._backend = backend_arg
                else:
                    self._backend = await connect_backend(settings.backend_url, namespace=settings.namespace)
                    self._owned.append(self._backend)
        except BaseException:
            await self.close()
            raise
        self._namespace_arg = settings.namespace

    @property
    def broker(self) -> Broker:
        """The connected broker (``await app.connect()`` first)."""
        if self._broker is None:
            raise StemError("the app is not connected yet: await app.connect() first")
        return self._broker

    @property
    def backend(self) -> ResultBackend:
        """The connected result backend (``await app.connect()`` first)."""
        if self._backend is None:
            raise StemError("the app is not connected yet: await app.connect() first")
        return self._backend

    async def close(self) -> None:
        """Close the adapters this app opened (given ones are left to their owner), and the
        sync API's event-loop thread with its connections when it was started."""
        owned, self._owned = self._owned, []
        self._broker = None
        self._backend = None
        try:
            for adapter in owned:
                await adapter.close()
        finally:
            if self._sync is not None:
                await self._sync.aclose()

    async def __aenter__(self) -> "Stem":
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- registry -------------------------------------------------------------------

    def task(
        self,
        func: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        queue: str = DEFAULT_QUEUE,
        max_retries: int = DEFAULT_MAX_RETRIES,
        time_limit: float | None = None,
        visibility_timeout: float | None = None,
        priority: int = 0,
        retry_backoff: float = RETRY_BASE_SECONDS,
        retry_backoff_max: float = RETRY_MAX_SECONDS,
        ignore_result: bool | None = None,
    ) -> Any:
        """Register ``func`` (``@app.task`` or ``@app.task(name=..., ...)``); returns a ``Task``.

        The function takes ``ctx`` first, then the envelope's args as keywords.
        ``retry_backoff``/``retry_backoff_max`` tune the backoff (seconds).
        ``ignore_result=True`` (default: the app's) stores no queued, running or succeeded
        status for its runs, as Celery's switch of that name: ``app.wait`` and
        ``stem inspect task`` then know such a task only when it failed, retried, was
        cancelled or dead-lettered.
        """
        if ignore_result is not None and not isinstance(ignore_result, bool):
            raise ValueError(f"ignore_result must be True, False or None, got {ignore_result!r}")

        def register(fn: Callable[..., Any]) -> Task:
            if not callable(fn):
                raise TypeError(f"@app.task needs a function, got {type(fn).__name__}")
            task_name = check_task_name(name if name is not None else f"{fn.__module__}.{fn.__qualname__}")
            task = Task(
                app=self,
                name=task_name,
                func=fn,
                queue=validate_name(queue),
                max_retries=check_int(max_retries, "max_retries", 0, MAX_RETRIES),
                time_limit=_positive_or_none(time_limit, "time_limit"),
                visibility_timeout=_positive_or_none(visibility_timeout, "visibility_timeout"),
                priority=_priority(priority),
                retry_backoff=_non_negative(retry_backoff, "retry_backoff"),
                retry_backoff_max=_non_negative(retry_backoff_max, "retry_backoff_max"),
                is_async=inspect.iscoroutinefunction(fn),
                ignore_result=ignore_result,
                params=_keyword_params(fn, task_name),
            )
            existing = self.registry.get(task_name)
            if existing is not None and existing.func is not fn:
                raise ValueError(f"task name {task_name!r} is already registered to {existing.func!r}")
            self.registry[task_name] = task
            return task

        if func is not None:
            return register(func)
        return register

    def schedule(
        self,
        id: str,
        task: str,
        spec: str | float | timedelta,
        *,
        args: Mapping[str, Any] | None = None,
        queue: str | None = None,
        tz: str = "UTC",
        catch_up: str = DEFAULT_CATCH_UP,
    ) -> Schedule:
        """Declare a schedule (``every 30s``, ``cron 0 3 * * *``, ``at 2027-01-01T00:00Z``;
        a number of seconds or a ``timedelta`` means ``every``) enqueuing ``task`` with ``args``; ``stem beat`` stores it on start
        (``docs/schedules.md``). ``ValueError`` for a bad spec, zone or argument."""
        if isinstance(spec, timedelta):
            spec = f"every {spec.total_seconds():g}s"
        elif isinstance(spec, (int, float)) and not isinstance(spec, bool):
            spec = f"every {spec:g}s"  # Celery's beat_schedule convention: a number is seconds
        declared = Schedule.new(id, task, spec, now=datetime.now(UTC), args=dict(args or {}), queue=queue, tz=tz,
                                catch_up=catch_up, source="code")
        existing = self.schedules.get(id)
        if existing is not None and not existing.same_definition(declared):
            raise ValueError(f"schedule id {id!r} is already declared with another definition")
        self.schedules[id] = declared
        return declared

    def periodic(
        self,
        spec: str | float | timedelta,
        *,
        id: str | None = None,
        args: Mapping[str, Any] | None = None,
        tz: str = "UTC",
        catch_up: str = DEFAULT_CATCH_UP,
        **task_options: Any,
    ) -> Callable[[Callable[..., Any]], Task]:
        """``@app.periodic("every 30s")``: register the function as a task (``task_options``
        as for ``@app.task``) and declare a schedule for it (id: the task name)."""

        def register(fn: Callable[..., Any]) -> Task:
            task: Task = self.task(fn, **task_options)
            self.schedule(id or task.name, task.name, spec, args=args, tz=tz, catch_up=catch_up)
            return task

        return register

    def queues(self) -> list[str]:
        """The queues of the registered tasks, sorted (``["default"]`` when none)."""
        return sorted({t.queue for t in self.registry.values()}) or [DEFAULT_QUEUE]

    # -- producing ------------------------------------------------------------------

    def build_envelope(
        self,
        name: str,
        args: Mapping[str, Any] | None = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        delay: float | timedelta | None = None,
        eta: datetime | None = None,
        task_id: str | None = None,
        max_retries: int | None = None,
        ignore_result: bool | None = None,
    ) -> Envelope:
        """The envelope ``enqueue`` would publish, fully validated (``ValueError`` family).
        ``ignore_result`` overrides the task's (and the app's) for this one envelope."""
        check_task_name(name)
        if max_retries is not None:
            check_int(max_retries, "max_retries", 0, MAX_RETRIES)
        if args is None:
            args = {}
        if type(args) is not dict and not isinstance(args, Mapping):
            raise InvalidEnvelope(f"task args must be a JSON object (a dict), got {type(args).__name__}")
        task = self.registry.get(name)
        fields: dict[str, Any] = {
            "name": name,
            "args": args,  # Envelope copies it
            "queue": validate_name(queue) if queue is not None else (task.queue if task else DEFAULT_QUEUE),
            "priority": priority if priority is not None else (task.priority if task else 0),
            "max_retries": max_retries if max_retries is not None else (task.max_retries if task else DEFAULT_MAX_RETRIES),
            "not_before": _not_before(delay, eta),
        }
        if task is not None and task.visibility_timeout is not None:
            fields["visibility_timeout"] = task.visibility_timeout
        if ignore_result is None:
            ignore_result = task.ignore_result if task is not None and task.ignore_result is not None else self.ignore_result
        if ignore_result:
            fields["headers"] = {IGNORE_RESULT_HEADER: "true"}
        if task_id is not None:
            if not isinstance(task_id, str) or not task_id or len(task_id) > ID_MAX_LENGTH:
                shown = repr(task_id) if not isinstance(task_id, str) or len(task_id) <= 60 else repr(task_id[:57]) + "..."
                raise ValueError(f"task_id must be a non-empty string of at most {ID_MAX_LENGTH} characters, got {shown}")
            fields["id"] = task_id
        envelope = Envelope(**fields)
        envelope.to_json()  # raises InvalidEnvelope when args are not JSON
        return envelope

    async def enqueue(
        self,
        name: str,
        args: Mapping[str, Any] | None = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        delay: float | timedelta | None = None,
        eta: datetime | None = None,
        task_id: str | None = None,
        max_retries: int | None = None,
    ) -> str:
        """Publish one task; returns its id. Its ``queued`` status is written first, so a
        fast worker's ``running`` can never be overwritten by it (``Broker.enqueue``)."""
        envelope = self.build_envelope(
            name, args, queue=queue, priority=priority, delay=delay, eta=eta, task_id=task_id, max_retries=max_retries
        )
        return (await self.enqueue_envelopes((envelope,)))[0]

    async def enqueue_many(self, items: Iterable[tuple[Any, ...]]) -> list[str]:
        """Publish many tasks through one ``publish_many``; ids in order.

        Items are ``(name, args)`` or ``(name, args, options)`` with the keyword options of
        ``enqueue``. Every item is validated before anything is written.
        """
        envelopes = []
        for index, item in enumerate(items):
            if not isinstance(item, tuple) or len(item) not in (2, 3):
                raise ValueError(f"item {index}: expected (name, args) or (name, args, options), got {item!r}")
            options = item[2] if len(item) == 3 else {}
            if not isinstance(options, Mapping):
                raise ValueError(f"item {index}: options must be a dict, got {type(options).__name__}")
            unknown = sorted(set(options) - ENQUEUE_OPTIONS)
            if unknown:
                raise ValueError(f"item {index}: unknown option(s) {', '.join(unknown)}")
            try:
                envelopes.append(self.build_envelope(item[0], item[1], **options))
            except ValueError as exc:
                raise type(exc)(f"item {index}: {exc}") from None
        return await self.enqueue_envelopes(envelopes)

    async def enqueue_envelopes(self, envelopes: Iterable[Envelope]) -> list[str]:
        """Publish envelopes made by ``build_envelope`` (queued statuses first, one
        ``Broker.enqueue``); ids in order. For callers that validate a whole batch first."""
        batch = list(envelopes)
        if not batch:
            return []
        # With signing on, the broker signs each envelope as it routes it; a process that
        # can only verify fails here instead of publishing tasks every worker would reject.
        require_signer("the enqueue")
        await self.connect()
        await self.broker.enqueue(batch, self.backend)
        return [e.id for e in batch]

    async def wait(self, task_id: str, timeout: float | None = None) -> TaskStatus:
        """The task's terminal status (succeeded, failed, cancelled), watched across processes.

        Raises ``WaitTimeout`` (a ``TimeoutError``) carrying ``last_status`` when ``timeout``
        seconds pass first.
        """
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0):
            raise ValueError(f"timeout must be seconds >= 0 or None, got {timeout!r}")
        await self.connect()
        watcher = self.backend.watch(task_id)
        last: TaskStatus | None = None
        try:
            async with asyncio.timeout(timeout):
                async for status in watcher:
                    last = status
                    if status.state.is_terminal:
                        return status
        except TimeoutError:
            state = last.state.value if last is not None else "unknown"
            raise WaitTimeout(f"task {task_id} did not finish within {timeout} s (last state: {state})", last) from None
        finally:
            await watcher.aclose()  # type: ignore[attr-defined]
        raise StemError(f"the status watch of task {task_id} ended before a terminal state")

    # -- the synchronous API (docs/sync.md) ------------------------------------------

    @property
    def sync_runner(self) -> SyncRunner:
        """The engine of the ``*_sync`` methods: one event-loop thread, started on first use."""
        runner = self._sync
        if runner is None:
            with _sync.RUNNER_LOCK:
                if self._sync is None:
                    self._sync = SyncRunner(self._sync_app, lambda: f"stem-sync-{self.namespace}")
                runner = self._sync
        return runner

    def _sync_app(self) -> "Stem":
        """The app the sync thread connects with: this app's URLs, namespace and registry."""
        if not (self._broker_arg is None or isinstance(self._broker_arg, str)) or not (
            self._backend_arg is None or isinstance(self._backend_arg, str)
        ):
            raise ConfigurationError(
                "the sync API opens its own connections from URLs, and this app was given adapter "
                "instances: build it from URLs (Stem(broker='...', backend='...')) or use the async API"
            )
        # A shallow copy: every setting of this app (URLs, namespace, options) and the same
        # registry dict (tasks registered later are known too), without its connections.
        twin = copy.copy(self)
        twin._broker = None
        twin._backend = None
        twin._owned = []
        twin._connect_lock = None
        twin._sync = None
        return twin

    def connect_sync(self, *, call_timeout: float | None = DEFAULT_CALL_TIMEOUT_S) -> "Stem":
        """Start the sync thread and connect it now (a bad URL fails here, not at the first
        enqueue); returns this app."""
        self.sync_runner.call(lambda app: app.connect(), timeout=call_timeout, what="connect_sync()")
        return self

    def enqueue_sync(
        self,
        name: str,
        args: Mapping[str, Any] | None = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        delay: float | timedelta | None = None,
        eta: datetime | None = None,
        task_id: str | None = None,
        max_retries: int | None = None,
        call_timeout: float | None = DEFAULT_CALL_TIMEOUT_S,
    ) -> str:
        """``enqueue`` for synchronous code, safe from any thread; returns the task id.

        Raises what ``enqueue`` raises, and ``CallTimeout`` after ``call_timeout`` seconds.
        """
        options = {"queue": queue, "priority": priority, "delay": delay, "eta": eta, "task_id": task_id,
                   "max_retries": max_retries}
        return self.sync_runner.call(
            lambda app: app.enqueue(name, args, **options), timeout=call_timeout, what=f"enqueue_sync({name!r})"
        )

    def enqueue_many_sync(
        self, items: Iterable[tuple[Any, ...]], *, call_timeout: float | None = DEFAULT_CALL_TIMEOUT_S
    ) -> list[str]:
        """``enqueue_many`` for synchronous code, safe from any thread; ids in order."""
        batch = list(items)  # consumed in the caller's thread: a generator is not shared with the loop
        return self.sync_runner.call(lambda app: app.enqueue_many(batch), timeout=call_timeout, what="enqueue_many_sync()")

    def wait_sync(self, task_id: str, timeout: float | None = None) -> TaskStatus:
        """``wait`` for synchronous code: the task's terminal status, or ``WaitTimeout``
        (with ``last_status``) after ``timeout`` seconds."""
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0):
            raise ValueError(f"timeout must be seconds >= 0 or None, got {timeout!r}")
        # The wait times itself out on the loop; the call's own limit only guards a wedged loop.
        guard = None if timeout is None else timeout + DEFAULT_CALL_TIMEOUT_S
        return self.sync_runner.call(lambda app: app.wait(task_id, timeout), timeout=guard, what=f"wait_sync({task_id!r})")

    def close_sync(self) -> None:
        """Close the sync thread's connections and stop it (a later sync call starts a new
        one). Also done by ``with app:`` and at interpreter exit."""
        if self._sync is not None:
            self._sync.close()

    def __enter__(self) -> "Stem":
        return self.connect_sync()

    def __exit__(self, *exc: object) -> None:
        self.close_sync()

    def __repr__(self) -> str:
        return f"<Stem namespace={self._namespace_arg or '?'} tasks={len(self.registry)} connected={self.connected}>"


# -- validation helpers ---------------------------------------------------------------


def _not_before(delay: float | timedelta | None, eta: datetime | None) -> datetime | None:
    if delay is not None and eta is not None:
        raise ValueError("give delay or eta, not both")
    if eta is not None:
        if not isinstance(eta, datetime) or eta.tzinfo is None:
            raise ValueError(f"eta must be a timezone-aware datetime, got {eta!r}")
        return eta.astimezone(UTC)
    if delay is None:
        return None
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"delay must be seconds >= 0 or a timedelta, got {delay!r}")
    return delay_to_not_before(check_seconds(seconds, "delay"))


def _non_negative(value: object, label: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 <= value <= MAX_DURATION_SECONDS:
        raise ValueError(f"{label} must be seconds 0..{MAX_DURATION_SECONDS:g} (10 years), got {value!r}")
    return float(value)


def _positive_or_none(value: object, label: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 < value <= MAX_DURATION_SECONDS:
        raise ValueError(f"{label} must be positive seconds (at most 10 years) or None, got {value!r}")
    return float(value)


def _priority(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 9:
        raise ValueError(f"priority must be an integer 0..9, got {value!r}")
    return value


def _keyword_params(fn: Callable[..., Any], name: str) -> tuple[frozenset[str], frozenset[str], bool]:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return frozenset(), frozenset(), True  # no introspectable signature: let the call decide
    if not params or params[0].kind not in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.VAR_POSITIONAL):
        raise ValueError(f"task {name}: the function must take the task context as its first positional parameter")
    rest = params[1:] if params[0].kind != inspect.Parameter.VAR_POSITIONAL else params
    required, accepted, var_kw = set(), set(), False
    for p in rest:
        if p.kind == inspect.Parameter.VAR_KEYWORD:
            var_kw = True
        elif p.kind == inspect.Parameter.POSITIONAL_ONLY:
            raise ValueError(f"task {name}: parameter {p.name!r} after ctx is positional-only; task args are passed as keywords")
        elif p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
            accepted.add(p.name)
            if p.default is inspect.Parameter.empty:
                required.add(p.name)
    return frozenset(required), frozenset(accepted), var_kw


__all__ = ["ENQUEUE_OPTIONS", "Stem", "Task"]
