"""Amazon SQS on moto's server mode, which the tests start themselves.

One ``python -m moto.server`` process per test process (pytest-xdist workers each get
their own), on a free 127.0.0.1 port, started on first use and killed at exit. A real
process rather than moto's in-process ``ThreadedMotoServer``: worker processes must
reach it, and its request handling must not share the test's GIL. Every test has its
own namespace, so its SQS queues and SNS topics are its own; cleanup deletes them.

The URL carries moto's dummy credentials (``sqs://testing:testing@...``), so no AWS
configuration of the machine is read. Worker tests pair the broker with a SQLite
result backend in the test's directory.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from tests.specs import REQUIRE_SERVICES, STARTERS, AdapterSpec
from tests.support import free_port, port_open
from tests.specs.sqlite import SPEC as SQLITE

MOTO_START_DEADLINE_S = 60.0
MOTO_REGION = "us-east-1"
_server: dict[str, object] = {}




def _stop() -> None:
    proc = _server.pop("proc", None)
    if isinstance(proc, subprocess.Popen) and proc.poll() is None:
        proc.kill()
        proc.wait()


def start_moto() -> None:
    """Start the moto server once (skip, or fail under STEM_REQUIRE_SERVICES=1, without moto)."""
    proc = _server.get("proc")
    if isinstance(proc, subprocess.Popen) and proc.poll() is None:
        return
    if importlib.util.find_spec("moto") is None:
        message = "moto is not installed (pip install 'moto[server]', part of the [test] extra)"
        if REQUIRE_SERVICES:
            pytest.fail(f"{message} and STEM_REQUIRE_SERVICES=1", pytrace=False)
        pytest.skip(message)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + MOTO_START_DEADLINE_S
    while not port_open(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"moto server did not start on 127.0.0.1:{port}", pytrace=False)
        time.sleep(0.1)
    _server.update(proc=proc, endpoint=f"http://127.0.0.1:{port}")
    if not _server.get("registered"):
        atexit.register(_stop)
        _server["registered"] = True


def moto_pid() -> int | None:
    """The pid of the moto server this process started, if it runs."""
    proc = _server.get("proc")
    return proc.pid if isinstance(proc, subprocess.Popen) and proc.poll() is None else None


def moto_endpoint() -> str:
    start_moto()
    return str(_server["endpoint"])


def sqs_url(tmp_path: Path | None = None, **options: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"region": MOTO_REGION, "endpoint": moto_endpoint(), **options}.items())
    return f"sqs://testing:testing@?{query}"


@contextlib.asynccontextmanager
async def raw_clients(endpoint: str | None = None) -> AsyncIterator[tuple[Any, Any]]:
    """Plain aiobotocore SQS and SNS clients on moto, for white-box checks and cleanup."""
    from aiobotocore.session import AioSession

    session = AioSession()
    options = {"region_name": MOTO_REGION, "endpoint_url": endpoint or moto_endpoint(),
               "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    async with session.create_client("sqs", **options) as sqs, session.create_client("sns", **options) as sns:
        yield sqs, sns


async def delete_namespace(url: str, namespace: str) -> None:
    """Delete the namespace's SQS queues and SNS topics (moto keeps everything in memory)."""
    from stem_core.adapters.sqs.names import SQSNames

    base = SQSNames("", namespace).base
    async with raw_clients() as (sqs, sns):
        for queue_url in (await sqs.list_queues(QueueNamePrefix=base, MaxResults=1000)).get("QueueUrls") or []:
            await sqs.delete_queue(QueueUrl=queue_url)
        params: dict[str, str] = {}
        while True:
            page = await sns.list_topics(**params)
            for topic in page.get("Topics") or []:
                if topic["TopicArn"].rpartition(":")[2].startswith(base):
                    await sns.delete_topic(TopicArn=topic["TopicArn"])
            if not page.get("NextToken"):
                break
            params["NextToken"] = page["NextToken"]


STARTERS["moto"] = start_moto

SPEC = AdapterSpec(
    id="sqs",
    url=sqs_url,
    service="moto",
    has_backend=False,
    paired_backend=SQLITE,
    oldest_first=False,
    requeue_keeps_age=False,
    knows_age=False,
    purges_delayed=False,
    load=0.25,
    cleanup=delete_namespace,
)
