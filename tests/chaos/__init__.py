"""Jepsen-style reliability harness: histories, faults and a checker (docs/reliability.md)."""
