"""The ``/`` filter: bare words and ``queue:`` / ``task:`` / ``state:`` qualifiers.

    /emails                 rows whose text contains "emails"
    /queue:emails task:send  queue contains "emails" AND task name contains "send"
    /state:stuck !billing    state contains "stuck" and the row does not mention "billing"
    /task:report.*           globs (* ?) match the whole value instead of a substring

Matching is case-insensitive. Each view says what its rows' ``queue``, ``task`` and
``state`` are (``Facets``); a qualifier a view has no value for matches nothing.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

QUALIFIERS = ("queue", "task", "state")


@dataclass(frozen=True, slots=True)
class Facets:
    """What one row offers to the filter."""

    text: str
    queue: str | None = None
    task: str | None = None
    state: str | None = None


@dataclass(frozen=True, slots=True)
class Term:
    qualifier: str | None
    value: str
    negated: bool = False

    def matches(self, facets: Facets) -> bool:
        target = facets.text if self.qualifier is None else getattr(facets, self.qualifier)
        hit = target is not None and _match(self.value, target.lower())
        return hit != self.negated


@dataclass(frozen=True, slots=True)
class FilterQuery:
    """A parsed filter; the empty query matches everything."""

    source: str = ""
    terms: tuple[Term, ...] = field(default_factory=tuple)

    @classmethod
    def parse(cls, text: str) -> "FilterQuery":
        """Parse ``text``; an unknown ``word:`` prefix is a plain word (task names hold colons)."""
        terms = []
        for raw in text.split():
            negated = raw.startswith("!") and len(raw) > 1
            body = raw[1:] if negated else raw
            head, sep, rest = body.partition(":")
            if sep and head.lower() in QUALIFIERS and rest:
                terms.append(Term(head.lower(), rest.lower(), negated))
            else:
                terms.append(Term(None, body.lower(), negated))
        return cls(text.strip(), tuple(terms))

    def __bool__(self) -> bool:
        return bool(self.terms)

    def matches(self, facets: Facets) -> bool:
        return all(term.matches(facets) for term in self.terms)


def _match(pattern: str, value: str) -> bool:
    if any(ch in pattern for ch in "*?["):
        return fnmatch.fnmatchcase(value, pattern)
    return pattern in value


__all__ = ["Facets", "FilterQuery", "QUALIFIERS", "Term"]
