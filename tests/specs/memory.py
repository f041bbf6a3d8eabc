from __future__ import annotations

import uuid

from stem_core.adapters.memory import drop_stores
from tests.specs import AdapterSpec


async def _cleanup(url: str, namespace: str) -> None:
    # Each test's store is private to its URL; dropping it keeps the process small.
    drop_stores(url.removeprefix("memory://"))


# A fresh in-process store per test: memory://<name> shares state only within one name.
SPEC = AdapterSpec(id="memory", url=lambda tmp: f"memory://{uuid.uuid4().hex}", cross_process=False, cleanup=_cleanup)
