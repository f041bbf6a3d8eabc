"""``python -m stem_tui``: the ``stem`` command (the same shim as the console script).
Imported inside the guard, so importing this module loads nothing of the CLI."""

if __name__ == "__main__":
    from stem_tui.cli.entry import main

    main()
