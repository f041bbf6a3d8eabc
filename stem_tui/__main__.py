"""``python -m stem_tui``: the ``stem`` command (same shim as the console script)."""

from stem_tui.cli.entry import main

if __name__ == "__main__":
    main()
