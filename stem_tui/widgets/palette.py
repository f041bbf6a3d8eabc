"""The ``:`` command palette: every binding of the current view and of the app is a
command (so nothing is reachable only by a key), plus "open queue NAME" for each queue."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual.command import DiscoveryHit, Hit, Hits, Provider

if TYPE_CHECKING:
    from ..app import StemTui


class StemCommands(Provider):
    """Commands come from the app (``StemTui.palette_commands``), computed when the
    palette opens, so they follow the current view and read-only mode."""

    def _commands(self) -> list[tuple[str, str, Any]]:
        app: "StemTui" = self.app  # type: ignore[assignment]
        return app.palette_commands()

    async def discover(self) -> Hits:
        for name, help_text, runner in self._commands():
            yield DiscoveryHit(name, runner, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, runner in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), runner, text=name, help=help_text)


__all__ = ["StemCommands"]
