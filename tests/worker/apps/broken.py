"""An app module that fails while importing (for the ``--app`` error test)."""

raise RuntimeError("this module is broken on purpose")
