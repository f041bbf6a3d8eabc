"""The control plane: commands broadcast to every worker, replies on a per-request queue.

Used by the CLI (``stem broadcast``) and the TUI; the worker side lives in
``stem_core.worker.commands``. See ``docs/worker.md`` for the protocol.
"""

from .client import ControlClient, ControlResult
from .pause import PAUSE_KIND, pause_active, pause_queues, paused_queues, resume_queues
from .protocol import CONTROL_COMMANDS, SHUTDOWN_MODES, Command, Reply, control_channel
from .revoke import REVOKE_KIND, REVOKE_TTL_SECONDS, revoke_tasks, revoked_tasks

__all__ = [
    "CONTROL_COMMANDS",
    "Command",
    "ControlClient",
    "ControlResult",
    "PAUSE_KIND",
    "REVOKE_KIND",
    "REVOKE_TTL_SECONDS",
    "Reply",
    "SHUTDOWN_MODES",
    "control_channel",
    "pause_active",
    "pause_queues",
    "paused_queues",
    "resume_queues",
    "revoke_tasks",
    "revoked_tasks",
]
