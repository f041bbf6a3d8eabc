"""Keyset page cursors for ``Broker.peek_page``: the sort key of the last row a page gave.

A peek walks one state of a queue in a total order (pending: priority desc, ready time,
publish order; delayed: due time; inflight: lease deadline; each ending with a unique
row number). A cursor names the last row's key, and the next page is the rows whose key
comes after it - read from an index in the stores that have one - so a page costs the
same however deep it is, and a message settled or published between two pages neither
repeats a row nor skips one.

The text is ``k<state letter>:<field>:<field>...`` (integers in decimal, floats as
``repr``), opaque to callers: ``decode_key`` accepts only what ``encode_key`` makes for the
same state and key shape, so a cursor is checked before any value of it reaches a query
(and there only as a parameter).
"""

from __future__ import annotations

import math
import re
from typing import Sequence, Union

Field = Union[int, float]

_STATE_LETTER = {"pending": "p", "delayed": "d", "inflight": "i"}
_INT = re.compile(r"-?[0-9]{1,19}")
_FLOAT = re.compile(r"-?[0-9]{1,20}(\.[0-9]{1,20})?(e[+-]?[0-9]{1,3})?")
_INT_BOUND = 2**63


def encode_key(state: str, key: Sequence[Field]) -> str:
    """The cursor after the row whose sort key (in ``state``) is ``key``."""
    fields = []
    for value in key:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"a cursor key holds integers and floats, got {value!r}")
        fields.append(str(value) if isinstance(value, int) else repr(float(value)))
    return f"k{_STATE_LETTER[state]}:" + ":".join(fields)


def decode_key(cursor: str, state: str, kinds: Sequence[type]) -> tuple[Field, ...]:
    """The key ``encode_key(state, key)`` wrote, its fields of the types ``kinds``;
    anything else is a ``ValueError`` naming the cursor."""
    prefix = f"k{_STATE_LETTER[state]}:"
    parts = cursor[len(prefix):].split(":") if cursor.startswith(prefix) else []
    if len(parts) != len(kinds):
        raise _invalid(cursor, state)
    out: list[Field] = []
    for text, kind in zip(parts, kinds):
        if kind is int:
            if _INT.fullmatch(text) is None or not -_INT_BOUND <= int(text) < _INT_BOUND:
                raise _invalid(cursor, state)
            out.append(int(text))
        else:
            if _FLOAT.fullmatch(text) is None or not math.isfinite(number := float(text)):
                raise _invalid(cursor, state)
            out.append(number)
    return tuple(out)


def _invalid(cursor: str, state: str) -> ValueError:
    return ValueError(f"invalid {state} cursor {cursor[:40]!r}: pass back a next_cursor of this queue and state")


__all__ = ["decode_key", "encode_key"]
