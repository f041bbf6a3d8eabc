"""``SQLiteChannels``: persisted broadcasts, a copy for every subscriber at publish time,
in any process on the file (the tables and the cursor rules: ``broadcasts.py``).

Reading a subscription's broadcasts rides in the consumer's claim transaction
(``jobs.receive_step``: one hop per receive round for both), so the cursors live on the
``SQLiteSubscription`` and this part supplies the rest: publishing, registering and
forgetting subscribers, when a subscription writes its cursors back (``touch``) and when
read rows are swept, and the deliveries the rows read become.
"""

from __future__ import annotations

from ...envelope import Delivery, Envelope
from ...errors import StemError
from . import broadcasts
from .db import SQLiteDatabase


class SQLiteChannels:
    """Broadcast publishing, subscriber registration and the sweep schedule of one broker."""

    def __init__(self, db: SQLiteDatabase, namespace: str) -> None:
        self._db = db
        self._namespace = namespace
        self._next_sweep = 0.0

    async def broadcast(self, channel: str, envelope: Envelope) -> None:
        if await self._db.run(broadcasts.publish, self._namespace, channel, envelope.to_json()):
            self._db.bell.ring()

    async def subscribe(self, subscription: str, consumer: str, channels: tuple[str, ...]) -> dict[str, int]:
        """Register ``subscription`` on ``channels``; returns its starting cursors (only what
        is published from now on reaches it)."""
        return await self._db.run(broadcasts.subscribe, self._namespace, subscription, consumer, channels)

    async def unsubscribe(self, subscription: str) -> None:
        if self._db.closed:
            return
        try:
            await self._db.run(broadcasts.unsubscribe, self._namespace, subscription)
        except StemError:
            pass  # the sweep drops it once it goes stale

    @staticmethod
    def next_touch(now: float) -> float:
        """When a subscription that touched its row at ``now`` must touch it again."""
        return now + broadcasts.SUBSCRIBER_TOUCH_S

    def sweep_due(self, now: float) -> bool:
        """Whether a round that touches should also sweep (at most every SWEEP_INTERVAL_S)."""
        return now >= self._next_sweep

    def swept(self, now: float) -> None:
        self._next_sweep = now + broadcasts.SWEEP_INTERVAL_S

    @staticmethod
    def deliveries(rows: list[tuple[int, str, Envelope]]) -> list[Delivery]:
        """Broadcast rows ``(id, channel, envelope)`` as deliveries (nothing to settle)."""
        return [
            Delivery(envelope=envelope, receipt=f"b:{row_id}", queue=channel, channel=channel)
            for row_id, channel, envelope in rows
        ]


__all__ = ["SQLiteChannels"]
