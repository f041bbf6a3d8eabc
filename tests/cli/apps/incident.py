"""The app of the scripted incident (``tests/cli/test_incident.py``).

``incident.hang`` hangs (a worker stuck on it can only be killed) unless the worker runs
with ``INCIDENT_FAST=1``; every start is appended to ``$INCIDENT_LOG`` as ``start <id>
<pid>`` so the test can tell which process ran what.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from stem_core import Stem

QUEUE = "incident"
# The broker lease of the incident (the test sets it on the broker URL, since `stem
# enqueue` knows nothing of this app's per-task visibility timeout).
LEASE_S = 600.0
HANG_S = 3600.0

app = Stem()


@app.task(name="incident.hang", queue=QUEUE, visibility_timeout=LEASE_S)
async def hang(ctx: Any, n: int = 0) -> int:
    log = os.environ.get("INCIDENT_LOG")
    if log:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"start {ctx.task_id} {os.getpid()}\n".encode())
        finally:
            os.close(fd)
    if os.environ.get("INCIDENT_FAST") != "1":
        await asyncio.sleep(HANG_S)
    return n
