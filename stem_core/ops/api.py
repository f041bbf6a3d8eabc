"""``Ops``: the one read/act API behind the CLI and the TUI.

    async with await connect_broker(url) as broker, await connect_backend(url) as backend:
        ops = Ops(broker, backend)                  # actor: $STEM_ACTOR or $USER@host
        overview = await ops.overview()             # per queue counts, rates, verdict
        leases = await ops.leases("emails")         # holders, heartbeat ages, stuck flags
        why = await ops.explain(task_id)            # where it is, why it is not running
        preview = await ops.requeue("emails", stuck_leases=True, dry_run=True)

Keep one ``Ops`` alive to accumulate rate history (the TUI, ``--watch``); one-shot
callers share persisted samples (``docs/ops.md``).
"""

from __future__ import annotations

from .dispatch import DispatchMixin


class Ops(DispatchMixin):
    """Reads (``inspect``), explanations (``explain``), audited repairs (``actions``) and
    audited sends (``dispatch``) over a connected broker and result backend."""


__all__ = ["Ops"]
