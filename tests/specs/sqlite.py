from __future__ import annotations

from tests.specs import AdapterSpec

SPEC = AdapterSpec(id="sqlite", url=lambda tmp: f"sqlite://{(tmp / 'stem.db').as_posix()}")
