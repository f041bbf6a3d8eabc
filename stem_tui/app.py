"""``stem tui``: the Textual app.

The app owns one ``DataSource`` (polling ``stem_core.ops`` in workers), routes each
``Snapshot`` to the active view, turns snapshots into events, and runs actions as plans:
preview (a dry run) -> confirmation with the count and the equivalent ``stem`` command ->
the audited ``Ops`` call -> an immediate refresh. Look lives in ``app.tcss``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, Iterable, Sequence

from textual.app import App
from textual.binding import Binding

from stem_core.ops import ActionDetail, ActionResult

from .dialogs import plans
from .dialogs.confirm import ConfirmDialog
from .dialogs.forms import BroadcastDialog, EnqueueDialog, PauseDialog
from .dialogs.panels import ExplainDialog, PanelDialog, help_text, result_text
from .messages import ActionFailed, ActionFinished, ExplainReady, SnapshotReady, SourceFailed, StatusReady
from .screens import DeadView, DetailView, EventsView, LeasesView, QueuesView, SchedulesView, WorkersView
from .screens.base import WRITE_ACTIONS, ViewScreen
from .screens.events import EventLog
from .source import DataSource
from .widgets.filter import FilterQuery
from .widgets.literal import age, clean
from .widgets.palette import StemCommands

# The footer's "updated Ns ago" is recomputed this often.
AGE_TICK_S = 1.0
VIEW_KEYS = (("1", "queues", "Queues"), ("2", "leases", "Leases"), ("3", "workers", "Workers"),
             ("4", "dead", "Dead letters"), ("5", "events", "Events"), ("6", "schedules", "Schedules"))


class StemTui(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "stem"
    ENABLE_COMMAND_PALETTE = True
    COMMANDS = {StemCommands}
    MODES = {"queues": QueuesView, "leases": LeasesView, "workers": WorkersView, "dead": DeadView, "events": EventsView,
             "schedules": SchedulesView}
    DEFAULT_MODE = "queues"
    BINDINGS = [
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("colon", "command_palette", "Commands", key_display=":"),
        Binding("r", "refresh", "Refresh"),
        Binding("p", "toggle_updates", "Pause updates"),
        Binding("plus", "slower", "Slower refresh", key_display="+", show=False),
        Binding("minus", "faster", "Faster refresh", key_display="-", show=False),
        *(Binding(key, f"view('{mode}')", label, show=False) for key, mode, label in VIEW_KEYS),
        Binding("N", "enqueue", "Enqueue", show=False),
        Binding("b", "broadcast", "Broadcast", show=False),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(
        self,
        source: DataSource,
        *,
        read_only: bool = False,
        low_colour: bool = False,
        cli_context: Sequence[str] = (),
        blink: bool = True,
        exit_after: float | None = None,
    ) -> None:
        super().__init__(ansi_color=True if low_colour else None)
        self.source = source
        self.read_only = read_only
        self.low_colour = low_colour
        self.cli_context = tuple(cli_context)
        self.blink = blink
        self.clock: Callable[[], datetime] = source.clock
        self.events = EventLog()
        self.filter = FilterQuery()
        self.problem: str | None = None
        self.exit_after = exit_after
        if low_colour:
            self.theme = "ansi-dark"

    # -- lifecycle --------------------------------------------------------------------------

    def on_mount(self) -> None:
        self.source.attach(self)
        self.set_interval(AGE_TICK_S, self.tick_age, name="stem-age")
        if self.exit_after is not None:
            self.set_timer(self.exit_after, self.exit, name="stem-exit-after")
        self.source.start()

    async def on_unmount(self) -> None:
        await self.source.close()

    def active_view(self) -> ViewScreen | None:
        """The topmost view (a modal may be above it)."""
        for screen in reversed(self.screen_stack):
            if isinstance(screen, ViewScreen):
                return screen
        return None

    def view_shown(self, view: ViewScreen) -> None:
        self.view_changed(view, apply=True)

    def view_changed(self, view: ViewScreen, *, apply: bool = False) -> None:
        """A view became active or changed what it shows (tab, page): point the source at
        it, show what we have, and poll at once when the view needs other data."""
        want = view.want()
        self.source.want = want
        last = self.source.last
        if apply and last is not None:
            view.apply(last)
        view.sync_chrome()
        self.tick_age()
        # Before the first snapshot the source's own start (or retry timer) polls.
        if last is not None and last.want != want and want.view in ("leases", "detail", "dead", "schedules"):
            self.source.refresh_now()

    # -- data -----------------------------------------------------------------------------

    def on_snapshot_ready(self, message: SnapshotReady) -> None:
        self.problem = None
        self.events.observe(message.snapshot)
        view = self.active_view()
        if view is not None and view.ready:
            view.apply(message.snapshot)
            view.sync_chrome()
        self.tick_age()

    def on_source_failed(self, message: SourceFailed) -> None:
        last = self.source.last
        shown = f"; showing data from {age((self.clock() - last.at).total_seconds())} ago" if last is not None else ""
        retry = f"retrying in {age(message.retry_in)}" if message.retry_in is not None else "press r to retry"
        what = "BROKER UNREACHABLE" if message.unreachable else "REFRESH FAILED"
        self.problem = f"{what}: {message.error} · {retry} (attempt {message.failures}){shown}"
        self.events.failed(self.clock(), message.error)
        view = self.active_view()
        if view is not None:
            view.sync_chrome()
            if isinstance(view, EventsView):
                view.show_events()
        self.tick_age()

    def tick_age(self) -> None:
        view = self.active_view()
        if view is None or not view.is_mounted:
            return
        last = self.source.last
        paused = " PAUSED" if self.source.paused else ""
        if last is None:
            view.set_age(f"connecting{paused}", "bold red" if self.problem else "")
            return
        seconds = max(0.0, (self.clock() - last.at).total_seconds())
        view.set_age(f"{data_age(seconds)} ago{paused}", "bold red" if self.problem or paused else "")

    def context_line(self) -> str:
        last = self.source.last
        namespace = last.overview.namespace if last is not None else self.source.namespace
        workers = f" · {last.overview.live_workers} worker(s)" if last is not None else ""
        # The URL last: it is what gets cut on a narrow terminal.
        return clean(f"ns {namespace}{workers} · every {age(self.source.interval)} · {self.source.label}")

    # -- global actions ------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in WRITE_ACTIONS and self.read_only:
            return False
        return True

    def action_refresh(self) -> None:
        self.source.refresh_now()

    def action_toggle_updates(self) -> None:
        self.source.set_paused(not self.source.paused)
        self.notify("updates paused (p resumes, r refreshes once)" if self.source.paused else "updates resumed")
        self.refresh_chrome()

    def action_slower(self) -> None:
        self.notify(f"refresh every {age(self.source.step_interval(+1))}")
        self.refresh_chrome()

    def action_faster(self) -> None:
        self.notify(f"refresh every {age(self.source.step_interval(-1))}")
        self.refresh_chrome()

    def refresh_chrome(self) -> None:
        view = self.active_view()
        if view is not None:
            view.sync_chrome()
        self.tick_age()

    def action_view(self, mode: str) -> None:
        if mode in self.MODES and mode != self.current_mode:
            self.switch_mode(mode)

    def action_filter(self) -> None:
        view = self.active_view()
        if view is not None and view is self.screen:
            view.open_filter()

    def action_clear_filter(self) -> None:
        if self.filter:
            self.set_filter("")

    def set_filter(self, text: str) -> None:
        self.filter = FilterQuery.parse(text)
        view = self.active_view()
        if view is not None:
            if self.source.last is not None:
                view.apply(self.source.last)
            view.sync_chrome()

    def action_help(self) -> None:
        view = self.active_view()
        if view is None:
            return
        mine = [(b.key_display or b.key, b.description) for b in _bindings(view.BINDINGS)
                if view.check_action(b.action, ()) is not False]
        everywhere = [(b.key_display or b.key, b.description) for b in _bindings(self.BINDINGS)
                      if self.check_action(b.action, ()) is not False]
        self.push_screen(PanelDialog("Keys", help_text(view.TITLE_TEXT, mine, everywhere, self.read_only)))

    def action_enqueue(self) -> None:
        self.push_screen(EnqueueDialog(), self._plan_from_form)

    def action_broadcast(self) -> None:
        self.open_broadcast(None)

    def open_broadcast(self, targets: list[str] | None) -> None:
        if not self.read_only:
            self.push_screen(BroadcastDialog(targets), self._plan_from_form)

    def open_pause(self, queues: list[str]) -> None:
        if not self.read_only:
            self.push_screen(PauseDialog(queues), self._plan_from_form)

    def open_queue(self, queue: str, state: str = "pending") -> None:
        self.push_screen(DetailView(queue, state))

    def _plan_from_form(self, plan: plans.Plan | None) -> None:
        if plan is not None:
            self.start_plan(plan)

    # -- the palette ----------------------------------------------------------------------------

    def palette_commands(self) -> list[tuple[str, str, Any]]:
        out: list[tuple[str, str, Any]] = []
        view = self.active_view()
        seen: set[str] = set()
        sources: list[tuple[Any, Iterable[Binding]]] = []
        if view is not None:
            sources.append((view, _bindings(view.BINDINGS)))
        sources.append((self, _bindings(self.BINDINGS)))
        for target, bindings in sources:
            for b in bindings:
                if b.action in seen or b.action == "command_palette" or target.check_action(b.action, ()) is False:
                    continue
                seen.add(b.action)
                out.append((f"{b.description} ({b.key_display or b.key})", f"key {b.key_display or b.key}",
                            lambda action=b.action, node=target: self.call_later(self.run_action, action, node)))
        last = self.source.last
        for q in last.overview.queues if last is not None else []:
            out.append((f"open queue {q.queue}", clean(q.verdict_text), lambda name=q.queue: self.open_queue(name)))
        return out

    # -- explain and status lookups -----------------------------------------------------------------

    def explain(self, task_id: str) -> None:
        async def work() -> None:
            try:
                explanation = await self.source.call(lambda ops: ops.explain(task_id))
            except Exception as exc:  # noqa: BLE001 - shown, never raised into the UI
                self.post_message(ActionFailed("explain", self.source.describe(exc)))
                return
            self.post_message(ExplainReady(explanation))

        self.run_worker(work(), group="stem-explain", exclusive=True, exit_on_error=False)

    def on_explain_ready(self, message: ExplainReady) -> None:
        self.push_screen(ExplainDialog(message.explanation))

    def lookup_status(self, task_id: str) -> None:
        async def work() -> None:
            try:
                status = await self.source.call(lambda ops: ops.backend.get_status(task_id))
            except Exception:  # noqa: BLE001 - the panel simply shows no status
                status = None
            self.post_message(StatusReady(task_id, status.to_dict() if status is not None else None))

        self.run_worker(work(), group="stem-status", exclusive=True, exit_on_error=False)

    def on_status_ready(self, message: StatusReady) -> None:
        view = self.active_view()
        handler = getattr(view, "on_status", None)
        if handler is not None:
            handler(message.task_id, message.status)

    # -- actions as plans -----------------------------------------------------------------------

    def start_plan(self, plan: plans.Plan) -> None:
        """Preview ``plan`` (a dry run, off the UI path), then confirm or run it."""
        if self.read_only:
            self.notify("read-only: actions are disabled", severity="warning")
            return
        self.run_worker(self._preview(plan), group="stem-action", exit_on_error=False)

    async def _preview(self, plan: plans.Plan) -> None:
        try:
            results = []
            for step in plan.steps:
                results.append(await self.source.call(lambda ops, s=step: s.run(ops, True, None, None)))
        except Exception as exc:  # noqa: BLE001 - bad input or an unreachable broker: one line
            self.post_message(ActionFailed(plan.title, self.source.describe(exc)))
            return
        preview = plans.Preview(plan, tuple(results))
        command = plans.command_line(preview.results, self.cli_context)
        if plan.destructive and preview.count == 0:
            self.notify(clean(f"{plan.title}: nothing to {plan.verb} (0 {plan.noun})"), severity="warning", markup=False)
            return
        if plan.destructive:
            counted = self.clock().strftime("%H:%M:%S")
            self.push_screen(ConfirmDialog(preview, command, counted),
                             lambda reason: self._confirmed(preview, command, reason))
        else:
            await self._execute(preview, command, None)

    def _confirmed(self, preview: plans.Preview, command: str, reason: str | None) -> None:
        if reason is not None:
            self.run_worker(self._execute(preview, command, reason or None), group="stem-action", exit_on_error=False)

    async def _execute(self, preview: plans.Preview, command: str, reason: str | None) -> None:
        plan = preview.plan
        results: list[ActionResult] = []
        try:
            for step, before, ids in zip(plan.steps, preview.results, plan.frozen_ids(preview.results)):
                if plan.destructive and before.count == 0:
                    continue  # the preview found nothing here: never widen to "everything now"
                results.append(await self.source.call(lambda ops, s=step, i=ids: s.run(ops, False, i, reason)))
        except Exception as exc:  # noqa: BLE001
            self.post_message(ActionFailed(plan.title, self.source.describe(exc), command))
            self.source.refresh_now()
            return
        self.post_message(ActionFinished(plan.title, _merge(results, plan), plans.command_line(results, self.cli_context)))
        self.source.refresh_now()

    def on_action_finished(self, message: ActionFinished) -> None:
        result = message.result
        if result.action == "broadcast":
            self.push_screen(PanelDialog(clean(message.title), result_text(result, message.command)))
            return
        state = "done" if result.ok else "done with problems"
        self.notify(clean(f"{message.title}: {state}, {result.count} affected · same as: {message.command}"),
                    severity="information" if result.ok else "warning", markup=False, timeout=8)

    def on_action_failed(self, message: ActionFailed) -> None:
        self.notify(clean(f"{message.title} failed: {message.error}"), severity="error", markup=False, timeout=10)


def data_age(seconds: float) -> str:
    """Whole seconds below a minute ("0s", "42s"), then the usual short words."""
    return f"{int(seconds)}s" if seconds < 60 else age(seconds)


def _bindings(items: Iterable[Any]) -> list[Binding]:
    out = []
    for item in items:
        if isinstance(item, Binding):
            out.append(item)
        else:
            key, action, description = item
            out.append(Binding(key, action, description))
    return out


def _merge(results: list[ActionResult], plan: plans.Plan) -> ActionResult:
    if len(results) == 1:
        return results[0]
    if not results:
        return ActionResult(plan.verb, False, 0, [])
    return ActionResult(
        action=results[0].action, dry_run=False, count=sum(r.count for r in results),
        sample=[s for r in results for s in r.sample], arguments={"steps": [r.arguments for r in results]},
        detail=ActionDetail(ids=[i for r in results for i in r.detail.ids or []]),
        audit_id=",".join(r.audit_id for r in results if r.audit_id), ok=all(r.ok for r in results),
    )


__all__ = ["StemTui"]
