"""Importable apps for worker tests (run by real ``stem worker`` processes)."""
