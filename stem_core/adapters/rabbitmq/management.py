"""``RabbitMQManagement``: what only the management HTTP API knows.

AMQP tells a client how many messages of a queue are ready and how many consumers it
has (a passive declare), not how many are unacknowledged, nor which queues exist. With
``management_url`` (or ``STEM_RABBITMQ_MANAGEMENT_URL``) Stem reads both from
``GET /api/queues/<vhost>`` (filtered to the namespace's names, paged). The server
refreshes these figures every ``collect_statistics_interval`` (5 s by default), so an
in-flight count from here may be that old. Credentials default to the AMQP URL's.

Standard library only (``urllib`` in a thread): one request per stats read, no extra
dependency. A failing API is logged once and treated as absent (the figures it gives
become unknown), so an outage of the plugin never breaks a worker or the TUI.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from ...settings import redact_url

log = logging.getLogger("stem.rabbitmq")

HTTP_TIMEOUT_S = 5.0
PAGE_SIZE = 500
COLUMNS = "name,messages_ready,messages_unacknowledged,consumers"


class RabbitMQManagement:
    """A read-only client of one vhost's queue list."""

    def __init__(self, url: str, vhost: str, user: str, password: str | None) -> None:
        parts = urlsplit(url)
        self.shown_url = redact_url(url)
        user = parts.username or user
        password = parts.password if parts.username else password
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        self._base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        self._vhost = quote(vhost, safe="")
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
        self._headers = {"Authorization": f"Basic {token}", "Accept": "application/json"}
        self._warned = False

    async def queues(self, prefix: str) -> dict[str, dict[str, Any]] | None:
        """``{amqp name: figures}`` of every queue whose name starts with ``prefix``;
        None when the API cannot be read."""
        try:
            return await asyncio.to_thread(self._read, prefix)
        except (OSError, ValueError, urllib.error.URLError) as exc:
            if not self._warned:
                log.warning("the RabbitMQ management API at %s cannot be read (%s); in-flight counts are unknown",
                            self.shown_url, exc)
                self._warned = True
            return None

    def _read(self, prefix: str) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        page = 1
        while True:
            query = urlencode({"columns": COLUMNS, "page": page, "page_size": PAGE_SIZE,
                               "name": "^" + re.escape(prefix), "use_regex": "true"})
            request = urllib.request.Request(f"{self._base}/api/queues/{self._vhost}?{query}", headers=self._headers)
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
                data = json.loads(response.read())
            for item in data.get("items") or []:
                out[item["name"]] = item
            if page >= int(data.get("page_count") or 0):
                self._warned = False
                return out
            page += 1


__all__ = ["RabbitMQManagement"]
