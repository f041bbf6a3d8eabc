"""RabbitMQ on 127.0.0.1:5672 (guest/guest, vhost "/"): a broker only, paired with the
Redis result backend (database 9) for the app and worker tests.

Every test has its own namespace; cleanup deletes every queue and exchange named
``stem.<namespace>.*``. AMQP cannot list them, so the names come from the management
API when it answers (``rabbitmq-plugins enable rabbitmq_management``), else from
``rabbitmqctl`` (slower: it starts an Erlang VM per call).
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import urllib.error
import urllib.request
from urllib.parse import quote

from tests.specs import AdapterSpec
from tests.specs.redis import SPEC as REDIS

RABBITMQ_TEST_URL = "amqp://guest:guest@127.0.0.1:5672/"
MANAGEMENT_URL = "http://127.0.0.1:15672"
HTTP_TIMEOUT_S = 5.0
# stop_app / start_app can take a minute on a loaded box (an Erlang VM per call).
RABBITMQCTL_TIMEOUT_S = 120.0


def _api(path: str) -> list[dict[str, object]]:
    token = base64.b64encode(b"guest:guest").decode()
    request = urllib.request.Request(f"{MANAGEMENT_URL}{path}", headers={"Authorization": f"Basic {token}"})
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
        return json.loads(response.read())


def node_memory_bytes() -> int:
    """The RabbitMQ node's memory use as the management API reports it (``mem_used``)."""
    return int(_api("/api/nodes")[0]["mem_used"])  # type: ignore[call-overload]


def server_names(kind: str, prefix: str) -> list[str]:
    """Queue or exchange names of vhost "/" starting with ``prefix``."""
    try:
        query = f"?columns=name&name={quote('^' + prefix.replace('.', chr(92) + '.'))}&use_regex=true&page=1&page_size=10000"
        items = _api(f"/api/{kind}/%2F{query}")
        rows = items["items"] if isinstance(items, dict) else items  # type: ignore[index]
        return [str(row["name"]) for row in rows if str(row["name"]).startswith(prefix)]
    except (OSError, urllib.error.URLError, ValueError):
        tool = shutil.which("rabbitmqctl")
        if tool is None:
            return []
        out = subprocess.run([tool, "-q", f"list_{kind}", "name"], capture_output=True, text=True,
                             timeout=RABBITMQCTL_TIMEOUT_S).stdout
        return [line.strip() for line in out.splitlines() if line.strip().startswith(prefix)]


def rabbitmqctl(*args: str) -> None:
    """Run ``rabbitmqctl`` (``stop_app`` / ``start_app`` for the restart tests); needs the tool."""
    from tests.specs import require_tool

    subprocess.run([require_tool("rabbitmqctl"), *args], check=True, capture_output=True, timeout=RABBITMQCTL_TIMEOUT_S)


async def delete_namespace(url: str, namespace: str) -> None:
    """Delete the namespace's queues (messages and all) and exchanges."""
    import aiormq

    prefix = f"stem.{namespace}."
    queues, exchanges = await asyncio.gather(asyncio.to_thread(server_names, "queues", prefix),
                                             asyncio.to_thread(server_names, "exchanges", prefix))
    if not queues and not exchanges:
        return
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        for name in queues:
            await channel.queue_delete(name)
        for name in exchanges:
            await channel.exchange_delete(name)
    finally:
        await connection.close()


SPEC = AdapterSpec(
    id="rabbitmq",
    url=lambda tmp: RABBITMQ_TEST_URL,
    service="rabbitmq",
    has_backend=False,
    paired_backend=REDIS,
    requeue_keeps_age=False,
    knows_age=False,
    cleanup=delete_namespace,
)
