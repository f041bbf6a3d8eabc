"""URL scheme -> adapter. Drivers are imported only when their scheme is used.

``connect_broker(url, namespace=...)`` and ``connect_backend(url, namespace=...)`` return
connected adapters (also async context managers). Extra keyword options, and the URL's
query parameters, go to the adapter's ``from_url``; unknown ones are an error.
"""

from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import urlsplit

from ..contract import Broker, ResultBackend
from ..errors import ConfigurationError
from ..settings import DEFAULT_NAMESPACE, redact_url, url_problem

# scheme -> (module, broker class, backend class or None, extra name, driver module)
_ADAPTERS: dict[str, tuple[str, str, str | None, str | None, str | None]] = {
    "memory": ("stem_core.adapters.memory", "MemoryBroker", "MemoryBackend", None, None),
    "sqlite": ("stem_core.adapters.sqlite", "SQLiteBroker", "SQLiteBackend", None, None),
    "redis": ("stem_core.adapters.redis", "RedisBroker", "RedisBackend", "redis", "redis"),
    "rediss": ("stem_core.adapters.redis", "RedisBroker", "RedisBackend", "redis", "redis"),
    "postgresql": ("stem_core.adapters.postgres", "PostgresBroker", "PostgresBackend", "postgres", "psycopg"),
    "postgres": ("stem_core.adapters.postgres", "PostgresBroker", "PostgresBackend", "postgres", "psycopg"),
    "amqp": ("stem_core.adapters.rabbitmq", "RabbitMQBroker", None, "rabbitmq", "aio_pika"),
    "amqps": ("stem_core.adapters.rabbitmq", "RabbitMQBroker", None, "rabbitmq", "aio_pika"),
    "sqs": ("stem_core.adapters.sqs", "SQSBroker", None, "sqs", "aiobotocore"),
}

BROKER_SCHEMES = tuple(_ADAPTERS)
BACKEND_SCHEMES = tuple(s for s, spec in _ADAPTERS.items() if spec[2] is not None)


def url_scheme(url: str) -> str:
    """The lower-cased scheme of ``url``; ``ConfigurationError`` when it has none or is unknown."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError("empty URL: expected e.g. sqlite:///path/stem.db, redis://host:6379/0 or memory://")
    problem = url_problem(url.strip())
    if problem is not None and "://" in url:
        # Nothing of the URL but its scheme is shown: any part of it may be a password.
        raise ConfigurationError(f"malformed URL {redact_url(url.strip())!r}: {problem}")
    scheme = "" if problem is not None else urlsplit(url.strip()).scheme.lower()
    if not scheme or "://" not in url:
        raise ConfigurationError(
            f"malformed URL {redact_url(url)!r}: expected scheme://..., one of {', '.join(s + '://' for s in BROKER_SCHEMES)}"
        )
    if scheme not in _ADAPTERS:
        raise ConfigurationError(
            f"unknown URL scheme {scheme + '://'!r} in {redact_url(url)!r}; known: {', '.join(s + '://' for s in BROKER_SCHEMES)}"
        )
    return scheme


def _load(url: str, index: int, role: str) -> Any:
    scheme = url_scheme(url)
    module_name, broker_cls, backend_cls, extra, driver = _ADAPTERS[scheme]
    cls_name = broker_cls if index == 1 else backend_cls
    if cls_name is None:
        raise ConfigurationError(f"{scheme}:// can be a broker but not a result backend; use sqlite://, redis:// or postgresql://")
    if driver is not None:
        try:
            importlib.import_module(driver)
        except ImportError:
            raise ConfigurationError(
                f"the {scheme}:// {role} needs the '{extra}' extra: pip install 'stem-queue[{extra}]'"
            ) from None
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise ConfigurationError(f"the {scheme}:// {role} is not available in this version of Stem") from None
        raise
    return getattr(module, cls_name)


def broker_class(url: str) -> type[Broker]:
    """The adapter class for a broker URL (imports its driver)."""
    return _load(url, 1, "broker")


def backend_class(url: str) -> type[ResultBackend]:
    """The adapter class for a result-backend URL (imports its driver)."""
    return _load(url, 2, "result backend")


async def connect_broker(url: str, *, namespace: str = DEFAULT_NAMESPACE, **options: Any) -> Broker:
    """A connected broker for ``url``."""
    broker = broker_class(url).from_url(url.strip(), namespace=namespace, **options)
    return await broker.connect()


async def connect_backend(url: str, *, namespace: str = DEFAULT_NAMESPACE, **options: Any) -> ResultBackend:
    """A connected result backend for ``url``."""
    backend = backend_class(url).from_url(url.strip(), namespace=namespace, **options)
    return await backend.connect()


__all__ = ["BACKEND_SCHEMES", "BROKER_SCHEMES", "backend_class", "broker_class", "connect_backend", "connect_broker", "url_scheme"]
