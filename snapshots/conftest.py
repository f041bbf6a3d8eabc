"""Snapshot tests of ``stem tui`` keep their SVG baselines here, in ``snapshots/<module>/``
(pytest-textual-snapshot would put them beside the module in ``__snapshots__``).

Update on purpose with ``pytest snapshots --snapshot-update`` (e.g. after a Textual bump:
textual is pinned because its rendering changes the pictures).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Iterator

import pytest
import pytest_textual_snapshot as _pts

from tests.tui.seed import FrozenClock, freeze

ROOT = Path(__file__).resolve().parent


class TopLevelSVG(_pts.SVGImageExtension):
    @classmethod
    def dirname(cls, *, test_location: object) -> str:
        return str(ROOT / Path(test_location.filepath).stem)  # type: ignore[attr-defined]


# snap_compare looks the extension up when it is called, so rebinding the name is enough.
_pts.SVGImageExtension = TopLevelSVG  # type: ignore[misc]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FrozenClock:
    frozen = FrozenClock()
    freeze(monkeypatch, frozen)
    return frozen


@pytest.fixture
def store() -> Iterator[tuple[str, str]]:
    name = f"snap-{uuid.uuid4().hex[:12]}"
    # A fixed namespace: it is shown in the title bar of every picture.
    yield f"memory://{name}", "demo"
    from stem_core.adapters.memory.registry import drop_stores  # test cleanup only

    drop_stores(name)
