"""What every front end asks first. A command that stops workers or cancels tasks is
previewed (who would get it) and confirmed before it is sent, by ``stem broadcast`` as
by the TUI's broadcast form; repairs that delete or move messages always are."""

from __future__ import annotations

# Control commands that stop workers or cancel tasks.
DESTRUCTIVE_COMMANDS = ("shutdown", "revoke")


def asks_first(command: str) -> bool:
    """Whether sending the control command ``command`` needs a confirmation."""
    return command in DESTRUCTIVE_COMMANDS


__all__ = ["DESTRUCTIVE_COMMANDS", "asks_first"]
