"""The views of ``stem tui``: one ``ViewScreen`` each."""

from .dead import DeadView
from .detail import DetailView
from .events import EventsView
from .leases import LeasesView
from .queues import QueuesView
from .schedules import SchedulesView
from .workers import WorkersView

__all__ = ["DeadView", "DetailView", "EventsView", "LeasesView", "QueuesView", "SchedulesView", "WorkersView"]
