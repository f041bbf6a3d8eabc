from __future__ import annotations

import uuid

from tests.specs import AdapterSpec

# A fresh in-process store per test: memory://<name> shares state only within one name.
SPEC = AdapterSpec(id="memory", url=lambda tmp: f"memory://{uuid.uuid4().hex}", cross_process=False)
