"""Widgets of ``stem tui``: keyed tables, chrome (banner, title, footer, filter bar),
the message panel, sparklines and the command palette provider."""
