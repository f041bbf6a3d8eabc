"""Modal dialogs of ``stem tui``: action plans and their confirmation, forms, panels."""
