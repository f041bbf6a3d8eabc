"""The tasks of ``stem demo``: a realistic mix for the workers it starts
(``stem worker --app stem_tui.demo_app:app``).

* ``emails``  - ``email.send``: fast, a few transient failures retried;
* ``default`` - ``thumb.make``: very fast;
* ``reports`` - ``report.build``: slow (seconds), reports progress;
* ``billing`` - ``invoice.charge``: fails often; after its retries it lands in the dead letters;
* ``exports`` - ``export.generate``: the first one runs for ``LONG_TASK_S`` holding its lease
  (renewed by the worker), and the only worker serving ``exports`` has one slot, so the
  queue behind it stalls — what ``stem tui`` is for.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from typing import Any

from stem_core import Stem

app = Stem()

# The long export holds its worker's only slot this long (the demo stops sooner).
LONG_TASK_S = float(os.environ.get("STEM_DEMO_LONG_TASK_S", "900"))
EXPORT_LEASE_S = 30.0
# Share of attempts that fail, per task (the tests make invoices always fail).
EMAIL_FAILURE_RATE = 0.05
INVOICE_FAILURE_RATE = float(os.environ.get("STEM_DEMO_INVOICE_FAILURE_RATE", "0.35"))


class CardDeclined(Exception):
    """The payment provider said no (the demo's poison message)."""


@app.task(name="email.send", queue="emails", max_retries=2, retry_backoff=0.5)
async def send_email(ctx: Any, to: str, subject: str) -> dict[str, Any]:
    await asyncio.sleep(random.uniform(0.02, 0.25))
    if random.random() < EMAIL_FAILURE_RATE:
        raise ConnectionError("smtp: 421 too many connections, try again")
    return {"to": to, "subject": subject, "message_id": f"<{ctx.task_id}@demo>"}


@app.task(name="thumb.make", queue="default")
async def make_thumbnail(ctx: Any, image: str, size: int = 128) -> dict[str, Any]:
    await asyncio.sleep(random.uniform(0.005, 0.05))
    return {"image": image, "size": size}


@app.task(name="report.build", queue="reports", time_limit=120)
def build_report(ctx: Any, report_id: int, pages: int = 5) -> dict[str, Any]:
    # A sync task: runs in a worker thread and reports progress per page.
    for page in range(1, pages + 1):
        ctx.raise_if_cancelled()
        time.sleep(random.uniform(0.3, 1.2))
        ctx.progress(page=page, pages=pages)
    return {"report_id": report_id, "pages": pages}


@app.task(name="invoice.charge", queue="billing", max_retries=1, retry_backoff=0.5)
async def charge_invoice(ctx: Any, invoice: str, amount: float) -> dict[str, Any]:
    await asyncio.sleep(random.uniform(0.05, 0.2))
    if random.random() < INVOICE_FAILURE_RATE:
        raise CardDeclined(f"card declined for invoice {invoice} (code 51)")
    return {"invoice": invoice, "charged": amount}


@app.task(name="export.generate", queue="exports", visibility_timeout=EXPORT_LEASE_S)
async def generate_export(ctx: Any, export_id: int, rows: int = 1000) -> dict[str, Any]:
    # Cancellable (soft shutdown, revoke --terminate); the worker renews the lease meanwhile.
    await asyncio.sleep(LONG_TASK_S)
    return {"export_id": export_id, "rows": rows}


QUEUES = ("emails", "default", "reports", "billing", "exports")

__all__ = ["QUEUES", "app"]
