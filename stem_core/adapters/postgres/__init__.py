"""PostgreSQL broker and result backend (psycopg 3 async with psycopg_pool).

``postgresql://user@host:5432/db?sslmode=require`` — one schema per Stem namespace
(``stem_<namespace>``), created and migrated on first connect. See ``broker.py`` for the
queue design and ``results.py`` for the result backend.
"""

from .broker import PostgresBroker
from .results import PostgresBackend

__all__ = ["PostgresBackend", "PostgresBroker"]
